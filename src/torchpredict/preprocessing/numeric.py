"""Numeric steps: scale, clip or log-transform numbers with statistics learned from the training data.

Each step mirrors a scikit-learn transformer (named in its docstring) so that fitted sklearn objects
map onto it 1:1: the same statistics, the same rule for constant columns, missing values (NaN)
ignored when fitting and passed through when transforming.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np
import pyarrow as pa

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.steps import NUMBERS, SCALES, Step, register_step, state_rules

__all__ = ["Clip", "Log1p", "MaxAbs", "MinMax", "Robust", "Standardize"]

EPS = float(np.finfo(np.float64).eps)


@register_step
class Standardize(Step):
    """(x - training mean) / training std; ~ StandardScaler (population std, constant column -> scale 1)."""

    type = "standardize"
    state = state_rules(mean_=NUMBERS, scale_=SCALES)

    def __init__(self, columns: Sequence[str], *, with_mean: bool = True, with_std: bool = True) -> None:
        super().__init__(columns, with_mean=bool(with_mean), with_std=bool(with_std))

    def fit(self, frame: pa.Table) -> Standardize:
        stats = [standard_statistics(fit_values(self, frame, n)) for n in self.columns]
        self.mean_ = tuple(mean if self.params["with_mean"] else 0.0 for mean, _ in stats)
        self.scale_ = tuple(scale if self.params["with_std"] else 1.0 for _, scale in stats)
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        return self._map(frame, lambda i, x: (x - self.mean_[i]) / self.scale_[i])


@register_step
class MinMax(Step):
    """Map the training [min, max] of each column onto feature_range, optionally clipping; ~ MinMaxScaler."""

    type = "minmax"
    state = state_rules(data_min_=NUMBERS, data_max_=NUMBERS)

    def __init__(
        self, columns: Sequence[str], *, feature_range: Sequence[float] = (0.0, 1.0), clip: bool = False
    ) -> None:
        low, high = (float(v) for v in feature_range)
        if not low < high:
            raise PreprocessingError(f"MinMax feature_range must have low < high, got ({low}, {high})")
        super().__init__(columns, feature_range=(low, high), clip=bool(clip))

    def fit(self, frame: pa.Table) -> MinMax:
        values = [fit_values(self, frame, n) for n in self.columns]
        self.data_min_ = tuple(float(x.min()) for x in values)
        self.data_max_ = tuple(float(x.max()) for x in values)
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        return self._map(frame, self._scaled)

    def _scaled(self, i: int, x: np.ndarray) -> np.ndarray:
        low, high = self.params["feature_range"]
        scale = (high - low) / _nonzero(self.data_max_[i] - self.data_min_[i])
        out = x * scale + (low - self.data_min_[i] * scale)
        return np.clip(out, low, high) if self.params["clip"] else out


@register_step
class Robust(Step):
    """(x - training median) / training interquantile range; ~ RobustScaler.

    With unit_variance the range is divided by the same range of the standard normal distribution,
    so that normally distributed data ends with variance 1.
    """

    type = "robust"
    state = state_rules(center_=NUMBERS, scale_=SCALES)

    def __init__(
        self,
        columns: Sequence[str],
        *,
        with_centering: bool = True,
        with_scaling: bool = True,
        quantile_range: Sequence[float] = (25.0, 75.0),
        unit_variance: bool = False,
    ) -> None:
        q_min, q_max = (float(q) for q in quantile_range)
        if not 0 <= q_min < q_max <= 100:
            raise PreprocessingError(
                f"Robust quantile_range must satisfy 0 <= q_min < q_max <= 100, got ({q_min:g}, {q_max:g})"
            )
        if unit_variance and not 0 < q_min < q_max < 100:
            raise PreprocessingError(
                f"Robust(unit_variance=True) needs 0 < q_min < q_max < 100 (the normal quantiles of 0 and 100 "
                f"are infinite), got ({q_min:g}, {q_max:g})"
            )
        super().__init__(
            columns,
            with_centering=bool(with_centering),
            with_scaling=bool(with_scaling),
            quantile_range=(q_min, q_max),
            unit_variance=bool(unit_variance),
        )

    def fit(self, frame: pa.Table) -> Robust:
        values = [fit_values(self, frame, n) for n in self.columns]
        self.center_ = tuple(float(np.median(x)) if self.params["with_centering"] else 0.0 for x in values)
        self.scale_ = tuple(self._scale(x) if self.params["with_scaling"] else 1.0 for x in values)
        return self

    def _scale(self, x: np.ndarray) -> float:
        q_min, q_max = self.params["quantile_range"]
        low, high = np.percentile(x, [q_min, q_max])
        scale = _nonzero(float(high - low))
        if self.params["unit_variance"]:
            normal = NormalDist()
            scale /= normal.inv_cdf(q_max / 100.0) - normal.inv_cdf(q_min / 100.0)
        return scale

    def transform(self, frame: pa.Table) -> pa.Table:
        return self._map(frame, lambda i, x: (x - self.center_[i]) / self.scale_[i])


@register_step
class MaxAbs(Step):
    """x / training max |x|, which keeps zeros and signs; ~ MaxAbsScaler."""

    type = "maxabs"
    state = state_rules(scale_=SCALES)

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__(columns)

    def fit(self, frame: pa.Table) -> MaxAbs:
        self.scale_ = tuple(_nonzero(float(np.abs(fit_values(self, frame, n)).max())) for n in self.columns)
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        return self._map(frame, lambda i, x: x / self.scale_[i])


@register_step
class Log1p(Step):
    """log(1 + x), for skewed counts and amounts; ~ FunctionTransformer(np.log1p). Learns nothing."""

    type = "log1p"

    def __init__(self, columns: Sequence[str]) -> None:
        super().__init__(columns)

    def fit(self, frame: pa.Table) -> Log1p:
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        return self._map(frame, self._log1p)

    def _log1p(self, i: int, x: np.ndarray) -> np.ndarray:
        refuse_rows(self, self.columns[i], x, x <= -1, "expected values > -1", "clip or shift the column first")
        return np.log1p(x)


@register_step
class Clip(Step):
    """Limit values to [lower, upper] (either bound may be None); learns nothing."""

    type = "clip"

    def __init__(self, columns: Sequence[str], *, lower: float | None = None, upper: float | None = None) -> None:
        lower, upper = (None if v is None else float(v) for v in (lower, upper))
        if any(v is not None and np.isnan(v) for v in (lower, upper)):
            raise PreprocessingError(f"Clip bounds must be numbers or None, got lower={lower}, upper={upper}")
        if lower is None and upper is None:
            raise PreprocessingError("Clip needs a lower or an upper bound (or both), got neither")
        if None not in (lower, upper) and not lower <= upper:  # type: ignore[operator]
            raise PreprocessingError(f"Clip needs lower <= upper, got lower={lower:g}, upper={upper:g}")
        super().__init__(columns, lower=lower, upper=upper)

    def fit(self, frame: pa.Table) -> Clip:
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        return self._map(frame, lambda i, x: np.clip(x, self.params["lower"], self.params["upper"]))


def standard_statistics(x: np.ndarray) -> tuple[float, float]:
    """StandardScaler's mean and scale of non-missing values: corrected two-pass variance, and scale 1
    where the variance is indistinguishable from rounding error (its `_is_constant_feature` bound).

    A column whose values are all equal gets that value as its mean, not a sum / n that may be an ulp
    away from it, so it standardizes to exactly 0 (scikit-learn gives rounding noise such as 1e-17).
    """
    n = len(x)
    if n and np.all(x == x[0]):
        return float(x[0]), 1.0
    mean = float(x.sum() / n)
    deviation = x - mean
    var = float(((deviation**2).sum() - deviation.sum() ** 2 / n) / n)
    constant = var <= n * EPS * var + (n * mean * EPS) ** 2
    return mean, 1.0 if constant else float(np.sqrt(var))


def fit_values(step: Step, frame: pa.Table, name: str) -> np.ndarray:
    """The column's non-missing training values: the one rule every step fits numbers by.

    Missing values (null, NaN) are left out; infinite ones are refused with the row, as scikit-learn's
    estimators refuse them, since no mean, scale, quantile or bin edge can be learned from them.
    """
    x = step.column_numbers(frame, name)
    refuse_rows(step, name, x, np.isinf(x), "expected finite numbers", "replace infinite values before fitting")
    x = x[~np.isnan(x)]
    if not len(x):
        raise PreprocessingError(f"{step!r}: column {name!r} has no non-missing values to fit on")
    return x


def refuse_rows(step: Step, name: str, x: np.ndarray, bad: np.ndarray, expected: str, fix: str) -> None:
    """Raise, naming the first row where `bad` holds and how many rows do, if any row is bad."""
    rows = np.flatnonzero(bad)
    if len(rows):
        row = int(rows[0])
        got = "a missing value" if np.isnan(x[row]) else f"{float(x[row])!r}"
        raise PreprocessingError(
            f"{step!r}: column {name!r}: {expected}, got {got} at row {row} ({len(rows)} such row(s)); {fix}"
        )


def replace_columns(frame: pa.Table, blocks: Mapping[str, Mapping[str, pa.Array]]) -> pa.Table:
    """Put each block's columns where the column named by its key was; other columns stay as they are."""
    new = {out for name, block in blocks.items() for out in block if out != name}
    clash = sorted(new & set(frame.column_names))
    if clash:
        raise PreprocessingError(
            f"output column(s) {', '.join(map(repr, clash))} already exist in the data; rename the input column(s)"
        )
    names: list[str] = []
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for name, col in zip(frame.column_names, frame.columns, strict=True):
        block = blocks.get(name, {name: col})
        names += list(block)
        arrays += list(block.values())
    return pa.Table.from_arrays(arrays, names=names)


def _nonzero(scale: float) -> float:
    """scikit-learn's `_handle_zeros_in_scale`: a scale below 10 machine epsilons becomes 1."""
    return 1.0 if scale < 10 * EPS else scale
