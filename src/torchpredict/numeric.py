"""Numeric steps: scale numbers with statistics learned from the training data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from torchpredict.errors import PreprocessingError
from torchpredict.steps import Step, nonzero_scale, register_step

__all__ = ["MinMax", "Standardize"]


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
        self.scale_ = tuple(nonzero_scale(float(x.std())) if self.params["with_std"] else 1.0 for x in values)
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
        scale = (high - low) / nonzero_scale(self.data_max_[i] - self.data_min_[i])
        out = x * scale + (low - self.data_min_[i] * scale)
        return np.clip(out, low, high) if self.params["clip"] else out


