"""Read input files in chunks of rows and write prediction tables, atomically.

Arrow is the one columnar format inside torchpredict: readers yield chunks of rows in file order and
writers take record batches, so files of any size stream through the predictor in bounded memory.
Formats: CSV, TSV, Parquet, JSONL and NumPy .npy; gzip, zstd, bz2 and lz4 compressed inputs (and
text outputs); '-' for stdin and stdout.
"""

from __future__ import annotations

import glob
import io
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from torchpredict.errors import InputError

__all__ = ["FORMATS", "STDIO", "Chunk", "TableWriter", "detect_format", "expand_inputs", "iter_batches",
           "read_chunks", "read_table", "write_table"]

FORMATS = ("csv", "tsv", "parquet", "jsonl", "npy")
STDIO = "-"
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
             ".ndjson": "jsonl", ".json": "jsonl", ".npy": "npy"}
_CODECS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".lz4": "lz4"}
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4",
          **{b"BZh" + bytes([level]): "bz2" for level in b"123456789"}}
DEFAULT_BATCH_ROWS = 65536
DEFAULT_BLOCK_BYTES = 8 << 20  # CSV/JSONL text parsed per chunk (multi-threaded inside pyarrow)


def detect_format(path: str | Path, format: str | None = None) -> str:
    """The file format: the explicit one when given, else from the extension (after any .gz/.zst)."""
    if format is not None:
        if format not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        return format
    if str(path) == STDIO:
        raise InputError("cannot tell the format of '-' (stdin/stdout); pass format=... (CLI --format)")
    suffix, _ = _suffixes(path)
    if suffix not in _SUFFIXES:
        known = ", ".join(sorted(_SUFFIXES))
        raise InputError(f"file '{path}': cannot tell the format from extension {suffix!r} "
                         f"(known: {known}); pass format=... (CLI --format)")
    return _SUFFIXES[suffix]


def _suffixes(path: str | Path) -> tuple[str, str | None]:
    """('.csv', 'gzip') for 'a.csv.gz'; ('.csv', None) for 'a.csv'."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _CODECS:
        return Path(path.stem).suffix.lower(), _CODECS[suffix]
    return suffix, None


def expand_inputs(source: str | Path | Sequence[str | Path]) -> list[str]:
    """Input files in order: '-' (stdin), a file, every data file of a folder, a glob's matches, or a list."""
    if not isinstance(source, (str, Path)):
        return [path for item in source for path in expand_inputs(item)]
    text = str(source)
    if text == STDIO or (os.path.exists(text) and not os.path.isdir(text)):  # a file, or a pipe: <(zcat a.gz)
        return [text]
    if Path(text).is_dir():
        found = sorted(str(p) for p in Path(text).iterdir()
                       if p.is_file() and not p.name.startswith(".") and _suffixes(p)[0] in _SUFFIXES)
        if not found:
            raise InputError(f"input folder '{text}' holds no {', '.join(sorted(_SUFFIXES))} files")
        return found
    if glob.has_magic(text):
        found = sorted(p for p in glob.glob(text) if Path(p).is_file())
        if not found:
            raise InputError(f"no input file matches '{text}'")
        return found
    raise InputError(f"input file '{text}' does not exist")


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of one input file.

    data is a table, or, where Arrow cannot give a column one type (a CSV value that is not a number in
    a numeric column, mixed JSON values), columns or records of Python values: schema validation then
    names or rejects the odd rows. first_row numbers the chunk's first row in its file (0 = the first
    row after any header); done is the fraction of the file read so far (None when unknown, e.g. stdin).
    """

    data: pa.Table | dict[str, Any] | list[dict]
    rows: int
    first_row: int
    done: float | None = None

    def slice(self, start: int, stop: int) -> Chunk:
        """Rows start..stop of this chunk (positions within it)."""
        data = self.data
        if isinstance(data, pa.Table):
            data = data.slice(start, stop - start)
        elif isinstance(data, dict):
            data = {name: values[start:stop] for name, values in data.items()}
        else:
            data = data[start:stop]
        return Chunk(data, stop - start, self.first_row + start, self.done)


def read_chunks(path: str | Path, *, format: str | None = None,
                column_types: Mapping[str, pa.DataType] | None = None, names: Sequence[str] | None = None,
                batch_rows: int = DEFAULT_BATCH_ROWS, block_bytes: int = DEFAULT_BLOCK_BYTES,
                threads: bool = True) -> Iterator[Chunk]:
    """Yield the rows of one input file ('-' = stdin) as chunks, in file order.

    column_types pins the Arrow type CSV text is parsed to (e.g. strings that look numeric, like zip
    codes; numbers for numeric columns) and JSON numbers are cast to when a string is wanted. names are
    the column names of a plain 2-D .npy array. CSV and JSONL come in chunks of about block_bytes of
    text, Parquet and .npy in chunks of batch_rows rows. threads: parse with pyarrow's thread pool.
    """
    if batch_rows < 1:
        raise InputError(f"batch_rows must be >= 1, got {batch_rows}")
    fmt = detect_format(path, format)
    types = dict(column_types or {})
    with _Input(str(path)) as source:
        try:
            if fmt in ("csv", "tsv"):
                yield from _csv_chunks(source, "\t" if fmt == "tsv" else ",", types, block_bytes, threads)
            elif fmt == "jsonl":
                yield from _jsonl_chunks(source, types, block_bytes, threads)
            elif fmt == "parquet":
                yield from _parquet_chunks(source, batch_rows, threads)
            else:
                yield from _npy_chunks(source, names, batch_rows)
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"file '{source.name}': cannot read it as {fmt}: {_first_line(exc)}") from None


def iter_batches(path: str | Path, *, batch_rows: int = DEFAULT_BATCH_ROWS, format: str | None = None,
                 column_types: Mapping[str, pa.DataType] | None = None) -> Iterator[pa.RecordBatch]:
    """Yield record batches of at most batch_rows rows, in file order (see read_chunks)."""
    from torchpredict.tables import as_table

    for chunk in read_chunks(path, format=format, column_types=column_types, batch_rows=batch_rows):
        yield from as_table(chunk.data).to_batches(max_chunksize=batch_rows)


def read_table(path: str | Path, *, format: str | None = None,
               column_types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """Read a whole file into one Arrow table."""
    from torchpredict.tables import as_table

    tables = [as_table(chunk.data) for chunk in read_chunks(path, format=format, column_types=column_types)]
    if not tables or not sum(t.num_rows for t in tables):
        raise InputError(f"file '{path}' holds no rows")
    return pa.concat_tables(tables, promote_options="permissive")


class _Input:
    """A file or stdin as a binary stream, decompressed when its first bytes say it is compressed."""

    def __init__(self, path: str) -> None:
        self.name = "stdin" if path == STDIO else path
        self._stdin = path == STDIO
        if path != STDIO and (not os.path.exists(path) or os.path.isdir(path)):
            raise InputError(f"input file '{path}' does not exist")
        self._raw: Any = sys.stdin.buffer if path == STDIO else open(path, "rb")  # noqa: SIM115  # closed on exit
        self.size = os.fstat(self._raw.fileno()).st_size if self._raw.seekable() else None
        if self.size is None:  # stdin or a pipe: look at the first bytes without consuming them
            magic = self._raw.peek(4)[:4] if hasattr(self._raw, "peek") else b""
        else:
            magic = self._raw.read(4)
            self._raw.seek(0)
        self.codec = next((codec for prefix, codec in _MAGIC.items() if magic.startswith(prefix)), None)
        self._stream: Any = self._raw
        if self.codec is not None:
            self._stream = pa.CompressedInputStream(pa.PythonFile(self._raw, mode="r"), self.codec)

    @property
    def path(self) -> str | None:
        """The file path when the file can be read in place (a plain file, not stdin or compressed)."""
        return None if self._stdin or self.size is None or self.codec is not None else self.name

    def readinto(self, view: memoryview) -> int:
        return self._stream.readinto(view)

    def read_all(self) -> bytes:
        return self._stream.read() if self.codec is not None else self._raw.read()

    def done(self) -> float | None:
        """The fraction of the (compressed) file read so far."""
        if not self.size:
            return None
        return min(1.0, self._raw.tell() / self.size)

    def __enter__(self) -> _Input:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._stdin:
            self._raw.close()


def _line_blocks(source: _Input, block_bytes: int, quoted: bool) -> Iterator[memoryview]:
    """About block_bytes of whole lines at a time (never cutting a quoted value that spans lines).

    The blocks are views of one reused buffer: each is valid until the next one is asked for.
    """
    buffer = bytearray(block_bytes)
    filled = 0
    while True:
        if filled == len(buffer):  # one line longer than the buffer: make room
            buffer = buffer + bytearray(len(buffer))
        filled += _fill(source, memoryview(buffer)[filled:])
        at_end = filled < len(buffer)
        end = filled if at_end else _line_end(buffer, filled, quoted)
        if end:
            with memoryview(buffer) as view:
                yield view[:end]
            buffer[: filled - end] = buffer[end:filled]
            filled -= end
        if at_end:
            return


def _fill(source: _Input, view: memoryview) -> int:
    """Read into view until it is full or the input ends; the number of bytes read."""
    done = 0
    while done < len(view):
        n = source.readinto(view[done:])
        if not n:
            break
        done += n
    return done


def _line_end(data: bytearray, size: int, quoted: bool) -> int:
    """Where the last complete line in data[:size] ends (0: none); with quoted, outside any quoted value."""
    end = data.rfind(b"\n", 0, size) + 1
    if not quoted or not end:
        return end
    quotes = data.count(b'"', 0, end)
    while quotes % 2 and end:  # inside a quoted value that spans lines: cut one line earlier
        start = data.rfind(b"\n", 0, end - 1) + 1
        quotes -= data.count(b'"', start, end)
        end = start
    return end


def _csv_chunks(source: _Input, delimiter: str, types: dict[str, pa.DataType], block_bytes: int,
                threads: bool) -> Iterator[Chunk]:
    parse = pacsv.ParseOptions(delimiter=delimiter)
    names: list[str] | None = None
    first_row = 0
    for block in _line_blocks(source, block_bytes, quoted=True):
        try:
            table, parse = _parse_csv(block, names, types, parse, threads)
        except pa.ArrowInvalid as exc:
            where = f" (at or after row {first_row})" if first_row else ""
            raise InputError(f"file '{source.name}': cannot read it as csv: {_first_line(exc)}{where}") from None
        if names is None:
            names = table.column_names
        data = _typed_csv(table, types)
        yield Chunk(data, table.num_rows, first_row, source.done())
        first_row += table.num_rows


def _parse_csv(block: memoryview, names: list[str] | None, types: dict[str, pa.DataType],
               parse: pacsv.ParseOptions, threads: bool) -> tuple[pa.Table, pacsv.ParseOptions]:
    """One block of CSV text as a table; values that do not parse as their pinned type come as strings."""
    read = pacsv.ReadOptions(column_names=names, use_threads=threads)
    try:
        convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
        return pacsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse,
                              convert_options=convert), parse
    except pa.ArrowInvalid as exc:
        if "out of sync" in str(exc) and not parse.newlines_in_values:  # a quoted value spans lines
            spanning = pacsv.ParseOptions(delimiter=parse.delimiter, newlines_in_values=True)
            return _parse_csv(block, names, types, spanning, threads)
        if "conversion error" not in str(exc):
            raise
    as_text = {name: pa.string() for name in types}  # read as text: validation names the odd values
    convert = pacsv.ConvertOptions(column_types=as_text, strings_can_be_null=True)
    return pacsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse, convert_options=convert), parse


def _typed_csv(table: pa.Table, types: Mapping[str, pa.DataType]) -> pa.Table | dict[str, Any]:
    """The table with pinned columns read as text cast to their types; a column holding text that is not a
    value of its type becomes a list of Python values (the parsed values, and the odd text as it was)."""
    columns: dict[str, Any] = {}
    odd = False
    for name, column in zip(table.column_names, table.columns, strict=True):
        wanted = types.get(name)
        if wanted is None or column.type == wanted or not pa.types.is_string(column.type):
            columns[name] = column
            continue
        try:
            columns[name] = column.cast(wanted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            columns[name] = _parsed_or_text(column.combine_chunks(), wanted)
            odd = True
    return columns if odd else pa.table(columns)


def _parsed_or_text(column: pa.Array, wanted: pa.DataType) -> list[Any]:
    """Values parsed as `wanted` where they parse, else the text itself (error path only)."""
    bad = _unparsable(column, wanted, 0)
    keep = np.ones(len(column), dtype=bool)
    keep[bad] = False
    values = pc.if_else(pa.array(keep), column, pa.nulls(len(column), pa.string())).cast(wanted).to_pylist()
    text = column.to_pylist()
    for i in bad:
        values[i] = text[i]
    return values


def _unparsable(column: pa.Array, wanted: pa.DataType, offset: int) -> list[int]:
    """Positions of the values Arrow cannot cast to `wanted`, by bisection (few casts when few are odd)."""
    try:
        column.cast(wanted)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(column) == 1:
            return [offset]
    half = len(column) // 2
    return _unparsable(column.slice(0, half), wanted, offset) + \
        _unparsable(column.slice(half), wanted, offset + half)


def _jsonl_chunks(source: _Input, types: dict[str, pa.DataType], block_bytes: int,
                  threads: bool) -> Iterator[Chunk]:
    options = pajson.ReadOptions(use_threads=threads)
    first_row, line = 0, 1
    for block in _line_blocks(source, block_bytes, quoted=False):
        try:
            table = pajson.read_json(pa.BufferReader(block), read_options=options)
            data: pa.Table | list[dict] = _strings_where_wanted(table, types)
            rows = table.num_rows
        except pa.ArrowInvalid as exc:
            if "Empty JSON" in str(exc):
                data, rows = [], 0
            else:  # values Arrow cannot type consistently: let the schema name the odd value and its row
                data = _records(bytes(block), source.name, line)
                rows = len(data)
        if rows:
            yield Chunk(data, rows, first_row, source.done())
        first_row += rows
        line += int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == 10))


def _strings_where_wanted(table: pa.Table, types: Mapping[str, pa.DataType]) -> pa.Table:
    """JSON numbers in columns pinned to strings (zip codes written as numbers) become their text."""
    for name, wanted in types.items():
        if name in table.column_names and pa.types.is_string(wanted) and table.schema.field(name).type != wanted:
            index = table.column_names.index(name)
            table = table.set_column(index, name, table.column(name).cast(wanted))
    return table


def _records(block: bytes, name: str, first_line: int) -> list[dict]:
    records = []
    for number, text in enumerate(block.decode("utf-8").split("\n"), start=first_line):
        if not text.strip():
            continue
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InputError(f"file '{name}': line {number} is not valid JSON ({exc.msg})") from None
    return records


def _parquet_chunks(source: _Input, batch_rows: int, threads: bool) -> Iterator[Chunk]:
    file = pq.ParquetFile(source.path or pa.BufferReader(source.read_all()))
    total, first_row = file.metadata.num_rows, 0
    if total == 0:
        yield Chunk(file.schema_arrow.empty_table(), 0, 0, 1.0)
        return
    for batch in file.iter_batches(batch_size=batch_rows, use_threads=threads):
        first_row += batch.num_rows
        yield Chunk(pa.Table.from_batches([batch]), batch.num_rows, first_row - batch.num_rows, first_row / total)


def _npy_chunks(source: _Input, names: Sequence[str] | None, batch_rows: int) -> Iterator[Chunk]:
    if source.path is not None:
        array = np.load(source.path, mmap_mode="r", allow_pickle=False)
    else:
        array = np.load(io.BytesIO(source.read_all()), allow_pickle=False)
    columns = _npy_columns(array, names, source.name)
    total = len(array)
    for start in range(0, total, batch_rows):
        stop = min(start + batch_rows, total)
        table = pa.table({name: np.ascontiguousarray(get(start, stop)) for name, get in columns.items()})
        yield Chunk(table, stop - start, start, stop / total)
    if total == 0:
        yield Chunk(pa.table({name: get(0, 0) for name, get in columns.items()}), 0, 0, 1.0)


def _npy_columns(array: np.ndarray, names: Sequence[str] | None,
                 origin: str) -> dict[str, Callable[[int, int], np.ndarray]]:
    """Named column readers: a structured array's fields, or the columns of a 2-D array named by `names`."""
    if array.dtype.names:
        return {name: (lambda a, b, n=name: array[n][a:b]) for name in array.dtype.names}
    width = 1 if array.ndim == 1 else array.shape[1] if array.ndim == 2 else None
    if names is None or width is None or width != len(names):
        wanted = "a structured array" if names is None else f"{len(names)} column(s) ({', '.join(names)})"
        raise InputError(f"file '{origin}': a .npy array of shape {array.shape} does not give {wanted}; "
                         "save a 2-D array with one column per model feature, in schema order, or a structured "
                         "array with one field per column")
    if array.ndim == 1:
        return {names[0]: lambda a, b: array[a:b]}
    return {name: (lambda a, b, j=j: array[a:b, j]) for j, name in enumerate(names)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- writing ----------------------------------------------------------------------------------------


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
        codec = None if self.stdout else _suffixes(self.path)[1]
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
        raise InputError(f"the output's column types changed between chunks ({_first_line(exc)}); "
                         "write to parquet or pin the column types") from None


def _open_sink(fmt: str, target: Any, schema: pa.Schema) -> Any:
    if fmt == "parquet":
        return _ArrowSink(pq.ParquetWriter(target, schema))
    if fmt == "jsonl":
        return _JsonlSink(target)
    if fmt == "npy":
        return _NpySink(target, schema)
    options = pacsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ",")
    return _ArrowSink(pacsv.CSVWriter(target, schema, write_options=options), closes=target)


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
