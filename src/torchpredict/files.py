"""Read input files into Arrow and write prediction tables, atomically.

Arrow is the one columnar format inside torchpredict: every reader yields record batches and every
writer takes them, so files of any size stream through the predictor in bounded memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from torchpredict.errors import InputError

__all__ = ["FORMATS", "TableWriter", "detect_format", "iter_batches", "read_table", "write_table"]

FORMATS = ("csv", "tsv", "parquet", "jsonl")
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
             ".ndjson": "jsonl", ".json": "jsonl"}
DEFAULT_BATCH_ROWS = 65536


def detect_format(path: str | Path, format: str | None = None) -> str:
    """The file format: the explicit one when given, else from the file's extension."""
    if format is not None:
        if format not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        known = ", ".join(sorted(_SUFFIXES))
        raise InputError(f"file '{path}': cannot tell the format from extension {suffix!r} "
                         f"(known: {known}); pass format=... (CLI --format)")
    return _SUFFIXES[suffix]


def read_table(path: str | Path, *, format: str | None = None,
               column_types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """Read a whole CSV/TSV/Parquet/JSONL file into one Arrow table."""
    batches = [b if isinstance(b, pa.RecordBatch) else pa.RecordBatch.from_pylist(b)
               for b in iter_batches(path, format=format, column_types=column_types)]
    if not batches:
        raise InputError(f"file '{path}' holds no rows")
    return pa.Table.from_batches(batches)


def iter_batches(path: str | Path, *, batch_rows: int = DEFAULT_BATCH_ROWS, format: str | None = None,
                 column_types: Mapping[str, pa.DataType] | None = None) -> Iterator[pa.RecordBatch | list[dict]]:
    """Yield record batches of at most batch_rows rows, in file order.

    JSONL whose values Arrow cannot type consistently comes as lists of records instead, so that schema
    validation can name the odd value and its row.

    column_types pins the Arrow type of named columns (e.g. string columns that look numeric, like zip
    codes); the other columns are inferred and checked later against the bundle's schema.
    """
    if batch_rows < 1:
        raise InputError(f"batch_rows must be >= 1, got {batch_rows}")
    fmt = detect_format(path, format)
    if not Path(path).is_file():
        raise InputError(f"input file '{path}' does not exist")
    try:
        table = _read(Path(path), fmt, dict(column_types or {}))
    except pa.ArrowInvalid as exc:
        if fmt != "jsonl":
            raise InputError(f"file '{path}': cannot read it as {fmt}: {_first_line(exc)}") from None
        yield from _jsonl_records(Path(path), batch_rows)  # mixed types: let the schema name the value
        return
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"file '{path}': cannot read it as {fmt}: {_first_line(exc)}") from None
    yield from table.to_batches(max_chunksize=batch_rows)


def _jsonl_records(path: Path, batch_rows: int) -> Iterator[list[dict]]:
    """Lists of records, for JSONL whose values Arrow cannot type consistently (e.g. 'forty' among numbers)."""
    records: list[dict] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"file '{path}': line {number} is not valid JSON ({exc.msg})") from None
            if len(records) == batch_rows:
                yield records
                records = []
    if records:
        yield records


def _read(path: Path, fmt: str, column_types: dict[str, pa.DataType]) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "jsonl":
        return _read_jsonl(path, column_types)
    delimiter = "\t" if fmt == "tsv" else ","
    convert = pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=True)
    return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter), convert_options=convert)


def _read_jsonl(path: Path, column_types: dict[str, pa.DataType]) -> pa.Table:
    table = pajson.read_json(path)
    for name, dtype in column_types.items():
        if name in table.column_names and table.schema.field(name).type != dtype and pa.types.is_string(dtype):
            index = table.column_names.index(name)
            table = table.set_column(index, name, table.column(name).cast(dtype))
    return table


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def write_table(table: pa.Table, path: str | Path, *, format: str | None = None) -> None:
    """Write a whole table atomically: the file appears complete or not at all."""
    with TableWriter(path, table.schema, format=format) as writer:
        writer.write(table)


class TableWriter:
    """Streams batches to a temporary file beside `path` and renames it over `path` on success.

    A job that is killed or fails leaves no file that looks complete.
    """

    def __init__(self, path: str | Path, schema: pa.Schema, *, format: str | None = None) -> None:
        self.path = Path(path)
        self.format = detect_format(self.path, format)
        self.schema = schema
        self.rows = 0
        self._temp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        if not self.path.parent.is_dir():
            raise InputError(f"output folder '{self.path.parent}' does not exist")
        self._sink = self._open()

    def _open(self) -> object:
        if self.format == "parquet":
            return pq.ParquetWriter(self._temp, self.schema)
        if self.format == "jsonl":
            return open(self._temp, "w", encoding="utf-8")
        options = pacsv.WriteOptions(delimiter="\t" if self.format == "tsv" else ",")
        return pacsv.CSVWriter(self._temp, self.schema, write_options=options)

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        if self.format == "jsonl":
            lines = (json.dumps(row, ensure_ascii=False, default=str) for row in data.to_pylist())
            self._sink.write("".join(line + "\n" for line in lines))  # type: ignore[attr-defined]
        elif isinstance(data, pa.Table):
            self._sink.write_table(data)  # type: ignore[attr-defined]
        else:
            self._sink.write_batch(data)  # type: ignore[attr-defined]
        self.rows += data.num_rows

    def commit(self) -> None:
        self._sink.close()  # type: ignore[attr-defined]
        os.replace(self._temp, self.path)

    def abort(self) -> None:
        self._sink.close()  # type: ignore[attr-defined]
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
