"""The Preprocessor: fitted steps that travel with the model, so inference reuses the training statistics.

It routes the input columns through the steps in order and assembles the result into the model's
input tensor(s). The step types live in numeric.py, missing.py and categorical.py; importing this
module registers them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.categorical import OneHot
from torchpredict.errors import PreprocessingError
from torchpredict.missing import Impute
from torchpredict.numeric import MinMax, Standardize
from torchpredict.schema import Schema
from torchpredict.steps import STEP_TYPES, Step, float64_values, is_numeric, register_step
from torchpredict.tables import as_table

__all__ = ["STEP_TYPES", "Impute", "MinMax", "OneHot", "Preprocessor", "Standardize", "Step", "register_step"]


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
            if not is_numeric(col.type):
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
        if not is_numeric(col.type):
            raise PreprocessingError(
                f"column {name!r} holds {col.type} values; the model input needs one number per column"
            )


def _matrix(frame: pa.Table, names: Sequence[str]) -> np.ndarray:
    out = np.empty((frame.num_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        out[:, j] = float64_values(frame.column(name))
    return out.astype(np.float32)


