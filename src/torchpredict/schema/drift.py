"""Drift: where the inputs of a run stray from what the model saw in training.

Predictions on such rows are extrapolations; the report says where they happened, it refuses nothing.
One DriftReport accumulates over a run (batch by batch, or merged from workers): per column, the rows
checked, rows with a value outside the training [min, max], rows with a string outside the training
categories (and the most frequent such strings), and nulls in columns that had none in training. For an image
column: images whose decoded size lies outside the training sizes, and the channels' mean over the run beside the
training images' (a shift of more than PIXEL_SHIFT, on the 0..1 scale, counts as drift).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.schema.columns import Column
from torchpredict.schema.validation import Leaves, as_mask, cast_accepted, missing

__all__ = ["ColumnDrift", "DriftReport", "column_drift", "count_drift", "image_drift_of", "with_image_drift"]

TOP_UNSEEN = 20  # unseen strings tracked per column: exact counts while a run sees at most this many
SUMMARY_COLUMNS = 5  # drifted columns named in summary()
SUMMARY_VALUES = 3  # unseen strings named per column in summary()
PIXEL_SHIFT = 0.1  # an image column's channel mean this far from training's (0..1 scale) has drifted
IMAGE_DRIFT = b"torchpredict.image_drift"  # the schema metadata key under which the row check hands it over


@dataclass
class ColumnDrift:
    """Drift counts of one column; every count is of rows (a row of a tensor column counts once)."""

    rows: int = 0
    out_of_range: int = 0
    unseen_categories: int = 0
    unexpected_nulls: int = 0
    unseen_values: dict[str, int] = field(default_factory=dict)  # most frequent unseen strings -> count
    image_rows: int = 0  # images: how many were decoded, their channels' summed means, the training means
    pixel_sum: list[float] = field(default_factory=list)
    training_pixel_mean: list[float] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.out_of_range or self.unseen_categories or self.unexpected_nulls or self.pixel_shifted)

    @property
    def pixel_mean(self) -> list[float]:
        """An image column's channel means over the run (0..1 scale); [] for other columns."""
        return [s / self.image_rows for s in self.pixel_sum] if self.image_rows else []

    @property
    def pixel_shifted(self) -> bool:
        means, trained = self.pixel_mean, self.training_pixel_mean
        return bool(means and len(trained) == len(means)
                    and max(abs(a - b) for a, b in zip(means, trained, strict=True)) > PIXEL_SHIFT)

    @property
    def drifted_rows(self) -> int:
        return self.out_of_range + self.unseen_categories + self.unexpected_nulls

    def add(self, other: ColumnDrift) -> None:
        self.rows += other.rows
        self.out_of_range += other.out_of_range
        self.unseen_categories += other.unseen_categories
        self.unexpected_nulls += other.unexpected_nulls
        if other.image_rows:
            self.pixel_sum = [a + b for a, b in zip(self.pixel_sum, other.pixel_sum, strict=True)] \
                if self.image_rows else list(other.pixel_sum)
            self.image_rows += other.image_rows
            self.training_pixel_mean = self.training_pixel_mean or list(other.training_pixel_mean)
        if not other.unseen_values and not self.unseen_values:
            return
        merged = dict(self.unseen_values)
        for value, count in other.unseen_values.items():
            merged[value] = merged.get(value, 0) + count
        self.unseen_values = _top(merged)

    def describe(self) -> str:
        """'12 out of range and 4 unseen categories ('Oslo' 3, 'Rome' 1)'; '' when nothing drifted."""
        parts = []
        if self.out_of_range and self.image_rows:
            parts.append(f"{_plural(self.out_of_range, 'image', 'images')} of a size outside training's")
        elif self.out_of_range:
            parts.append(f"{self.out_of_range:,} out of range")
        if self.pixel_shifted:
            parts.append(f"channel means {_numbers(self.pixel_mean)} (training {_numbers(self.training_pixel_mean)})")
        if self.unseen_categories:
            parts.append(f"{_plural(self.unseen_categories, 'unseen category', 'unseen categories')} "
                         f"({self._top_values()})")
        if self.unexpected_nulls:
            parts.append(_plural(self.unexpected_nulls, "unexpected null", "unexpected nulls"))
        return " and ".join(parts)

    def _top_values(self) -> str:
        shown = list(self.unseen_values.items())[:SUMMARY_VALUES]
        text = ", ".join(f"{_short(value)} {count:,}" for value, count in shown)
        more = len(self.unseen_values) > len(shown) or sum(c for _, c in shown) < self.unseen_categories
        return f"{text}, ..." if more else text

    def to_dict(self) -> dict[str, Any]:
        d = {**self.__dict__, "unseen_values": dict(self.unseen_values)}
        if not self.image_rows:  # image fields only for image columns
            for key in ("image_rows", "pixel_sum", "training_pixel_mean"):
                d.pop(key)
        else:
            d["pixel_mean"] = self.pixel_mean
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnDrift:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class DriftReport:
    """How a run's inputs drifted from training, per column; mutable, one per run.

    >>> from torchpredict.schema.schema import Schema
    >>> schema = Schema.from_table({"age": [31.0, 40.0], "city": ["oslo", "lima"]}, features=["age", "city"])
    >>> report = schema.validate({"age": [50.0, 35.0], "city": ["rome", "oslo"]}).drift
    >>> report.summary()
    "2 columns drifted in 2 rows: 'age' 1 out of range, 'city' 1 unseen category ('rome' 1)"

    The fast path of validation counts a batch's drift as arrays over its columns (`DriftReport.counted`), and
    reports of the same columns add up as arrays; the ColumnDrift objects of `columns` are built only when asked
    for (after which the report holds them, and adds them up one by one).
    """

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self, rows: int = 0, columns: dict[str, ColumnDrift] | None = None) -> None:
        self.rows = rows
        self._columns: dict[str, ColumnDrift] = {} if columns is None else columns
        # the array form (while _counts is not None): per column of _names, rows, out_of_range,
        # unseen_categories and unexpected_nulls as the rows of one [4, columns] int64 array; the unseen strings
        # of the columns that have any
        self._names: tuple[str, ...] = ()
        self._counts: np.ndarray | None = None
        self._unseen: dict[str, dict[str, int]] = {}

    @classmethod
    def counted(cls, rows: int, names: tuple[str, ...], counts: np.ndarray,
                unseen: dict[str, dict[str, int]] | None = None) -> DriftReport:
        """A report in the array form: counts is [4, len(names)] int64 (rows, out_of_range, unseen_categories,
        unexpected_nulls per column), unseen the most frequent unseen strings of the columns with any."""
        report = cls(rows)
        report._names, report._counts, report._unseen = names, counts, dict(unseen or {})
        return report

    @property
    def columns(self) -> dict[str, ColumnDrift]:
        """Per column, its drift counts."""
        if self._counts is not None:
            counts, unseen = self._counts.tolist(), self._unseen
            self._columns = {name: ColumnDrift(r, o, u, m, dict(unseen.get(name, {})))
                             for name, r, o, u, m in zip(self._names, *counts, strict=True)}
            self._counts, self._names, self._unseen = None, (), {}
        return self._columns

    @columns.setter
    def columns(self, columns: dict[str, ColumnDrift]) -> None:
        self._columns, self._counts, self._names, self._unseen = columns, None, (), {}

    def __bool__(self) -> bool:
        if self._counts is not None:
            return bool(self._counts[1:].any())
        return any(self._columns.values())

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, DriftReport)
        return (self.rows, self.columns) == (other.rows, other.columns)

    def __repr__(self) -> str:
        return f"DriftReport(rows={self.rows!r}, columns={self.columns!r})"

    @property
    def drifted(self) -> list[str]:
        """Names of the columns that drifted, most drifted rows first."""
        ranked = sorted(self.columns.items(), key=lambda item: -item[1].drifted_rows)
        return [name for name, column in ranked if column]

    def add(self, other: DriftReport) -> DriftReport:
        """Fold another report (a later batch, another worker) into this one; returns self."""
        self.rows += other.rows
        if other._counts is not None:
            if self._counts is None and not self._columns:  # empty: other's counts, copied
                self._names, self._counts = other._names, other._counts.copy()
                self._unseen = {name: dict(values) for name, values in other._unseen.items()}
                return self
            if self._counts is not None and self._names == other._names:  # the same columns: added as arrays
                self._counts += other._counts
                for name, values in other._unseen.items():
                    merged = dict(self._unseen.get(name, {}))
                    for value, count in values.items():
                        merged[value] = merged.get(value, 0) + count
                    self._unseen[name] = _top(merged)
                return self
        columns = self.columns
        for name, column in other.columns.items():
            mine = columns.get(name)
            if mine is None:
                mine = columns[name] = ColumnDrift()
            mine.add(column)
        return self

    @classmethod
    def merge(cls, reports: Iterable[DriftReport]) -> DriftReport:
        """One report for many (e.g. one per worker)."""
        merged = cls()
        for report in reports:
            merged.add(report)
        return merged

    def summary(self) -> str:
        """One line for people: "2 columns drifted in 1,000 rows: 'age' 12 out of range, ..."; '' when none."""
        drifted = self.drifted
        if not drifted:
            return ""
        parts = [f"{name!r} {self.columns[name].describe()}" for name in drifted[:SUMMARY_COLUMNS]]
        if len(drifted) > SUMMARY_COLUMNS:
            parts.append(f"{len(drifted) - SUMMARY_COLUMNS} more")
        return f"{_plural(len(drifted), 'column', 'columns')} drifted in {self.rows:,} rows: {', '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        """The full report as JSON-safe data (CLI --report)."""
        columns = {name: column.to_dict() for name, column in self.columns.items()}
        return {"rows": self.rows, "drifted": self.drifted, "columns": columns}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReport:
        columns = {name: ColumnDrift.from_dict(c) for name, c in d.get("columns", {}).items()}
        return cls(d.get("rows", 0), columns)


def count_drift(columns: Sequence[Column], found: Mapping[str, Leaves], n_rows: int) -> DriftReport:
    """The drift of validated feature columns, from their leaves (see validation.leaves)."""
    return DriftReport(n_rows, {c.name: column_drift(c, found[c.name], n_rows) for c in columns})


def column_drift(column: Column, found: Leaves, n_rows: int) -> ColumnDrift:
    """The drift of one validated feature column, from its leaves."""
    drift = ColumnDrift(rows=n_rows)
    stats = column.stats
    if stats is None:
        return drift
    values, rows, null_rows = found
    if column.dtype == "string" and stats.categories is not None:
        _count_unseen(drift, found, stats.categories, not column.shape)
    elif stats.min is not None and stats.max is not None:
        x = pc.fill_null(cast_accepted(values, pa.float64()), np.nan).to_numpy()
        with np.errstate(invalid="ignore"):
            drift.out_of_range = _row_count((x < stats.min) | (x > stats.max), rows, not column.shape)
    if column.nullable and stats.missing_rate == 0:
        drift.unexpected_nulls = len(np.union1d(null_rows, rows[missing(values)]))
    return drift


def _count_unseen(drift: ColumnDrift, found: Leaves, categories: Sequence[str], scalar: bool) -> None:
    values, rows = found[0].cast(pa.string()), found[1]
    unseen = pc.and_(pc.is_null(pc.index_in(values, value_set=pa.array(categories, pa.string()))), pc.is_valid(values))
    mask = as_mask(unseen)
    drift.unseen_categories = _row_count(mask, rows, scalar)
    if drift.unseen_categories:
        counted = pc.value_counts(values.filter(pa.array(mask)))
        counts = counted.field("counts").to_numpy()
        top = np.argsort(-counts, kind="stable")[:TOP_UNSEEN]
        drift.unseen_values = _top(dict(zip(counted.field("values").take(top).to_pylist(), counts[top].tolist(),
                                            strict=True)))


def _row_count(mask: np.ndarray, rows: np.ndarray, scalar: bool) -> int:
    """Rows with at least one flagged value (rows[i] is the row of value i; scalar: one value per row)."""
    return int(np.count_nonzero(mask)) if scalar else len(np.unique(rows[mask]))


def _top(counts: dict[str, int]) -> dict[str, int]:
    """The TOP_UNSEEN most frequent, most frequent first, ties by value (so merging order does not matter)."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_UNSEEN])


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def with_image_drift(table: pa.Table, drift: Mapping[str, Mapping[str, Any]]) -> pa.Table:
    """table carrying the drift of its image columns (ColumnDrift fields per column) for count_drift's caller to
    fold in (image_drift_of): the row check that encodes the images is the one place their sizes are seen."""
    metadata = dict(table.schema.metadata or {})
    metadata[IMAGE_DRIFT] = json.dumps(drift).encode()
    return table.replace_schema_metadata(metadata)


def image_drift_of(table: pa.Table) -> dict[str, ColumnDrift]:
    """The image columns' drift a row check left on table (with_image_drift), or {}."""
    raw = (table.schema.metadata or {}).get(IMAGE_DRIFT)
    return {} if raw is None else {name: ColumnDrift.from_dict(d) for name, d in json.loads(raw).items()}


def _numbers(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)
