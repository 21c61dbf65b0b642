"""Read input files in chunks of rows, in file order, so files of any size stream in bounded memory.

CSV and JSONL come in blocks of whole lines parsed by pyarrow's multi-threaded readers, Parquet by batches,
.npy memory-mapped; compressed inputs are recognised by their first bytes; '-' reads stdin.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from torchpredict.errors import InputError, SchemaError, TorchPredictError
from torchpredict.io.formats import STDIO, detect_format, image_files
from torchpredict.messages import described, first_line

__all__ = ["DEFAULT_BATCH_ROWS", "DEFAULT_BLOCK_BYTES", "MAX_LINE_BYTES", "Chunk", "read_chunks",
           "read_table"]

DEFAULT_BATCH_ROWS = 65536
IMAGE_BATCH_ROWS = 64  # image files per chunk unless batch_rows says (64 RGB images of 224x224: 38 MB decoded)
DEFAULT_BLOCK_BYTES = 8 << 20  # CSV/JSONL text parsed per chunk (multi-threaded inside pyarrow)
MAX_JSONL_DEPTH = 1_000  # nesting a JSONL block may have before Arrow's recursive parser is not trusted with it
_DEPTH_SEGMENT = 4096  # bytes per segment of the depth bound
MAX_LINE_BYTES = 64 << 20  # the longest CSV/JSONL line (or quoted CSV value) read; the buffer never grows past it
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4",
          **{b"BZh" + bytes([level]): "bz2" for level in b"123456789"}}


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
    the column names of a plain 2-D .npy array, or those a folder or glob of images fills with each file's path.
    CSV and JSONL come in chunks of about block_bytes of
    text, Parquet and .npy in chunks of batch_rows rows. threads: parse with pyarrow's thread pool.
    """
    if batch_rows < 1:
        raise InputError(f"batch_rows must be >= 1, got {batch_rows}")
    fmt = detect_format(path, format)
    types = dict(column_types or {})
    if fmt == "images":
        yield from _image_chunks(str(path), names, IMAGE_BATCH_ROWS if batch_rows == DEFAULT_BATCH_ROWS else batch_rows)
        return
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
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError, ValueError, EOFError) as exc:  # EOFError: an empty .npy
            if isinstance(exc, TorchPredictError):
                raise
            raise InputError(f"file '{source.name}': cannot read it as {fmt}: {first_line(exc)}") from None


def _image_chunks(source: str, names: Sequence[str] | None, batch_rows: int) -> Iterator[Chunk]:
    """A folder or glob of images as rows of file paths, under each of names (default: one column, "path");
    the images are decoded by the image step that reads the column."""
    files = image_files(source)
    if not files:
        raise InputError(f"'{source}' holds no images")
    columns = list(dict.fromkeys(names or ["path"]))
    for start in range(0, len(files), batch_rows):
        paths = pa.array(files[start:start + batch_rows], pa.string())
        yield Chunk(pa.table([paths] * len(columns), names=columns), len(paths), start,
                    min(1.0, (start + len(paths)) / len(files)))


def read_table(path: str | Path, *, format: str | None = None,
               column_types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """Read a whole file into one Arrow table."""
    from torchpredict.schema.tables import as_table

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


def _line_blocks(source: _Input, block_bytes: int, quoted: bool, where: Callable[[], str]) -> Iterator[memoryview]:
    """About block_bytes of whole lines at a time (never cutting a quoted value that spans lines).

    The blocks are views of one reused buffer: each is valid until the next one is asked for. A line
    longer than MAX_LINE_BYTES (or block_bytes, if larger) is an InputError naming where() it starts.
    """
    buffer = bytearray(block_bytes)
    limit = max(MAX_LINE_BYTES, block_bytes)
    filled = 0
    while True:
        if filled == len(buffer):  # one line longer than the buffer: make room, up to the limit
            if filled >= limit:
                raise _too_long(buffer, source.name, where(), quoted)
            buffer = buffer + bytearray(min(len(buffer), limit - len(buffer)))
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


def _too_long(buffer: bytearray, name: str, where: str, quoted: bool) -> InputError:
    """The error for a line past the limit, with the likely cause."""
    limit = max(MAX_LINE_BYTES, len(buffer))
    size = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit:,} bytes"
    if quoted and b"\n" in buffer:
        return InputError(f"file '{name}': a quoted value in {where} runs on past {size} (the limit); "
                          "is a closing quote missing?")
    if b"\r" in buffer and b"\n" not in buffer:
        return InputError(f"file '{name}': {where} runs on past {size} (the limit) without a \\n; its lines "
                          "seem to end in \\r alone (old Mac style): convert them to \\n, e.g. tr '\\r' '\\n'")
    return InputError(f"file '{name}': {where} runs on past {size} (the limit) without a line break; "
                      "is it a text file of lines?")


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

    def position() -> str:
        return f"row {first_row}" if names is not None else "the header"

    for block in _line_blocks(source, block_bytes, quoted=True, where=position):
        try:
            table, parse = _parse_csv(block, names, types, parse, threads)
        except pa.ArrowInvalid as exc:
            where = f" (at or after row {first_row})" if first_row else ""
            raise InputError(f"file '{source.name}': cannot read it as csv: {first_line(exc)}{where}") from None
        if names is None:
            names = _unique(table.column_names, source.name)
        data = _typed_csv(table, types)
        yield Chunk(data, table.num_rows, first_row, source.done())
        first_row += table.num_rows


def _unique(names: list[str], origin: str) -> list[str]:
    """The header's column names, refused when one appears twice (else the last copy would win)."""
    dupes = sorted(name for name, count in Counter(names).items() if count > 1)
    if dupes:
        raise SchemaError(f"file '{origin}': duplicate column(s) {', '.join(map(repr, dupes))} in the header")
    return names


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

    def position() -> str:
        return f"line {line}"

    for block in _line_blocks(source, block_bytes, quoted=False, where=position):
        newlines = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
        try:
            if _may_nest_deeply(block, newlines):  # Arrow's parser recurses per level: 30,000 crash the process
                raise pa.ArrowInvalid("nested deeply")
            if not _objects_only(block, newlines):  # a first line of `null` crashes pyarrow 26's reader (SIGSEGV)
                raise pa.ArrowInvalid("a line that is not a JSON object")
            table = pajson.read_json(pa.BufferReader(block), read_options=options)
            data: pa.Table | list[dict] = _strings_where_wanted(table, types)
            rows = table.num_rows
        except pa.ArrowInvalid as exc:
            if "Empty JSON" in str(exc):
                data, rows = [], 0
            else:  # values Arrow cannot type consistently (or deep): the schema names the odd value and its row
                data = _records(bytes(block), source.name, line)
                rows = len(data)
        if rows:
            yield Chunk(data, rows, first_row, source.done())
        first_row += rows
        line += len(newlines)


def _objects_only(block: memoryview, newlines: np.ndarray) -> bool:
    """Whether every line of the block is blank or starts (after blanks) with '{': what Arrow's JSON reader may be
    given. Decided from each line's first byte, and only lines starting otherwise are looked at in full."""
    data = np.frombuffer(block, dtype=np.uint8)
    starts = np.concatenate(([0], newlines + 1))
    starts = starts[starts < len(data)]
    odd = starts[data[starts] != ord("{")]
    if not len(odd):
        return True
    ends = np.concatenate((newlines, [len(data)]))
    for start in odd.tolist():
        stop = int(ends[np.searchsorted(ends, start)])
        line = bytes(block[start:stop]).strip()
        if line and not line.startswith(b"{"):
            return False
    return True


def _may_nest_deeply(block: memoryview, newlines: np.ndarray) -> bool:
    """Whether the block's JSON could nest more than MAX_JSONL_DEPTH levels: an upper bound.

    A level takes a byte, so a block of short lines cannot (the usual case, decided from the line ends
    already found). Otherwise the depth anywhere in a segment is at most the net opening brackets before
    it plus the openings inside it; quoted brackets only raise the bound (the block then takes the Python
    parser, which refuses real depth with a clear error), so a block passing here cannot crash Arrow's.
    """
    if np.diff(newlines, prepend=-1, append=len(block)).max() <= MAX_JSONL_DEPTH:
        return False
    data = np.frombuffer(block, dtype=np.uint8)
    size = -len(data) % _DEPTH_SEGMENT
    data = np.concatenate([data, np.zeros(size, np.uint8)]) if size else data
    segments = data.reshape(-1, _DEPTH_SEGMENT)
    opens = np.count_nonzero((segments == 91) | (segments == 123), axis=1)  # [ {
    if opens.max(initial=0) <= MAX_JSONL_DEPTH and opens.sum() <= MAX_JSONL_DEPTH:
        return False
    closes = np.count_nonzero((segments == 93) | (segments == 125), axis=1)  # ] }
    before = np.concatenate([[0], np.cumsum(opens - closes)[:-1]])
    return bool((before + opens).max() > MAX_JSONL_DEPTH)


def _strings_where_wanted(table: pa.Table, types: Mapping[str, pa.DataType]) -> pa.Table:
    """JSON numbers in columns pinned to strings (zip codes written as numbers) become their text."""
    for name, wanted in types.items():
        if name in table.column_names and pa.types.is_string(wanted) and table.schema.field(name).type != wanted:
            index = table.column_names.index(name)
            table = table.set_column(index, name, table.column(name).cast(wanted))
    return table


def _records(block: bytes, name: str, first_line: int) -> list[dict]:
    """The block's rows as Python objects, where Arrow cannot read them (odd values, duplicate keys)."""
    records = []
    for number, text in enumerate(block.decode("utf-8").split("\n"), start=first_line):
        if not text.strip():
            continue
        try:
            record = _JSON.decode(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"file '{name}': line {number} is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise InputError(f"file '{name}': line {number} nests arrays or objects too deeply to read") from None
        except _DuplicateKeys as exc:
            raise SchemaError(f"file '{name}': duplicate key(s) {exc} in the object on line {number}") from None
        if not isinstance(record, dict):
            raise InputError(f"file '{name}': line {number} is {described(record)}, not an object; each line of a "
                             "JSONL file is one row, as an object of column values")
        records.append(record)
    return records


class _DuplicateKeys(Exception):
    """A JSON object names a key twice (json.loads would keep the last copy silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):
        raise _DuplicateKeys(", ".join(repr(k) for k, n in Counter(k for k, _ in pairs).items() if n > 1))
    return record


_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys)  # as fast as json.loads (measured), and strict


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
        return {name: partial(_field_rows, array, name) for name in array.dtype.names}
    width = 1 if array.ndim == 1 else array.shape[1] if array.ndim == 2 else None
    if names is None or width is None or width != len(names):
        wanted = "a structured array" if names is None else f"{len(names)} column(s) ({', '.join(names)})"
        raise InputError(f"file '{origin}': a .npy array of shape {array.shape} does not give {wanted}; "
                         "save a 2-D array with one column per model feature, in schema order, or a structured "
                         "array with one field per column")
    if array.ndim == 1:
        return {names[0]: lambda a, b: array[a:b]}
    return {name: partial(_column_rows, array, j) for j, name in enumerate(names)}


def _field_rows(array: np.ndarray, name: str, start: int, stop: int) -> np.ndarray:
    return array[name][start:stop]


def _column_rows(array: np.ndarray, j: int, start: int, stop: int) -> np.ndarray:
    return array[start:stop, j]
