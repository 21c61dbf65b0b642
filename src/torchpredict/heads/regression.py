"""The heads that read numbers: Regression (targets un-scaled with the training mean and std) and RawOutput
(the model's output as it comes, checked for its shape).

What a head is, and the registry that finds head types by their `type` key, is base.py; registry.py imports
every head family so that `head_from_dict` can find them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from torchpredict.errors import PreprocessingError
from torchpredict.heads.base import (
    Head,
    ModelBatch,
    check_bool,
    check_output,
    check_target,
    is_table,
    nonfinite_rows,
    register_head,
    shape_error,
    target_column,
)
from torchpredict.heads.outputs import Output, as_array
from torchpredict.messages import described
from torchpredict.preprocessing.steps import finite, positive

__all__ = [
    "Head",
    "ModelBatch",
    "RawOutput",
    "Regression",
    "nonfinite_rows",
    "register_head",
]


@register_head
class Regression(Head):
    """One float32 column per target; with scale=True the model learns standardized targets.

    >>> head = Regression("price", scale=True).fit([1.0, 2.0, 3.0])
    >>> head.interpret(np.array([0.0], np.float32))["price"].to_pylist()
    [2.0]
    """

    type = "regression"

    def __init__(self, target: str | Sequence[str] = "prediction", *, scale: bool = False,
                 output: Output = None) -> None:
        self.target = _check_targets(target)
        self.scale = check_bool(scale, "scale")
        self.output = check_output(output)
        self.mean_: tuple[float, ...] | None = None
        self.std_: tuple[float, ...] | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,) if isinstance(self.target, str) else self.target

    @property
    def name(self) -> str:
        return ", ".join(self.targets)

    def fit(self, y: Any) -> Regression:
        values = self._matrix(y)
        if self.scale:
            if len(values) == 0:
                raise PreprocessingError(f"{self.describe()}: cannot learn scales from 0 rows")
            std = values.std(axis=0)
            std[std == 0] = 1.0
            self.mean_ = tuple(float(m) for m in values.mean(axis=0))
            self.std_ = tuple(float(s) for s in std)
        return self

    def encode_target(self, y: Any) -> np.ndarray:
        """Targets as the model should learn them: float32 [n] (one target) or [n, k], scaled if scale."""
        values = self._matrix(y)
        if self.scale:
            mean, std = self._scales()
            values = (values - mean) / std
        values = values.astype(np.float32)
        return values[:, 0] if isinstance(self.target, str) else values

    def column_names(self) -> list[str]:
        return list(self.targets)

    def interpret(self, raw: Any) -> dict[str, pa.Array]:
        output, k = as_array(raw), len(self.targets)
        if output.ndim == 1 and k == 1:
            output = output[:, None]
        if output.ndim != 2 or output.shape[1] != k:
            raise shape_error(self, "[n] or [n, 1]" if k == 1 else f"[n, {k}]", output)
        values = output.astype(np.float64)
        if self.scale:
            mean, std = self._scales()
            values = values * std + mean
        columns = np.ascontiguousarray(values.astype(np.float32).T)
        return {name: pa.array(columns[j]) for j, name in enumerate(self.targets)}

    def _scales(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mean_ is None or self.std_ is None:
            raise PreprocessingError(f"{self.describe()} is not fitted; call fit(y) on the training targets "
                                     "first (scale=True learns their mean and std)")
        return np.asarray(self.mean_), np.asarray(self.std_)

    def _matrix(self, y: Any) -> np.ndarray:
        """Targets as float64 [n, k], checked for shape and finiteness."""
        if is_table(y):
            y = np.column_stack([_float64(target_column(self, y, name)) for name in self.targets])
        values, k = _float64(y), len(self.targets)
        if values.ndim == 1 and k == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] != k:
            expected = "[n]" if k == 1 else f"[n, {k}]"
            raise PreprocessingError(f"{self.describe()}: y must have shape {expected}, "
                                     f"got {list(values.shape)}")
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise PreprocessingError(f"{self.describe()}: y has {int(bad.sum())} row(s) with missing or "
                                     f"non-finite values (first at row {int(np.argmax(bad))})")
        return values

    def _params(self) -> dict[str, Any]:
        target = self.target if isinstance(self.target, str) else list(self.target)
        return {"target": target, "scale": self.scale, "output": self.output}

    def _state(self) -> dict[str, Any]:
        return {} if self.mean_ is None else {"mean_": list(self.mean_), "std_": list(self.std_ or ())}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        if "mean_" in state:
            self.mean_ = self._per_target(state, "mean_", "finite numbers", finite)
            self.std_ = self._per_target(state, "std_", "finite numbers > 0", positive)

    def _per_target(self, state: Mapping[str, Any], name: str, wanted: str,
                    item: Callable[[Any], float]) -> tuple[float, ...]:
        """One number per target read from JSON, the scale the predictions are multiplied back by."""
        value, k = state.get(name), len(self.targets)
        expected = f"state {name!r} must hold {k} {wanted}"
        if not isinstance(value, list) or len(value) != k:
            raise PreprocessingError(f"{expected}, got {described(value)}")
        numbers = []
        for i, v in enumerate(value):
            try:
                numbers.append(item(v))
            except ValueError:
                raise PreprocessingError(
                    f"{expected}, got {described(v)} at position {i} ({self.targets[i]!r})") from None
        return tuple(numbers)


@register_head
class RawOutput(Head):
    """The output as float32 columns: {target} for an [n] output, {target}_{i} for an [n, k] one.

    `shape` is the per-row shape, () or (k,); when not given, fit(y) learns it from example outputs or
    targets, and interpret accepts either.
    """

    type = "raw"

    def __init__(self, target: str = "output", *, shape: Sequence[int] | None = None,
                 output: Output = None) -> None:
        self.target = check_target(target)
        self.shape = None if shape is None else _check_shape(shape, "shape")
        self.output = check_output(output)
        self.shape_: tuple[int, ...] | None = None

    def fit(self, y: Any) -> RawOutput:
        shape = _check_shape(np.shape(y)[1:], "y's per-row shape")
        if self.shape is not None and shape != self.shape:
            raise PreprocessingError(f"{self.describe()}: y's per-row shape {list(shape)} differs from "
                                     f"shape={list(self.shape)}")
        self.shape_ = shape
        return self

    def encode_target(self, y: Any) -> np.ndarray:
        return _float64(y).astype(np.float32)

    def column_names(self) -> list[str]:
        shape = self.shape if self.shape is not None else self.shape_
        if shape is None:
            raise PreprocessingError(f"{self.describe()} does not know its output shape; pass shape=(k,) "
                                     "(or () for an [n] output) or call fit(y)")
        return self._names(shape)

    def interpret(self, raw: Any) -> dict[str, pa.Array]:
        output = as_array(raw)
        known = self.shape if self.shape is not None else self.shape_
        row_shape = tuple(output.shape[1:])
        if output.ndim not in (1, 2) or (known is not None and row_shape != known):
            expected = "[n] or [n, k]" if known is None else "[" + ", ".join(["n", *map(str, known)]) + "]"
            raise shape_error(self, expected, output)
        if output.ndim == 1:
            return {self.target: pa.array(output.astype(np.float32))}
        columns = np.ascontiguousarray(output.astype(np.float32).T)
        return {name: pa.array(columns[j]) for j, name in enumerate(self._names(row_shape))}

    def _names(self, shape: tuple[int, ...]) -> list[str]:
        return [self.target] if not shape else [f"{self.target}_{i}" for i in range(shape[0])]

    def _params(self) -> dict[str, Any]:
        return {"target": self.target, "shape": None if self.shape is None else list(self.shape),
                "output": self.output}

    def _state(self) -> dict[str, Any]:
        return {} if self.shape_ is None else {"shape_": list(self.shape_)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        if "shape_" in state:
            self.shape_ = _check_shape(state["shape_"], "shape_")


def _float64(y: Any) -> np.ndarray:
    try:
        return np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PreprocessingError(f"y must be numeric: {exc}") from None


def _check_targets(target: Any) -> str | tuple[str, ...]:
    if isinstance(target, str):
        return check_target(target)
    if not isinstance(target, Sequence) or not target:
        raise PreprocessingError(f"target must be a non-empty str or a non-empty list of str, got {target!r}")
    targets = tuple(check_target(t) for t in target)
    if len(set(targets)) != len(targets):
        raise PreprocessingError(f"target names must be distinct, got {list(targets)}")
    return targets


def _check_shape(shape: Any, what: str) -> tuple[int, ...]:
    dims = tuple(shape) if isinstance(shape, Sequence) else None
    if dims is None or len(dims) > 1 or not all(isinstance(d, int) and d >= 1 for d in dims):
        raise PreprocessingError(f"{what} must be () or (k,) with k >= 1, got {shape!r}")
    return dims
