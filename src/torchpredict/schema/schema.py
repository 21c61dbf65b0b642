"""The input schema: what columns the model was trained on, checked once at the boundary.

Inference code downstream trusts typed tables, so every way in (records, pandas, Arrow, files) is
checked here for missing and unexpected columns, lossless dtypes, per-row shapes and nulls, with
messages that name the column, the row and the value, or (on_error="reject") sets failing rows aside
with those messages as reasons. Training statistics (range, categories and their counts, missing rate)
feed the drift report of every validated batch.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import InputError, SchemaError
from torchpredict.messages import MAX_VALUE, counted, quoted, shown
from torchpredict.schema.columns import DTYPES, Column, ColumnStats
from torchpredict.schema.drift import DriftReport, count_drift, image_drift_of
from torchpredict.schema.plans import Accepts, SmallRows, ValidationPlan
from torchpredict.schema.tables import as_table
from torchpredict.schema.validation import (
    RowProblems,
    RowReport,
    cast_accepted,
    check_column,
    check_nulls,
    decoded,
    dtype_name,
    forward_reports,
    image_values,
    is_image_values,
    is_list,
    leaves,
    read_input,
    show_type,
    target_type,
)

RowCheck = Callable[[pa.Table, RowReport], pa.Table | None]
"""A per-row check on typed rows: calls report(rows, reasons, message) for the rows it refuses, and returns the
rows with columns it read into another form (images into tensors), or None."""

__all__ = ["MAX_CATEGORIES", "Column", "ColumnStats", "Schema", "Validated"]

KEEP_HINT = "pass keep=[...] (CLI --keep) to copy them to the output, or drop them"  # the server words it its way

MAX_CATEGORIES = 1000  # more distinct strings than this: neither categories nor their counts are recorded
MAX_HINTS = 5  # "did you mean" pairs shown in a columns error
MAX_HINT_PAIRS = 20_000  # (unexpected, missing) name pairs difflib compares for them at most: under 0.1 s


class Validated:
    """The outcome of Schema.validate.

    table: the rows that passed, features cast, in schema order, then passthrough/kept columns.
    drift: how those rows drifted from training.
    rejected: with on_error="reject", the rows that failed (columns row, reason, then every input column
    as text); None when no row failed.
    floats: the float features the fast paths read as [rows, columns] arrays (column names -> array), for
    preprocessing to reuse instead of reading them again.
    small: a few rows in the form the preprocessing of a few rows takes (schema.plans.SmallRows); validated without
    a table (a few plain records), table is built when first read.
    """

    __slots__ = ("_table", "drift", "floats", "rejected", "small")

    def __init__(self, table: pa.Table | None, drift: DriftReport, rejected: pa.Table | None = None,
                 floats: Mapping[tuple[str, ...], np.ndarray] | None = None, small: SmallRows | None = None) -> None:
        if table is None and small is None:
            raise ValueError("Validated needs a table or small rows")
        self._table, self.drift, self.rejected, self.small = table, drift, rejected, small
        self.floats: Mapping[tuple[str, ...], np.ndarray] = {} if floats is None else floats

    @property
    def table(self) -> pa.Table:
        if self._table is None:
            self._table = self.small.build()  # type: ignore[union-attr]
        return self._table

    @property
    def num_rows(self) -> int:
        """Rows that passed."""
        return self.small.n_rows if self._table is None else self._table.num_rows  # type: ignore[union-attr]

    @property
    def column_names(self) -> list[str]:
        """The table's column names (told without building it; and schema.names: Table.column_names costs ~6x)."""
        return list(self.small.names) if self.small is not None else self._table.schema.names  # type: ignore[union-attr]

    def column(self, name: str) -> pa.Array:
        """A passthrough or kept column (or a feature, cast) as one array, without building the table."""
        if self._table is None and name in self.small.kept:  # type: ignore[union-attr]
            return self.small.kept[name]  # type: ignore[union-attr]
        return self.table.column(name).combine_chunks()

    @property
    def rows_in(self) -> int:
        """Input rows: passed plus rejected."""
        return self.num_rows + (0 if self.rejected is None else self.rejected.num_rows)

    def passed_rows(self, first_row: int) -> np.ndarray:
        """The input row number of each row that passed (the rows between the rejected ones); first_row: the
        number of the input's first row, as given to Schema.validate."""
        rows = np.arange(first_row, first_row + self.rows_in, dtype=np.int64)
        if self.rejected is None:
            return rows
        return np.setdiff1d(rows, self.rejected.column(0).to_numpy(), assume_unique=True)

    def __repr__(self) -> str:
        return f"Validated(rows={self.num_rows}, rejected={0 if self.rejected is None else self.rejected.num_rows})"


@dataclass(frozen=True)
class Schema:
    """The columns a model takes, with their training statistics.

    >>> s = Schema.from_table({"age": [31.0, 40.0], "id": ["a", "b"]}, features=["age"], passthrough=["id"])
    >>> s.validate({"age": [50.0], "id": ["c"]}).drift.columns["age"].out_of_range
    1
    """

    columns: tuple[Column, ...]

    # computed once per (frozen) schema: validation reads them on every call
    @cached_property
    def features(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role == "feature")

    @cached_property
    def passthrough(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role == "passthrough")

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @cached_property
    def plan(self) -> ValidationPlan:
        """The per-call work that depends only on the schema, done once (see schema.plans)."""
        return ValidationPlan(self.features, self.passthrough, self._check_columns)

    @classmethod
    def from_table(
        cls,
        table: Any,
        *,
        features: Sequence[str],
        passthrough: Sequence[str] = (),
        nullable: Iterable[str] = frozenset(),
        free_text: Iterable[str] = frozenset(),
        images: Iterable[str] = frozenset(),
    ) -> Schema:
        """Record dtypes, shapes and statistics of `features` (and `passthrough`) from training data.

        free_text: string columns of free text (tokenized, not categorical): no categories are recorded,
        so new texts are not counted as unseen categories.
        images: columns of images (encoded bytes or file paths), of dtype "image".
        """
        table = as_table(table)
        _check_names(table, features, passthrough)
        nullable, free_text, images = frozenset(nullable), frozenset(free_text), frozenset(images)
        cols = [_image_column(table.column(n), n, n in nullable) if n in images else
                _feature_column(table.column(n), n, n in nullable, n in free_text) for n in features]
        cols += [_passthrough_column(table.column(n), n) for n in passthrough]
        return cls(tuple(cols))

    def validate(
        self,
        data: Any,
        *,
        keep: Sequence[str] = (),
        first_row: int = 0,
        on_error: Literal["raise", "reject"] = "raise",
        row_check: RowCheck | None = None,
        accepts: Accepts | None = None,
    ) -> Validated:
        """Check `data` against the schema, cast features losslessly and count drift.

        first_row: the input row number of data's first row, so that errors in a file read batch by
        batch name the row of the file.
        on_error: "raise" a SchemaError at the first bad row, or "reject" the rows failing a per-row check
        (a value of the wrong kind or range for the dtype, a null in a non-nullable column, a wrong per-row
        shape): they leave `table` and come back in `rejected` with their reasons. Problems of whole
        columns (missing, unexpected, duplicated, of a type no row could fix) always raise.
        row_check: more per-row checks, run on the typed rows that passed (Preprocessor.check_rows: categories
        an encoder refuses); it reports rows of the table it gets, which count as failing like the others.
        accepts: whether row_check refuses none of the rows, told from the values of their string features
        (Preprocessor.accepts_strings); given, a few records of plain values are validated without an Arrow table
        (see schema.plans: the table is built if something reads it), for a caller that can take them so.

        >>> schema = Schema.from_table({"age": [31.0, 40.0]}, features=["age"])
        >>> schema.validate({"age": [35.0, "forty"]}, on_error="reject").rejected.to_pylist()
        [{'row': 1, 'reason': "column 'age': expected float64, got 'forty' (string)", 'age': 'forty'}]
        """
        if on_error not in ("raise", "reject"):
            raise InputError(f"on_error must be 'raise' or 'reject', got {on_error!r}")
        if accepts is not None:
            small = self.plan.small(data, tuple(keep), row_check, accepts)
            if small is not None:
                rows, drift, floats = small
                return Validated(None, drift, None, floats, rows)
        problems = RowProblems(collect=on_error == "reject", first_row=first_row)
        return self._validate(data, keep, first_row, problems, row_check, accepts)

    def _validate(self, data: Any, keep: Sequence[str], first_row: int, problems: RowProblems,
                  row_check: RowCheck | None, accepts: Accepts | None = None) -> Validated:
        table = self.plan.read(data, problems)
        if table is None:
            table = read_input(data, self.features, problems)
        if not problems.found:  # the fast path: every check at once; None where a row may fail one
            fast = self.plan.validate(table, keep, problems.collect, first_row, row_check, accepts)
            if fast is not None:
                typed, drift, floats, small = fast
                return Validated(typed, drift, None, floats, small)
        self._check_columns(table, keep)
        found = {c.name: check_column(c, table.column(c.name), problems) for c in self.features}
        names = [c.name for c in self.features]
        names += [c.name for c in self.passthrough if c.name in table.column_names]
        names += [k for k in dict.fromkeys(keep) if k not in names]
        typed = self._typed(table, problems.accepted(table.num_rows), names)
        if row_check is not None:
            typed = _checked(typed, row_check, problems, np.flatnonzero(problems.accepted(table.num_rows)))
        rejected = problems.rejected(table, names, first_row)
        if rejected is not None:
            table = table.filter(pa.array(problems.accepted(table.num_rows)))
            found = {c.name: leaves(decoded(table.column(c.name)), c.shape) for c in self.features}
        drift = count_drift(self.features, found, table.num_rows)
        for name, images in image_drift_of(typed).items():  # what the row check saw of the images it encoded
            drift.columns[name] = images
        return Validated(typed, drift, rejected)

    def _typed(self, table: pa.Table, accepted: np.ndarray, names: list[str]) -> pa.Table:
        """The accepted rows, features cast to their dtypes, then passthrough and kept columns as they are."""
        if not accepted.all():
            table = table.filter(pa.array(accepted))
        arrays = [image_values(table.column(c.name)) if c.dtype == "image" else
                  cast_accepted(decoded(table.column(c.name)), target_type(c)) for c in self.features]
        arrays += [table.column(n) for n in names[len(arrays):]]
        return pa.Table.from_arrays(arrays, names=names)

    def _check_columns(self, table: pa.Table, keep: Sequence[str]) -> None:
        present = table.column_names
        dupes = sorted({n for n in present if present.count(n) > 1})
        if dupes:
            raise SchemaError(f"{counted('duplicate column', dupes)} in the input")
        problems = []
        missing = [c.name for c in self.features if c.name not in present]
        if missing:
            problems.append(counted("missing column", missing))
        absent = [k for k in keep if k not in present]
        if absent:
            problems.append(f"{counted('keep column', absent)} not in the input")
        unexpected = [n for n in present if n not in self.names and n not in keep]
        if unexpected:
            problems.append(
                f"{counted('unexpected column', unexpected)}{_did_you_mean(unexpected, missing)}; {KEEP_HINT}"
            )
        if problems:
            raise SchemaError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: Any) -> Schema:
        """Rebuild from `to_dict()`, every field checked; errors name the column and field at fault."""
        if not isinstance(d, Mapping) or not isinstance(d.get("columns"), list):
            raise SchemaError(f"a schema must be an object with a list of 'columns', got {shown(d)}")
        columns = []
        for i, c in enumerate(d["columns"]):
            try:
                columns.append(Column.from_dict(c))
            except SchemaError as exc:
                name = f" ({c['name']!r})" if isinstance(c, Mapping) and isinstance(c.get("name"), str) else ""
                raise SchemaError(f"column {i}{name}: {exc}") from None
        names = [c.name for c in columns]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SchemaError(f"{counted('column', twice)} appear more than once")
        return cls(tuple(columns))


def _did_you_mean(unexpected: Sequence[str], missing: Sequence[str]) -> str:
    """' (did you mean 'sqft'?)' for an unexpected column that is a missing one in another case or misspelt
    (difflib); several: "(did you mean 'sqft' for 'SQFT', 'alcohol' for 'alchol'?)"; '' when none is close."""
    pairs = _close_pairs(unexpected, missing)
    if not pairs:
        return ""
    if len(unexpected) == 1:
        return f" (did you mean {shown(pairs[0][1])}?)"
    listed = [f"{shown(right)} for {shown(wrong)}" for wrong, right in pairs[:MAX_HINTS]]
    more = f", … {len(pairs) - MAX_HINTS:,} more" if len(pairs) > MAX_HINTS else ""
    return f" (did you mean {', '.join(listed)}{more}?)"


def _close_pairs(unexpected: Sequence[str], missing: Sequence[str]) -> list[tuple[str, str]]:
    """(unexpected, missing) pairs of names equal but for case, then close by difflib; each missing name used once.

    Bounded for hostile inputs: names past MAX_VALUE characters are not compared, nor pairs past MAX_HINT_PAIRS.
    """
    by_lower = {m.lower(): m for m in missing if len(m) <= MAX_VALUE}
    names = [u for u in unexpected if len(u) <= MAX_VALUE]
    pairs = [(u, by_lower.pop(u.lower())) for u in names if u.lower() in by_lower]
    paired = {u for u, _ in pairs}
    rest = [u for u in names if u not in paired][: MAX_HINT_PAIRS // max(1, len(by_lower))]
    for name in rest:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.8) if by_lower else []
        if close:
            pairs.append((name, by_lower.pop(close[0])))
    order = {u: i for i, u in enumerate(unexpected)}
    return sorted(pairs, key=lambda pair: order[pair[0]])


def _checked(typed: pa.Table, row_check: RowCheck, problems: RowProblems, positions: np.ndarray) -> pa.Table:
    """typed (or what row_check made of it) without the rows row_check reports, which join problems; positions:
    each typed row's input row."""
    replaced: list[pa.Table | None] = []
    flagged = forward_reports(lambda report: replaced.append(row_check(typed, report)), problems.add, positions)
    typed = typed if replaced[0] is None else replaced[0]
    return typed.filter(pa.array(~flagged)) if flagged.any() else typed


# -- statistics from training data -----------------------------------------------------------------


def _infer_shape(col: pa.ChunkedArray, name: str) -> tuple[int, ...]:
    shape: list[int] = []
    while is_list(col.type):
        lengths = np.unique(pc.drop_null(pc.list_value_length(col)).to_numpy(zero_copy_only=False))
        if len(lengths) != 1:
            raise SchemaError(
                f"column {name!r}: cannot infer a fixed per-row shape (list lengths seen: "
                f"{lengths[:5].tolist()})"
            )
        shape.append(int(lengths[0]))
        col = pc.list_flatten(col)
    return tuple(shape)


def _stats(values: pa.ChunkedArray, dtype: str) -> ColumnStats:
    n_missing = pc.sum(pc.is_null(values, nan_is_null=True)).as_py() or 0
    missing_rate = n_missing / len(values) if len(values) else 0.0
    if dtype == "string":
        return ColumnStats(missing_rate=missing_rate, **_categories(values))
    x = pc.fill_null(values.cast(pa.float64()), np.nan).to_numpy()
    x = x[np.isfinite(x)]
    if not len(x):
        return ColumnStats(missing_rate=missing_rate)
    return ColumnStats(float(x.min()), float(x.max()), float(x.mean()), float(x.std()), missing_rate)


def _categories(values: pa.ChunkedArray) -> dict[str, tuple | None]:
    """Sorted distinct strings and how many rows hold each; None for both past MAX_CATEGORIES."""
    counted = pc.value_counts(pc.drop_null(values.cast(pa.string())))
    if len(counted) > MAX_CATEGORIES:
        return {"categories": None, "category_counts": None}
    order = pc.sort_indices(counted.field("values"))
    return {
        "categories": tuple(counted.field("values").take(order).to_pylist()),
        "category_counts": tuple(counted.field("counts").take(order).to_pylist()),
    }


def _check_names(table: pa.Table, features: Sequence[str], passthrough: Sequence[str]) -> None:
    missing = [n for n in [*features, *passthrough] if n not in table.column_names]
    if missing:
        raise SchemaError(f"missing column(s) {quoted(missing)} in the training data")
    both = [n for n in features if n in passthrough]
    if both:
        raise SchemaError(f"column(s) {quoted(both)} cannot be both features and passthrough")


def _feature_column(col: pa.ChunkedArray, name: str, nullable: bool, free_text: bool = False) -> Column:
    col = decoded(col)
    shape = _infer_shape(col, name)
    found = leaves(col, shape)
    dtype = dtype_name(found[0].type)
    if dtype is None:
        raise SchemaError(
            f"column {name!r}: type {found[0].type} is not supported for features; supported: "
            f"{', '.join(DTYPES)} (or fixed-length lists of them)"
        )
    stats = _stats(found[0], dtype)
    if free_text and stats is not None:
        stats = replace(stats, categories=None, category_counts=None)
    infinite = pa.types.is_floating(found[0].type) and bool(pc.any(pc.is_inf(found[0])).as_py())
    column = Column(name, dtype, shape, nullable, "feature", stats, infinite)
    if not nullable:
        hint = " in the training data; list it in nullable=[...]"
        check_nulls(name, found, RowProblems(collect=False), hint)
    return column


def _image_column(col: pa.ChunkedArray, name: str, nullable: bool) -> Column:
    if not is_image_values(col.type):
        raise SchemaError(f"column {name!r}: an image column holds encoded images (bytes) or file paths "
                          f"(strings), got {show_type(col.type)}")
    if not nullable:
        check_nulls(name, leaves(col, ()), RowProblems(collect=False), " in the training data; list it in "
                    "nullable=[...]")
    return Column(name, "image", (), nullable, "feature", None)


def _passthrough_column(col: pa.ChunkedArray, name: str) -> Column:
    return Column(name, show_type(col.type), (), col.null_count > 0, "passthrough", None)

