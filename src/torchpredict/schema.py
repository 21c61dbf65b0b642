"""The input schema: what columns the model was trained on, checked once at the boundary.

Inference code downstream trusts typed tables, so every way in (records, pandas, Arrow, files) is
checked here for missing and unexpected columns, lossless dtypes, per-row shapes and nulls, with
messages that name the column, the row and the value. Training statistics flag out-of-range inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import SchemaError
from torchpredict.tables import as_table

_ROW = re.compile(r"\brow (\d+)")

__all__ = ["MAX_CATEGORIES", "Column", "ColumnStats", "Schema", "Validated"]

MAX_CATEGORIES = 1000  # more distinct strings than this: categories are not recorded (None)
_DTYPES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ColumnStats:
    """Training statistics of one column (over non-missing values; NaN counts as missing)."""

    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    missing_rate: float = 0.0
    categories: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["categories"] = None if self.categories is None else list(self.categories)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnStats:
        cats = d.get("categories")
        return cls(**{**d, "categories": None if cats is None else tuple(cats)})


@dataclass(frozen=True)
class Column:
    """One input column: dtype of its values, per-row shape ((), or (k,) for lists of length k)."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    nullable: bool = False
    role: str = "feature"
    stats: ColumnStats | None = None

    def to_dict(self) -> dict[str, Any]:
        stats = None if self.stats is None else self.stats.to_dict()
        return {**self.__dict__, "shape": list(self.shape), "stats": stats}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Column:
        stats = None if d.get("stats") is None else ColumnStats.from_dict(d["stats"])
        return cls(**{**d, "shape": tuple(d.get("shape", ())), "stats": stats})


@dataclass(frozen=True)
class Validated:
    """A checked table (features cast, in schema order, then passthrough/kept columns) and range counts."""

    table: pa.Table
    out_of_range: dict[str, int]


@dataclass(frozen=True)
class Schema:
    """The columns a model takes, with their training statistics.

    >>> s = Schema.from_table({"age": [31.0, 40.0], "id": ["a", "b"]}, features=["age"], passthrough=["id"])
    >>> s.validate({"age": [50.0], "id": ["c"]}).out_of_range
    {'age': 1}
    """

    columns: tuple[Column, ...]

    @property
    def features(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role == "feature")

    @property
    def passthrough(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role == "passthrough")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @classmethod
    def from_table(
        cls,
        table: Any,
        *,
        features: Sequence[str],
        passthrough: Sequence[str] = (),
        nullable: Iterable[str] = frozenset(),
    ) -> Schema:
        """Record dtypes, shapes and statistics of `features` (and `passthrough`) from training data."""
        table = as_table(table)
        _check_names(table, features, passthrough)
        nullable = frozenset(nullable)
        cols = [_feature_column(table.column(n), n, n in nullable) for n in features]
        cols += [_passthrough_column(table.column(n), n) for n in passthrough]
        return cls(tuple(cols))

    def validate(self, data: Any, *, keep: Sequence[str] = (), first_row: int = 0) -> Validated:
        """Check `data` against the schema and cast features losslessly; raises SchemaError.

        first_row: the input row number of data's first row, so that errors in a file read batch by
        batch name the row of the file.
        """
        try:
            return self._validate(data, keep)
        except SchemaError as exc:
            if not first_row:
                raise
            shifted = _ROW.sub(lambda m: f"row {int(m.group(1)) + first_row}", str(exc))
            raise SchemaError(shifted) from None

    def _validate(self, data: Any, keep: Sequence[str]) -> Validated:
        table = as_table(data, expected={c.name: c.dtype for c in self.features})
        self._check_columns(table, keep)
        out_of_range: dict[str, int] = {}
        arrays, names = [], []
        for col in self.features:
            arr, outside = _validate_column(col, table.column(col.name))
            arrays.append(arr)
            names.append(col.name)
            if outside:
                out_of_range[col.name] = outside
        extra = [c.name for c in self.passthrough if c.name in table.column_names]
        extra += [k for k in dict.fromkeys(keep) if k not in extra and k not in names]
        arrays += [table.column(n) for n in extra]
        return Validated(pa.Table.from_arrays(arrays, names=names + extra), out_of_range)

    def _check_columns(self, table: pa.Table, keep: Sequence[str]) -> None:
        present = table.column_names
        dupes = sorted({n for n in present if present.count(n) > 1})
        if dupes:
            raise SchemaError(f"duplicate column(s) {_quoted(dupes)} in the input")
        problems = []
        missing = [c.name for c in self.features if c.name not in present]
        if missing:
            problems.append(f"missing column(s) {_quoted(missing)}")
        absent = [k for k in keep if k not in present]
        if absent:
            problems.append(f"keep column(s) {_quoted(absent)} not in the input")
        unexpected = [n for n in present if n not in self.names and n not in keep]
        if unexpected:
            problems.append(
                f"unexpected column(s) {_quoted(unexpected)}; pass keep=[...] (CLI --keep) "
                "to copy them to the output, or drop them"
            )
        if problems:
            raise SchemaError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Schema:
        return cls(tuple(Column.from_dict(c) for c in d["columns"]))


# -- types and statistics --------------------------------------------------------------------------


def _dtype_name(t: pa.DataType) -> str | None:
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


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _show_type(t: pa.DataType) -> str:
    return _dtype_name(t) or str(t)


def _decoded(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _np(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow mask as numpy, nulls read as False."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(), dtype=bool)


def _leaves(
    col: pa.ChunkedArray, shape: tuple[int, ...], name: str = ""
) -> tuple[pa.ChunkedArray, np.ndarray, np.ndarray]:
    """Values len(shape) list levels down, the row each came from, and the rows holding a null list.

    With a `name`, every list must hold exactly `shape[level]` values (SchemaError naming the row).
    """
    rows, null_rows = np.arange(len(col)), [np.empty(0, dtype=np.int64)]
    for size in shape:
        if name:
            _check_level(col, rows, size, shape, name)
        valid = _np(pc.is_valid(col))
        lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy()
        null_rows.append(rows[~valid])
        rows = np.repeat(rows[valid], lengths[valid])
        col = pc.list_flatten(col)
    return col, rows, np.concatenate(null_rows)


def _check_level(
    col: pa.ChunkedArray, rows: np.ndarray, size: int, shape: tuple[int, ...], name: str
) -> None:
    if not _is_list(col.type):
        raise SchemaError(f"column {name!r}: expected per-row shape {shape}, got {_show_type(col.type)}")
    lengths = pc.list_value_length(col)
    bad = np.flatnonzero(_np(pc.not_equal(lengths, size)))
    if len(bad):
        raise SchemaError(
            f"column {name!r}: expected per-row shape {shape}, got a list of "
            f"{lengths[int(bad[0])].as_py()} at row {int(rows[bad[0]])}"
        )


def _infer_shape(col: pa.ChunkedArray, name: str) -> tuple[int, ...]:
    shape: list[int] = []
    while _is_list(col.type):
        lengths = np.unique(pc.drop_null(pc.list_value_length(col)).to_numpy(zero_copy_only=False))
        if len(lengths) != 1:
            raise SchemaError(
                f"column {name!r}: cannot infer a fixed per-row shape (list lengths seen: "
                f"{lengths[:5].tolist()})"
            )
        shape.append(int(lengths[0]))
        col = pc.list_flatten(col)
    return tuple(shape)


def _missing(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.is_null(values, nan_is_null=True)


def _stats(values: pa.ChunkedArray, dtype: str) -> ColumnStats:
    n_missing = pc.sum(_missing(values)).as_py() or 0
    missing_rate = n_missing / len(values) if len(values) else 0.0
    if dtype == "string":
        cats = pc.unique(pc.drop_null(_decoded(values).cast(pa.string()))).to_pylist()
        return ColumnStats(missing_rate=missing_rate, categories=_capped(sorted(cats)))
    x = pc.fill_null(values.cast(pa.float64()), np.nan).to_numpy()
    x = x[np.isfinite(x)]
    if not len(x):
        return ColumnStats(missing_rate=missing_rate)
    return ColumnStats(float(x.min()), float(x.max()), float(x.mean()), float(x.std()), missing_rate)


def _capped(categories: list[str]) -> tuple[str, ...] | None:
    return tuple(categories) if len(categories) <= MAX_CATEGORIES else None


def _check_names(table: pa.Table, features: Sequence[str], passthrough: Sequence[str]) -> None:
    missing = [n for n in [*features, *passthrough] if n not in table.column_names]
    if missing:
        raise SchemaError(f"missing column(s) {_quoted(missing)} in the training data")
    both = [n for n in features if n in passthrough]
    if both:
        raise SchemaError(f"column(s) {_quoted(both)} cannot be both features and passthrough")


def _feature_column(col: pa.ChunkedArray, name: str, nullable: bool) -> Column:
    col = _decoded(col)
    shape = _infer_shape(col, name)
    values, rows, null_rows = _leaves(col, shape)
    dtype = _dtype_name(values.type)
    if dtype is None:
        raise SchemaError(
            f"column {name!r}: type {values.type} is not supported for features; supported: "
            f"{', '.join(_DTYPES)} (or fixed-length lists of them)"
        )
    column = Column(name, dtype, shape, nullable, "feature", _stats(values, dtype))
    if not nullable:
        _check_nulls(column, values, rows, null_rows, " in the training data; list it in nullable=[...]")
    return column


def _passthrough_column(col: pa.ChunkedArray, name: str) -> Column:
    return Column(name, _show_type(col.type), (), col.null_count > 0, "passthrough", None)


# -- validation ------------------------------------------------------------------------------------


def _validate_column(column: Column, col: pa.ChunkedArray) -> tuple[pa.ChunkedArray, int]:
    col = _decoded(col)
    values, rows, null_rows = _leaves(col, column.shape, column.name)
    _check_dtype(column, values, rows)
    if not column.nullable:
        _check_nulls(column, values, rows, null_rows, "; the column is not nullable")
    outside = _count_out_of_range(column, values.cast(_DTYPES[column.dtype], safe=False))
    return col.cast(_target_type(column), safe=False), outside


def _target_type(column: Column) -> pa.DataType:
    t = _DTYPES[column.dtype]
    for size in reversed(column.shape):
        t = pa.list_(t, size)
    return t


def _check_dtype(column: Column, values: pa.ChunkedArray, rows: np.ndarray) -> None:
    bad = np.flatnonzero(_bad_values(values, column.dtype))
    if len(bad):
        idx = int(bad[0])
        raise SchemaError(
            f"column {column.name!r}: expected {column.dtype}, got {values[idx].as_py()!r} "
            f"({_show_type(values.type)}) at row {int(rows[idx])}"
        )


def _bad_values(values: pa.ChunkedArray, dtype: str) -> np.ndarray:
    """A mask of the values that cannot become `dtype` losslessly."""
    source = _dtype_name(values.type)
    target = _DTYPES[dtype]
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
        return _np(pc.not_equal(back, values)) & ~_np(_missing(values))
    return _np(pc.is_valid(values))  # incompatible kinds: every present value is wrong


def _check_nulls(
    column: Column, values: pa.ChunkedArray, rows: np.ndarray, null_rows: np.ndarray, hint: str
) -> None:
    bad = np.union1d(null_rows, rows[_np(_missing(values))])
    if len(bad):
        raise SchemaError(
            f"column {column.name!r}: {len(bad)} row(s) with missing values (null or NaN), "
            f"first at row {int(bad[0])}{hint}"
        )


def _count_out_of_range(column: Column, values: pa.ChunkedArray) -> int:
    stats = column.stats
    if stats is None:
        return 0
    if column.dtype == "string":
        if stats.categories is None:
            return 0
        unseen = pc.is_null(pc.index_in(values, value_set=pa.array(stats.categories, pa.string())))
        return pc.sum(pc.and_(unseen, pc.is_valid(values))).as_py() or 0
    if stats.min is None or stats.max is None:
        return 0
    x = pc.fill_null(values.cast(pa.float64()), np.nan).to_numpy()
    with np.errstate(invalid="ignore"):
        return int(np.count_nonzero((x < stats.min) | (x > stats.max)))


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)
