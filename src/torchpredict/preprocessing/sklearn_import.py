"""scikit-learn import: a fitted ColumnTransformer or Pipeline as an equivalent, fitted Preprocessor.

Data scientists who already fitted their preprocessing in scikit-learn keep it: each supported
transformer maps 1:1 onto a torchpredict step whose learned state is copied from the fitted object
(nothing is refitted), and the model input "x" holds the columns in the order of `ct.transform(X)`.

A column that feeds several ColumnTransformer branches is copied (one Copy step before the branches, sharing
the column's buffers): steps replace their columns in place, so the first branch reading it works on the
column and each further branch on a copy named f"{branch}__{column}" (scikit-learn's output name; with
underscores in front while that name is taken). The schema lists the column once.

Limitations, each refused with a message rather than converted approximately:
- OrdinalEncoder codes must be integers (unknown_value / encoded_missing_value of NaN are refused);
- FunctionTransformer only as np.log1p or the identity; transformer_weights are not supported;
- missing values are NaN or None (SimpleImputer's default `missing_values`).
The output is always a dense float32 matrix, whatever `sparse_output` / `sparse_threshold` say.
Without training data (`X=None`) the schema knows the columns and their dtypes but no training
statistics, so prediction runs report no drift for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.binning import Bucketize
from torchpredict.preprocessing.categorical import IndexEncode, OneHot
from torchpredict.preprocessing.copying import Copy
from torchpredict.preprocessing.missing import Impute
from torchpredict.preprocessing.numeric import Log1p, MaxAbs, MinMax, Robust, Standardize
from torchpredict.preprocessing.power import Power
from torchpredict.preprocessing.preprocessor import FLOAT32, Preprocessor
from torchpredict.preprocessing.steps import Step, is_numeric
from torchpredict.schema.columns import DTYPES, Column
from torchpredict.schema.schema import Schema
from torchpredict.schema.tables import as_table
from torchpredict.schema.validation import free_name

__all__ = ["SUPPORTED", "convert"]

SUPPORTED = (
    "StandardScaler, MinMaxScaler, RobustScaler, MaxAbsScaler, PowerTransformer, SimpleImputer, OneHotEncoder, "
    "OrdinalEncoder, KBinsDiscretizer, FunctionTransformer(np.log1p), Pipeline, ColumnTransformer, 'passthrough', "
    "'drop'"
)
INSTALL_HINT = "scikit-learn import needs scikit-learn: pip install 'torchpredict[sklearn]'"

Leaf = Callable[[Any, list[str]], "Step | None"]  # fitted transformer, its columns -> step (None: identity)


def convert(fitted: Any, X: Any = None) -> Preprocessor:
    """A fitted, ready-to-transform Preprocessor equivalent to a fitted scikit-learn transformer.

    fitted: a ColumnTransformer, Pipeline or single transformer of the kinds in SUPPORTED.
    X: the training data (optional), used only for the schema's statistics (ranges, categories, missing
    rates: what drift reports compare against). Its columns are named as in `fitted.feature_names_in_`,
    or x0, x1, ... when scikit-learn was fitted on an array.

    >>> pre = convert(column_transformer, X=train_frame)                 # doctest: +SKIP
    >>> np.allclose(pre.transform(test_frame)["x"], column_transformer.transform(test_frame))  # doctest: +SKIP
    True
    """
    _require_sklearn()
    names = _input_names(fitted)
    walk = _Walk(names)
    order = walk.node(fitted, names, "")
    if not order:
        raise PreprocessingError(f"{type(fitted).__name__} outputs no columns; there is nothing to convert")
    features = [n for n in names if walk.reads(n)]
    nullable = {n for n in features if walk.accepts_missing(n)}
    schema = _schema(X, names, features, nullable) if X is not None else Schema(
        tuple(Column(n, walk.dtype(n), (), n in nullable) for n in features)
    )
    frame = _dry_run(walk.steps, schema)
    return Preprocessor.from_dict({
        "steps": [s.to_dict() for s in walk.steps],
        "features": features,
        "passthrough": [],
        "input_name": "x",
        "inputs": {"x": order},
        "state": {
            "schema": schema.to_dict(),
            "feature_names": frame.column_names,
            "inputs": {"x": {"columns": order, "dtype": FLOAT32}},  # scikit-learn's output is a float matrix
        },
    })


class _Walk:
    """Visits a fitted scikit-learn tree depth first, collecting steps and, per input column and per copy of
    it, the leaf transformer that sees it first (they tell the column's dtype and whether it may be missing)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.inputs = set(names)
        self.taken = set(names)  # every column name used so far, which a copy's name must avoid
        self.steps: list[Step] = []
        self.first: dict[str, tuple[Any, Step | None, int]] = {}  # column -> (transformer, step, position)
        self.origin: dict[str, str] = {}  # a copy of an input column, made before any step read it -> that column

    def node(self, est: Any, columns: list[str], where: str) -> list[str]:
        """Convert `est` applied to `columns`; returns its output columns in scikit-learn's order."""
        if isinstance(est, str) or est is None:
            if est in ("passthrough", None):
                return self.leaf(est, None, columns)
            if est == "drop":
                return []
            raise _refused(where, f"{est!r} is not a transformer")
        _check_fitted(est, where)
        pipeline, column_transformer = _containers()
        if type(est) is pipeline:
            return self.pipeline(est, columns, where)
        if type(est) is column_transformer:
            return self.column_transformer(est, columns, where)
        convert_leaf = _leaves().get(type(est))
        if convert_leaf is None:
            model = "" if hasattr(est, "transform") else "; convert the preprocessing alone, e.g. pipeline[:-1]"
            raise _refused(where, f"{type(est).__name__} is not supported; supported: {SUPPORTED}{model}")
        n_in = getattr(est, "n_features_in_", len(columns))
        if n_in != len(columns):
            raise _refused(where, f"{type(est).__name__} was fitted on {n_in} column(s) but receives {len(columns)}")
        try:
            return self.leaf(est, convert_leaf(est, columns), columns)
        except PreprocessingError as exc:
            raise _refused(where, f"{type(est).__name__}: {exc}") from None

    def leaf(self, est: Any, step: Step | None, columns: list[str]) -> list[str]:
        for i, name in enumerate(columns):
            if name in self.inputs or name in self.origin:
                self.first.setdefault(name, (est, step, i))
        if step is None:
            return list(columns)
        self.steps.append(step)
        outputs = _sklearn_order(step)
        self.taken.update(outputs)
        return outputs

    def pipeline(self, est: Any, columns: list[str], where: str) -> list[str]:
        for i, (_, step) in enumerate(est.steps, 1):
            columns = self.node(step, columns, f"{where} step {i}" if where else f"Pipeline step {i}")
        return columns

    def column_transformer(self, est: Any, columns: list[str], where: str) -> list[str]:
        here = f"{where}, ColumnTransformer" if where else "ColumnTransformer"
        if est.transformer_weights:
            raise _refused(here, "transformer_weights are not supported; scale the branches' outputs in the model")
        names_in = [str(n) for n in getattr(est, "feature_names_in_", range(len(columns)))]
        branches = []
        for name, trans, selected in est.transformers_:
            picked = [columns[i] for i in _column_indices(selected, names_in)]
            if picked and not (isinstance(trans, str) and trans == "drop"):
                branches.append((name, trans, picked))
        outputs: list[str] = []
        for name, trans, picked in self.shared(branches):
            outputs += self.node(trans, picked, f"{here} branch {name!r}")
        return outputs

    def shared(self, branches: list[tuple[str, Any, list[str]]]) -> list[tuple[str, Any, list[str]]]:
        """The branches with each column an earlier branch (or the same one) reads replaced by a copy, made by
        one Copy step before the branches: steps replace their columns, so every branch needs its own."""
        seen: set[str] = set()
        sources: list[Any]
        names: list[Any]
        renamed: list[Any]
        sources, names, renamed = [], [], []
        for branch, trans, picked in branches:
            columns = []
            for column in picked:
                if column in seen:
                    copy = free_name(f"{branch}__{column}", self.taken | set(names))
                    sources.append(column)
                    names.append(copy)
                    raw = self.origin.get(column, column)
                    if raw in self.inputs and column not in self.first:  # no step has changed it yet
                        self.origin[copy] = raw
                    column = copy
                seen.add(column)
                columns.append(column)
            renamed.append((branch, trans, columns))
        if names:
            self.taken.update(names)
            self.steps.append(Copy(sources, names=names))
        return renamed

    def reads(self, name: str) -> list[tuple[str, tuple[Any, Step | None, int]]]:
        """For input column `name`, the leaf reading it first in each branch: (the column as that leaf calls it,
        the leaf's first entry), for the column itself and every copy made of it."""
        seen = [name, *(copy for copy, raw in self.origin.items() if raw == name)]
        return [(n, self.first[n]) for n in seen if n in self.first]

    def accepts_missing(self, name: str) -> bool:
        """Whether the first step on column `name` in every branch takes missing values (imputes or encodes
        them); a branch passing them on gives the model NaN."""
        return all(_takes_missing(step, seen) for seen, (_, step, _) in self.reads(name))

    def dtype(self, name: str) -> str:
        """The schema dtype of input column `name`, from what the first transformers on it learned."""
        dtypes = [_dtype(seen, *first) for seen, first in self.reads(name)]
        return next((d for d in dtypes if d != "float64"), "float64")


def _takes_missing(step: Step | None, name: str) -> bool:
    """Whether step, the first on column `name` in its branch, takes missing values in it."""
    if isinstance(step, Impute):
        return True
    if isinstance(step, (OneHot, IndexEncode)):
        return step.accepts_missing(name, None in step.categories_[step.columns.index(name)])
    return False


def _dtype(name: str, est: Any, step: Step | None, i: int) -> str:
    """The dtype a fitted transformer learned column `name` (its i-th) has: encoders and imputers know."""
    if isinstance(step, (OneHot, IndexEncode)):
        kind = np.asarray(est.categories_[i]).dtype.kind
        return {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}.get(kind, "string")
    if isinstance(step, Impute) and isinstance(step.statistics_[step.columns.index(name)], str):
        return "string"
    return "float64"


# -- one converter per supported transformer -----------------------------------------------------------


def _standard(est: Any, columns: list[str]) -> Step:
    step = Standardize(columns, with_mean=est.with_mean, with_std=est.with_std)
    step.mean_ = _floats(est.mean_) if est.with_mean else (0.0,) * len(columns)
    step.scale_ = _floats(est.scale_) if est.with_std else (1.0,) * len(columns)
    return step


def _minmax(est: Any, columns: list[str]) -> Step:
    step = MinMax(columns, feature_range=est.feature_range, clip=est.clip)
    step.data_min_, step.data_max_ = _floats(est.data_min_), _floats(est.data_max_)
    return step


def _robust(est: Any, columns: list[str]) -> Step:
    step = Robust(columns, with_centering=est.with_centering, with_scaling=est.with_scaling,
                  quantile_range=est.quantile_range, unit_variance=est.unit_variance)
    step.center_ = _floats(est.center_) if est.with_centering else (0.0,) * len(columns)
    step.scale_ = _floats(est.scale_) if est.with_scaling else (1.0,) * len(columns)
    return step


def _maxabs(est: Any, columns: list[str]) -> Step:
    step = MaxAbs(columns)
    step.scale_ = _floats(est.scale_)
    return step


def _power(est: Any, columns: list[str]) -> Step:
    step = Power(columns, method=est.method, standardize=est.standardize)
    step.lambdas_ = _floats(est.lambdas_)
    # PowerTransformer keeps its standardization only in a private StandardScaler: no public attribute has it, and
    # refitting would need the training data; tests/test_layers.py lists this as the one allowed private read
    if est.standardize:
        step.mean_, step.scale_ = _floats(est._scaler.mean_), _floats(est._scaler.scale_)
    else:
        step.mean_, step.scale_ = (0.0,) * len(columns), (1.0,) * len(columns)
    return step


def _function(est: Any, columns: list[str]) -> Step | None:
    if est.func is None:  # the identity; ColumnTransformer's fitted form of 'passthrough'
        return None
    if est.func is not np.log1p or est.kw_args:
        name = getattr(est.func, "__name__", repr(est.func))
        raise PreprocessingError(f"func={name} with kw_args={est.kw_args!r} is not supported; only np.log1p or none")
    return Log1p(columns)


def _impute(est: Any, columns: list[str]) -> Step:
    if not _is_nan_or_none(est.missing_values):
        raise PreprocessingError(
            f"missing_values={est.missing_values!r} is not supported; torchpredict reads NaN and None as missing"
        )
    if est.strategy not in Impute.strategies:
        raise PreprocessingError(f"strategy={est.strategy!r} is not supported; use one of {Impute.strategies}")
    statistics = tuple(str(v) if isinstance(v, str) else float(v) for v in est.statistics_)
    empty = [c for c, v in zip(columns, statistics, strict=True) if not isinstance(v, str) and np.isnan(v)]
    if empty:
        raise PreprocessingError(
            f"column(s) {', '.join(map(repr, empty))} had no values in training, and scikit-learn drops them; "
            "leave them out of the transformer or set keep_empty_features=True"
        )
    fill = None
    if est.strategy == "constant":  # scikit-learn's default fill_value: 0, or "missing_value" for strings
        fill = statistics[0] if est.fill_value is None else est.fill_value
        fill = str(fill) if isinstance(fill, str) else float(fill)
    step = Impute(columns, strategy=est.strategy, fill_value=fill, add_indicator=est.add_indicator)
    step.statistics_ = statistics
    step.indicator_columns_ = tuple(columns[i] for i in est.indicator_.features_) if est.add_indicator else ()
    return step


def _onehot(est: Any, columns: list[str]) -> Step:
    categories = _categories(columns, est.categories_)
    drop = None
    if est.drop_idx_ is not None:
        drop = [None if j is None else categories[i][int(j)] for i, j in enumerate(est.drop_idx_)]
    handle_unknown = "infrequent_if_exist" if est.handle_unknown == "warn" else est.handle_unknown
    step = OneHot(columns, handle_unknown=handle_unknown, categories=_given(est, categories),
                  min_frequency=est.min_frequency, max_categories=est.max_categories, drop=drop)
    step.categories_ = categories
    step.infrequent_categories_ = _infrequent(est, categories)
    return step


def _ordinal(est: Any, columns: list[str]) -> Step:
    categories = _categories(columns, est.categories_)
    use_value = est.handle_unknown == "use_encoded_value"
    if use_value and _is_nan_or_none(est.unknown_value):
        raise PreprocessingError("unknown_value=nan is not supported: codes are integers; use e.g. -1")
    missing_value = None if _is_nan_or_none(est.encoded_missing_value) else int(est.encoded_missing_value)
    if missing_value is None and any(None in c for c in categories):
        raise PreprocessingError(
            "encoded_missing_value=nan is not supported: codes are integers; use e.g. encoded_missing_value=-1"
        )
    unknown_value = est.unknown_value if use_value else None
    step = IndexEncode(columns, handle_unknown=est.handle_unknown, unknown_value=unknown_value,
                       encoded_missing_value=missing_value, categories=_given(est, categories),
                       min_frequency=est.min_frequency, max_categories=est.max_categories)
    return step.set_categories(categories, _infrequent(est, categories))  # the codes as IndexEncode.fit gives them


def _bins(est: Any, columns: list[str]) -> Step:
    method = getattr(est, "quantile_method", "warn")  # before 1.7 (and with "warn"), numpy's "linear"
    n_bins = int(est.n_bins) if np.ndim(est.n_bins) == 0 else [int(n) for n in est.n_bins]
    step = Bucketize(columns, n_bins=n_bins, strategy=est.strategy,
                     quantile_method="linear" if method == "warn" else method,
                     encode="ordinal" if est.encode == "ordinal" else "onehot")
    # a constant training column has edges (-inf, inf) in scikit-learn; any equal pair means one bin here
    step.bin_edges_ = tuple(_floats(e) if np.all(np.isfinite(e)) else (0.0, 0.0) for e in est.bin_edges_)
    return step


@cache
def _leaves() -> dict[type, Leaf]:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import (
        FunctionTransformer,
        KBinsDiscretizer,
        MaxAbsScaler,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        PowerTransformer,
        RobustScaler,
        StandardScaler,
    )

    return {
        StandardScaler: _standard, MinMaxScaler: _minmax, RobustScaler: _robust, MaxAbsScaler: _maxabs,
        PowerTransformer: _power, FunctionTransformer: _function, SimpleImputer: _impute, OneHotEncoder: _onehot,
        OrdinalEncoder: _ordinal, KBinsDiscretizer: _bins,
    }


@cache
def _containers() -> tuple[type, type]:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    return Pipeline, ColumnTransformer


# -- helpers -------------------------------------------------------------------------------------------


def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401  # the optional extra
    except ImportError:
        raise PreprocessingError(INSTALL_HINT) from None


def _check_fitted(est: Any, where: str) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(est)
    except NotFittedError:
        raise _refused(where, f"{type(est).__name__} is not fitted; fit it before converting") from None
    except TypeError:  # not an estimator at all
        raise _refused(where, f"{type(est).__name__} is not supported; supported: {SUPPORTED}") from None


def _refused(where: str, why: str) -> PreprocessingError:
    return PreprocessingError(f"{where}: {why}" if where else why)


def _input_names(fitted: Any) -> list[str]:
    names = getattr(fitted, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    n = getattr(fitted, "n_features_in_", None)
    if n is None:
        return []  # unfitted or unsupported: node() says which
    return [f"x{i}" for i in range(n)]  # scikit-learn's names for the columns of an array


def _column_indices(selected: Any, names: list[str]) -> list[int]:
    """Positions of a fitted ColumnTransformer's column selection (names, positions, a slice or a mask)."""
    if isinstance(selected, slice):
        if isinstance(selected.start, str) or isinstance(selected.stop, str):  # label slices include the stop
            start = 0 if selected.start is None else names.index(selected.start)
            stop = len(names) if selected.stop is None else names.index(selected.stop) + 1
            return list(range(start, stop))
        return list(range(len(names)))[selected]
    values: list[Any] = [selected] if np.isscalar(selected) else list(selected)
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return [i for i, v in enumerate(values) if v]
    return [names.index(v) if isinstance(v, str) else int(v) % len(names) for v in values]


def _dry_run(steps: Sequence[Step], schema: Schema) -> pa.Table:
    """The steps applied to no rows of the schema's types: it names the transformed columns and checks that
    each is a number (scikit-learn passes strings through unencoded; a model cannot take them)."""
    frame = pa.table({c.name: pa.array([], DTYPES[c.dtype]) for c in schema.features})
    for step in steps:
        frame = step.transform(frame)
    for name, col in zip(frame.column_names, frame.columns, strict=True):
        if not is_numeric(col.type):
            raise PreprocessingError(
                f"column {name!r} reaches the model input as {col.type} values, passed through unencoded; "
                "encode it (OneHotEncoder, OrdinalEncoder) or drop it in the ColumnTransformer"
            )
    return frame


def _sklearn_order(step: Step) -> list[str]:
    """The step's output columns in scikit-learn's order: SimpleImputer puts its indicators after every
    imputed column, where Impute puts each right after its column."""
    names = step.transform(pa.table({c: pa.nulls(0) for c in step.columns})).column_names
    if isinstance(step, Impute):
        return [n for n in names if n in step.columns] + [n for n in names if n not in step.columns]
    return names


def _categories(columns: list[str], categories: Sequence[np.ndarray]) -> tuple[tuple[str | None, ...], ...]:
    """scikit-learn's categories_ in torchpredict's form (values as strings, None for missing), through the
    same normalisation OneHot applies to given categories."""
    return OneHot(columns, categories=[list(c) for c in categories]).params["categories"]


def _given(est: Any, categories: tuple) -> tuple | None:
    return None if isinstance(est.categories, str) else categories  # 'auto': learned, not given


def _infrequent(est: Any, categories: tuple) -> tuple[tuple[str | None, ...], ...]:
    """Per column, the categories grouped as infrequent (empty when grouping is off)."""
    if est.min_frequency is None and est.max_categories is None:
        return tuple(() for _ in categories)
    out = []
    for cats, raw, rare in zip(categories, est.categories_, est.infrequent_categories_, strict=True):
        rare_list = [] if rare is None else list(rare)
        out.append(tuple(c for c, v in zip(cats, raw, strict=True) if any(_same(v, r) for r in rare_list)))
    return tuple(out)


def _same(a: Any, b: Any) -> bool:
    return a is b or (_is_nan_or_none(a) and _is_nan_or_none(b)) or bool(a == b)


def _is_nan_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and bool(np.isnan(value)))


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel())


def _schema(X: Any, names: list[str], features: list[str], nullable: set[str]) -> Schema:
    """The schema with training statistics from X (a table-like, or a 2-D array in `names` order)."""
    if isinstance(X, np.ndarray):
        if X.ndim != 2 or X.shape[1] != len(names):
            raise PreprocessingError(f"X must be 2-D with {len(names)} columns, got an array of shape {X.shape}")
        X = {n: X[:, j] for j, n in enumerate(names)}
    table = as_table(X)
    present = [n for n in features if n in table.column_names]
    had_missing = {n for n in present if _has_missing(table.column(n))}
    return Schema.from_table(table, features=features, nullable=nullable | had_missing)


def _has_missing(col: pa.ChunkedArray) -> bool:
    return bool(pc.any(pc.is_null(col, nan_is_null=True)).as_py())
