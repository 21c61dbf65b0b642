"""The records endpoint's codec: POST /v2/models/{name}/records (or /predict) with rows as JSON objects.

Request: `{"rows": [{"col": value, ...}, ...], "rejects": false, "keep": ["id"]}`, or the rows alone as a JSON list;
an image column's values are the base64 of the image files. Or a multipart/form-data form of image files, one row
per file: a file field named after the image column (its file name comes back in the column "file"), and the
optional fields "rejects" (true/false).
Response: `{"model_name", "model_version", "predictions": [{...}, ...], "rejected": [{"row", "reason"}, ...]}`:
the rows go through the same validation as `Predictor.predict` and `torchpredict predict`, with the same
messages; with `"rejects": true` bad rows are set aside (their row counted from 0 in the request) instead of
failing the request. Pure functions: no HTTP, no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from torchpredict.messages import described, first_line, shown
from torchpredict.server.oip import RequestError, image_elements

__all__ = ["RecordsRequest", "encode_records", "parse_form", "parse_records", "with_images"]

FILE_COLUMN = "file"


@dataclass(frozen=True)
class RecordsRequest:
    """The rows as columns (names in the order they first appear; a row without a column holds null there)."""

    columns: dict[str, list[Any]]
    rows: int
    rejects: bool
    keep: tuple[str, ...]


def with_images(request: RecordsRequest, images: Sequence[str]) -> RecordsRequest:
    """The request with the base64 text of its image columns as the images' bytes."""
    columns = dict(request.columns)
    for name in images:
        if name in columns and any(isinstance(v, str) for v in columns[name]):
            columns[name] = image_elements(name, columns[name])
    return RecordsRequest(columns, request.rows, request.rejects, request.keep)


def parse_form(body: bytes, content_type: str, images: Sequence[str]) -> RecordsRequest:
    """A multipart/form-data form: one row per file of each image column's field, in the order sent."""
    message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1")
                                                         + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise RequestError("the form is not multipart/form-data with a boundary")
    files: dict[str, list[bytes]] = {}
    names: list[str] = []
    rejects = False
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is None:
            if field != "rejects":
                raise RequestError(f"form field {shown(field)} is not known; a records form has files named after the "
                                   "image column and the field 'rejects'")
            text = data.decode("utf-8", "replace").strip().lower()
            if text not in ("true", "false"):
                raise RequestError(f"form field 'rejects' must be true or false, got {shown(text)}")
            rejects = text == "true"
            continue
        if field not in images:
            known = ", ".join(map(shown, images)) or "none: the model takes no images"
            raise RequestError(f"form file field {shown(field)} is not an image column of the model ({known})")
        files.setdefault(str(field), []).append(data)
        if str(field) == images[0]:
            names.append(str(part.get_filename()))
    if not files:
        raise RequestError("the form holds no files")
    counts = {name: len(values) for name, values in files.items()}
    if len(set(counts.values())) > 1:
        raise RequestError(f"the form's file fields hold different numbers of files: {counts}")
    columns: dict[str, list[Any]] = {**files, FILE_COLUMN: names or [None] * len(next(iter(files.values())))}
    return RecordsRequest(columns, len(columns[FILE_COLUMN]), rejects, (FILE_COLUMN,))


def parse_records(body: bytes) -> RecordsRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the request is not valid JSON: {first_line(exc)}") from None
    if isinstance(document, list):
        document = {"rows": document}
    if not isinstance(document, dict):
        raise RequestError(f'the request must be {{"rows": [...]}} or a JSON list of rows, got {described(document)}')
    unknown = sorted(set(document) - {"rows", "rejects", "keep"})
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(map(shown, unknown))}; a records request has 'rows', "
                           "'rejects' and 'keep'")
    rows = document.get("rows")
    if not isinstance(rows, list):
        raise RequestError(f"'rows' must be a list of objects (one per row), got {described(rows)}")
    if not rows:
        raise RequestError("'rows' holds no rows")
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise RequestError(f"rows[{bad}] must be an object of column values, got {described(rows[bad])}")
    rejects = document.get("rejects", False)
    if not isinstance(rejects, bool):
        raise RequestError(f"'rejects' must be true or false, got {described(rejects)}")
    keep = document.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise RequestError(f"'keep' must be a list of column names, got {described(keep)}")
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    return RecordsRequest(columns, len(rows), rejects, tuple(keep))


def encode_records(model_name: str, model_version: str, table: pa.Table, rejected: pa.Table | None) -> bytes:
    """The response body: one object per predicted row (kept columns, then predictions), and the rejected rows."""
    names = table.schema.names  # the same list as table.column_names, at a sixth of its cost
    columns = [_values(table.column(name)) for name in names]
    predictions = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    refused = []
    if rejected is not None and rejected.num_rows:
        refused = [{"row": row, "reason": reason} for row, reason in
                   zip(rejected.column("row").to_pylist(), rejected.column("reason").to_pylist(), strict=True)]
    document = {"model_name": model_name, "model_version": model_version, "predictions": predictions,
                "rejected": refused}
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def _values(column: pa.ChunkedArray) -> Any:
    """A column's values as JSON writes them; float32 ones as numpy scalars, so that 0.93 stays 0.93."""
    if not column.null_count and (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        return column.to_numpy()
    if pa.types.is_list(column.type) and pa.types.is_float32(column.type.value_type):
        return [None if row is None else np.asarray(row, np.float32) for row in column.to_pylist()]
    return column.to_pylist()
