"""Shared Hypothesis strategies: tables of numbers and categories with missing values, and the preprocessing
steps (of every registered type) and Preprocessors that can be fitted on them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import strategies as st

from torchpredict.preprocessing import (
    Bucketize,
    Clip,
    Impute,
    IndexEncode,
    Log1p,
    MaxAbs,
    MinMax,
    OneHot,
    Power,
    Preprocessor,
    Robust,
    Standardize,
    Step,
)
from torchpredict.preprocessing.steps import float64_values

KINDS = ("signed", "positive", "int", "string")
WORDS = ("a", "b", "c", "d", "e", "f")


def _values(kind: str) -> st.SearchStrategy:
    if kind == "signed":
        return st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
    if kind == "positive":
        return st.floats(0.01, 1e3, allow_nan=False, allow_subnormal=False)
    if kind == "int":
        return st.integers(-50, 50)
    return st.sampled_from(WORDS)


@st.composite
def columns(draw: st.DrawFn, kind: str, n_rows: int) -> pa.Array:
    """One column of `kind`; some values may be missing (null, or NaN in float columns), never the first."""
    values = draw(st.lists(_values(kind), min_size=n_rows, max_size=n_rows))
    missing = [False, *draw(st.lists(st.booleans(), min_size=n_rows - 1, max_size=n_rows - 1))]
    if not draw(st.booleans()):
        missing = [False] * n_rows
    if kind in ("signed", "positive") and draw(st.booleans()):  # NaN rather than null
        return pa.array(np.where(missing, np.nan, np.asarray(values, dtype=np.float64)))
    types = {"signed": pa.float64(), "positive": pa.float64(), "int": pa.int64(), "string": pa.string()}
    return pa.array(values, types[kind], mask=np.array(missing))


@st.composite
def tables(draw: st.DrawFn, min_rows: int = 1, max_rows: int = 25, max_columns: int = 5,
           needs: str | None = None) -> pa.Table:
    """A table of 1..max_columns columns named c0, c1, ... of mixed kinds (see KINDS).

    needs: "string", "numeric", or "positive" (complete, distinct values > 0): a column of that kind is added
    first, so that a step that needs one has it.
    """
    n_rows = draw(st.integers(max(min_rows, 2 if needs == "positive" else 1), max_rows))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=max_columns))
    found = {f"c{i}": draw(columns(kind, n_rows)) for i, kind in enumerate(kinds)}
    if needs == "positive":
        values = draw(st.lists(_values("positive"), min_size=n_rows, max_size=n_rows, unique=True))
        found = {"p": pa.array(values, pa.float64()), **found}
    elif needs is not None:
        found = {"n": draw(columns("string" if needs == "string" else "signed", n_rows)), **found}
    return pa.table(found)


# -- what a column allows --------------------------------------------------------------------------


def numeric(table: pa.Table) -> list[str]:
    return [n for n in table.column_names if not pa.types.is_string(table.column(n).type)]


def strings(table: pa.Table) -> list[str]:
    return [n for n in table.column_names if pa.types.is_string(table.column(n).type)]


def _present(table: pa.Table, name: str) -> np.ndarray:
    x = float64_values(table.column(name))
    return x[~np.isnan(x)]


def has_missing(table: pa.Table, name: str) -> bool:
    return bool(pc.any(pc.is_null(table.column(name), nan_is_null=True)).as_py())


def positive(table: pa.Table) -> list[str]:
    """Numeric columns whose values are all > 0 with two distinct ones (what Box-Cox needs)."""
    return [n for n in numeric(table) if (_present(table, n) > 0).all() and len(np.unique(_present(table, n))) > 1]


def complete(table: pa.Table) -> list[str]:
    return [n for n in numeric(table) if not has_missing(table, n)]


# -- steps -----------------------------------------------------------------------------------------

Builder = Callable[[list[str]], st.SearchStrategy[Step]]


def subsets(names: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True)


def _standardize(names: list[str]) -> st.SearchStrategy[Step]:
    return st.builds(Standardize, subsets(names), with_mean=st.booleans(), with_std=st.booleans())


def _minmax(names: list[str]) -> st.SearchStrategy[Step]:
    ranges = st.tuples(st.floats(-5, 0), st.floats(0.5, 5))
    return st.builds(MinMax, subsets(names), feature_range=ranges, clip=st.booleans())


def _robust(names: list[str]) -> st.SearchStrategy[Step]:
    ranges = st.tuples(st.floats(1, 49), st.floats(51, 99))
    return st.builds(Robust, subsets(names), with_centering=st.booleans(), with_scaling=st.booleans(),
                     quantile_range=ranges, unit_variance=st.booleans())


def _maxabs(names: list[str]) -> st.SearchStrategy[Step]:
    return st.builds(MaxAbs, subsets(names))


def _clip(names: list[str]) -> st.SearchStrategy[Step]:
    bounds = st.one_of(st.tuples(st.none(), st.floats(-10, 10)), st.tuples(st.floats(-10, 0), st.floats(0, 10)),
                       st.tuples(st.floats(-10, 10), st.none()))
    return st.builds(lambda cols, b: Clip(cols, lower=b[0], upper=b[1]), subsets(names), bounds)


def _log1p(names: list[str]) -> st.SearchStrategy[Step]:
    return st.builds(Log1p, subsets(names))


def _yeo_johnson(names: list[str]) -> st.SearchStrategy[Step]:
    return st.builds(Power, subsets(names), standardize=st.booleans())


def _box_cox(names: list[str]) -> st.SearchStrategy[Step]:
    return st.builds(Power, subsets(names), method=st.just("box-cox"), standardize=st.booleans())


@st.composite
def _bucketize(draw: st.DrawFn, names: list[str]) -> Step:
    cols = draw(subsets(names))
    encode = draw(st.sampled_from(["onehot", "ordinal"]))
    if draw(st.booleans()):
        edges = [sorted(set(draw(st.lists(st.floats(-100, 100), min_size=2, max_size=5)))) for _ in cols]
        if all(len(e) >= 2 for e in edges):
            return Bucketize(cols, edges=edges, encode=encode)
    strategy = draw(st.sampled_from(["uniform", "quantile", "kmeans"]))
    return Bucketize(cols, n_bins=draw(st.integers(2, 4)), strategy=strategy, encode=encode)


@st.composite
def _impute_numbers(draw: st.DrawFn, names: list[str]) -> Step:
    strategy = draw(st.sampled_from(Impute.strategies))
    fill = draw(st.floats(-10, 10)) if strategy == "constant" else None
    return Impute(draw(subsets(names)), strategy=strategy, fill_value=fill, add_indicator=draw(st.booleans()))


@st.composite
def _impute_strings(draw: st.DrawFn, names: list[str]) -> Step:
    strategy = draw(st.sampled_from(["most_frequent", "constant"]))
    fill = "zz" if strategy == "constant" else None
    return Impute(draw(subsets(names)), strategy=strategy, fill_value=fill, add_indicator=draw(st.booleans()))


def _grouping() -> dict[str, st.SearchStrategy]:
    return {"min_frequency": st.one_of(st.none(), st.integers(1, 3), st.floats(0.05, 0.5)),
            "max_categories": st.one_of(st.none(), st.integers(2, 4))}


def _onehot(names: list[str]) -> st.SearchStrategy[Step]:
    unknown = st.sampled_from(OneHot.unknown_options)
    drop = st.sampled_from([None, "first", "if_binary"])
    return st.builds(OneHot, subsets(names), handle_unknown=unknown, drop=drop, **_grouping())


@st.composite
def _index_encode(draw: st.DrawFn, names: list[str]) -> Step:
    options = draw(st.sampled_from([{"handle_unknown": "reserved"},
                                    {"handle_unknown": "use_encoded_value", "unknown_value": -1,
                                     "encoded_missing_value": -2},
                                    {"handle_unknown": "error", "encoded_missing_value": -1}]))
    return IndexEncode(draw(subsets(names)), **options, **draw(st.fixed_dictionaries(_grouping())))


BUILDERS: dict[str, tuple[Builder, Callable[[pa.Table], list[str]], str]] = {
    # kind of step: (strategy for it, the columns it may take, what the table needs for it)
    "standardize": (_standardize, numeric, "numeric"),
    "minmax": (_minmax, numeric, "numeric"),
    "robust": (_robust, numeric, "numeric"),
    "maxabs": (_maxabs, numeric, "numeric"),
    "clip": (_clip, numeric, "numeric"),
    "yeo-johnson": (_yeo_johnson, numeric, "numeric"),
    "box-cox": (_box_cox, positive, "positive"),
    "log1p": (_log1p, positive, "positive"),
    "bucketize": (_bucketize, complete, "positive"),
    "impute-numbers": (_impute_numbers, numeric, "numeric"),
    "impute-strings": (_impute_strings, strings, "string"),
    "onehot-strings": (_onehot, strings, "string"),
    "onehot-numbers": (_onehot, numeric, "numeric"),
    "indexencode": (_index_encode, strings, "string"),
}


@st.composite
def tables_and_steps(draw: st.DrawFn, kind: str) -> tuple[pa.Table, Step]:
    """A table and an unfitted step of `kind` (a key of BUILDERS) on some of its columns."""
    build, names, needs = BUILDERS[kind]
    table = draw(tables(needs=needs))
    return table, draw(build(names(table)))


@st.composite
def preprocessors(draw: st.DrawFn, table: pa.Table) -> Preprocessor:
    """An unfitted Preprocessor that can be fitted on `table`: missing numbers imputed, then a numeric step or
    none per numeric column, every string column encoded; IndexEncode codes go to an input of their own."""
    chosen: list[Step] = []
    for name in numeric(table):
        if has_missing(table, name):
            chosen.append(draw(_impute_numbers([name])))
        builder = draw(st.sampled_from([None, _standardize, _minmax, _robust, _maxabs, _clip, _yeo_johnson,
                                        _bucketize]))
        if builder is not None:
            chosen.append(draw(builder([name])))
    codes = []
    for name in strings(table):
        if draw(st.booleans()):
            chosen.append(draw(_onehot([name])))
        else:
            chosen.append(IndexEncode([name], handle_unknown="reserved"))
            codes.append(name)
    others = [n for n in table.column_names if n not in codes]
    if codes and others and draw(st.booleans()):
        return Preprocessor(chosen, inputs={"codes": codes, "x": others})
    return Preprocessor(chosen)
