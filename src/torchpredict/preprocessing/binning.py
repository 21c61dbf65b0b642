"""Bucketize: cut numbers into bins with edges learned in training (or given), as an index or one-hot.

It mirrors scikit-learn's KBinsDiscretizer: the same edges for the uniform, quantile (every numpy
quantile method) and k-means strategies, the same removal of bins narrower than 1e-8, and the same
assignment rule, `np.searchsorted(inner edges, x, side="right")`, so values beyond the training range
fall into the first or last bin.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import pyarrow as pa

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.numeric import fit_values, refuse_rows, replace_columns
from torchpredict.preprocessing.steps import Step, finite, per_column, register_step, state_rules

__all__ = ["Bucketize"]

QUANTILE_METHODS = (
    "averaged_inverted_cdf",
    "inverted_cdf",
    "closest_observation",
    "interpolated_inverted_cdf",
    "hazen",
    "weibull",
    "linear",
    "median_unbiased",
    "normal_unbiased",
)


@register_step
class Bucketize(Step):
    """Bin each column: "ordinal" replaces it by its bin index, "onehot" by columns f"{col}_bin{i}".

    ~ KBinsDiscretizer (encode "onehot"/"onehot-dense" -> "onehot"). `edges` fixes the bins instead
    of learning them: one increasing list per column, whose first and last edges only bound the data.
    A constant training column gets one bin, with edges (value, value).

    >>> step = Bucketize(["x"], n_bins=2, strategy="uniform", encode="ordinal").fit(pa.table({"x": [0.0, 4.0]}))
    >>> step.bin_edges_, step.transform(pa.table({"x": [-9.0, 1.0, 2.0, 9.0]})).column("x").to_pylist()
    (((0.0, 2.0, 4.0),), [0.0, 0.0, 1.0, 1.0])
    """

    type = "bucketize"
    state = state_rules(bin_edges_=per_column("lists of >= 2 finite, non-decreasing edges", lambda v: _edges_read(v)))
    strategies = ("quantile", "uniform", "kmeans")

    def __init__(
        self,
        columns: Sequence[str],
        *,
        n_bins: int | Sequence[int] = 5,
        strategy: str = "quantile",
        quantile_method: str = "averaged_inverted_cdf",
        encode: str = "onehot",
        edges: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__(columns)
        _one_of("strategy", strategy, self.strategies)
        _one_of("quantile_method", quantile_method, QUANTILE_METHODS)
        _one_of("encode", encode, ("onehot", "ordinal"))
        self.params.update(
            n_bins=self._n_bins(n_bins),
            strategy=strategy,
            quantile_method=quantile_method,
            encode=encode,
            edges=None if edges is None else self._edges(edges),
        )

    def _n_bins(self, n_bins: int | Sequence[int]) -> int | tuple[int, ...]:
        single = isinstance(n_bins, (Integral, float, str))
        counts = [n_bins] if single else list(n_bins)  # type: ignore[arg-type]
        per_column = not single and len(counts) == len(self.columns)
        valid = all(isinstance(n, Integral) and not isinstance(n, bool) and int(n) >= 2 for n in counts)
        if not (valid and (per_column or isinstance(n_bins, Integral))):
            raise PreprocessingError(
                f"Bucketize n_bins must be an int >= 2 or one such int for each of the {len(self.columns)} "
                f"column(s), got {n_bins!r}"
            )
        return tuple(int(n) for n in counts) if per_column else int(n_bins)  # type: ignore[arg-type]

    def _edges(self, edges: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
        given = [tuple(float(v) for v in e) for e in edges]
        if len(given) != len(self.columns):
            raise PreprocessingError(
                f"Bucketize edges must give one list per column ({len(self.columns)}), got {len(given)}"
            )
        for name, e in zip(self.columns, given, strict=True):
            if len(e) < 2 or not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
                raise PreprocessingError(
                    f"Bucketize edges for column {name!r} must be at least 2 finite, strictly increasing "
                    f"numbers, got {list(e)}"
                )
        return tuple(given)

    def fit(self, frame: pa.Table) -> Bucketize:
        given = self.params["edges"]
        n_bins = self.params["n_bins"]
        counts = (n_bins,) * len(self.columns) if isinstance(n_bins, int) else n_bins
        self.bin_edges_ = given or tuple(self._learn(frame, n, k) for n, k in zip(self.columns, counts, strict=True))
        return self

    def _learn(self, frame: pa.Table, name: str, n_bins: int) -> tuple[float, ...]:
        x = self.column_numbers(frame, name)
        refuse_rows(self, name, x, np.isnan(x), "expected a number", f"add Impute([{name!r}]) before Bucketize")
        x = fit_values(self, frame, name)
        low, high = float(x.min()), float(x.max())
        if low == high:
            return (low, high)
        strategy = self.params["strategy"]
        if strategy == "uniform":
            return tuple(np.linspace(low, high, n_bins + 1).tolist())
        if strategy == "quantile":
            edges = np.percentile(x, np.linspace(0, 100, n_bins + 1), method=self.params["quantile_method"])
        else:
            if len(x) < n_bins:
                raise PreprocessingError(
                    f"{self!r}: column {name!r} has {len(x)} value(s), fewer than the {n_bins} k-means bins"
                )
            centers = np.sort(_kmeans_1d(x, n_bins))
            edges = np.r_[low, (centers[1:] + centers[:-1]) * 0.5, high]
        return tuple(np.asarray(edges, dtype=np.float64)[np.ediff1d(edges, to_begin=np.inf) > 1e-8].tolist())

    def transform(self, frame: pa.Table) -> pa.Table:
        self._check_fitted()
        blocks = {}
        for name, edges in zip(self.columns, self.bin_edges_, strict=True):
            x = self.column_numbers(frame, name)
            refuse_rows(self, name, x, np.isnan(x), "expected a number", f"add Impute([{name!r}]) before Bucketize")
            index = np.searchsorted(np.asarray(edges[1:-1]), x, side="right")
            if self.params["encode"] == "ordinal":
                blocks[name] = {name: pa.array(index.astype(np.float64))}
            else:
                blocks[name] = {
                    f"{name}_bin{i}": pa.array((index == i).astype(np.float64)) for i in range(len(edges) - 1)
                }
        return replace_columns(frame, blocks)


def _edges_read(value: Any) -> tuple[float, ...]:
    """One column's bin edges read from JSON: at least two finite numbers, never decreasing."""
    edges = tuple(finite(v) for v in value) if isinstance(value, list) else ()
    if len(edges) < 2 or any(b < a for a, b in itertools.pairwise(edges)):
        raise ValueError("not >= 2 non-decreasing edges")
    return edges


def _one_of(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise PreprocessingError(f"Bucketize {what} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _kmeans_1d(x: np.ndarray, k: int, max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    """The centres scikit-learn's KMeans(k, init=centres of k uniform bins, n_init=1) finds (Lloyd's
    algorithm on mean-centred data, its empty-cluster relocation, its stopping rules)."""
    tol = float(np.var(x)) * tol
    uniform = np.linspace(x.min(), x.max(), k + 1)
    mean = x.mean()
    x = x - mean
    centers = (uniform[1:] + uniform[:-1]) * 0.5 - mean
    labels_old = None
    for _ in range(max_iter):
        labels = _nearest(x, centers)
        sums = np.bincount(labels, weights=x, minlength=k)
        weights = np.bincount(labels, minlength=k).astype(np.float64)
        _relocate_empty(x, centers, labels, sums, weights)
        new = _average(sums, weights)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if labels_old is not None and np.array_equal(labels, labels_old):
            break
        if shift <= tol:
            break
        labels_old = labels
    return centers + mean


def _nearest(x: np.ndarray, centers: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Index of the nearest centre by scikit-learn's |c|^2 - 2xc, in chunks so memory stays bounded."""
    return np.concatenate(
        [np.argmin(centers**2 + -2.0 * (x[i : i + chunk, None] * centers), axis=1) for i in range(0, len(x), chunk)]
    )


def _relocate_empty(
    x: np.ndarray, centers: np.ndarray, labels: np.ndarray, sums: np.ndarray, weights: np.ndarray
) -> None:
    """Move each empty cluster onto one of the points farthest from their centre (in place)."""
    empty = np.flatnonzero(weights == 0)
    if not len(empty):
        return
    distances = (x - centers[labels]) ** 2
    if distances.max() == 0:
        return
    far = np.argpartition(distances, -len(empty))[: -len(empty) - 1 : -1]
    for new_id, i in zip(empty, far, strict=True):
        old_id = labels[i]
        sums[old_id] -= x[i]
        sums[new_id] = x[i]
        weights[new_id] = 1.0
        weights[old_id] -= 1.0


def _average(sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sums to means; a still-empty cluster takes the biggest cluster's value at that moment, as in sklearn."""
    centers = sums.copy()
    biggest = int(np.argmax(weights))
    for j in range(len(centers)):
        centers[j] = centers[j] * (1.0 / weights[j]) if weights[j] > 0 else centers[biggest]
    return centers
