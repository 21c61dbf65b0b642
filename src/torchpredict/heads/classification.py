"""Classification heads: labels, probabilities and top-k from logits, for binary, multiclass and multilabel.

Labels are learned from the training targets by `fit` (or given), kept in model-output order, and used both to
encode targets for training and to name predictions, so the two cannot disagree.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import PreprocessingError
from torchpredict.heads.base import (
    Head,
    ModelBatch,
    check_bool,
    check_output,
    check_target,
    is_table,
    register_head,
    shape_error,
    target_column,
)
from torchpredict.heads.labels import Labels, check_labels, encode_labels, label_array, take_labels
from torchpredict.heads.outputs import Output, as_array, is_tensor
from torchpredict.inference.batch import finite_rows

__all__ = ["BinaryClassification", "MulticlassClassification", "MultilabelClassification"]


class _Classifier(Head):
    """Labels for single-target classification: given, learned by fit, or (binary only) a default."""

    labels: Labels | None
    labels_: Labels | None
    _default_labels: ClassVar[Labels | None] = None
    finite_scores = True

    @property
    def classes(self) -> Labels:
        """The labels in model-output order: fitted, else given, else the default."""
        labels = self.labels_ or self.labels or self._default_labels
        if labels is None:
            raise PreprocessingError(f"{self.describe()} has no labels; pass labels=[...] or call fit(y)")
        return labels

    def fit(self, y: Any) -> _Classifier:
        y = target_column(self, y, self.target) if is_table(y) else y
        if self.labels is not None:
            encode_labels(self.describe(), self.labels, y)
            self.labels_ = self.labels
        else:
            values = label_array(y, "y")
            if len(values) == 0:
                raise PreprocessingError(f"{self.describe()}: cannot learn labels from 0 rows")
            self.labels_ = self._check_learned(tuple(sorted(pc.unique(values).to_pylist())))
        return self

    def _check_learned(self, labels: Labels) -> Labels:
        return labels

    def _indices(self, y: Any) -> np.ndarray:
        classes = self.classes
        y = target_column(self, y, self.target) if is_table(y) else y
        return encode_labels(self.describe(), classes, y)

    def _state(self) -> dict[str, Any]:
        return {} if self.labels_ is None else {"labels_": list(self.labels_)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        if "labels_" in state:
            self.labels_ = check_labels(state["labels_"])


@register_head
class BinaryClassification(_Classifier):
    """Label and P(positive) from one score per row; the positive label is the second of `labels`.

    A row is positive when P(positive) > threshold. Without labels and before fit, labels are (0, 1).
    """

    type = "binary"
    _default_labels = (0, 1)

    def __init__(self, target: str = "prediction", *, labels: Sequence[int | str] | None = None,
                 threshold: float = 0.5, output: Output = None, from_logits: bool = True) -> None:
        self.target = check_target(target)
        self.labels = None if labels is None else self._check_learned(check_labels(labels))
        self.threshold = _check_threshold(threshold)
        self.output = check_output(output)
        self.from_logits = check_bool(from_logits, "from_logits")
        self.labels_: Labels | None = None

    def _check_learned(self, labels: Labels) -> Labels:
        if len(labels) != 2:
            raise PreprocessingError(f"{self.describe()} needs exactly 2 labels (negative, positive), "
                                     f"got {len(labels)}: {list(labels)}")
        return labels

    def encode_target(self, y: Any) -> np.ndarray:
        """Targets as float32 0/1 (1 = the positive label), for BCEWithLogitsLoss."""
        return self._indices(y).astype(np.float32)

    def column_names(self) -> list[str]:
        return [self.target, f"{self.target}_probability"]

    def read(self, batch: ModelBatch) -> dict[str, pa.Array]:
        selected = self.select(batch.raw)
        return self.interpret(selected, finite=batch.finite_rows(selected))

    def interpret(self, raw: Any, *, finite: np.ndarray | None = None) -> dict[str, pa.Array]:
        """finite: per row, whether raw's values are all finite (ModelBatch.finite_rows); None: worked out here."""
        classes, scores = self.classes, as_array(raw)
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if scores.ndim != 1:
            expected = "[n] or [n, 1] (one score per row; for [n, 2] use MulticlassClassification)"
            raise shape_error(self, expected, scores)
        probability = sigmoid(scores, by_torch=is_tensor(raw)) if self.from_logits else scores.astype(np.float32)
        positive = (probability > self.threshold).astype(np.int64)
        return {self.target: _where_finite(take_labels(classes, positive), scores, finite),
                f"{self.target}_probability": pa.array(probability)}

    def _params(self) -> dict[str, Any]:
        return {"target": self.target, "labels": None if self.labels is None else list(self.labels),
                "threshold": self.threshold, "output": self.output, "from_logits": self.from_logits}


@register_head
class MulticlassClassification(_Classifier):
    """Label, its probability, optionally every class's probability and the top-k labels.

    The label is the argmax of the model's scores (the first one on ties); top-k is ordered by score.
    """

    type = "multiclass"

    def __init__(self, target: str = "prediction", *, labels: Sequence[int | str] | None = None,
                 top_k: int = 0, probabilities: bool = True, from_logits: bool = True,
                 output: Output = None) -> None:
        self.target = check_target(target)
        self.labels = None if labels is None else check_labels(labels)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise PreprocessingError(f"top_k must be >= 0, got {top_k!r}")
        self.top_k = top_k
        self.probabilities = check_bool(probabilities, "probabilities")
        self.from_logits = check_bool(from_logits, "from_logits")
        self.output = check_output(output)
        self.labels_: Labels | None = None
        if self.labels is not None:
            self._check_learned(self.labels)

    def _check_learned(self, labels: Labels) -> Labels:
        if self.top_k > len(labels):
            raise PreprocessingError(f"top_k must be <= the number of labels ({len(labels)}), "
                                     f"got {self.top_k}")
        return labels

    def encode_target(self, y: Any) -> np.ndarray:
        """Targets as int64 class indices into `classes`, for CrossEntropyLoss."""
        return self._indices(y)

    def column_names(self) -> list[str]:
        t = self.target
        names = [t, f"{t}_probability"]
        if self.probabilities:
            names += [f"{t}_probability_{label}" for label in self.classes]
        for i in range(1, self.top_k + 1):
            names += [f"{t}_top{i}", f"{t}_top{i}_probability"]
        return names

    def read(self, batch: ModelBatch) -> dict[str, pa.Array]:
        selected = self.select(batch.raw)
        return self.interpret(selected, finite=batch.finite_rows(selected))

    def interpret(self, raw: Any, *, finite: np.ndarray | None = None) -> dict[str, pa.Array]:
        """finite: per row, whether raw's values are all finite (ModelBatch.finite_rows); None: worked out here."""
        classes, scores = self._check_learned(self.classes), as_array(raw)
        if scores.ndim != 2 or scores.shape[1] != len(classes):
            raise shape_error(self, f"[n, {len(classes)}] (one score per label)", scores)
        probabilities = softmax(scores, by_torch=is_tensor(raw)) if self.from_logits else scores.astype(np.float32)
        best, chosen = _best(scores, probabilities)
        if finite is None:
            finite = _finite_rows(scores)
        columns = {self.target: _where_finite(take_labels(classes, best), scores, finite),
                   f"{self.target}_probability": pa.array(chosen)}
        if self.probabilities:
            per_class = np.ascontiguousarray(probabilities.T)
            for j, label in enumerate(classes):
                columns[f"{self.target}_probability_{label}"] = pa.array(per_class[j])
        return columns | self._top_k(scores, probabilities, classes, finite)

    def _top_k(self, scores: np.ndarray, probabilities: np.ndarray,
               classes: Labels, finite: np.ndarray) -> dict[str, pa.Array]:
        if not self.top_k:
            return {}
        exact = scores.astype(np.float64)  # exact for every input dtype, so ties are the model's own
        order = _descending(exact)[:, : self.top_k]
        top = np.ascontiguousarray(np.take_along_axis(probabilities, order, axis=1).T)
        columns = {}
        for i in range(self.top_k):
            columns[f"{self.target}_top{i + 1}"] = _where_finite(take_labels(classes, order[:, i]), exact, finite)
            columns[f"{self.target}_top{i + 1}_probability"] = pa.array(top[i])
        return columns

    def _params(self) -> dict[str, Any]:
        return {"target": self.target, "labels": None if self.labels is None else list(self.labels),
                "top_k": self.top_k, "probabilities": self.probabilities, "from_logits": self.from_logits,
                "output": self.output}


@register_head
class MultilabelClassification(Head):
    """Independent yes/no per label: bool columns {target}_{label}, then {target}_probability_{label}.

    `threshold` is one float for every label or one per label; a label is on when its probability > it.
    """

    type = "multilabel"
    finite_scores = True

    def __init__(self, target: str = "prediction", *, labels: Sequence[int | str],
                 threshold: float | Sequence[float] = 0.5, from_logits: bool = True,
                 output: Output = None) -> None:
        self.target = check_target(target)
        self.labels = check_labels(labels)
        if isinstance(threshold, Sequence):
            if len(threshold) != len(self.labels):
                raise PreprocessingError(f"threshold must be one float or one per label "
                                         f"({len(self.labels)}), got {len(threshold)}")
            self.threshold: float | tuple[float, ...] = tuple(_check_threshold(t) for t in threshold)
        else:
            self.threshold = _check_threshold(threshold)
        self.from_logits = check_bool(from_logits, "from_logits")
        self.output = check_output(output)

    def fit(self, y: Any) -> MultilabelClassification:
        """Check the targets against the labels (labels are given, never learned)."""
        self.encode_target(y)
        return self

    def encode_target(self, y: Any) -> np.ndarray:
        """float32 [n, n_labels] 0/1, from a 0/1 (or bool) matrix or from one collection of labels per row.

        With int labels a matrix must come as an array (NumPy, torch); a list of lists is read as label sets.
        """
        if isinstance(y, list | tuple) and isinstance(self.labels[0], int):
            return self._multi_hot(y)
        try:
            matrix = np.asarray(y)
        except ValueError:  # ragged rows of labels
            return self._multi_hot(y)
        if matrix.ndim == 2 and matrix.dtype.kind in "biuf":
            return self._check_matrix(matrix)
        return self._multi_hot(y)

    def _check_matrix(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[1] != len(self.labels):
            raise PreprocessingError(f"{self.describe()}: y must have shape [n, {len(self.labels)}] "
                                     f"(one 0/1 column per label), got {list(matrix.shape)}")
        bad = (matrix != 0) & (matrix != 1)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            value = matrix[row, col].item()
            raise PreprocessingError(f"{self.describe()}: y must hold 0/1 values, got {value!r} "
                                     f"at row {row} (label {self.labels[col]!r})")
        return matrix.astype(np.float32)

    def _multi_hot(self, rows: Any) -> np.ndarray:
        index = {label: j for j, label in enumerate(self.labels)}
        rows = list(rows)
        encoded = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for i, row in enumerate(rows):  # training-time only, never on the prediction path
            for label in [row] if isinstance(row, str | int) else row:
                if label not in index:
                    raise PreprocessingError(f"{self.describe()}: unknown label {label!r} at row {i}; "
                                             f"known labels: {list(self.labels)}")
                encoded[i, index[label]] = 1.0
        return encoded

    def column_names(self) -> list[str]:
        return ([f"{self.target}_{label}" for label in self.labels]
                + [f"{self.target}_probability_{label}" for label in self.labels])

    def read(self, batch: ModelBatch) -> dict[str, pa.Array]:
        selected = self.select(batch.raw)
        return self.interpret(selected, finite=batch.finite_rows(selected))

    def interpret(self, raw: Any, *, finite: np.ndarray | None = None) -> dict[str, pa.Array]:
        """finite: per row, whether raw's values are all finite (ModelBatch.finite_rows); None: worked out here."""
        scores = as_array(raw)
        if scores.ndim != 2 or scores.shape[1] != len(self.labels):
            raise shape_error(self, f"[n, {len(self.labels)}] (one score per label)", scores)
        probabilities = sigmoid(scores, by_torch=is_tensor(raw)) if self.from_logits else scores.astype(np.float32)
        on = np.ascontiguousarray((probabilities > np.asarray(self.threshold, np.float32)).T)
        per_label = np.ascontiguousarray(probabilities.T)
        if finite is None:
            finite = _finite_rows(scores)
        columns = {f"{self.target}_{label}": _where_finite(pa.array(on[j]), scores, finite)
                   for j, label in enumerate(self.labels)}
        for j, label in enumerate(self.labels):
            columns[f"{self.target}_probability_{label}"] = pa.array(per_label[j])
        return columns

    def _params(self) -> dict[str, Any]:
        threshold = self.threshold if isinstance(self.threshold, float) else list(self.threshold)
        return {"target": self.target, "labels": list(self.labels), "threshold": threshold,
                "from_logits": self.from_logits, "output": self.output}


def sigmoid(scores: np.ndarray, *, by_torch: bool = False) -> np.ndarray:
    """The logistic function in float32: by torch's kernel for a torch model's output (the bits eager predictions
    always had), by numpy's for ONNX Runtime's (within a float32 step of torch's), so that a backend predicts the
    same bits whether or not torch is loaded."""
    x = scores.astype(np.float32)  # a copy: torch.from_numpy may share it
    if by_torch:
        torch = sys.modules["torch"]  # the output is a tensor: torch is loaded
        return torch.sigmoid(torch.from_numpy(x)).numpy()
    with np.errstate(over="ignore"):
        return np.float32(1) / (np.float32(1) + np.exp(-x))


def softmax(scores: np.ndarray, *, by_torch: bool = False) -> np.ndarray:
    """Over the last axis, in float32, exp of the scores less their maximum over their sum: by torch's kernel or
    numpy's, as for sigmoid."""
    x = scores.astype(np.float32)
    if by_torch:
        torch = sys.modules["torch"]
        return torch.softmax(torch.from_numpy(x), dim=-1).numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True)) if x.shape[-1] else x
        return e / e.sum(axis=-1, keepdims=True)


def _descending(scores: np.ndarray) -> np.ndarray:
    """Per row, the indices of the scores from highest to lowest as torch.sort(descending=True, stable=True) orders
    them: equal scores in label order (so the first is the argmax) and NaN above every number."""
    return np.lexsort((-scores, ~np.isnan(scores)), axis=1)


def _best(scores: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the index of its highest score (the first, on a tie; a float32 score compares as its exact float64
    does, other dtypes are compared as float64) and that label's probability."""
    values = scores if scores.dtype in (np.float32, np.float64) else scores.astype(np.float64)
    best = values.argmax(axis=1) if len(values) else np.zeros(0, np.int64)
    return best, probabilities[np.arange(len(probabilities)), best]


def _finite_rows(scores: np.ndarray) -> np.ndarray:
    """Per row, whether its scores are all finite (as ModelBatch.finite_rows works it out)."""
    return finite_rows(scores)


def _where_finite(labels: pa.Array, scores: np.ndarray, finite: np.ndarray | None = None) -> pa.Array:
    """labels, null in the rows whose scores are not all finite: a NaN score never becomes a label (the
    Predictor sets such rows aside as rejected, see Head.refused; this holds for direct calls too).

    finite: that per row, when already worked out (ModelBatch.finite_rows); None: worked out here."""
    if finite is None:
        finite = _finite_rows(scores)
    return labels if finite.all() else pc.if_else(pa.array(finite), labels, pa.nulls(len(labels), labels.type))


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise PreprocessingError(f"threshold must be in (0, 1), got {threshold!r}")
    return float(threshold)
