"""What every output head shares: the Head base class, the registry of head types and the checks heads use.

The head families live beside it (regression.py: regression and raw outputs; classification.py; sequences.py)
and import it; nothing here imports them, so the registry is filled by the modules that define heads, and
`registry.head_from_dict` imports them all in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa

from torchpredict.errors import BundleError, ModelLoadError, PreprocessingError, TorchPredictError
from torchpredict.heads.outputs import Output, as_array, select_output
from torchpredict.inference.batch import ModelBatch
from torchpredict.messages import described

__all__ = [
    "HEAD_TYPES",
    "Head",
    "ModelBatch",
    "check_bool",
    "check_output",
    "check_target",
    "is_table",
    "nonfinite_rows",
    "per_row",
    "register_head",
    "shape_error",
    "target_column",
]


class Head:
    """What every output head shares: one model output, a JSON form, equality by parameters and state."""

    type: ClassVar[str]
    target: Any
    output: Output
    decodes: ClassVar[bool] = False  # does it run the model's decoding loop (a seq2seq call; inference.calls)
    finite_scores: ClassVar[bool] = False  # must a row's scores be finite to be read (a label from NaN is a lie)

    @property
    def name(self) -> str:
        """The head's name in messages: its target column."""
        return str(self.target)

    def fit(self, y: Any) -> Head:
        """Learn from training targets (nothing to learn by default)."""
        return self

    def encode_target(self, y: Any) -> Any:
        """Targets as the model trains on them: an array for most heads; Seq2Seq gives decoder input and target."""
        raise NotImplementedError

    def column_names(self) -> list[str]:
        raise NotImplementedError

    def interpret(self, raw: Any) -> dict[str, pa.Array]:
        """The prediction columns of one output: a torch tensor or a numpy array (computed with numpy either way)."""
        raise NotImplementedError

    def select(self, raw: Any) -> Any:
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
        selected = self.select(batch.raw)
        if batch.finite_rows(selected).all():  # the common case, worked out once per batch
            return None
        return nonfinite_rows(as_array(selected), self._output_text())

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
            raise BundleError(f"output head: expected type {cls.type!r}, got {described(got)}")
        params, state = d.get("params") or {}, d.get("state") or {}
        for what, value in (("params", params), ("state", state)):
            if not isinstance(value, Mapping):
                raise BundleError(f"output head {cls.type!r}: '{what}' must be an object, got {described(value)}")
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

    def describe(self) -> str:
        """The head in messages about its targets and state: its class and target(s)."""
        target = self.target if isinstance(self.target, str) else list(self.target)
        return f"{type(self).__name__}(target={target!r})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable (fit), so not hashable

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        return f"{type(self).__name__}({params})"


HEAD_TYPES: dict[str, type[Head]] = {}
H = TypeVar("H", bound="type[Head]")


def register_head(cls: H) -> H:
    """Make a Head subclass loadable by its `type` name (the only way registry.head_from_dict finds classes)."""
    HEAD_TYPES[cls.type] = cls
    return cls


def per_row(values: np.ndarray) -> np.ndarray:
    """[n, ...] as [n, k]: each row's values in one row (an [n] array as [n, 1])."""
    return values.reshape(values.shape[0], math.prod(values.shape[1:])) if values.ndim > 1 else values.reshape(-1, 1)


def nonfinite_rows(values: np.ndarray, what: str) -> pa.Array | None:
    """Per row, "WHAT is not finite (nan) for this row" where its values are not all finite; None if all are."""
    rows = per_row(values)
    finite = np.isfinite(rows) if rows.dtype.kind in "fc" else np.ones(rows.shape, bool)
    bad = ~finite.all(axis=1)
    if not bad.any():
        return None
    reasons: list[str | None] = [None] * len(rows)
    for row in np.flatnonzero(bad).tolist():
        first = rows[row][~finite[row]][0].item()
        reasons[row] = f"{what} is not finite ({first}) for this row"
    return pa.array(reasons, pa.string())


def shape_error(head: Head, expected: str, tensor: Any) -> ModelLoadError:
    """The error for a model output of the wrong shape for the head reading it."""
    got = "[" + ", ".join(str(d) for d in tensor.shape) + "]"
    return ModelLoadError(f"head {head.name!r} ({type(head).__name__}) expects output shape {expected}, "
                          f"got {got}")


def is_table(y: Any) -> bool:
    """Whether training targets came as a table (Arrow, pandas or a mapping of columns) rather than an array."""
    if isinstance(y, pa.Table | pa.RecordBatch | Mapping):
        return True
    return type(y).__module__.startswith("pandas") and hasattr(y, "columns")


def target_column(head: Head, y: Any, name: str) -> Any:
    """The head's target column out of a table of training targets; a missing one is named with the columns found."""
    names = list(y.column_names if isinstance(y, pa.Table | pa.RecordBatch) else y.keys())
    if name not in names:
        raise PreprocessingError(f"{head.describe()}: y has no column {name!r}; got columns {names}")
    return y[name]


def check_target(target: Any) -> str:
    """A target name as a head takes it: a non-empty str."""
    if not isinstance(target, str) or not target:
        raise PreprocessingError(f"target must be a non-empty str, got {target!r}")
    return target


def check_bool(value: Any, name: str) -> bool:
    """A head's on/off option: True or False, not a truthy value that JSON or a typo made."""
    if not isinstance(value, bool):
        raise PreprocessingError(f"{name} must be True or False, got {value!r}")
    return value


def check_output(output: Any) -> Output:
    """Which model output a head reads: None (the only one), a tuple index or a dict key."""
    if output is None or isinstance(output, str):
        return output
    if isinstance(output, int) and not isinstance(output, bool) and output >= 0:
        return output
    raise PreprocessingError(f"output must be None, a tuple index >= 0 or a dict key, got {output!r}")
