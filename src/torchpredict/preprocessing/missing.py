"""Missing values: fill them with a statistic learned from the training data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError
from torchpredict.messages import described
from torchpredict.preprocessing.numeric import fit_values, replace_columns
from torchpredict.preprocessing.steps import (
    Step,
    finite,
    is_numeric,
    per_column,
    register_step,
    state_rules,
    string_values,
    strings,
)

__all__ = ["Impute"]


@register_step
class Impute(Step):
    """Fill missing values (null or NaN) with a training statistic or a constant; ~ SimpleImputer.

    add_indicator adds a 0/1 column f"{col}_missing" right after each column that had missing values
    in training (like sklearn's indicator, which covers only those columns).
    """

    type = "impute"
    state = state_rules(
        statistics_=per_column("finite numbers or strings", lambda v: v if isinstance(v, str) else finite(v)),
        indicator_columns_=lambda step, name, value: _indicated(step, name, value),
    )
    strategies = ("mean", "median", "most_frequent", "constant")
    indicator_columns_: tuple[str, ...] = ()  # what steps fitted before add_indicator existed load with

    def __init__(
        self, columns: Sequence[str], *, strategy: str = "mean", fill_value: Any = None, add_indicator: bool = False
    ) -> None:
        if strategy not in self.strategies:
            raise PreprocessingError(
                f"Impute strategy must be one of {', '.join(map(repr, self.strategies))}, got {strategy!r}"
            )
        if strategy == "constant" and fill_value is None:
            raise PreprocessingError("Impute(strategy='constant') needs a fill_value")
        super().__init__(columns, strategy=strategy, fill_value=fill_value, add_indicator=bool(add_indicator))

    def fit(self, frame: pa.Table) -> Impute:
        self.statistics_ = tuple(self._statistic(frame, n) for n in self.columns)
        indicate = self.params["add_indicator"]
        self.indicator_columns_ = tuple(n for n in self.columns if indicate and _missing(self._column(frame, n)).any())
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        self._check_fitted()
        blocks = {}
        for name, fill in zip(self.columns, self.statistics_, strict=True):
            blocks[name] = {name: self._filled(frame, name, fill)}
            if name in self.indicator_columns_:
                blocks[name][f"{name}_missing"] = pa.array(_missing(self._column(frame, name)).astype(np.float64))
        return replace_columns(frame, blocks)

    def _filled(self, frame: pa.Table, name: str, fill: float | str) -> pa.ChunkedArray | pa.Array:
        if isinstance(fill, str):
            return pc.fill_null(string_values(self._column(frame, name)), fill)
        x = self.column_numbers(frame, name)
        return pa.array(np.where(np.isnan(x), fill, x))

    def _statistic(self, frame: pa.Table, name: str) -> float | str:
        strategy, fill = self.params["strategy"], self.params["fill_value"]
        if is_numeric(self._column(frame, name).type):
            if strategy != "constant":
                return _numeric_statistic(fit_values(self, frame, name), strategy)
            if isinstance(fill, str):
                raise PreprocessingError(f"{self!r}: fill_value {fill!r} is a string but column {name!r} is numeric")
            return float(fill)
        if strategy in ("mean", "median"):
            raise PreprocessingError(
                f"{self!r}: column {name!r} is not numeric; use strategy='most_frequent' or 'constant'"
            )
        return str(fill) if strategy == "constant" else self._most_frequent_string(frame, name)

    def _most_frequent_string(self, frame: pa.Table, name: str) -> str:
        counts = pc.value_counts(pc.drop_null(string_values(self._column(frame, name))))
        if not len(counts):
            raise PreprocessingError(f"{self!r}: column {name!r} has no non-missing values to fit on")
        values = counts.field("values").to_numpy(zero_copy_only=False)
        n = counts.field("counts").to_numpy()
        return str(min(values[n == n.max()]))  # ties: the smallest, like scikit-learn


def _indicated(step: Step, name: str, value: Any) -> tuple[str, ...]:
    """The columns that get a missing-value indicator, read from JSON: some of the step's own columns."""
    try:
        names = strings(value)
    except ValueError:
        names = None
    if names is None or not set(names) <= set(step.columns):
        raise step.bad_state(name, "a list of some of the step's columns", described(value))
    return names


def _missing(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)


def _numeric_statistic(x: np.ndarray, strategy: str) -> float:
    if strategy == "mean":
        return float(x.mean())
    if strategy == "median":
        return float(np.median(x))
    values, counts = np.unique(x, return_counts=True)
    return float(values[np.argmax(counts)])  # np.unique sorts: ties go to the smallest value
