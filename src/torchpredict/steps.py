"""The preprocessing step contract and the registry of step types.

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

__all__ = ["STEP_TYPES", "Step", "float64_values", "from_json", "is_numeric", "register_step",
           "string_values", "to_json"]

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
        state = {n: to_json(getattr(self, n)) for n in self.state} if self.fitted else None
        return {
            "type": self.type,
            "columns": list(self.columns),
            "params": to_json(self.params),
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
            setattr(step, name, from_json(value))
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
        if not is_numeric(col.type):
            raise PreprocessingError(
                f"{self!r}: column {name!r} holds {col.type} values, not numbers; "
                f"encode it with OneHot([{name!r}]) first"
            )
        return float64_values(col)

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



def is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)


def float64_values(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(), dtype=np.float64)


def string_values(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.cast(pa.string())


def to_json(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any) -> Any:
    return tuple(from_json(v) for v in value) if isinstance(value, list) else value

