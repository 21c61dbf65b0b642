"""Categorical steps: encode values with the categories seen in training, in a stable order.

OneHot and IndexEncode mirror scikit-learn's OneHotEncoder and OrdinalEncoder, so that a fitted scikit-learn
encoder maps onto them 1:1: the categories are the training values sorted (numbers numerically, strings by
code point) or the ones given; a missing value (null or NaN) seen in training is a category of its own, placed
last; rare categories can be grouped into one infrequent category (min_frequency, max_categories). Values are
keyed by their string form (1 and 1.0 are both "1"), so categories are JSON strings, None for the missing one.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.steps import (
    Step,
    categories,
    is_numeric,
    optional,
    per_column,
    register_step,
    state_rules,
)

if TYPE_CHECKING:
    from torchpredict.schema.validation import RowReport

__all__ = ["IndexEncode", "OneHot"]

Category = str | None  # None: the missing-value category
Categories = tuple[Category, ...]
KNOWN = "non-empty lists of distinct categories (strings, null last)"  # how state rules word them
RARE = "lists of some of the column's categories"
SMALL = 64  # rows up to which string values are looked up in Python dicts rather than with pyarrow kernels
INFREQUENT = "infrequent"  # OneHot names the grouped column f"{col}=infrequent" (scikit-learn: infrequent_sklearn)


@dataclass(frozen=True)
class _Plan:
    """How one column is encoded: category -> its index -> output position or code (last entry: unknown)."""

    index: dict[Category, int]
    lookup: np.ndarray
    names: tuple[str, ...] = ()

    @cached_property
    def known(self) -> pa.Array:
        """The categories as the string array pc.is_in looks values up in (null: the missing category)."""
        return pa.array(list(self.index), pa.string())

    @cached_property
    def positions(self) -> dict[Category, int]:
        """category -> its output position or code (lookup of its index), for looking up a few values in Python."""
        return {category: int(self.lookup[i]) for category, i in self.index.items()}


class _Encoder(Step):
    """What OneHot and IndexEncode share: learning the categories and grouping the infrequent ones."""

    unknown_options: ClassVar[tuple[str, ...]] = ()
    missing_is_counted: ClassVar[bool] = True  # does the missing category take part in grouping (sklearn)
    fix: ClassVar[str] = ""  # how to accept unknown values, for the error message

    def __init__(self, columns: Sequence[str], *, handle_unknown: str, categories: Any, min_frequency: Any,
                 max_categories: Any, **params: Any) -> None:
        kind = type(self).__name__
        if handle_unknown not in self.unknown_options:
            raise PreprocessingError(
                f"{kind} handle_unknown must be one of {_listed(self.unknown_options)}, got {handle_unknown!r}"
            )
        super().__init__(columns, handle_unknown=handle_unknown, categories=None,
                         min_frequency=_min_frequency(kind, min_frequency),
                         max_categories=_count(kind, "max_categories", max_categories, minimum=1), **params)
        self.params["categories"] = _given(kind, self.columns, categories)

    def accepts_missing(self, name: str, in_training: bool) -> bool:
        """Whether transform takes a missing value in column `name` (a category, or handled as unknown)."""
        given = self.params["categories"]
        known = in_training or (given is not None and None in given[self.columns.index(name)])
        return known or self.params["handle_unknown"] != "error"

    # -- fit -----------------------------------------------------------------------------------------

    def _learn(self, frame: pa.Table) -> tuple[tuple[Categories, ...], tuple[Categories, ...]]:
        """The categories of every column and, per column, those grouped as infrequent."""
        given = self.params["categories"]
        categories, infrequent = [], []
        for i, name in enumerate(self.columns):
            values = self._values(frame, name)
            if given is None:
                cats, counts = _counted(values)
                if all(c is None for c in cats):
                    raise PreprocessingError(f"{self!r}: column {name!r} has no non-missing values to fit on")
            else:
                cats = given[i]
                indices = self._indices(values, {c: j for j, c in enumerate(cats)}, name, "during fit")
                counts = np.bincount(indices[indices >= 0], minlength=len(cats))
            categories.append(cats)
            infrequent.append(self._infrequent(cats, counts, frame.num_rows))
        return tuple(categories), tuple(infrequent)

    def _infrequent(self, categories: Categories, counts: np.ndarray, n_rows: int) -> Categories:
        min_frequency, max_categories = self.params["min_frequency"], self.params["max_categories"]
        if min_frequency is None and max_categories is None:
            return ()
        counted = [j for j, c in enumerate(categories) if self.missing_is_counted or c is not None]
        mask = _infrequent_mask(counts[counted], n_rows, min_frequency, max_categories)
        return tuple(categories[j] for j, rare in zip(counted, mask, strict=True) if rare)

    # -- transform -----------------------------------------------------------------------------------

    def _values(self, frame: pa.Table, name: str) -> pa.ChunkedArray:
        """The column as its category values: dictionaries decoded, NaN as null, -0.0 as 0.0."""
        col = self._column(frame, name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        t = col.type
        if pa.types.is_floating(t):
            return pc.if_else(pc.is_nan(col), pa.scalar(None, t), pc.add(col, pa.scalar(0.0, t)))
        if not (is_numeric(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise PreprocessingError(
                f"{self!r}: column {name!r} holds {t} values; categories are strings, numbers or booleans"
            )
        return col

    def _indices(self, values: pa.ChunkedArray, index: dict[Category, int], name: str, when: str = "") -> np.ndarray:
        """Each row's category index, -1 when unknown (refused with handle_unknown='error')."""
        indices = _lookup(values, index)
        if self.params["handle_unknown"] == "error" and (indices < 0).any():
            rows = np.flatnonzero(indices < 0)
            raise PreprocessingError(_unknown_message(values, rows, name, list(index), when, self.fix, int(rows[0])))
        return indices

    def report_unknown(self, frame: pa.Table, names: Sequence[str], report: RowReport) -> None:
        """Report the rows of columns `names` holding a category transform would refuse (handle_unknown='error').

        Validation calls this, so that such rows are rejected (or named by their input row number) like any
        other bad value, instead of transform failing the whole batch (the report names the row).
        """
        if self.params["handle_unknown"] != "error":
            return
        plans = dict(zip(self.columns, self._plans(), strict=True))
        for name in names:
            values, plan = self._values(frame, name), plans[name]
            rows = _unknown_rows(values, plan)
            if len(rows):
                report(rows, *_unknown_wording(values, rows, name, list(plan.index), self.fix))

    def refuses_some(self, frame: pa.Table, names: Sequence[str]) -> bool:
        """Whether report_unknown would report some row of columns `names`."""
        if self.params["handle_unknown"] != "error":
            return False
        plans = dict(zip(self.columns, self._plans(), strict=True))
        return any(len(_unknown_rows(self._values(frame, name), plans[name])) for name in names)

    def knows(self, name: str, values: list[str]) -> bool:
        """Whether column name's categories hold each of these strings (refuses_some of them, without a table)."""
        index = self._plans()[self.columns.index(name)].index
        return all(v in index for v in values)

    def _plans(self) -> tuple[_Plan, ...]:
        """Per column lookup tables, built from the fitted state once and reused on every batch."""
        self._check_fitted()
        cached = self.__dict__.get("_cached")
        if cached is None or cached[0] is not self.categories_ or cached[1] is not self.infrequent_categories_:
            plans = tuple(self._plan(i, name) for i, name in enumerate(self.columns))
            cached = self._cached = (self.categories_, self.infrequent_categories_, plans)
        return cached[2]

    def _plan(self, i: int, name: str) -> _Plan:
        raise NotImplementedError

    def _rare(self, i: int) -> set[Category]:
        return set(self.infrequent_categories_[i]) if self.infrequent_categories_ else set()


@register_step
class OneHot(_Encoder):
    """One 0/1 column per category, named "col=category" ("col=null" for missing, "col=infrequent" for the
    grouped rare ones), in place of the column; scikit-learn's OneHotEncoder(sparse_output=False).

    handle_unknown: "error"; "ignore" (all zeros); "infrequent_if_exist" (the infrequent column if there is
    one, else all zeros). min_frequency: a count (int >= 1) or a fraction of the rows (float in (0, 1)) below
    which a category is infrequent; max_categories: at most this many columns per input column, the
    infrequent one included. drop: None, "first", "if_binary", or one category per column (None: drop none).

    >>> OneHot(["city"]).fit(pa.table({"city": ["oslo", "lima", None]})).categories_
    (('lima', 'oslo', None),)
    """

    type = "onehot"
    state = state_rules(categories_=per_column(KNOWN, lambda v: _known(v)),
                        infrequent_categories_=optional(per_column(RARE, categories, within="categories_")))
    unknown_options = ("error", "ignore", "infrequent_if_exist")
    fix = "use OneHot(..., handle_unknown='ignore') to encode unknowns as all zeros"
    infrequent_categories_: tuple[Categories, ...] | None = None  # None: read from a bundle written before grouping

    def __init__(
        self,
        columns: Sequence[str],
        *,
        handle_unknown: str = "error",
        categories: Sequence[Sequence[Any]] | Mapping[str, Sequence[Any]] | None = None,
        min_frequency: int | float | None = None,
        max_categories: int | None = None,
        drop: str | Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(columns, handle_unknown=handle_unknown, categories=categories, min_frequency=min_frequency,
                         max_categories=max_categories, drop=None)
        self.params["drop"] = _drop(self.columns, drop)

    def fit(self, frame: pa.Table) -> OneHot:
        self.categories_, self.infrequent_categories_ = self._learn(frame)
        try:
            self._plans()  # checks drop and the output names now rather than at the first transform
        except PreprocessingError:
            del self.categories_, self.infrequent_categories_
            raise
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        blocks = {}
        for name, plan in zip(self.columns, self._plans(), strict=True):
            positions = plan.lookup[self._indices(self._values(frame, name), plan.index, name)]
            onehot = np.zeros((len(plan.names), len(positions)))
            rows = np.flatnonzero(positions >= 0)
            onehot[positions[rows], rows] = 1.0
            blocks[name] = {n: pa.array(onehot[j]) for j, n in enumerate(plan.names)}
        return _replaced(frame, blocks)

    def output_names(self) -> tuple[tuple[str, ...], ...]:
        """Per column, the names of the columns transform puts in its place."""
        return tuple(plan.names for plan in self._plans())

    def hot(self, frame: pa.Table, i: int) -> np.ndarray:
        """Per row, which of column i's output columns (output_names()[i]) holds its 1 (-1: none), as transform
        places them; raises what transform raises."""
        name, plan = self.columns[i], self._plans()[i]
        return plan.lookup[self._indices(self._values(frame, name), plan.index, name)]

    def hot_strings(self, values: list[str], i: int) -> list[int] | None:
        """hot, of column i's values as a list of strings; None where transform would refuse one."""
        plan = self._plans()[i]
        positions, unknown = plan.positions, int(plan.lookup[-1])
        if self.params["handle_unknown"] == "error" and not all(v in positions for v in values):
            return None
        return [positions.get(v, unknown) for v in values]

    def _plan(self, i: int, name: str) -> _Plan:
        categories, rare = self.categories_[i], self._rare(i)
        frequent = [c for c in categories if c not in rare]
        position = {c: j for j, c in enumerate(frequent)}
        bucket = len(frequent) if rare else -1
        unknown = bucket if self.params["handle_unknown"] == "infrequent_if_exist" else -1
        lookup = np.array([*(position.get(c, bucket) for c in categories), unknown], dtype=np.int64)
        names = [f"{name}={_label(c)}" for c in frequent] + ([f"{name}={INFREQUENT}"] if rare else [])
        dropped = self._dropped(i, name, names, position, rare)
        if dropped is not None:
            lookup = np.where(lookup == dropped, -1, lookup - (lookup > dropped))
            del names[dropped]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise PreprocessingError(
                f"{self!r}: column {name!r} would give several columns named {_listed(clashes)} (a category is "
                f"named like the missing-value or '{INFREQUENT}' column); rename that category first"
            )
        return _Plan({c: j for j, c in enumerate(categories)}, lookup, tuple(names))

    def _dropped(self, i: int, name: str, names: list[str], position: dict[Category, int],
                 rare: set[Category]) -> int | None:
        drop = self.params["drop"]
        if drop is None or (drop == "if_binary" and len(names) != 2):
            return None
        if isinstance(drop, str):
            return 0
        wanted = drop[i]
        if wanted is not None and wanted in rare:
            raise PreprocessingError(
                f"{self!r}: cannot drop category {wanted!r} of column {name!r}: it is infrequent "
                f"(grouped into '{name}={INFREQUENT}')"
            )
        if wanted is not None and wanted not in position:
            raise PreprocessingError(
                f"{self!r}: cannot drop category {wanted!r} of column {name!r}: not one of its categories "
                f"({_shown(self.categories_[i])})"
            )
        return None if wanted is None else position[wanted]


@register_step
class IndexEncode(_Encoder):
    """An int64 code per category in place of the column, for embedding tables; scikit-learn's OrdinalEncoder.

    handle_unknown: "error"; "reserved" (code 0 for unknown and missing values, categories 1..K: an
    nn.Embedding needs cardinality_ = K + 1 rows); "use_encoded_value" (unknown values get unknown_value,
    categories 0..K-1). A missing value seen in training gets encoded_missing_value (required then, except
    with "reserved"); an unseen one is unknown. Infrequent categories share the code after the frequent ones.
    State: categories_, infrequent_categories_, cardinality_ (1 + the largest code, per column).

    >>> step = IndexEncode(["city"], handle_unknown="reserved").fit(pa.table({"city": ["oslo", "lima"]}))
    >>> step.transform(pa.table({"city": ["lima", "rome", None]})).column("city").to_pylist(), step.cardinality_
    ([1, 0, 0], (3,))
    """

    type = "indexencode"
    state = state_rules(categories_=per_column(KNOWN, lambda v: _known(v)),
                        infrequent_categories_=per_column(RARE, categories, within="categories_"),
                        cardinality_=per_column("integers >= 1", lambda v: _cardinality(v)))
    unknown_options = ("error", "reserved", "use_encoded_value")
    missing_is_counted = False
    fix = "use IndexEncode(..., handle_unknown='reserved') to encode unknowns as 0"

    def __init__(
        self,
        columns: Sequence[str],
        *,
        handle_unknown: str = "error",
        unknown_value: int | None = None,
        encoded_missing_value: int | None = None,
        categories: Sequence[Sequence[Any]] | Mapping[str, Sequence[Any]] | None = None,
        min_frequency: int | float | None = None,
        max_categories: int | None = None,
    ) -> None:
        unknown_value = _count("IndexEncode", "unknown_value", unknown_value)
        encoded_missing_value = _count("IndexEncode", "encoded_missing_value", encoded_missing_value)
        if (handle_unknown == "use_encoded_value") != (unknown_value is not None):
            raise PreprocessingError(
                "IndexEncode needs an integer unknown_value (e.g. -1) with handle_unknown='use_encoded_value' "
                f"and none otherwise, got unknown_value={unknown_value!r} with handle_unknown={handle_unknown!r}"
            )
        if handle_unknown == "reserved" and encoded_missing_value is not None:
            raise PreprocessingError(
                "IndexEncode(handle_unknown='reserved') encodes missing values as 0; "
                f"drop encoded_missing_value={encoded_missing_value!r}"
            )
        super().__init__(columns, handle_unknown=handle_unknown, categories=categories, min_frequency=min_frequency,
                         max_categories=max_categories, unknown_value=unknown_value,
                         encoded_missing_value=encoded_missing_value)

    def fit(self, frame: pa.Table) -> IndexEncode:
        return self.set_categories(*self._learn(frame))

    def set_categories(self, categories: tuple[Categories, ...], infrequent: tuple[Categories, ...]) -> IndexEncode:
        """Take learned categories (from fit, or copied from a fitted scikit-learn encoder) and the codes they need."""
        self.cardinality_ = tuple(
            self._cardinality(name, c, set(r)) for name, c, r in zip(self.columns, categories, infrequent, strict=True)
        )
        self.categories_, self.infrequent_categories_ = categories, infrequent
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        for name, plan in zip(self.columns, self._plans(), strict=True):
            codes = plan.lookup[self._indices(self._values(frame, name), plan.index, name)]
            frame = frame.set_column(frame.column_names.index(name), name, pa.array(codes, pa.int64()))
        return frame

    def _cardinality(self, name: str, categories: Categories, rare: set[Category]) -> int:
        """1 + the largest code; refuses an unknown_value or encoded_missing_value that is a category's code."""
        n_codes = sum(c is not None for c in categories) - len(rare) + bool(rare)
        if self.params["handle_unknown"] == "reserved":
            return n_codes + 1
        extra = {"unknown_value": self.params["unknown_value"]}
        if None in categories:
            extra["encoded_missing_value"] = self._missing_code(name, n_codes)
        for option, value in extra.items():
            if value is not None and 0 <= value < n_codes:
                raise PreprocessingError(
                    f"{self!r}: {option}={value} is already the code of a category of column {name!r} "
                    f"(codes 0..{n_codes - 1}); use a negative value or one >= {n_codes}"
                )
        return 1 + max([n_codes - 1, *(v for v in extra.values() if v is not None)])

    def _missing_code(self, name: str, n_codes: int) -> int:
        value = self.params["encoded_missing_value"]
        if value is None:
            raise PreprocessingError(
                f"{self!r}: column {name!r} has missing values in the training data (or None in categories); "
                f"pass encoded_missing_value=<int> (e.g. -1, or {n_codes} for an embedding row of its own), "
                "use handle_unknown='reserved', or impute them first"
            )
        return value

    def _plan(self, i: int, name: str) -> _Plan:
        categories, rare = self.categories_[i], self._rare(i)
        reserved = self.params["handle_unknown"] == "reserved"
        frequent = [c for c in categories if c is not None and c not in rare]
        code = {c: j + reserved for j, c in enumerate(frequent)}
        bucket = len(frequent) + reserved
        missing = 0 if reserved else self.params["encoded_missing_value"]
        unknown = 0 if reserved or self.params["unknown_value"] is None else self.params["unknown_value"]
        codes = [missing if c is None else code.get(c, bucket) for c in categories]
        return _Plan({c: j for j, c in enumerate(categories)}, np.array([*codes, unknown], dtype=np.int64))


# -- learning ------------------------------------------------------------------------------------------


def _counted(values: pa.ChunkedArray) -> tuple[Categories, np.ndarray]:
    """Distinct values in scikit-learn's order (numbers numerically, strings by code point, missing last)."""
    counts = pc.value_counts(values)
    order = pc.array_sort_indices(counts.field("values"))
    categories = counts.field("values").take(order).cast(pa.string()).to_pylist()
    return tuple(categories), counts.field("counts").take(order).to_numpy()


def _infrequent_mask(counts: np.ndarray, n_rows: int, min_frequency: float | None,
                     max_categories: int | None) -> np.ndarray:
    """scikit-learn's _identify_infrequent, step for step (ties: the earlier category is the rarer)."""
    if min_frequency is None:
        mask = np.zeros(len(counts), dtype=bool)
    else:
        mask = counts < (min_frequency if isinstance(min_frequency, int) else n_rows * min_frequency)
    if max_categories is not None and max_categories < len(counts) - mask.sum() + 1:
        frequent = max_categories - 1
        if frequent == 0:
            mask[:] = True
        else:
            mask[np.argsort(counts, kind="mergesort")[:-frequent]] = True
    return mask


# -- state read from JSON ------------------------------------------------------------------------------


def _known(value: Any) -> Categories:
    """One column's learned categories: at least one."""
    known = categories(value)
    if not known:
        raise ValueError("no categories")
    return known


def _cardinality(value: Any) -> int:
    """One column's embedding size: 1 + its largest code."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("not an integer >= 1")
    return value


# -- parameters ----------------------------------------------------------------------------------------


def _given(kind: str, columns: tuple[str, ...], categories: Any) -> tuple[Categories, ...] | None:
    if categories is None:
        return None
    if isinstance(categories, Mapping):
        _check_keys(kind, "categories", columns, categories)
        categories = [categories.get(c, ()) for c in columns]
    if isinstance(categories, str) or len(categories) != len(columns) or any(
        isinstance(c, str) or not len(c) for c in categories
    ):
        raise PreprocessingError(
            f"{kind} categories must give a non-empty list for each of the {len(columns)} columns"
        )
    given = tuple(tuple(_category(kind, v) for v in c) for c in categories)
    for name, cats in zip(columns, given, strict=True):
        if len(set(cats)) < len(cats):
            raise PreprocessingError(f"{kind} categories of column {name!r} hold duplicates: {_shown(cats)}")
        if None in cats[:-1]:
            raise PreprocessingError(
                f"{kind} categories of column {name!r}: the missing-value category (None) must come last"
            )
    return given


def _category(kind: str, value: Any) -> Category:
    """A given category in the string form of the values it matches (1 and 1.0 -> "1", True -> "true")."""
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return pa.scalar(float(value) + 0.0).cast(pa.string()).as_py()
    raise PreprocessingError(
        f"{kind} categories are strings, numbers, booleans or None, got {value!r} ({type(value).__name__})"
    )


def _drop(columns: tuple[str, ...], drop: Any) -> str | tuple[Category, ...] | None:
    if drop is None or (isinstance(drop, str) and drop in ("first", "if_binary")):
        return drop
    if isinstance(drop, np.ndarray):
        drop = drop.tolist()
    if isinstance(drop, Mapping):
        _check_keys("OneHot", "drop", columns, drop)
        drop = [drop.get(c) for c in columns]
    if isinstance(drop, str) or not isinstance(drop, Sequence) or len(drop) != len(columns):
        raise PreprocessingError(
            f"OneHot drop must be None, 'first', 'if_binary' or one category per column ({len(columns)}), "
            f"got {drop!r}"
        )
    if any(v is not None and _category("OneHot", v) is None for v in drop):
        raise PreprocessingError("OneHot cannot drop the missing-value category; use None for 'drop nothing'")
    return tuple(None if v is None else _category("OneHot", v) for v in drop)


def _check_keys(kind: str, option: str, columns: tuple[str, ...], given: Mapping[str, Any]) -> None:
    unknown = [k for k in given if k not in columns]
    if unknown:
        raise PreprocessingError(f"{kind} {option} name column(s) {_listed(unknown)} that are not in columns")


def _min_frequency(kind: str, value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value >= 1:
        return int(value)
    fraction = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_, numbers.Integral))
    if fraction and 0 < value < 1:
        return float(value)
    raise PreprocessingError(
        f"{kind} min_frequency must be a count (int >= 1) or a fraction of the rows (float in (0, 1)), "
        f"got {value!r}"
    )


def _count(kind: str, option: str, value: Any, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or (
        minimum is not None and value < minimum
    ):
        wanted = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise PreprocessingError(f"{kind} {option} must be {wanted}, got {value!r}")
    return int(value)


# -- output --------------------------------------------------------------------------------------------


def _replaced(frame: pa.Table, blocks: dict[str, dict[str, pa.Array]]) -> pa.Table:
    """Each column in `blocks` replaced, at its position, by its block of columns."""
    names, arrays = [], []
    for name, col in zip(frame.column_names, frame.columns, strict=True):
        block = blocks.get(name)
        names += [name] if block is None else list(block)
        arrays += [col] if block is None else list(block.values())
    return pa.Table.from_arrays(arrays, names=names)


def _lookup(values: pa.ChunkedArray, index: dict[Category, int]) -> np.ndarray:
    """Each row's category index, -1 when unknown.

    Only the distinct values of the batch are looked up, so a batch of a few rows costs little even
    against a vocabulary of millions (pc.index_in would hash the whole vocabulary on every call).
    """
    if len(values) <= SMALL and pa.types.is_string(values.type):  # a few strings: a dict lookup each
        return np.array([index.get(v, -1) for v in values.to_pylist()], dtype=np.int64)
    encoded = pc.dictionary_encode(values.combine_chunks(), null_encoding="encode")
    distinct = encoded.dictionary.cast(pa.string()).to_pylist()
    return np.array([index.get(v, -1) for v in distinct], dtype=np.int64)[encoded.indices.to_numpy()]


def _unknown_rows(values: pa.ChunkedArray, plan: _Plan) -> np.ndarray:
    """The rows whose value is none of the plan's categories."""
    if len(values) <= SMALL and pa.types.is_string(values.type):  # a few strings: a dict lookup each
        index = plan.index
        return np.flatnonzero([v not in index for v in values.to_pylist()])
    known = pc.is_in(values.cast(pa.string()), value_set=plan.known, skip_nulls=False)
    return np.flatnonzero(~known.to_numpy(zero_copy_only=False))


def _unknown_message(values: pa.ChunkedArray, rows: np.ndarray, name: str, categories: list[Category], when: str,
                     fix: str, shown_row: int) -> str:
    """The error for rows holding unknown categories, naming the first (as row shown_row) and the known ones."""
    return (
        f"column {name!r}: unknown category {_category_text(values[int(rows[0])].as_py())} at row "
        f"{shown_row}{' ' + when if when else ''} ({len(rows)} row(s) unknown); known categories: "
        f"{_shown(categories)}; {fix if not when else 'add it to categories or change handle_unknown'}"
    )


def _unknown_wording(values: pa.ChunkedArray, rows: np.ndarray, name: str, categories: list[Category],
                     fix: str) -> tuple[Callable[[np.ndarray], list[str]], Callable[[int], str]]:
    """Validation's wording of rows holding unknown categories: a reason per row, and the error message given
    the input row number of the first."""

    def reasons(some: np.ndarray) -> list[str]:
        return [f"column {name!r}: unknown category {_category_text(values[int(r)].as_py())}" for r in some]

    return reasons, lambda row: _unknown_message(values, rows, name, categories, "", fix, row)


def _category_text(value: Any) -> str:
    return "null" if value is None else repr(value)


def _label(category: Category) -> str:
    return "null" if category is None else category


def _shown(categories: Sequence[Category], limit: int = 20) -> str:
    shown = ", ".join("null" if c is None else repr(c) for c in categories[:limit])
    return shown + (", …" if len(categories) > limit else "")


def _listed(names: Sequence[Any]) -> str:
    return ", ".join(repr(n) for n in names)
