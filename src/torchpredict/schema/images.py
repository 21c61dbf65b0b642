"""The forms an image value takes at the front doors, and the one an image column holds.

An image column holds encoded images (bytes) or image file paths (strings); validation keeps either as it came.
From Python, a PIL image or a uint8 array also works: it becomes lossless PNG bytes here, with its EXIF, so that
decoding orients it as it would the file. Pillow is imported only when such a value is met.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["ImageValueError", "embedded", "image_value", "python_images"]


class ImageValueError(ValueError):
    """A Python value that is no image; its message says what it is."""


def image_value(value: Any) -> bytes | str | None:
    """bytes and paths as they are (a PathLike as its string), a PIL image or an [H, W] / [H, W, C] uint8 array
    (C 1, 3 or 4) as PNG bytes; raises ImageValueError for anything else."""
    if value is None or isinstance(value, (bytes, str)):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[2] not in (1, 3, 4)):
            raise ImageValueError(f"an image array must be uint8 [height, width] or [height, width, channels] with "
                                  f"1, 3 or 4 channels, got {value.dtype} {list(value.shape)}")
        try:
            from PIL import Image
        except ImportError:
            raise ImageValueError("an image array is encoded with Pillow, which is not installed: pip install "
                                  "'torchpredict[images]'") from None
        value = Image.fromarray(value[:, :, 0] if value.ndim == 3 and value.shape[2] == 1 else value)
    if type(value).__module__.startswith("PIL."):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG", compress_level=1, exif=value.getexif())
        return buffer.getvalue()
    raise ImageValueError(f"an image is bytes, a file path, a PIL image or a uint8 array, got {type(value).__name__}")


def python_images(data: Any, names: list[str]) -> tuple[Any, dict[str, list[tuple[int, str]]]]:
    """data (Python columns or records) with the image columns `names` in the form a column holds, and per
    column the rows whose value is no image, with why (they hold null). A column mixing bytes and paths reads
    the files into bytes. Data of other kinds (Arrow, pandas) comes back as it is."""
    columns = _columns(data, names)
    if columns is None:
        return data, {}
    odd: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        if name not in columns:
            continue
        values = []
        for row, value in enumerate(columns[name]):
            try:
                values.append(image_value(value))
            except ImageValueError as exc:
                odd.setdefault(name, []).append((row, str(exc)))
                values.append(None)
        if any(isinstance(v, bytes) for v in values) and any(isinstance(v, str) for v in values):
            for row, value in enumerate(values):
                if isinstance(value, str):
                    try:
                        with open(value, "rb") as file:
                            values[row] = file.read()
                    except OSError as exc:
                        odd.setdefault(name, []).append((row, f"{value!r}: cannot read the image file: "
                                                              f"{exc.strerror or exc}"))
                        values[row] = None
        columns[name] = values
    return columns, odd


def _columns(data: Any, names: list[str]) -> dict[str, Any] | None:
    """{column: values} of Python data holding at least one image column; None for other data."""
    if isinstance(data, Mapping) and any(n in data for n in names):
        if all(_single(data[n]) for n in names if n in data):  # one record
            return {str(k): [v] for k, v in data.items()}
        return {str(k): (list(v) if isinstance(v, np.ndarray) and v.ndim >= 3 else v) for k, v in data.items()}
    if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
        keys = [str(k) for k in dict.fromkeys(k for r in data for k in r)]
        if any(n in keys for n in names):
            return {k: [r.get(k) for r in data] for k in keys}
    return None


def _single(value: Any) -> bool:
    """One image, not a column of them."""
    if isinstance(value, np.ndarray):
        return value.ndim <= 3 and value.dtype == np.uint8 and not (value.ndim == 3 and value.shape[2] > 4)
    return not isinstance(value, (list, tuple)) and not type(value).__module__.startswith(("pandas", "pyarrow"))


def embedded(table: Any, names: list[str]) -> Any:
    """table (Arrow) with its image columns of file paths read into bytes, so that it travels without the files
    (the golden examples a bundle keeps); an unreadable file is an OSError of the caller's."""
    for name in names:
        if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
            data: list[bytes | None] = []
            for path in table.column(name).to_pylist():
                if path is None:
                    data.append(None)
                    continue
                with open(path, "rb") as file:
                    data.append(file.read())
            table = table.set_column(table.column_names.index(name), name, pa.array(data, pa.binary()))
    return table
