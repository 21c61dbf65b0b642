"""Write prediction tables atomically: under a temporary name, renamed over the target when complete.

A job that is killed or fails leaves no file that looks complete. CSV, TSV, Parquet, JSONL and .npy; text
outputs ending in .gz/.zst/.bz2/.lz4 are compressed; '-' writes to stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from torchpredict.errors import InputError
from torchpredict.io.formats import STDIO, detect_format, split_suffix
from torchpredict.messages import first_line

__all__ = ["TableWriter", "jsonl_bytes", "write_atomically", "write_table"]


def write_table(table: pa.Table, path: str | Path, *, format: str | None = None) -> None:
    """Write a whole table atomically: the file appears complete or not at all."""
    with TableWriter(path, table.schema, format=format) as writer:
        writer.write(table)


class TableWriter:
    """Streams batches to a temporary file beside `path` and renames it over `path` on commit.

    A job that is killed or fails leaves no file that looks complete. path '-' writes to stdout (then
    format is required). CSV, TSV and JSONL outputs ending in .gz/.zst/.bz2/.lz4 are compressed.
    """

    def __init__(self, path: str | Path, schema: pa.Schema, *, format: str | None = None) -> None:
        self.stdout = str(path) == STDIO
        self.path = Path(path)
        self.format = detect_format(path, format)
        self.schema = schema
        self.rows = 0
        self._temp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        if not self.stdout and not self.path.parent.is_dir():
            raise InputError(f"output folder '{self.path.parent}' does not exist")
        codec = None if self.stdout else split_suffix(self.path)[1]
        if self.stdout and self.format == "npy":
            raise InputError("cannot write .npy to stdout (its header needs the row count first); write a file")
        if codec is not None and self.format in ("parquet", "npy"):
            raise InputError(f"output '{path}': {self.format} files cannot be compressed by extension; "
                             "drop the compression suffix (parquet compresses itself)")
        self._sink = _open_sink(self.format, self._target(codec), schema)

    def _target(self, codec: str | None) -> Any:
        if self.stdout:
            return sys.stdout.buffer
        if self.format in ("parquet", "npy"):
            return str(self._temp)
        return pa.output_stream(str(self._temp), compression=codec)

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        if data.schema != self.schema:
            data = _conform(data, self.schema)
        self._sink.write(data)
        self.rows += data.num_rows

    def commit(self) -> None:
        self._sink.close()
        if self.stdout:
            sys.stdout.buffer.flush()
        else:
            os.replace(self._temp, self.path)

    def abort(self) -> None:
        try:
            self._sink.close()
        finally:
            if not self.stdout:
                self._temp.unlink(missing_ok=True)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _conform(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table | pa.RecordBatch:
    """data with the writer's column types (e.g. a null column of an all-empty chunk, int after float)."""
    if data.schema.names != schema.names:
        raise InputError(f"the output columns changed from {schema.names} to {data.schema.names}; "
                         "every input file must have the same columns")
    try:
        return data.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"the output's column types changed between chunks ({first_line(exc)}); "
                         "write to parquet or pin the column types") from None


def _open_sink(fmt: str, target: Any, schema: pa.Schema) -> Any:
    if fmt == "parquet":
        return _ArrowSink(pq.ParquetWriter(target, schema))
    if fmt == "jsonl":
        return _JsonlSink(target)
    if fmt == "npy":
        return _NpySink(target, schema)
    options = pacsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ",")
    nested = [i for i, f in enumerate(schema) if pa.types.is_nested(f.type)]
    raw = [i for i, f in enumerate(schema) if _is_bytes(f.type)]
    if nested or raw:  # kept columns of lists or objects (their JSON text) or of bytes (their UTF-8 text)
        text = pa.schema([pa.field(f.name, pa.string()) if i in nested + raw else f for i, f in enumerate(schema)])
        return _AsText(pacsv.CSVWriter(target, text, write_options=options), target, nested, raw, fmt)
    return _ArrowSink(pacsv.CSVWriter(target, schema, write_options=options), closes=target)


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def utf8_text(column: pa.Array | pa.ChunkedArray, name: str, fmt: str) -> pa.Array | pa.ChunkedArray:
    """A column of bytes as text, for a text format; bytes that are not UTF-8 text are an InputError, never
    written as something else (a CSV reader infers bytes for a column that is not valid UTF-8)."""
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        bad = next(v for v in column.to_pylist() if v is not None and not _decodes(v))
        raise InputError(f"column {name!r} holds bytes that are not UTF-8 text ({bad[:24]!r}); a {fmt} file holds "
                         "text only: write parquet to keep them as they are, or fix the input's encoding") from None


def _decodes(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _ArrowSink:
    def __init__(self, writer: Any, closes: Any = None) -> None:
        self._writer, self._closes = writer, closes

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        if isinstance(data, pa.Table):
            self._writer.write_table(data)
        else:
            self._writer.write_batch(data)

    def close(self) -> None:
        self._writer.close()
        if isinstance(self._closes, pa.NativeFile) and not self._closes.closed:
            self._closes.close()


class _AsText(_ArrowSink):
    """A CSV writer whose nested columns (lists, structs) are written as their JSON text, and whose columns of
    bytes as the UTF-8 text they hold."""

    def __init__(self, writer: Any, closes: Any, nested: list[int], raw: list[int], fmt: str) -> None:
        super().__init__(writer, closes)
        self._nested, self._raw, self._fmt = nested, raw, fmt

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        columns = list(data.columns)
        for i in self._nested:  # a missing value stays an empty cell, as in every other CSV column
            columns[i] = pc.if_else(pc.is_valid(columns[i]), _json_values(columns[i]), pa.scalar(None, pa.string()))
        for i in self._raw:
            columns[i] = utf8_text(columns[i], data.schema.names[i], self._fmt)
        super().write(type(data).from_arrays(columns, names=data.schema.names))


class _JsonlSink:
    """One JSON object per row, built column-wise by pyarrow.compute (no Python loop over rows)."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        if data.num_rows:
            self._target.write(jsonl_bytes(data))

    def close(self) -> None:
        if isinstance(self._target, pa.NativeFile) and not self._target.closed:
            self._target.close()


def jsonl_bytes(data: pa.Table | pa.RecordBatch) -> bytes:
    """The rows of data as JSON lines: numbers, strings, booleans and null (NaN and infinities as null)."""
    parts: list[Any] = []
    for i, (name, column) in enumerate(zip(data.schema.names, data.columns, strict=True)):
        if _is_bytes(column.type):  # as their text, not Python's b'...' repr
            column = utf8_text(column, name, "jsonl")
        parts += [("{" if i == 0 else ",") + json.dumps(name, ensure_ascii=False) + ":", _json_values(column)]
    lines = pc.binary_join_element_wise(*parts, "}\n", "")
    return b"".join(buffer_part.to_pybytes() for buffer_part in _string_data(lines))


def _string_data(column: pa.Array | pa.ChunkedArray) -> list[pa.Buffer]:
    """The concatenated characters of a string column without nulls, chunk by chunk."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out = []
    for chunk in chunks:
        if len(chunk):
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
            out.append(chunk.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0])))
    return out


def _json_values(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Each value as JSON text (no nulls: missing values are the text null)."""
    t = column.type
    if pa.types.is_floating(t):
        finite = pc.is_finite(column)
        text = column.cast(pa.string())
        integral = pc.match_substring_regex(text, r"^-?[0-9]+$")
        text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
        return pc.fill_null(pc.if_else(finite, text, pa.scalar(None, pa.string())), "null")
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return pc.fill_null(column.cast(pa.string()), "null")
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        plain = not pc.any(pc.match_substring_regex(column, "[\\x00-\\x1f\\\\\"]")).as_py()
        if plain:
            return pc.fill_null(pc.binary_join_element_wise('"', column, '"', ""), "null")
    values = column.to_pylist()  # rare types and strings that need escaping: one Python pass
    return pa.array([json.dumps(v, ensure_ascii=False, default=str) for v in values], pa.string())


class _NpySink:
    """A structured .npy array, one field per column; the header's row count is written at close."""

    _HEADER_BYTES = 4096

    def __init__(self, path: str, schema: pa.Schema) -> None:
        text = [f.name for f in schema if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                                               or pa.types.is_boolean(f.type))]
        if text:
            raise InputError(f".npy output holds numbers only; column(s) {', '.join(map(repr, text))} are not "
                             "numeric: leave them out (--columns, --keep) or write parquet, csv or jsonl")
        self.dtype = np.dtype([(f.name, f.type.to_pandas_dtype()) for f in schema])
        self.rows = 0
        self._file = open(path, "wb")  # noqa: SIM115  # closed in close()
        self._file.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        """A version 1.0 header padded to a fixed size, so that the final row count fits in its place."""
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (rows,)}
        text = repr(header).encode("latin1")
        size = self._HEADER_BYTES - 10
        if len(text) >= size:
            raise InputError(f".npy output: too many columns for a header of {self._HEADER_BYTES} bytes")
        return b"\x93NUMPY\x01\x00" + size.to_bytes(2, "little") + text.ljust(size - 1) + b"\n"

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        rows = np.empty(data.num_rows, dtype=self.dtype)
        for name, column in zip(data.schema.names, data.columns, strict=True):
            rows[name] = column.to_numpy(zero_copy_only=False)
        self._file.write(rows.tobytes())
        self.rows += data.num_rows

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(self._header(self.rows))
        self._file.close()


def write_atomically(path: Path, text: str) -> None:
    """text into path by a temporary file in the same folder, synced, then os.replace'd over it (atomic on POSIX
    and Windows); the temporary file is removed when anything fails. Its mode follows the umask, as open()'s."""
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
