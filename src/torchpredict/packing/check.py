"""Pack checks its own work: the packed bundle predicts its training rows, and a wrong pack is refused.

A bundle packed with the labels in the wrong order, or without the target or input scaling the training
script applied by hand, loads and verifies fine and is silently wrong. The training rows and the target are
the evidence: `check_fit` predicts them with the bundle as written, reports the fit (accuracy and per-class
counts, or R² and MAE in target units), and raises a PackError naming the fix when another order of the
labels, or the target scaled the other way, or the inputs standardised the other way, fits far better.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from torchpredict.errors import PackError
from torchpredict.heads.labels import encode_labels, label_array
from torchpredict.heads.regression import Regression
from torchpredict.messages import quoted
from torchpredict.predictor import Predictor, input_rows

__all__ = ["CHECK_ROWS", "Alternative", "Fit", "check_fit", "check_labels_match"]

CHECK_ROWS = 20_000  # training rows predicted by the check; a bigger file is sampled (seeded)
BRUTE_FORCE_CLASSES = 8  # up to this many classes every label order is tried (8! = 40,320)
ACCURACY_GAIN, ACCURACY_RATIO = 0.20, 2.0  # "far better": 20 points more and at least twice the accuracy
SHOWN_CLASSES = 12  # classes listed in the printed fit (Fit.counts holds them all)
R2_GAIN, MAE_RATIO = 0.3, 0.5  # "far better": R² higher by 0.3, or MAE under half (and R² higher and > 0)


@dataclass(frozen=True)
class Alternative:
    """Another way the pack could have been made: how it differs from this one, and the option that makes it."""

    what: str  # "the target scaled", "the inputs standardised"
    fix: str  # "--scale-target (scale_target=True)"


@dataclass(frozen=True)
class Fit:
    """How the packed bundle predicts its own training rows: the evidence that it was packed right.

    Classification: `accuracy`, with `counts[i][j]` the rows of true label `labels[i]` predicted as `labels[j]`
    (multilabel: `per_label` accuracies). Regression: `r2` and `mae` (in target units), one per target.
    """

    task: str
    rows: int  # training rows predicted
    of_rows: int  # training rows in the file (more than rows when sampled)
    targets: tuple[str, ...] = ()
    accuracy: float | None = None
    labels: tuple[Any, ...] = ()
    counts: tuple[tuple[int, ...], ...] = ()
    per_label: tuple[float, ...] = ()
    r2: tuple[float, ...] = ()
    mae: tuple[float, ...] = ()

    def describe(self) -> list[str]:
        """One or two lines: 'fit on its 400 training rows: accuracy 85.9%' and the per-class counts."""
        where = (f"{self.rows:,} training rows" if self.rows == self.of_rows
                 else f"{self.rows:,} sampled of {self.of_rows:,} training rows")
        if self.r2:
            parts = [f"{name + ' ' if len(self.targets) > 1 else ''}R² {_r2(r2)}, MAE {_number(mae)}"
                     for name, r2, mae in zip(self.targets, self.r2, self.mae, strict=True)]
            return [f"fit on {where}: {'; '.join(parts)}"]
        lines = [f"fit on {where}: accuracy {_percent(self.accuracy)}"]
        if self.per_label:
            lines.append("  per label: " + ", ".join(f"{label} {_percent(a)}"
                                                     for label, a in zip(self.labels, self.per_label, strict=True)))
        elif self.counts:
            right = [f"{label} {row[i]:,}/{sum(row):,}" for i, (label, row) in enumerate(zip(self.labels, self.counts,
                                                                                          strict=True))]
            more = f", … ({len(right) - SHOWN_CLASSES:,} more classes)" if len(right) > SHOWN_CLASSES else ""
            lines.append(f"  per class, right of rows: {', '.join(right[:SHOWN_CLASSES])}{more}")
        return lines


def check_labels_match(labels: Sequence[Any], column: Any, target: str) -> None:
    """Labels given for a classifier must be the target's values: a typo names the unknown and missing ones."""
    values = set(pc.unique(label_array(column, f"target {target!r}")).to_pylist())
    unknown = [label for label in labels if label not in values]
    missing = sorted(values - set(labels), key=str)
    if not unknown and not missing:
        return
    parts = ([f"{quoted(unknown)} {_are(unknown, 'not a value', 'not values')} of target {target!r}"] if unknown
             else []) + ([f"{quoted(missing)} {_are(missing, 'missing', 'missing')}" if unknown else
                          f"target {target!r} also holds {quoted(missing)}, which they do not name"] if missing else [])
    raise PackError(f"labels: {' and '.join(parts)} (its values: {quoted(sorted(values, key=str))}); pass "
                    "--labels (labels=[...]) with exactly those values, in the model's output order")


def _are(names: Sequence[Any], one: str, many: str) -> str:
    return f"is {one}" if len(names) == 1 else f"are {many}"


def check_fit(predictor: Predictor, features: pa.Table, targets: pa.Table, *,
              other_inputs: tuple[Predictor, Alternative] | None = None) -> Fit:
    """Predict the training rows (at most CHECK_ROWS, seeded sample) with the packed bundle and report the fit.

    targets: the target column(s), row for row with features. other_inputs: the same model with the inputs
    preprocessed the other way (standardised or not), tried for a regression. Raises PackError when another
    label order, target scaling or input preprocessing fits far better than the bundle as packed.
    """
    head = predictor.heads[0]
    sample = _sample(features.num_rows)
    table, rows = _valid_rows(predictor, features.take(pa.array(sample)))
    truth = targets.take(pa.array(sample[rows]))
    raw = _raw(predictor, table)
    if isinstance(head, Regression):
        other = None if other_inputs is None else (_raw(other_inputs[0], table), other_inputs[1])
        return _regression_fit(head, raw, truth, targets, features.num_rows, other)
    if head.type == "multilabel":
        return _multilabel_fit(head, raw, truth, features.num_rows)
    return _classification_fit(head, raw, truth.column(0), features.num_rows)


def _sample(rows: int) -> np.ndarray:
    if rows <= CHECK_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(0).choice(rows, CHECK_ROWS, replace=False))


def _valid_rows(predictor: Predictor, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """The rows the bundle accepts (a training row it would reject is no evidence) and their positions."""
    validated = predictor.validate(table, on_error="reject")
    return validated.table, input_rows(validated, 0)


def _raw(predictor: Predictor, table: pa.Table) -> torch.Tensor:
    """The packed head's raw model output for validated rows, all batches together."""
    head = predictor.heads[0]
    batches = [head.select(batch.raw) for batch in predictor.infer(predictor.preprocess(table))]
    return torch.cat(batches) if batches else torch.zeros(0)


def _classification_fit(head: Any, raw: torch.Tensor, truth: Any, of_rows: int) -> Fit:
    classes = tuple(head.classes)
    predicted = head.interpret(raw)[head.target]
    scored = predicted.is_valid().to_numpy(zero_copy_only=False)  # a non-finite score gives no label
    k = len(classes)
    true_index = encode_labels(head.name, classes, truth.filter(pa.array(scored)))
    predicted_index = encode_labels(head.name, classes, predicted.filter(pa.array(scored)))
    counts = np.bincount(true_index * k + predicted_index, minlength=k * k).reshape(k, k)
    fit = Fit(head.type, int(scored.sum()), of_rows, (head.name,), _ratio(np.trace(counts), counts.sum()),
              classes, tuple(tuple(int(c) for c in row) for row in counts))
    _refuse_label_order(fit, counts, classes)
    return fit


def _refuse_label_order(fit: Fit, counts: np.ndarray, classes: tuple[Any, ...]) -> None:
    """counts[i, j]: rows of true class i where the model's output j wins; the best labels for the outputs."""
    order = _best_assignment(counts)
    best = _ratio(counts[order, np.arange(len(classes))].sum(), counts.sum())
    if best - fit.accuracy >= ACCURACY_GAIN and best >= ACCURACY_RATIO * fit.accuracy:  # type: ignore[operator]
        right = ",".join(str(classes[i]) for i in order)
        raise PackError(f"pack check: the model's outputs fit the labels in the order {right} (accuracy "
                        f"{_percent(best)}) far better than {','.join(map(str, classes))} ({_percent(fit.accuracy)}) "
                        f"on {fit.rows:,} training rows: pass --labels {right} (labels={[classes[i] for i in order]!r})"
                        f"; nothing was written (--no-check, check=False, packs it as it is)")


def _best_assignment(counts: np.ndarray) -> np.ndarray:
    """order[j]: the true class to name output j, maximising the rows right: exact (every order, or scipy's
    linear_sum_assignment), or greedy for many classes without scipy (still a real order, maybe not the best)."""
    k = len(counts)
    if k <= BRUTE_FORCE_CLASSES:
        orders = np.array(list(itertools.permutations(range(k))))
        return orders[np.argmax(counts[orders, np.arange(k)].sum(axis=1))]
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return _greedy_assignment(counts)
    outputs, classes = linear_sum_assignment(counts.T, maximize=True)
    return classes[np.argsort(outputs)]


def _greedy_assignment(counts: np.ndarray) -> np.ndarray:
    k, order, work = len(counts), np.zeros(len(counts), dtype=np.int64), counts.astype(np.float64)
    for _ in range(k):
        i, j = np.unravel_index(np.argmax(work), work.shape)
        order[j] = i
        work[i, :], work[:, j] = -1, -1
    return order


def _multilabel_fit(head: Any, raw: torch.Tensor, truth: pa.Table, of_rows: int) -> Fit:
    columns = head.interpret(raw)
    wanted = head.encode_target(np.column_stack([truth.column(i).to_numpy(zero_copy_only=False)
                                                 for i in range(truth.num_columns)]))
    got = np.column_stack([columns[f"{head.target}_{label}"].to_numpy(zero_copy_only=False) for label in head.labels])
    per_label = tuple(float(a) for a in (got == wanted.astype(bool)).mean(axis=0)) if len(got) else ()
    return Fit(head.type, len(got), of_rows, tuple(truth.column_names), _ratio((got == wanted).sum(), wanted.size),
               tuple(head.labels), per_label=per_label)


def _regression_fit(head: Regression, raw: torch.Tensor, truth: pa.Table, targets: pa.Table, of_rows: int,
                    other: tuple[torch.Tensor, Alternative] | None) -> Fit:
    y, everything = _matrix(truth), _matrix(targets)
    rows = np.isfinite(y).all(axis=1)
    r2, mae = _scores(_predicted(head, raw), y, rows)
    fit = Fit("regression", int(rows.sum()), of_rows, head.targets, r2=r2, mae=mae)
    scaled = Regression(head.target, scale=not head.scale).fit(everything[np.isfinite(everything).all(axis=1)])
    scaling = (Alternative("the target unscaled", "no --scale-target (scale_target=False)") if head.scale
               else Alternative("the target scaled", "--scale-target (scale_target=True)"))
    tries: list[tuple[tuple[Alternative, ...], np.ndarray]] = [((scaling,), _predicted(scaled, raw))]
    if other is not None:
        tries += [((other[1],), _predicted(head, other[0])), ((other[1], scaling), _predicted(scaled, other[0]))]
    scored = [(changes, _scores(predictions, y, rows)) for changes, predictions in tries]
    changes, (best_r2, best_mae) = max(scored, key=lambda item: np.mean(item[1][0]))
    if _far_better(best_r2, best_mae, fit):
        what, fix = " and ".join(c.what for c in changes), " and ".join(c.fix for c in changes)
        raise PackError(f"pack check: the model fits its {fit.rows:,} training rows far better with {what} "
                        f"({_r2_mae(best_r2, best_mae)}) than as packed ({_r2_mae(fit.r2, fit.mae)}): pass {fix}; "
                        "nothing was written (--no-check, check=False, packs it as it is)")
    return fit


def _far_better(r2: Sequence[float], mae: Sequence[float], fit: Fit) -> bool:
    """R² higher by R2_GAIN, or every MAE under MAE_RATIO of the packed one; either way a real fit (R² > 0)."""
    gain = float(np.mean(r2) - np.mean(fit.r2))
    halved = all(a <= MAE_RATIO * b for a, b in zip(mae, fit.mae, strict=True))
    return float(np.mean(r2)) > 0 and gain > 0 and (gain >= R2_GAIN or halved)


def _predicted(head: Regression, raw: torch.Tensor) -> np.ndarray:
    columns = head.interpret(raw)
    return np.column_stack([columns[name].to_numpy(zero_copy_only=False) for name in head.targets]).astype(np.float64)


def _scores(predicted: np.ndarray, y: np.ndarray, rows: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(R² per target, MAE per target) over the rows with a target; a non-finite prediction counts as infinitely off."""
    p, t = predicted[rows], y[rows]
    p = np.where(np.isfinite(p), p, np.inf)
    residual = ((t - p) ** 2).sum(axis=0)
    total = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, -np.inf))
    return tuple(float(v) for v in r2), tuple(float(v) for v in np.abs(t - p).mean(axis=0))


def _matrix(table: pa.Table) -> np.ndarray:
    """The numeric target columns as float64 [n, k], missing values NaN."""
    return np.column_stack([pc.cast(table.column(i), pa.float64()).to_numpy(zero_copy_only=False)
                            for i in range(table.num_columns)])


def _r2_mae(r2: Sequence[float], mae: Sequence[float]) -> str:
    return "; ".join(f"R² {_r2(a)}, MAE {_number(b)}" for a, b in zip(r2, mae, strict=True))


def _r2(value: float) -> str:
    """0.949, or -2,309,150 for a fit off by orders of magnitude."""
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"


def _ratio(part: Any, whole: Any) -> float:
    return float(part) / float(whole) if whole else 0.0


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _number(value: float) -> str:
    """12,346 for big numbers, 0.1235 for small ones."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
