"""Fitted preprocessing that travels with the model, so inference reuses the training statistics.

Steps follow scikit-learn's contract: the constructor stores parameters, `fit` learns state into
trailing-underscore attributes, `transform` refuses to run unfitted. State is plain JSON, and step
types are found through an explicit registry, never an import path. Arithmetic is elementwise in
float64 and cast to float32 last, so a row gives bit-identical values alone or inside any batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError
from torchpredict.schema import Schema
from torchpredict.tables import as_table

__all__ = ["STEP_TYPES", "Impute", "MinMax", "OneHot", "Preprocessor", "Standardize", "Step", "register_step"]

STEP_TYPES: dict[str, type[Step]] = {}
S = TypeVar("S", bound="type[Step]")


def register_step(cls: S) -> S:
    """Make a Step subclass loadable by its `type` name (the only way from_dict finds classes)."""
    STEP_TYPES[cls.type] = cls
    return cls


class Step:
    """One fitted transformation of some columns of a pyarrow Table."""

    type: ClassVar[str] = ""
    state: ClassVar[tuple[str, ...]] = ()  # names of the learned attributes, e.g. ("mean_", "scale_")

    def __init__(self, columns: Sequence[str], **params: Any) -> None:
        self.columns = (columns,) if isinstance(columns, str) else tuple(columns)
        if not self.columns:
            raise PreprocessingError(f"{type(self).__name__} needs at least one column")
        self.params = params

    def fit(self, frame: pa.Table) -> Step:
        raise NotImplementedError

    def transform(self, frame: pa.Table) -> pa.Table:
        raise NotImplementedError

    @property
    def fitted(self) -> bool:
        return all(hasattr(self, name) for name in self.state)

    def to_dict(self) -> dict[str, Any]:
        state = {n: _json(getattr(self, n)) for n in self.state} if self.fitted else None
        return {
            "type": self.type,
            "columns": list(self.columns),
            "params": _json(self.params),
            "state": state,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Step:
        """Rebuild a step through the registry: `d["type"]` must name a registered step."""
        step_cls = STEP_TYPES.get(d.get("type", ""))
        if step_cls is None:
            known = ", ".join(repr(t) for t in sorted(STEP_TYPES))
            raise PreprocessingError(f"unknown preprocessing step type {d.get('type')!r}; known: {known}")
        step = step_cls(d["columns"], **d.get("params", {}))
        for name, value in (d.get("state") or {}).items():
            setattr(step, name, _tuples(value))
        return step

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable: fit changes it

    def __repr__(self) -> str:
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        shown = [f"{k}={v!r}" for k, v in self.params.items() if defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join([f'columns={list(self.columns)!r}', *shown])})"

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise PreprocessingError(f"{self!r} is not fitted; call fit(...) on training data first")

    def _column(self, frame: pa.Table, name: str) -> pa.ChunkedArray:
        if name not in frame.column_names:
            raise PreprocessingError(
                f"{self!r}: column {name!r} is not in the data (columns: {', '.join(frame.column_names)})"
            )
        return frame.column(name)

    def _numbers(self, frame: pa.Table, name: str) -> np.ndarray:
        """The column as float64 numpy, missing values as NaN."""
        col = self._column(frame, name)
        if not _is_numeric(col.type):
            raise PreprocessingError(
                f"{self!r}: column {name!r} holds {col.type} values, not numbers; "
                f"encode it with OneHot([{name!r}]) first"
            )
        return _float64(col)

    def _fit_values(self, frame: pa.Table, name: str) -> np.ndarray:
        x = self._numbers(frame, name)
        x = x[~np.isnan(x)]
        if not len(x):
            raise PreprocessingError(f"{self!r}: column {name!r} has no non-missing values to fit on")
        return x

    def _map(self, frame: pa.Table, fn: Callable[[int, np.ndarray], np.ndarray]) -> pa.Table:
        """Replace each of self.columns by fn(its index, its float64 values)."""
        self._check_fitted()
        for i, name in enumerate(self.columns):
            values = fn(i, self._numbers(frame, name))
            frame = frame.set_column(frame.column_names.index(name), name, pa.array(values))
        return frame


@register_step
class Standardize(Step):
    """(x - training mean) / training std (population std; a constant column gets scale 1)."""

    type = "standardize"
    state = ("mean_", "scale_")

    def __init__(self, columns: Sequence[str], *, with_mean: bool = True, with_std: bool = True) -> None:
        super().__init__(columns, with_mean=bool(with_mean), with_std=bool(with_std))

    def fit(self, frame: pa.Table) -> Standardize:
        values = [self._fit_values(frame, n) for n in self.columns]
        self.mean_ = tuple(float(x.mean()) if self.params["with_mean"] else 0.0 for x in values)
        self.scale_ = tuple(_scale(float(x.std())) if self.params["with_std"] else 1.0 for x in values)
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        return self._map(frame, lambda i, x: (x - self.mean_[i]) / self.scale_[i])


@register_step
class MinMax(Step):
    """Map the training [min, max] of each column onto feature_range, optionally clipping."""

    type = "minmax"
    state = ("data_min_", "data_max_")

    def __init__(
        self, columns: Sequence[str], *, feature_range: Sequence[float] = (0.0, 1.0), clip: bool = False
    ) -> None:
        low, high = (float(v) for v in feature_range)
        if not low < high:
            raise PreprocessingError(f"MinMax feature_range must have low < high, got ({low}, {high})")
        super().__init__(columns, feature_range=(low, high), clip=bool(clip))

    def fit(self, frame: pa.Table) -> MinMax:
        values = [self._fit_values(frame, n) for n in self.columns]
        self.data_min_ = tuple(float(x.min()) for x in values)
        self.data_max_ = tuple(float(x.max()) for x in values)
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        return self._map(frame, self._scaled)

    def _scaled(self, i: int, x: np.ndarray) -> np.ndarray:
        low, high = self.params["feature_range"]
        scale = (high - low) / _scale(self.data_max_[i] - self.data_min_[i])
        out = x * scale + (low - self.data_min_[i] * scale)
        return np.clip(out, low, high) if self.params["clip"] else out


@register_step
class Impute(Step):
    """Fill missing values (null or NaN) with a training statistic or a constant."""

    type = "impute"
    state = ("statistics_",)
    strategies = ("mean", "median", "most_frequent", "constant")

    def __init__(self, columns: Sequence[str], *, strategy: str = "mean", fill_value: Any = None) -> None:
        if strategy not in self.strategies:
            raise PreprocessingError(
                f"Impute strategy must be one of {', '.join(map(repr, self.strategies))}, got {strategy!r}"
            )
        if strategy == "constant" and fill_value is None:
            raise PreprocessingError("Impute(strategy='constant') needs a fill_value")
        super().__init__(columns, strategy=strategy, fill_value=fill_value)

    def fit(self, frame: pa.Table) -> Impute:
        self.statistics_ = tuple(self._statistic(frame, n) for n in self.columns)
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        self._check_fitted()
        for name, fill in zip(self.columns, self.statistics_, strict=True):
            frame = frame.set_column(frame.column_names.index(name), name, self._filled(frame, name, fill))
        return frame

    def _filled(self, frame: pa.Table, name: str, fill: float | str) -> pa.ChunkedArray | pa.Array:
        if isinstance(fill, str):
            return pc.fill_null(_strings(self._column(frame, name)), fill)
        x = self._numbers(frame, name)
        return pa.array(np.where(np.isnan(x), fill, x))

    def _statistic(self, frame: pa.Table, name: str) -> float | str:
        strategy, fill = self.params["strategy"], self.params["fill_value"]
        if _is_numeric(self._column(frame, name).type):
            if strategy != "constant":
                return _numeric_statistic(self._fit_values(frame, name), strategy)
            if isinstance(fill, str):
                raise PreprocessingError(
                    f"{self!r}: fill_value {fill!r} is a string but column {name!r} is numeric"
                )
            return float(fill)
        if strategy in ("mean", "median"):
            raise PreprocessingError(
                f"{self!r}: column {name!r} is not numeric; use strategy='most_frequent' or 'constant'"
            )
        return str(fill) if strategy == "constant" else self._most_frequent_string(frame, name)

    def _most_frequent_string(self, frame: pa.Table, name: str) -> str:
        counts = pc.value_counts(pc.drop_null(_strings(self._column(frame, name))))
        if not len(counts):
            raise PreprocessingError(f"{self!r}: column {name!r} has no non-missing values to fit on")
        values = counts.field("values").to_numpy(zero_copy_only=False)
        n = counts.field("counts").to_numpy()
        return str(min(values[n == n.max()]))  # ties: the smallest, like scikit-learn


@register_step
class OneHot(Step):
    """One 0/1 column per category, named "col=category"; categories are strings, sorted unless given."""

    type = "onehot"
    state = ("categories_",)

    def __init__(
        self,
        columns: Sequence[str],
        *,
        handle_unknown: str = "error",
        categories: Sequence[Sequence[Any]] | Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        if handle_unknown not in ("error", "ignore"):
            raise PreprocessingError(
                f"OneHot handle_unknown must be 'error' or 'ignore', got {handle_unknown!r}"
            )
        super().__init__(columns, handle_unknown=handle_unknown, categories=None)
        self.params["categories"] = self._given(categories)

    def _given(self, categories: Any) -> tuple[tuple[str, ...], ...] | None:
        if categories is None:
            return None
        if isinstance(categories, Mapping):
            categories = [categories.get(c, ()) for c in self.columns]
        if len(categories) != len(self.columns) or not all(len(c) for c in categories):
            raise PreprocessingError(
                f"OneHot categories must give a non-empty list for each of the {len(self.columns)} columns"
            )
        return tuple(tuple(str(v) for v in c) for c in categories)

    def fit(self, frame: pa.Table) -> OneHot:
        given = self.params["categories"]
        self.categories_ = given or tuple(self._learn(frame, n) for n in self.columns)
        return self

    def _learn(self, frame: pa.Table, name: str) -> tuple[str, ...]:
        seen = pc.unique(pc.drop_null(_strings(self._column(frame, name)))).to_pylist()
        if not seen:
            raise PreprocessingError(f"{self!r}: column {name!r} has no non-missing values to fit on")
        return tuple(sorted(seen))

    def transform(self, frame: pa.Table) -> pa.Table:
        self._check_fitted()
        blocks = {
            n: self._encode(frame, n, cats) for n, cats in zip(self.columns, self.categories_, strict=True)
        }
        names, arrays = [], []
        for name, col in zip(frame.column_names, frame.columns, strict=True):
            block = blocks.get(name)
            names += [name] if block is None else list(block)
            arrays += [col] if block is None else list(block.values())
        return pa.Table.from_arrays(arrays, names=names)

    def _encode(self, frame: pa.Table, name: str, categories: tuple[str, ...]) -> dict[str, pa.Array]:
        col = self._column(frame, name)
        keys = _strings(col)
        index = pc.index_in(keys, value_set=pa.array(categories, pa.string()))
        codes = pc.fill_null(index, -1).to_numpy()
        if self.params["handle_unknown"] == "error" and (codes < 0).any():
            _unknown(col, codes, name, categories)
        onehot = codes[:, None] == np.arange(len(categories))
        return {f"{name}={c}": pa.array(onehot[:, j].astype(np.float64)) for j, c in enumerate(categories)}


class Preprocessor:
    """The ordered steps that turn a validated table into the model's input arrays.

    >>> pre = Preprocessor([Standardize(["a"])]).fit({"a": [1.0, 3.0]})
    >>> pre.transform({"a": [3.0]})["x"].tolist()
    [[1.0]]
    """

    def __init__(
        self,
        steps: Sequence[Step] = (),
        *,
        features: Sequence[str] | None = None,
        passthrough: Sequence[str] = (),
        input_name: str = "x",
    ) -> None:
        self.steps = tuple(steps)
        self.features = None if features is None else tuple(features)
        self.passthrough = tuple(passthrough)
        self.input_name = input_name

    def fit(self, data: Any) -> Preprocessor:
        """Learn every step in order, each on the previous one's output, and record the input schema."""
        table = as_table(data)
        features = self.features or tuple(n for n in table.column_names if n not in self.passthrough)
        nullable = self._nullable()
        _check_training_missing(table, [n for n in features if n not in nullable])
        schema = Schema.from_table(table, features=features, passthrough=self.passthrough, nullable=nullable)
        frame = schema.validate(table.select(list(features))).table
        for step in self.steps:
            frame = step.fit(frame).transform(frame)
        _check_model_ready(frame)
        self.schema_, self.feature_names_ = schema, tuple(frame.column_names)
        return self

    def transform(self, data: Any) -> dict[str, np.ndarray]:
        """{input_name: float32 [rows, n_features_]}; expects data that passed schema_.validate."""
        if not hasattr(self, "schema_"):
            raise PreprocessingError("Preprocessor is not fitted; call fit(...) on training data first")
        table = as_table(data)
        names = [c.name for c in self.schema_.features]
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise PreprocessingError(
                f"missing column(s) {', '.join(map(repr, missing))}; check inputs with schema_.validate first"
            )
        frame = table.select(names)
        for step in self.steps:
            frame = step.transform(frame)
        return {self.input_name: _matrix(frame, self.feature_names_)}

    def fit_transform(self, data: Any) -> dict[str, np.ndarray]:
        return self.fit(data).transform(data)

    @property
    def n_features_(self) -> int:
        if not hasattr(self, "feature_names_"):
            raise PreprocessingError("Preprocessor is not fitted; call fit(...) on training data first")
        return len(self.feature_names_)

    def _nullable(self) -> frozenset[str]:
        """Columns a step accepts missing values in: imputed ones, and OneHot that ignores unknowns."""
        covers = (
            s for s in self.steps if isinstance(s, Impute) or s.params.get("handle_unknown") == "ignore"
        )
        return frozenset(n for s in covers for n in s.columns)

    def to_dict(self) -> dict[str, Any]:
        fitted = hasattr(self, "schema_")
        return {
            "steps": [s.to_dict() for s in self.steps],
            "features": None if self.features is None else list(self.features),
            "passthrough": list(self.passthrough),
            "input_name": self.input_name,
            "state": {"schema": self.schema_.to_dict(), "feature_names": list(self.feature_names_)}
            if fitted
            else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        steps = [Step.from_dict(s) for s in d["steps"]]
        pre = cls(
            steps,
            features=d.get("features"),
            passthrough=d.get("passthrough", ()),
            input_name=d["input_name"],
        )
        if d.get("state"):
            pre.schema_ = Schema.from_dict(d["state"]["schema"])
            pre.feature_names_ = tuple(d["state"]["feature_names"])
        return pre

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocessor) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable: fit changes it

    def __repr__(self) -> str:
        return f"Preprocessor({list(self.steps)!r}, input_name={self.input_name!r})"


def _check_training_missing(table: pa.Table, names: Sequence[str]) -> None:
    for name in names:
        if name not in table.column_names:
            continue  # Schema.from_table reports missing columns
        col = table.column(name)
        n = pc.sum(pc.is_null(col, nan_is_null=True)).as_py() or 0
        if n:
            fix = f"Impute([{name!r}])"
            if not _is_numeric(col.type):
                fix = f"{fix[:-1]}, strategy='most_frequent') or OneHot([{name!r}], handle_unknown='ignore')"
            raise PreprocessingError(
                f"column {name!r} has {n} missing value(s) in the training data and no step handles "
                f"them; add {fix}"
            )


def _check_model_ready(frame: pa.Table) -> None:
    """Every output column must be numeric and scalar: the model input is one 2-D float32 array."""
    for name, col in zip(frame.column_names, frame.columns, strict=True):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            raise PreprocessingError(
                f"column {name!r} holds strings and no step encodes it; add OneHot([{name!r}]) to the steps"
            )
        if not _is_numeric(col.type):
            raise PreprocessingError(
                f"column {name!r} holds {col.type} values; the model input needs one number per column"
            )


def _matrix(frame: pa.Table, names: Sequence[str]) -> np.ndarray:
    out = np.empty((frame.num_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        out[:, j] = _float64(frame.column(name))
    return out.astype(np.float32)


# -- array helpers ---------------------------------------------------------------------------------


def _unknown(col: pa.ChunkedArray, codes: np.ndarray, name: str, categories: tuple[str, ...]) -> None:
    rows = np.flatnonzero(codes < 0)
    value = col[int(rows[0])].as_py()
    shown = ", ".join(repr(c) for c in categories[:20]) + (", …" if len(categories) > 20 else "")
    raise PreprocessingError(
        f"column {name!r}: unknown category {'null' if value is None else repr(value)} at row "
        f"{int(rows[0])} ({len(rows)} row(s) unknown); known categories: {shown}; "
        "use OneHot(..., handle_unknown='ignore') to encode unknowns as all zeros"
    )


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)


def _float64(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(), dtype=np.float64)


def _strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.cast(pa.string())


def _numeric_statistic(x: np.ndarray, strategy: str) -> float:
    if strategy == "mean":
        return float(x.mean())
    if strategy == "median":
        return float(np.median(x))
    values, counts = np.unique(x, return_counts=True)
    return float(values[np.argmax(counts)])  # np.unique sorts: ties go to the smallest value


def _scale(value: float) -> float:
    return value if value > 0 else 1.0


def _json(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
