"""The value types of a schema: one input column and its training statistics, as the manifest stores them.

They sit below validation, drift and the schema itself, which all read columns; reading one from JSON checks
every field, so that the checks downstream can trust the types a column holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa

from torchpredict.errors import SchemaError
from torchpredict.messages import shown

__all__ = ["DTYPES", "Column", "ColumnStats"]

DTYPES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "image": pa.binary(),
}
"""The dtypes a feature column can have, and the Arrow type each is read as (an image column holds encoded
images, bytes, or file paths, strings: validation keeps either as it is)."""


@dataclass(frozen=True)
class ColumnStats:
    """Training statistics of one column (over non-missing values; NaN counts as missing).

    category_counts[i] is the number of training rows holding categories[i] (string columns).
    """

    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    missing_rate: float = 0.0
    categories: tuple[str, ...] | None = None
    category_counts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        counts, cats = self.category_counts, self.categories
        if counts is not None and (cats is None or len(counts) != len(cats)):
            raise SchemaError(
                f"column statistics: {len(counts)} category count(s) for "
                f"{'no' if cats is None else len(cats)} categories; they must pair up one to one"
            )

    @property
    def category_frequencies(self) -> dict[str, int]:
        """{category: training rows}, or {} when the counts were not recorded."""
        return dict(zip(self.categories or (), self.category_counts or (), strict=False))

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for key in ("categories", "category_counts"):
            d[key] = None if d[key] is None else list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnStats:
        _check_stats(d)
        d = _known(cls, d)
        for key in ("categories", "category_counts"):
            d[key] = None if d.get(key) is None else tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class Column:
    """One input column: dtype of its values, per-row shape ((), or (k,) for lists of length k).

    infinite: the training data held inf or -inf in this float column, so they are accepted; otherwise a row
    holding one is refused, as a null is in a column that is not nullable.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    nullable: bool = False
    role: str = "feature"
    stats: ColumnStats | None = None
    infinite: bool = False

    def to_dict(self) -> dict[str, Any]:
        stats = None if self.stats is None else self.stats.to_dict()
        return {**self.__dict__, "shape": list(self.shape), "stats": stats}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Column:
        _check_column(d)
        stats = None if d.get("stats") is None else ColumnStats.from_dict(d["stats"])
        return cls(**{**_known(cls, d), "shape": tuple(d.get("shape", ())), "stats": stats})


def _known(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    """d without the keys cls does not know: a newer writer's additive keys are ignored (format version 1)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


# -- reading a schema from JSON ----------------------------------------------------------------------


def _check_column(d: Any) -> None:
    """A column read from JSON has the types Column holds, so that validation can trust them."""
    if not isinstance(d, Mapping):
        raise SchemaError(f"must be an object, got {shown(d)}")
    role = d.get("role", "feature")
    _expect(isinstance(d.get("name"), str) and d["name"] != "", "name", "a non-empty string", d.get("name"))
    _expect(role in ("feature", "passthrough"), "role", "'feature' or 'passthrough'", role)
    dtype_ok = d.get("dtype") in DTYPES if role == "feature" else isinstance(d.get("dtype"), str)
    _expect(dtype_ok, "dtype", f"one of {', '.join(DTYPES)}" if role == "feature" else "a string", d.get("dtype"))
    shape = d.get("shape", [])
    _expect(isinstance(shape, list) and all(_is_count(s) and s >= 1 for s in shape), "shape",
            "a list of sizes >= 1", shape)
    _expect(isinstance(d.get("nullable", False), bool), "nullable", "true or false", d.get("nullable"))
    _expect(isinstance(d.get("infinite", False), bool), "infinite", "true or false", d.get("infinite"))
    _expect(d.get("stats") is None or isinstance(d["stats"], Mapping), "stats", "an object or null", d.get("stats"))


def _check_stats(d: Any) -> None:
    """Training statistics read from JSON: finite numbers (or null), a rate in [0, 1], strings and counts."""
    for key in ("min", "max", "mean", "std"):
        value = d.get(key)
        _expect(value is None or (_is_number(value) and np.isfinite(value)), f"stats.{key}", "a finite number or null",
                value)
    rate = d.get("missing_rate", 0.0)
    _expect(_is_number(rate) and 0 <= rate <= 1, "stats.missing_rate", "a number in [0, 1]", rate)
    categories, counts = d.get("categories"), d.get("category_counts")
    _expect(categories is None or (isinstance(categories, list) and all(isinstance(c, str) for c in categories)),
            "stats.categories", "a list of strings or null", categories)
    _expect(counts is None or (isinstance(counts, list) and all(_is_count(n) and n >= 0 for n in counts)),
            "stats.category_counts", "a list of counts or null", counts)


def _expect(ok: bool, field: str, wanted: str, value: Any) -> None:
    if not ok:
        raise SchemaError(f"'{field}' must be {wanted}, got {shown(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
