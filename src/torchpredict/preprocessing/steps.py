"""The preprocessing step contract and the registry of step types.

Steps follow scikit-learn's contract: the constructor stores parameters, `fit` learns state into
trailing-underscore attributes, `transform` refuses to run unfitted. State is plain JSON, and step
types are found through an explicit registry, never an import path. Arithmetic is elementwise in
float64 and cast to float32 last, so a row gives bit-identical values alone or inside any batch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError
from torchpredict.messages import described

__all__ = ["NUMBERS", "SCALES", "STEP_TYPES", "StateRule", "Step", "categories", "finite", "float64_values",
           "from_json", "is_numeric", "optional", "per_column", "positive", "register_step", "state_rules",
           "string_values", "strings", "to_json"]

STEP_TYPES: dict[str, type[Step]] = {}
S = TypeVar("S", bound="type[Step]")
StateRule = Callable[["Step", str, Any], Any]
"""Checks one learned attribute read from JSON and returns it as the step keeps it; raises PreprocessingError."""


def register_step(cls: S) -> S:
    """Make a Step subclass loadable by its `type` name (the only way from_dict finds classes)."""
    STEP_TYPES[cls.type] = cls
    return cls


class Step:
    """One fitted transformation of some columns of a pyarrow Table."""

    type: ClassVar[str] = ""
    # the learned attributes, each with the rule that checks it when read from JSON, e.g. {"mean_": per_column(
    # "finite numbers", finite)}; a plain tuple of names (a step defined elsewhere) loads them unchecked
    state: ClassVar[Mapping[str, StateRule] | tuple[str, ...]] = ()

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
    def from_dict(cls, d: Any) -> Step:
        """Rebuild a step through the registry: `d["type"]` must name a registered step. Its params are checked
        by its constructor and its learned state by the step's state rules, so that a file cannot hand the
        arithmetic a NaN mean, a zero scale or an array of the wrong length."""
        if not isinstance(d, Mapping):
            raise PreprocessingError(f"a preprocessing step must be an object, got {described(d)}")
        step_cls = STEP_TYPES.get(d["type"]) if isinstance(d.get("type"), str) else None
        if step_cls is None:
            known = ", ".join(repr(t) for t in sorted(STEP_TYPES))
            raise PreprocessingError(f"unknown preprocessing step type {described(d.get('type'))}; known: {known}")
        columns, params = d.get("columns"), d.get("params") or {}
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
            raise PreprocessingError(f"'columns' must be a non-empty list of column names, got {described(columns)}")
        if not isinstance(params, Mapping):
            raise PreprocessingError(f"'params' must be an object, got {described(params)}")
        try:
            step = step_cls(columns, **params)
        except PreprocessingError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            raise PreprocessingError(f"params: {exc}") from None
        step._load_state(d.get("state"))
        return step

    def _load_state(self, state: Any) -> None:
        """Set the learned attributes from JSON, each through its rule; keys the step does not keep are ignored."""
        if state is None:
            return
        if not isinstance(state, Mapping):
            raise PreprocessingError(f"'state' must be an object, got {described(state)}")
        rules = self.state if isinstance(self.state, Mapping) else dict.fromkeys(self.state, _as_loaded)
        for name, rule in rules.items():
            if name in state:
                setattr(self, name, rule(self, name, state[name]))
            elif not hasattr(type(self), name):  # a class default stands for state older bundles lack
                raise PreprocessingError(f"state lacks {name!r}")

    def bad_state(self, name: str, wanted: str, got: str) -> PreprocessingError:
        """The error for learned state read from a file that the step's arithmetic cannot use."""
        return PreprocessingError(f"state {name!r} must hold {wanted}, got {got}")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable: fit changes it

    def __repr__(self) -> str:
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        shown = [f"{k}={v!r}" for k, v in self.params.items() if defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join([f'columns={list(self.columns)!r}', *shown])})"

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise PreprocessingError(f"{self!r} is not fitted; call fit(...) on training data first")

    def _column(self, frame: pa.Table, name: str) -> pa.ChunkedArray:
        at = frame.schema.get_field_index(name)  # -1 when absent (or there twice)
        if at >= 0:
            return frame.column(at)
        if name not in frame.column_names:
            raise PreprocessingError(
                f"{self!r}: column {name!r} is not in the data (columns: {', '.join(frame.column_names)})"
            )
        return frame.column(name)

    def column_numbers(self, frame: pa.Table, name: str) -> np.ndarray:
        """The column as float64 numpy, missing values as NaN."""
        col = self._column(frame, name)
        if not is_numeric(col.type):
            raise PreprocessingError(
                f"{self!r}: column {name!r} holds {col.type} values, not numbers; "
                f"encode it with OneHot([{name!r}]) first"
            )
        return float64_values(col)

    def _map(self, frame: pa.Table, fn: Callable[[int, np.ndarray], np.ndarray]) -> pa.Table:
        """Replace each of self.columns by fn(its index, its float64 values)."""
        self._check_fitted()
        for i, name in enumerate(self.columns):
            values = fn(i, self.column_numbers(frame, name))
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



# -- rules for learned state read from JSON -------------------------------------------------------------


def state_rules(**rules: StateRule) -> Mapping[str, StateRule]:
    """A step's `state`: its learned attributes in order, each with its rule (read-only, shared by the class)."""
    return MappingProxyType(rules)


def per_column(wanted: str, item: Callable[[Any], Any], within: str | None = None) -> StateRule:
    """A rule for state holding one entry per column: item(entry) returns it as kept, or raises ValueError.

    wanted: what the entries must be, plural ("finite numbers > 0"). within: an attribute loaded before
    whose entry for the same column must contain every value of this one (infrequent ⊂ categories).
    """

    def check(step: Step, name: str, value: Any) -> tuple[Any, ...]:
        expected = f"{len(step.columns)} {wanted}"
        if not isinstance(value, list) or len(value) != len(step.columns):
            raise step.bad_state(name, expected, described(value))
        kept = []
        for i, entry in enumerate(value):
            try:
                kept.append(item(entry))
                if within is not None and not set(kept[-1]) <= set(getattr(step, within)[i]):
                    raise ValueError(f"values outside {within}")
            except (ValueError, TypeError):
                where = f"{described(entry)} at position {i} (column {step.columns[i]!r})"
                raise step.bad_state(name, expected, where) from None
        return tuple(kept)

    return check


def optional(rule: StateRule) -> StateRule:
    """rule, or null (what older bundles wrote for state they did not learn)."""
    return lambda step, name, value: None if value is None else rule(step, name, value)


def finite(value: Any) -> float:
    """A finite JSON number (not a boolean), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("not a finite number")
    return float(value)


def positive(value: Any) -> float:
    """A finite number > 0: a scale the step divides by."""
    number = finite(value)
    if number <= 0:
        raise ValueError("not > 0")
    return number


def strings(value: Any) -> tuple[str, ...]:
    """A list of strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("not a list of strings")
    return tuple(value)


def categories(value: Any) -> tuple[str | None, ...]:
    """A list of distinct categories, strings and at most one null (the missing-value category) placed last."""
    if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
        raise ValueError("not a list of strings")
    if len(set(value)) != len(value) or None in value[:-1]:
        raise ValueError("duplicates, or null before the end")
    return tuple(value)


NUMBERS = per_column("finite numbers", finite)  # e.g. a mean_ per column
SCALES = per_column("finite numbers > 0", positive)  # e.g. a scale_ per column, which the step divides by


def _as_loaded(step: Step, name: str, value: Any) -> Any:
    """The rule of a step that declares none: JSON lists become tuples, nothing is checked."""
    return from_json(value)
