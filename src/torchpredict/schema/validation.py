"""Per-row checks of input values (per-row shape, lossless dtype, nulls) and the rows they reject.

`Schema.validate` runs these column by column. With on_error="raise" the first problem is a SchemaError
naming the column, the value and the row; with on_error="reject" every failing row is set aside with the
same wording as its reason, so that a batch job can go on. The checks are vectorised (pyarrow.compute
masks); Python loops run only over rejected rows, to word their reasons.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import SchemaError
from torchpredict.messages import shown
from torchpredict.schema.columns import DTYPES, Column
from torchpredict.schema.images import python_images
from torchpredict.schema.tables import as_table, is_record, kind_group, past_int64, value_kind

__all__ = ["DTYPES", "Leaves", "RowProblems", "RowReport", "cast_accepted", "check_column", "forward_reports",
           "free_name", "leaves", "read_input", "report_values"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)

RowReport = Callable[[np.ndarray, Callable[[np.ndarray], list[str]], Callable[[int], str]], None]
"""RowProblems.add's shape: (sorted failing rows, reasons(some_rows) wording each, message(row) the error naming
the first failing row by its input row number, which only RowProblems knows)."""


def forward_reports(check: Callable[[RowReport], None], report: RowReport, positions: np.ndarray) -> np.ndarray:
    """Run check on a selection of rows, passing what it reports on to report as the rows `positions` names
    (position i of the selection is row positions[i]); returns the mask of the selection's rows it reported."""
    flagged = np.zeros(len(positions), dtype=bool)

    def forward(rows: np.ndarray, reasons: Callable[[np.ndarray], list[str]], message: Callable[[int], str]) -> None:
        if len(rows):
            flagged[rows] = True
            report(positions[rows], lambda some: reasons(np.searchsorted(positions, some)), message)

    check(forward)
    return flagged


Leaves = tuple[pa.ChunkedArray, np.ndarray, np.ndarray]
"""A column's values len(shape) list levels down, the row each came from, and the rows holding a null list."""


class RowProblems:
    """Rows failing per-row checks: raise at the first problem, or collect every failing row with a reason.

    A row failing several checks keeps the reason of the first check that flagged it. first_row: the input
    row number of the checked table's first row, so that an error names the row of the file read in batches.
    """

    def __init__(self, *, collect: bool, first_row: int = 0) -> None:
        self.collect = collect
        self.first_row = first_row
        self._rows: list[np.ndarray] = []
        self._reasons: list[str] = []
        self._originals: dict[str, dict[int, Any]] = {}

    def add(self, rows: np.ndarray, reasons: Callable[[np.ndarray], list[str]],
            message: Callable[[int], str]) -> None:
        """rows: sorted row numbers failing one check; reasons(some_rows) words each; message(row) the error,
        given the input row number of rows[0]."""
        if not len(rows):
            return
        if not self.collect:
            raise SchemaError(message(int(rows[0]) + self.first_row))
        if self._rows:
            rows = rows[~np.isin(rows, np.concatenate(self._rows))]
        if len(rows):
            self._rows.append(rows)
            self._reasons += reasons(rows)

    @property
    def found(self) -> bool:
        """Whether some row failed a check already (with collect; without, the first one raised)."""
        return bool(self._rows)

    def keep_original(self, column: str, rows: np.ndarray, values: Sequence[Any]) -> None:
        """Input values of `column` that reading had to replace by nulls, to show them in the rejected rows."""
        self._originals.setdefault(column, {}).update((int(r), values[r]) for r in rows)

    def accepted(self, n_rows: int) -> np.ndarray:
        mask = np.ones(n_rows, dtype=bool)
        for rows in self._rows:
            mask[rows] = False
        return mask

    def rejected(self, table: pa.Table, names: Sequence[str], first_row: int) -> pa.Table | None:
        """Columns row (first_row-based), reason, then each input column's values as text; None when none."""
        if not self._rows:
            return None
        rows = np.concatenate(self._rows)
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        row_name, reason_name = free_name("row", names), free_name("reason", names)
        columns = {
            row_name: pa.array(rows + first_row, pa.int64()),
            reason_name: pa.array([self._reasons[i] for i in order], pa.string()),
        }
        for name in names:
            columns[name] = self._text(name, table.column(name).take(rows), rows)
        return pa.table(columns)

    def _text(self, name: str, values: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
        """The values as text (JSON text for non-strings); cells that reading had to null show the input value."""
        text = _as_text(values)
        originals = self._originals.get(name)
        if originals:
            at = np.isin(rows, list(originals))
            shown = [_json_text(originals[r]) for r in rows[at].tolist()]
            text = pc.replace_with_mask(text, pa.array(at), pa.array(shown, pa.string()))
        return text


def free_name(name: str, taken: Iterable[str]) -> str:
    """'row', or '_row' (then '__row' ...) when an input column already has that name."""
    taken = set(taken)
    while name in taken:
        name = "_" + name
    return name


def _as_text(values: pa.ChunkedArray) -> pa.Array:
    values = decoded(values).combine_chunks()
    t = values.type
    if pa.types.is_floating(t):  # JSON text, with the spelling Python's json gives non-finite numbers
        text = values.cast(pa.string())
        for spelled, mask in (("NaN", pc.is_nan(values)), ("Infinity", pc.equal(values, np.inf)),
                              ("-Infinity", pc.equal(values, -np.inf))):
            text = pc.if_else(mask, pa.scalar(spelled, pa.string()), text)
        return text
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):  # short bytes as text; an encoded image as its size
        return pa.array([None if v is None else v.decode("utf-8", "backslashreplace") if len(v) <= 64 else
                         f"<{len(v):,} bytes>" for v in values.to_pylist()], pa.string())
    if not pa.types.is_nested(t):
        try:
            return values.cast(pa.string())  # strings as they are; ints, bools, dates: their JSON-like text
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            pass
    return pa.array([_json_text(v) for v in values.to_pylist()], pa.string())  # lists, structs: few rows


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


# -- reading ---------------------------------------------------------------------------------------


def read_input(data: Any, columns: Sequence[Column], problems: RowProblems) -> pa.Table:
    """as_table, but a column of mixed Python values reports its odd rows to problems: rejected when collecting,
    else the first is the error, named by its input row (as_table's own error counts rows from 0)."""
    expected = {c.name: c.dtype for c in columns}
    images = [c.name for c in columns if c.dtype == "image"]
    if images:
        data, odd = python_images(data, images)
        for name, found in odd.items():
            found.sort()
            rows, why = np.asarray([r for r, _ in found]), [w for _, w in found]

            report_values(problems.add, name, rows, why)
    try:
        return as_table(data, expected=expected)
    except SchemaError:
        table = _read_mixed(data, {c.name: c for c in columns}, problems)
        if table is None:
            raise
        return table


def report_values(report: RowReport, name: str, rows: np.ndarray, why: list[str]) -> None:
    """Report rows (sorted) of column name, each with its reason (report: RowProblems.add, or a row check's)."""

    def reasons(some: np.ndarray) -> list[str]:
        return [f"column {shown(name)}: {why[i]}" for i in np.searchsorted(rows, some)]

    report(rows, reasons, lambda row: f"{reasons(rows[:1])[0]} at row {row}")


def _read_mixed(data: Any, columns: Mapping[str, Column], problems: RowProblems) -> pa.Table | None:
    python_columns = _python_columns(data)
    if python_columns is None:
        return None
    arrays = {}
    for name, values in python_columns.items():
        try:
            arrays[name] = as_table({name: values}).column(0)
        except SchemaError:
            listed = values.tolist() if hasattr(values, "tolist") else list(values)
            arrays[name] = _without_odd_values(name, listed, columns.get(name), problems)
    try:
        return pa.table(arrays) if all(a is not None for a in arrays.values()) else None
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _python_columns(data: Any) -> dict[str, Any] | None:
    if is_record(data):
        data = [data]
    if type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
        return {str(name): data[name] for name in data.columns}
    if isinstance(data, Mapping):
        return {str(name): values for name, values in data.items()}
    if isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
        names = [str(n) for n in dict.fromkeys(k for r in data for k in r)]
        return {n: [r.get(n) for r in data] for n in names}
    return None


def _without_odd_values(name: str, values: list[Any], column: Column | None, problems: RowProblems) -> pa.Array | None:
    """The column with values of the wrong kind nulled; their rows rejected with the as_table wording.

    A Python loop over the values, but only for a column Arrow could not read (reading them was one anyway).
    """
    if column is not None and column.shape:
        group = kind_group(column.dtype)
        odd = [_odd_leaf(v, group) for v in values]
    else:
        kinds = [value_kind(v) for v in values]
        first = next((k for k in kinds if k is not None), None)
        group = kind_group(column.dtype if column is not None else first)
        odd = [None if k is None or kind_group(k) == group else (v, k) for v, k in zip(values, kinds, strict=True)]
    odd = [(v, "an integer past 64 bits") if past_int64(v) else o for v, o in zip(values, odd, strict=True)]
    try:
        array = pa.array([v if o is None else None for v, o in zip(values, odd, strict=True)])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    wanted = f"expected {column.dtype}, got" if column is not None else f"mixed value types: {first} values, then"

    def reasons(rows: np.ndarray) -> list[str]:
        return [f"column {shown(name)}: {wanted} {shown(odd[r][0])} ({odd[r][1]})" for r in rows]

    rows = np.flatnonzero([o is not None for o in odd])
    problems.add(rows, reasons, lambda row: f"{reasons(rows[:1])[0]} at row {row}")
    problems.keep_original(name, rows, values)
    return array


def _odd_leaf(value: Any, group: str | None) -> tuple[Any, str] | None:
    """The first value in a (nested) list whose kind is not of `group`, with its kind."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return next((odd for odd in (_odd_leaf(v, group) for v in value) if odd is not None), None)
    kind = value_kind(value)
    return None if kind is None or kind_group(kind) == group else (value, kind)


# -- types -----------------------------------------------------------------------------------------


def dtype_name(t: pa.DataType) -> str | None:
    """The schema dtype an Arrow type maps to, or None when no schema dtype holds it."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_floating(t):
        return "float32" if t.bit_width <= 32 else "float64"
    if pa.types.is_integer(t):
        small = t.bit_width <= 32 if pa.types.is_signed_integer(t) else t.bit_width <= 16
        return "int32" if small else "int64"
    return None


def is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def show_type(t: pa.DataType) -> str:
    return dtype_name(t) or str(t)


def decoded(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def is_image_values(t: pa.DataType) -> bool:
    """What an image column may hold: encoded images (bytes) or file paths (strings)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t))


def image_values(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """An image column's accepted values as binary (bytes) or string (paths), as they came."""
    col = decoded(col)
    if pa.types.is_large_binary(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.binary() if pa.types.is_large_binary(col.type) else pa.string())
    if pa.types.is_null(col.type):
        return col.cast(pa.binary())
    return col


def target_type(column: Column) -> pa.DataType:
    t = DTYPES[column.dtype]
    for size in reversed(column.shape):
        t = pa.list_(t, size)
    return t


def as_mask(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow mask as numpy, nulls read as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(), dtype=bool)


def missing(values: pa.ChunkedArray) -> np.ndarray:
    """Where values are null or NaN."""
    return as_mask(pc.is_null(values, nan_is_null=True))


# -- checks ----------------------------------------------------------------------------------------

LevelCheck = Callable[[pa.ChunkedArray, np.ndarray, int], None]


def leaves(col: pa.ChunkedArray, shape: tuple[int, ...], check_level: LevelCheck | None = None) -> Leaves:
    """Values len(shape) list levels down, the row each came from, and the rows holding a null list.

    check_level(col, rows, size) runs at each level before it is flattened.
    """
    rows, null_rows = _positions(len(col)), [np.empty(0, dtype=np.int64)]
    for size in shape:
        if check_level is not None:
            check_level(col, rows, size)
        valid = as_mask(pc.is_valid(col))
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy()
        null_rows.append(rows[~valid])
        rows = np.repeat(rows[valid], lengths[valid])
        col = pc.list_flatten(col)
    return col, rows, np.concatenate(null_rows)


@functools.lru_cache(maxsize=4)
def _positions(n: int) -> np.ndarray:
    """0..n-1, read-only and shared: every column of a batch starts from the same row numbers."""
    positions = np.arange(n)
    positions.flags.writeable = False
    return positions


def cast_accepted(values: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """Values of the rows that passed validation as `target`. A column of a kind that cannot become it (a list
    where a number goes) holds only nulls once its bad rows are rejected: those nulls, typed."""
    try:
        return values.cast(target, safe=False)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        if values.null_count != len(values):
            raise
        return pa.chunked_array([pa.nulls(len(values), target)])


def check_column(column: Column, col: pa.ChunkedArray, problems: RowProblems) -> Leaves:
    """Per-row shape, dtype and (for non-nullable columns) nulls of one feature column; returns its leaves."""
    found = leaves(decoded(col), column.shape, _shape_check(column, problems))
    _check_dtype(column, found, problems)
    if column.dtype.startswith("float") and not column.infinite:
        _check_finite(column, found, problems)
    if not column.nullable:
        check_nulls(column.name, found, problems, "; the column is not nullable")
    return found


def _first_per_row(positions: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows owning `positions` (sorted, unique) and, for each, its first position."""
    owners, first = np.unique(rows[positions], return_index=True)
    return owners, positions[first]


def _shape_check(column: Column, problems: RowProblems) -> LevelCheck:
    name, shape = column.name, column.shape

    def check(col: pa.ChunkedArray, rows: np.ndarray, size: int) -> None:
        if not is_list(col.type):  # the whole column, not a row: always raised
            raise SchemaError(f"column {shown(name)}: expected per-row shape {shape}, got {show_type(col.type)}")
        lengths = pc.list_value_length(col)
        bad_rows, at = _first_per_row(np.flatnonzero(as_mask(pc.not_equal(lengths, size))), rows)

        def reasons(some: np.ndarray) -> list[str]:
            got = lengths.take(at[np.searchsorted(bad_rows, some)]).to_pylist()
            return [f"column {shown(name)}: expected per-row shape {shape}, got a list of {n}" for n in got]

        problems.add(bad_rows, reasons, lambda row: f"{reasons(bad_rows[:1])[0]} at row {row}")

    return check


def _check_dtype(column: Column, found: Leaves, problems: RowProblems) -> None:
    values, rows, _ = found
    bad = _bad_values(values, column.dtype)
    bad_rows, at = _first_per_row(np.flatnonzero(bad), rows)

    def reasons(some: np.ndarray) -> list[str]:
        got = values.take(at[np.searchsorted(bad_rows, some)]).to_pylist()
        kind = show_type(values.type)
        return [f"column {shown(column.name)}: expected {column.dtype}, got {shown(v)} ({kind})" for v in got]

    problems.add(bad_rows, reasons, lambda row: f"{reasons(bad_rows[:1])[0]} at row {row}")


def _check_finite(column: Column, found: Leaves, problems: RowProblems) -> None:
    """inf and -inf, where training had none, are bad values: a row holding one is refused like a null in a
    column that is not nullable (fitting a numeric step on them is an error too, so training rarely has them)."""
    values, rows, _ = found
    bad_rows, at = _first_per_row(np.flatnonzero(_infinite(values)), rows)

    def reasons(some: np.ndarray) -> list[str]:
        got = values.take(at[np.searchsorted(bad_rows, some)]).to_pylist()
        return [f"column {shown(column.name)}: expected a finite number, got {v!r}" for v in got]

    problems.add(bad_rows, reasons, lambda row: f"{reasons(bad_rows[:1])[0]} at row {row}")


def _infinite(values: pa.ChunkedArray) -> np.ndarray:
    """Where values are inf or -inf (values of another kind are wrong already: _check_dtype refused them)."""
    if pa.types.is_floating(values.type):
        return as_mask(pc.is_inf(values))
    return np.zeros(len(values), dtype=bool)


def _bad_values(values: pa.ChunkedArray, dtype: str) -> np.ndarray:
    """A mask of the values that cannot become `dtype` losslessly."""
    if dtype == "image":
        return np.zeros(len(values), dtype=bool) if is_image_values(values.type) or pa.types.is_null(
            values.type) else as_mask(pc.is_valid(values))
    source = dtype_name(values.type)
    target = DTYPES[dtype]
    if values.type == target or source == dtype == "string" or pa.types.is_null(values.type):
        return np.zeros(len(values), dtype=bool)
    numeric = source is not None and source not in ("bool", "string")
    if dtype.startswith("float") and numeric:
        if target == pa.float32() and values.type == pa.float64():
            x = pc.fill_null(values, 0.0).to_numpy()
            return np.isfinite(x) & (np.abs(x) > _FLOAT32_MAX)
        return np.zeros(len(values), dtype=bool)
    if dtype.startswith("int") and numeric:
        back = values.cast(target, safe=False).cast(values.type, safe=False)
        return as_mask(pc.not_equal(back, values)) & ~missing(values)
    return as_mask(pc.is_valid(values))  # incompatible kinds: every present value is wrong


def check_nulls(name: str, found: Leaves, problems: RowProblems, hint: str) -> None:
    """Rows with a null list, a null value or a NaN; hint ends the message (why it is wrong, the fix)."""
    values, rows, null_rows = found
    bad = np.union1d(null_rows, rows[missing(values)])
    where = f"column {shown(name)}"
    problems.add(
        bad,
        lambda some: [f"{where}: missing value (null or NaN){hint}"] * len(some),
        lambda row: f"{where}: {len(bad)} row(s) with missing values (null or NaN), first at row {row}{hint}",
    )
