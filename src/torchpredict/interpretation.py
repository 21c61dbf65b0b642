"""Output heads: turn a model's raw output tensor into named, typed prediction columns.

The interpret stage is where logits get read as probabilities, class indices go unmapped and regression
targets stay scaled. A head owns one model output and its meaning (labels, scales, thresholds), learns
that meaning from the training targets with `fit`, encodes targets for training with `encode_target`, and
turns raw outputs into Arrow columns with `interpret`, so training and prediction cannot disagree.
Head types are found through a registry (`register_head`): regression and raw outputs are here,
classification.py adds the classification heads, sequences.py the sequence heads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import torch

from torchpredict.errors import BundleError, ModelLoadError, PreprocessingError, TorchPredictError
from torchpredict.outputs import Output, as_tensor, select_output
from torchpredict.steps import finite, positive, shown

__all__ = [
    "Head",
    "ModelBatch",
    "RawOutput",
    "Regression",
    "head_from_dict",
    "nonfinite_rows",
    "register_head",
]


@dataclass(frozen=True)
class ModelBatch:
    """One batch through the infer stage: what the model (or a decoding loop around it) returned, and the
    model inputs it was given, on the CPU, so that a head can read them too (e.g. which positions hold tokens)."""

    raw: Any
    inputs: Mapping[str, torch.Tensor]


class Head:
    """What every output head shares: one model output, a JSON form, equality by parameters and state."""

    type: ClassVar[str]
    target: Any
    output: Output
    finite_scores: ClassVar[bool] = False  # must a row's scores be finite to be read (a label from NaN is a lie)

    @property
    def name(self) -> str:
        """The head's name in messages: its target column."""
        return str(self.target)

    def fit(self, y: Any) -> Head:
        """Learn from training targets (nothing to learn by default)."""
        return self

    def encode_target(self, y: Any) -> np.ndarray:
        raise NotImplementedError

    def column_names(self) -> list[str]:
        raise NotImplementedError

    def interpret(self, raw: torch.Tensor) -> dict[str, pa.Array]:
        raise NotImplementedError

    def select(self, raw: Any) -> torch.Tensor:
        """This head's tensor out of whatever the model returned; see `select_output`."""
        return select_output(raw, self.output, head=self.name)

    def read(self, batch: ModelBatch) -> dict[str, pa.Array]:
        """The prediction columns for one batch of the infer stage (its output, interpreted, by default)."""
        return self.interpret(self.select(batch.raw))

    def refused(self, batch: ModelBatch) -> pa.Array | None:
        """Per row of the batch, why this head cannot read its output (null where it can); None when it can for
        every row. With finite_scores, a row holding a NaN or infinite score is refused."""
        if not self.finite_scores:
            return None
        return nonfinite_rows(as_tensor(self.select(batch.raw)), self._output_text())

    def _output_text(self) -> str:
        which = "" if self.output is None else f" {self.output!r}"
        return f"model output{which} for head {self.name!r}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "params": self._params(), "state": self._state()}

    @classmethod
    def from_dict(cls, d: Any) -> Head:
        """Rebuild from `to_dict()`: params checked by the constructor, learned state by `_load_state`."""
        if not isinstance(d, Mapping) or d.get("type") != cls.type:
            got = d.get("type") if isinstance(d, Mapping) else d
            raise BundleError(f"output head: expected type {cls.type!r}, got {shown(got)}")
        params, state = d.get("params") or {}, d.get("state") or {}
        for what, value in (("params", params), ("state", state)):
            if not isinstance(value, Mapping):
                raise BundleError(f"output head {cls.type!r}: '{what}' must be an object, got {shown(value)}")
        try:
            head = cls(**params)
            head._load_state(state)
        except TorchPredictError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise BundleError(f"output head {cls.type!r}: {exc}") from None
        return head

    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `_state` wrote; nothing by default."""

    def _describe(self) -> str:
        target = self.target if isinstance(self.target, str) else list(self.target)
        return f"{type(self).__name__}(target={target!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable (fit), so not hashable

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        return f"{type(self).__name__}({params})"


class Regression(Head):
    """One float32 column per target; with scale=True the model learns standardized targets.

    >>> head = Regression("price", scale=True).fit([1.0, 2.0, 3.0])
    >>> head.interpret(torch.tensor([0.0]))["price"].to_pylist()
    [2.0]
    """

    type = "regression"

    def __init__(self, target: str | Sequence[str] = "prediction", *, scale: bool = False,
                 output: Output = None) -> None:
        self.target = _check_targets(target)
        self.scale = _check_bool(scale, "scale")
        self.output = _check_output(output)
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
                raise PreprocessingError(f"{self._describe()}: cannot learn scales from 0 rows")
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

    def interpret(self, raw: torch.Tensor) -> dict[str, pa.Array]:
        tensor, k = as_tensor(raw), len(self.targets)
        if tensor.ndim == 1 and k == 1:
            tensor = tensor[:, None]
        if tensor.ndim != 2 or tensor.shape[1] != k:
            raise _bad_shape(self, "[n] or [n, 1]" if k == 1 else f"[n, {k}]", tensor)
        values = tensor.to(torch.float64).numpy()
        if self.scale:
            mean, std = self._scales()
            values = values * std + mean
        columns = np.ascontiguousarray(values.astype(np.float32).T)
        return {name: pa.array(columns[j]) for j, name in enumerate(self.targets)}

    def _scales(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mean_ is None or self.std_ is None:
            raise PreprocessingError(f"{self._describe()} is not fitted; call fit(y) on the training targets "
                                     "first (scale=True learns their mean and std)")
        return np.asarray(self.mean_), np.asarray(self.std_)

    def _matrix(self, y: Any) -> np.ndarray:
        """Targets as float64 [n, k], checked for shape and finiteness."""
        if _is_table(y):
            y = np.column_stack([_float64(_column(self, y, name)) for name in self.targets])
        values, k = _float64(y), len(self.targets)
        if values.ndim == 1 and k == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] != k:
            expected = "[n]" if k == 1 else f"[n, {k}]"
            raise PreprocessingError(f"{self._describe()}: y must have shape {expected}, "
                                     f"got {list(values.shape)}")
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise PreprocessingError(f"{self._describe()}: y has {int(bad.sum())} row(s) with missing or "
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
            raise PreprocessingError(f"{expected}, got {shown(value)}")
        numbers = []
        for i, v in enumerate(value):
            try:
                numbers.append(item(v))
            except ValueError:
                raise PreprocessingError(f"{expected}, got {shown(v)} at position {i} ({self.targets[i]!r})") from None
        return tuple(numbers)


class RawOutput(Head):
    """The output as float32 columns: {target} for an [n] output, {target}_{i} for an [n, k] one.

    `shape` is the per-row shape, () or (k,); when not given, fit(y) learns it from example outputs or
    targets, and interpret accepts either.
    """

    type = "raw"

    def __init__(self, target: str = "output", *, shape: Sequence[int] | None = None,
                 output: Output = None) -> None:
        self.target = _check_target(target)
        self.shape = None if shape is None else _check_shape(shape, "shape")
        self.output = _check_output(output)
        self.shape_: tuple[int, ...] | None = None

    def fit(self, y: Any) -> RawOutput:
        shape = _check_shape(np.shape(y)[1:], "y's per-row shape")
        if self.shape is not None and shape != self.shape:
            raise PreprocessingError(f"{self._describe()}: y's per-row shape {list(shape)} differs from "
                                     f"shape={list(self.shape)}")
        self.shape_ = shape
        return self

    def encode_target(self, y: Any) -> np.ndarray:
        return _float64(y).astype(np.float32)

    def column_names(self) -> list[str]:
        shape = self.shape if self.shape is not None else self.shape_
        if shape is None:
            raise PreprocessingError(f"{self._describe()} does not know its output shape; pass shape=(k,) "
                                     "(or () for an [n] output) or call fit(y)")
        return self._names(shape)

    def interpret(self, raw: torch.Tensor) -> dict[str, pa.Array]:
        tensor = as_tensor(raw)
        known = self.shape if self.shape is not None else self.shape_
        row_shape = tuple(tensor.shape[1:])
        if tensor.ndim not in (1, 2) or (known is not None and row_shape != known):
            expected = "[n] or [n, k]" if known is None else "[" + ", ".join(["n", *map(str, known)]) + "]"
            raise _bad_shape(self, expected, tensor)
        if tensor.ndim == 1:
            return {self.target: pa.array(tensor.to(torch.float32).numpy())}
        columns = tensor.to(torch.float32).T.contiguous()
        return {name: pa.array(columns[j].numpy()) for j, name in enumerate(self._names(row_shape))}

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


_HEADS: dict[str, type[Head]] = {}
H = TypeVar("H", bound="type[Head]")


def register_head(cls: H) -> H:
    """Make a Head subclass loadable by its `type` name (the only way head_from_dict finds classes)."""
    _HEADS[cls.type] = cls
    return cls


for _head in (Regression, RawOutput):
    register_head(_head)


def head_from_dict(d: Mapping[str, Any]) -> Head:
    """Rebuild any head from its `to_dict()`, resolving the type through an explicit registry.

    >>> head_from_dict(Regression("y").to_dict()) == Regression("y")
    True
    """
    # the modules that register the other heads; imported here, as they import this one
    from torchpredict import classification, sequences  # noqa: F401

    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind not in _HEADS:
        raise BundleError(f"unknown output head type {kind!r}; known types: {sorted(_HEADS)}")
    return _HEADS[kind].from_dict(d)


def per_row(tensor: torch.Tensor) -> torch.Tensor:
    """[n, ...] as [n, k]: each row's values in one row (an [n] tensor as [n, 1])."""
    return tensor.flatten(start_dim=1) if tensor.ndim > 1 else tensor.reshape(-1, 1)


def nonfinite_rows(tensor: torch.Tensor, what: str) -> pa.Array | None:
    """Per row, "WHAT is not finite (nan) for this row" where its values are not all finite; None if all are."""
    values = per_row(tensor.detach())
    finite = torch.isfinite(values) if values.is_floating_point() else torch.ones_like(values, dtype=torch.bool)
    bad = ~finite.all(dim=1)
    if not bool(bad.any()):
        return None
    reasons: list[str | None] = [None] * len(values)
    for row in torch.nonzero(bad).flatten().tolist():
        first = values[row][~finite[row]][0].item()
        reasons[row] = f"{what} is not finite ({first}) for this row"
    return pa.array(reasons, pa.string())


def _bad_shape(head: Head, expected: str, tensor: torch.Tensor) -> ModelLoadError:
    got = "[" + ", ".join(str(d) for d in tensor.shape) + "]"
    return ModelLoadError(f"head {head.name!r} ({type(head).__name__}) expects output shape {expected}, "
                          f"got {got}")


def _is_table(y: Any) -> bool:
    if isinstance(y, pa.Table | pa.RecordBatch | Mapping):
        return True
    return type(y).__module__.startswith("pandas") and hasattr(y, "columns")


def _column(head: Head, y: Any, name: str) -> Any:
    names = list(y.column_names if isinstance(y, pa.Table | pa.RecordBatch) else y.keys())
    if name not in names:
        raise PreprocessingError(f"{head._describe()}: y has no column {name!r}; got columns {names}")
    return y[name]


def _float64(y: Any) -> np.ndarray:
    try:
        return np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PreprocessingError(f"y must be numeric: {exc}") from None


def _check_targets(target: Any) -> str | tuple[str, ...]:
    if isinstance(target, str):
        return _check_target(target)
    if not isinstance(target, Sequence) or not target:
        raise PreprocessingError(f"target must be a non-empty str or a non-empty list of str, got {target!r}")
    targets = tuple(_check_target(t) for t in target)
    if len(set(targets)) != len(targets):
        raise PreprocessingError(f"target names must be distinct, got {list(targets)}")
    return targets


def _check_target(target: Any) -> str:
    if not isinstance(target, str) or not target:
        raise PreprocessingError(f"target must be a non-empty str, got {target!r}")
    return target


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise PreprocessingError(f"{name} must be True or False, got {value!r}")
    return value


def _check_output(output: Any) -> Output:
    if output is None or isinstance(output, str):
        return output
    if isinstance(output, int) and not isinstance(output, bool) and output >= 0:
        return output
    raise PreprocessingError(f"output must be None, a tuple index >= 0 or a dict key, got {output!r}")


def _check_shape(shape: Any, what: str) -> tuple[int, ...]:
    dims = tuple(shape) if isinstance(shape, Sequence) else None
    if dims is None or len(dims) > 1 or not all(isinstance(d, int) and d >= 1 for d in dims):
        raise PreprocessingError(f"{what} must be () or (k,) with k >= 1, got {shape!r}")
    return dims
