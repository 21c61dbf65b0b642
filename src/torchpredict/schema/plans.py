"""The fast path of validation: what depends only on the schema worked out once, every check of a call at once.

`Schema.validate` checks column by column (per-row shape, lossless dtype, nulls, infinities, then drift), with
a few pyarrow calls per column: about 50 µs a column whatever the row count. A ValidationPlan, built once per
schema (`Schema.plan`), checks a whole table in a handful of calls instead: the float columns as one 2-D numpy
block (NaN, infinities and the training range of all of them in one comparison each), the string columns by
their null counts and the training categories. It only answers for inputs that pass every per-row check: where
a row may fail one (or a column has a type that needs a cast), it answers None and the column-by-column path
runs, which words the errors and the rejected rows; so both give the same outputs and the same errors.

`read` is the fast path of reading: a few records (a dict, or a list of up to SMALL dicts) whose values are plain
Python floats, ints, strings and booleans, read as Arrow reads them (one struct array, not a column at a time).

`small` goes further for such records, and for a dict of a few rows' columns (float64 arrays or lists of floats,
lists of strings: what the OIP codec gives), when the caller can take them so (the Predictor, when its
preprocessing has a fast path too): no Arrow table at all. The float features are read straight into their block,
the string ones kept as lists and checked against the training categories in Python, the passthrough and kept
columns read into their Arrow arrays as the table would hold them; the table itself is built only if something
asks for it (`SmallRows.build`: from a copy of the input, read and typed as the paths above do). Anything it does
not take (a value of another type, an unseen category, a column problem) answers None, and the paths above run on
the input as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from torchpredict.errors import SchemaError
from torchpredict.schema.columns import Column
from torchpredict.schema.drift import ColumnDrift, DriftReport, column_drift
from torchpredict.schema.tables import as_table
from torchpredict.schema.validation import RowProblems, forward_reports, leaves, target_type

__all__ = ["ENABLED", "SMALL", "SmallRows", "ValidationPlan"]

ENABLED = True  # False: every call takes the column-by-column path (the property tests compare the two)
SMALL = 64  # rows up to which strings are looked up in Python sets, and records read as one struct array
_FLOATS = (pa.float64(), pa.float32())
_PYTHON_TYPES = {float: pa.float64(), int: pa.int64(), str: pa.string(), bool: pa.bool_()}
_LAYOUTS = 16  # input layouts (column names, types, keep) remembered per schema
_COLUMN_TYPES = (np.ndarray, list)  # a dict whose values are these is columns (else, perhaps a record)
_DTYPE = attrgetter("dtype")
_STR, _FLOAT, _FLOAT64 = {str}, {float}, {np.dtype(np.float64)}
_COLUMNS, _LIST, _ARRAY = set(_COLUMN_TYPES), {list}, {np.ndarray}

RowCheck = Callable[[pa.Table, Any], pa.Table | None]
Accepts = Callable[[Mapping[str, list[str]]], bool]  # whether a RowCheck refuses none of the rows of these strings


@dataclass(frozen=True, eq=False)
class SmallRows:
    """A few rows in the form the stages after validation read them (ValidationPlan.small; validated without an
    Arrow table, or a small table's strings as lists), and how to build the table the other paths would have made,
    for whatever reads more."""

    n_rows: int
    names: tuple[str, ...]  # the validated table's columns: the features, then passthrough and kept ones
    strings: dict[str, list[str]]  # the string features' values
    kept: dict[str, pa.Array]  # the passthrough and kept columns, as the table holds them
    build: Callable[[], pa.Table]  # the validated table


class _Block:
    """Feature columns of one float type, checked and counted as one [rows, columns] array."""

    def __init__(self, columns: Sequence[Column], positions: Sequence[int]) -> None:
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in columns)
        self.positions = list(positions)  # where each column is among the features
        self.strict = np.array([not c.nullable and not c.infinite for c in columns])  # neither NaN nor inf
        self.no_missing = np.array([not c.nullable for c in columns])
        self.finite = np.array([not c.infinite for c in columns])
        bounds = [(c.stats.min, c.stats.max) if c.stats is not None and c.stats.min is not None
                  and c.stats.max is not None else None for c in columns]
        self.ranged = np.flatnonzero([b is not None for b in bounds])
        self.all_strict, self.all_ranged = bool(self.strict.all()), len(self.ranged) == len(self.columns)
        self.low = np.array([b[0] for b in bounds if b is not None], dtype=np.float64)
        self.high = np.array([b[1] for b in bounds if b is not None], dtype=np.float64)
        self.nulls_counted = np.flatnonzero([c.nullable and c.stats is not None and c.stats.missing_rate == 0
                                             for c in columns])

    def check(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The block as a [rows, columns] array (nulls as NaN) and, per column, the rows out of the training range
        and with unexpected nulls; None when a row fails a check (a NaN or null where the column takes none, an
        infinity where training had none)."""
        block = table.select(self.positions)
        batches = block.to_batches()
        if len(batches) != 1:
            batches = block.combine_chunks().to_batches()
        return self.check_array(np.asarray(batches[0].to_tensor(null_to_nan=True, row_major=True)))

    def check_array(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """check, of the block already read as a [rows, columns] array."""
        if self.all_strict:
            if not np.isfinite(x).all():
                return None
        else:
            if np.isnan(x[:, self.no_missing]).any() or np.isinf(x[:, self.finite]).any():
                return None
        out_of_range = np.zeros(len(self.columns), dtype=np.int64)
        if len(self.ranged):
            ranged = x if self.all_ranged else x[:, self.ranged]
            if self.all_strict:  # no NaN: nothing for a comparison to warn about (errstate costs ~1 us a call)
                outside = (ranged < self.low) | (ranged > self.high)
            else:
                with np.errstate(invalid="ignore"):
                    outside = (ranged < self.low) | (ranged > self.high)
            if outside.any():
                out_of_range[self.ranged] = np.count_nonzero(outside, axis=0)
        nulls = np.zeros(len(self.columns), dtype=np.int64)
        if len(self.nulls_counted):
            nulls[self.nulls_counted] = np.count_nonzero(np.isnan(x[:, self.nulls_counted]), axis=0)
        return x, out_of_range, nulls


class _Layout:
    """How one input layout (its column names and types, and keep) is validated."""

    def __init__(self, schema: pa.Schema, keep: tuple[str, ...], names: list[str], fast: bool,
                 features: Sequence[Column]) -> None:
        self.schema, self.keep, self.names, self.fast = schema, keep, names, fast
        index = {name: i for i, name in enumerate(schema.names)}
        self.positions = [index[n] for n in names]
        self.identity = self.positions == list(range(len(schema.names)))
        # a table as Table.from_arrays names it: no metadata, every field nullable
        self.plain = schema.metadata is None and all(f.nullable and f.metadata is None for f in schema)
        self.blocks: list[_Block] = []
        self.block_features: list[np.ndarray] = []  # where each block's columns are among the features
        floats: set[int] = set()
        if fast:
            for t in _FLOATS:
                chosen = [j for j, c in enumerate(features) if target_type(c) == t]
                if chosen:
                    self.blocks.append(_Block([features[j] for j in chosen], [self.positions[j] for j in chosen]))
                    self.block_features.append(np.array(chosen, dtype=np.intp))
                    floats.update(chosen)
        self.strings = [(j, self.positions[j], c) for j, c in enumerate(features) if j not in floats]


class _SmallLayout:
    """How the small path reads rows of one input layout (records of one set of keys and value types, or columns
    of one set of names; and keep): its float blocks' columns, its string features, its passthrough and kept
    columns (with the Arrow types records of them read as, for records)."""

    def __init__(self, layout: _Layout, n_features: int, struct: pa.DataType | None = None) -> None:
        self.layout = layout
        self.block_names = [block.names for block in layout.blocks]
        self.getters = [itemgetter(*names) for names in self.block_names]  # a record's values of each block
        self.string_names = [column.name for _, _, column in layout.strings]
        self.kept_names = layout.names[n_features:]
        types = {} if struct is None else {field.name: field.type for field in struct}
        self.kept_types = [types.get(name) for name in self.kept_names]


class ValidationPlan:
    """Schema.validate's fast path for one schema (see the module docstring)."""

    def __init__(self, features: Sequence[Column], passthrough: Sequence[Column],
                 check_columns: Callable[[pa.Table, Sequence[str]], None]) -> None:
        self.features = tuple(features)
        self.feature_names = [c.name for c in features]
        self.names = tuple(self.feature_names)
        self.passthrough = [c.name for c in passthrough]
        self.check_columns = check_columns
        # the fast path takes scalar float and string features (the others take the column-by-column path)
        self.supported = all(not c.shape and c.dtype in ("float64", "float32", "string") for c in features)
        self.categories = {c.name: frozenset(c.stats.categories) for c in features
                           if c.dtype == "string" and c.stats is not None and c.stats.categories is not None}
        self.layouts: dict[tuple[tuple[str, ...], tuple[str, ...]], list[_Layout]] = {}
        self.struct_types: dict[tuple[Any, ...], pa.DataType] = {}
        self.record_layouts: dict[tuple[Any, ...], _SmallLayout | None] = {}  # by input layout
        self.expected = {c.name: c.dtype for c in features}  # as_table's types, as Schema.validate reads an input

    # -- reading ---------------------------------------------------------------------------------------

    def read(self, data: Any, problems: RowProblems) -> pa.Table | None:
        """Records of plain values (a dict, or a list of dicts with the same keys and value types) as the Arrow
        table as_table makes of them; None for any other input (as_table reads it)."""
        if not ENABLED or problems.found:
            return None
        found = self._records(data)
        if found is None:
            return None
        records, struct, _ = found
        try:
            return pa.Table.from_struct_array(pa.array(records, struct))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None

    def _records(self, data: Any) -> tuple[list[dict[str, Any]], pa.DataType, tuple[Any, ...]] | None:
        """data as a list of up to SMALL records of the same keys and plain value types, the struct type Arrow
        reads them as and (keys, value types) (a DataType hashes slowly); None for any other input."""
        if isinstance(data, dict):
            records = [data]
        elif isinstance(data, list) and 0 < len(data) <= SMALL and type(data[0]) is dict:  # more: Arrow reads faster
            records = data
        else:
            return None
        first = records[0]
        key = (tuple(first), tuple(map(type, first.values())))
        struct = self._struct(records, *key)
        if struct is None:
            return None
        return records, struct, key

    def _struct(self, records: list[dict[str, Any]], keys: tuple[Any, ...], kinds: tuple[type, ...]
                ) -> pa.DataType | None:
        struct = self.struct_types.get((keys, kinds))
        if struct is None:
            types = [_PYTHON_TYPES.get(kind) for kind in kinds]
            if not keys or None in types or not all(type(k) is str for k in keys):
                return None
            struct = pa.struct([pa.field(k, t) for k, t in zip(keys, types, strict=True)])
            if len(self.struct_types) < _LAYOUTS:
                self.struct_types[(keys, kinds)] = struct
        for record in records[1:] if len(records) > 1 else ():
            if type(record) is not dict or tuple(record) != keys or tuple(map(type, record.values())) != kinds:
                return None
        return struct

    # -- the small path --------------------------------------------------------------------------------

    def small(self, data: Any, keep: tuple[str, ...], row_check: RowCheck | None, accepts: Accepts
              ) -> tuple[SmallRows, DriftReport, dict[tuple[str, ...], np.ndarray]] | None:
        """A few rows validated without an Arrow table (see the module docstring): records, or a dict of columns
        (1-D numpy arrays and lists); the rows, their drift and their float blocks, or None where this path does
        not take them (the others then run). accepts tells whether row_check refuses none of the rows, from their
        string features. Raises what the other paths raise for the columns (missing, unexpected), which it checks
        as they do."""
        if not ENABLED or not self.supported:
            return None
        if type(data) is dict and data and type(next(iter(data.values()))) in _COLUMN_TYPES:
            return self._small_columns(data, keep, row_check, accepts)
        found = self._records(data)
        if found is None:
            return None
        records, struct, kinds = found
        shape = self._record_layout(records, struct, (*kinds, keep))
        if shape is None:
            return None
        n = len(records)
        blocks = [np.array([values(r) for r in records], dtype=np.float64).reshape(n, -1) for values in shape.getters]
        strings = {name: [r[name] for r in records] for name in shape.string_names}
        frozen = [dict(r) for r in records]  # plain values: what the table is built from, whatever happens to data

        def kept() -> dict[str, pa.Array]:
            return {name: pa.array([r[name] for r in records], t)
                    for name, t in zip(shape.kept_names, shape.kept_types, strict=True)}

        def build() -> pa.Table:
            return self._typed(pa.Table.from_struct_array(pa.array(frozen, struct)), shape.layout)

        return self._small_rows(shape.layout, n, blocks, strings, kept, build, row_check, accepts)

    def _small_columns(self, data: dict[str, Any], keep: tuple[str, ...], row_check: RowCheck | None,
                       accepts: Accepts) -> tuple[SmallRows, DriftReport, dict[tuple[str, ...], np.ndarray]] | None:
        """small, of a dict of a few rows' columns: each float feature a 1-D float64 array, each string one a list
        of strings, the others anything as_table reads."""
        values = list(data.values())
        if not set(map(type, values)) <= _COLUMNS:
            return None
        n = len(values[0])
        if not 0 < n <= SMALL:
            return None
        key = ("columns", tuple(data), keep)
        shape = self.record_layouts[key] if key in self.record_layouts else self._column_layout(data, key)
        if shape is None:
            return None
        blocks = []
        for names in shape.block_names:
            arrays = [data[name] for name in names]
            kinds = set(map(type, arrays))
            if (set(map(type, chain.from_iterable(arrays))) != _FLOAT) if kinds == _LIST else \
                    (kinds != _ARRAY or set(map(_DTYPE, arrays)) != _FLOAT64):
                return None  # floats only: lists of Python floats, or float64 arrays
            try:
                x = np.stack(arrays, axis=1).astype(np.float64, copy=False)  # a copy: whatever happens to data
            except ValueError:  # of other lengths or dimensions
                return None
            if x.shape != (n, len(names)):
                return None
            blocks.append(x)
        strings = {name: list(data[name]) for name in shape.string_names}
        if strings and (set(map(len, strings.values())) != {n} or
                        set(map(type, chain.from_iterable(strings.values()))) != _STR):
            return None
        others = {name: data[name].copy() if type(data[name]) is np.ndarray else list(data[name])
                  for name in shape.kept_names}
        if any(len(v) != n for v in others.values()):
            return None  # the other paths say the columns disagree
        try:
            kept_arrays = {name: column.combine_chunks() for name, column in
                           zip(others, as_table(others, expected=self.expected).columns, strict=True)} if others else {}
        except (SchemaError, pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
        frozen = {**{name: block[:, j] for names, block in zip(shape.block_names, blocks, strict=True)
                     for j, name in enumerate(names)}, **strings, **others}
        columns = {name: frozen[name] for name in data}  # in the input's order, as the other paths read it

        def build() -> pa.Table:
            return self._typed(as_table(columns, expected=self.expected), shape.layout)

        return self._small_rows(shape.layout, n, blocks, strings, lambda: kept_arrays, build, row_check, accepts)

    def _small_rows(self, layout: _Layout, n: int, blocks: list[np.ndarray], strings: dict[str, list[str]],
                    kept: Callable[[], dict[str, pa.Array]], build: Callable[[], pa.Table],
                    row_check: RowCheck | None, accepts: Accepts
                    ) -> tuple[SmallRows, DriftReport, dict[tuple[str, ...], np.ndarray]] | None:
        """The checks and the drift of the small path, of the float blocks (one per layout.blocks) and the string
        features read; kept: the passthrough and kept columns (read once all else passed)."""
        floats: dict[tuple[str, ...], np.ndarray] = {}
        counts = np.zeros((4, len(self.features)), dtype=np.int64)
        counts[0] = n
        for block, where, x in zip(layout.blocks, layout.block_features, blocks, strict=True):
            checked = block.check_array(x)
            if checked is None:
                return None
            floats[block.names] = checked[0]
            counts[1, where], counts[3, where] = checked[1:]
        for _, _, column in layout.strings:
            if column.name in self.categories and not all(v in self.categories[column.name]
                                                          for v in strings[column.name]):
                return None  # an unseen category: the other paths count it (and row_check may refuse it)
        if row_check is not None and not accepts(strings):
            return None
        try:
            kept_arrays = kept()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
        rows = SmallRows(n, tuple(layout.names), strings, kept_arrays, build)
        return rows, DriftReport.counted(n, self.names, counts, {}), floats

    def _column_layout(self, data: dict[str, Any], key: tuple[Any, ...]) -> _SmallLayout | None:
        """How a dict of columns of these names (and keep) is read: worked out (and the columns checked by their
        names) the first time they are seen; None where a column is missing or unexpected (the other paths say so,
        after whatever else they find first). The layout is that of a table of the features' own types: each call
        checks that its values are of those types (else the other paths run)."""
        types = {c.name: target_type(c) for c in self.features}
        schema = pa.schema([pa.field(name, types.get(name, pa.null())) for name in data])
        try:
            layout = self._layout(schema.empty_table(), key[-1])
        except SchemaError:
            return None
        shape = _SmallLayout(layout, len(self.features))
        if len(self.record_layouts) < _LAYOUTS:
            self.record_layouts[key] = shape
        return shape

    def _record_layout(self, records: list[dict[str, Any]], struct: pa.DataType, key: tuple[Any, ...]
                       ) -> _SmallLayout | None:
        """How records of the first one's keys and value types (and keep: key is the three) are read; worked out
        (and the columns checked) the first time they are seen, from the table the other paths read of them. None:
        the small path does not take them (a feature of another type)."""
        keep = key[2]
        if key in self.record_layouts:
            return self.record_layouts[key]
        try:
            table = pa.Table.from_struct_array(pa.array(records, struct))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
        layout = self._layout(table, keep)  # raises for missing and unexpected columns, as the other paths do
        shape = _SmallLayout(layout, len(self.features), struct) if layout.fast else None
        if len(self.record_layouts) < _LAYOUTS:
            self.record_layouts[key] = shape
        return shape

    # -- validating ------------------------------------------------------------------------------------

    def validate(self, table: pa.Table, keep: Sequence[str], collect: bool, first_row: int,
                 row_check: RowCheck | None, accepts: Accepts | None = None
                 ) -> tuple[pa.Table, DriftReport, dict[tuple[str, ...], np.ndarray], SmallRows | None] | None:
        """The validated table, its drift, its float blocks as read (column names -> [rows, columns] array) and,
        for a few rows when accepts is given, the same as SmallRows (their strings as lists, for the preprocessing
        of a few rows; accepts then tells row_check's answer from them where it can), when no row can fail a
        check; None otherwise (and for inputs this path does not take), for the column-by-column path to run.
        Raises what that path raises for the columns (missing, unexpected) and for the rows row_check refuses,
        without collect."""
        n = table.num_rows
        if not ENABLED or not self.supported or not n:
            return None
        layout = self._layout(table, tuple(keep))
        if not layout.fast:
            return None
        counted: list[tuple[np.ndarray, np.ndarray]] = []
        floats: dict[tuple[str, ...], np.ndarray] = {}
        for block in layout.blocks:
            found = block.check(table)
            if found is None:
                return None
            floats[block.names] = found[0]
            counted.append(found[1:])
        strings = {}
        for j, position, column in layout.strings:
            col = table.column(position)
            if col.null_count and not column.nullable:
                return None
            strings[j] = col
        typed = self._typed(table, layout)
        listed = None  # a few rows' string features as lists (no nulls: the small path's form)
        if accepts is not None and n <= SMALL and not any(col.null_count for col in strings.values()):
            listed = {self.features[j].name: col.to_pylist() for j, col in strings.items()}
        if row_check is not None and (listed is None or not accepts(listed)):  # type: ignore[misc]
            problems = RowProblems(collect=collect, first_row=first_row)
            replaced: list[pa.Table | None] = []
            flagged = forward_reports(lambda report: replaced.append(row_check(typed, report)), problems.add,
                                      np.arange(n))
            if flagged.any() or replaced[0] is not None:
                return None  # rejected rows (or columns row_check replaces): the column-by-column path takes them
        # drift as arrays over the features (rows, out of range, unseen categories, unexpected nulls per column)
        counts = np.zeros((4, len(self.features)), dtype=np.int64)
        counts[0] = n
        for where, (out_of_range, nulls) in zip(layout.block_features, counted, strict=True):
            counts[1, where] = out_of_range
            counts[3, where] = nulls
        unseen: dict[str, dict[str, int]] = {}
        for j, col in strings.items():
            column = self.features[j]
            d = self._string_drift(column, col, n, None if listed is None else listed[column.name])
            counts[:, j] = (d.rows, d.out_of_range, d.unseen_categories, d.unexpected_nulls)
            if d.unseen_values:
                unseen[column.name] = d.unseen_values
        small = None if listed is None else SmallRows(n, tuple(layout.names), listed, {}, lambda: typed)
        return typed, DriftReport.counted(n, self.names, counts, unseen), floats, small

    def _typed(self, table: pa.Table, layout: _Layout) -> pa.Table:
        """The features (already of their types: no cast), then passthrough and kept columns, as the column-by-
        column path builds the table."""
        if layout.identity and layout.plain:
            return table
        selected = table if layout.identity else table.select(layout.positions)
        if layout.plain:
            return selected
        return pa.Table.from_arrays(selected.columns, names=layout.names)

    def _string_drift(self, column: Column, col: pa.ChunkedArray, n: int, values: list[str] | None = None
                      ) -> ColumnDrift:
        """values: col's values, when already read as a list."""
        stats = column.stats
        if stats is None:
            return ColumnDrift(n)
        categories = self.categories.get(column.name)
        nulls = col.null_count if column.nullable and stats.missing_rate == 0 else 0
        if categories is None:
            return ColumnDrift(n, 0, 0, nulls)
        if n > SMALL or any(v is not None and v not in categories for v in (col.to_pylist() if values is None
                                                                             else values)):
            return column_drift(column, leaves(col, ()), n)  # pyarrow kernels; the unseen strings counted
        return ColumnDrift(n, 0, 0, nulls)

    def _layout(self, table: pa.Table, keep: tuple[str, ...]) -> _Layout:
        """The layout of this input's columns: checked (missing, unexpected ...) the first time it is seen."""
        schema = table.schema
        key = (tuple(schema.names), keep)
        seen = self.layouts.get(key, [])
        for layout in seen:
            if layout.schema.equals(schema, check_metadata=True):
                return layout
        self.check_columns(table, keep)
        present = schema.names
        names = list(self.feature_names)
        names += [n for n in self.passthrough if n in present]
        names += [k for k in dict.fromkeys(keep) if k not in names]
        fast = all(schema.field(c.name).type == target_type(c) for c in self.features)
        layout = _Layout(schema, keep, names, fast, self.features)
        if len(self.layouts) < _LAYOUTS and len(seen) < 4:  # bounded, whatever a server is sent
            self.layouts.setdefault(key, []).append(layout)
        return layout
