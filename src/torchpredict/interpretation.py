"""Output heads: turn a model's raw output tensor into named, typed prediction columns.

The interpret stage is where logits get read as probabilities, class indices go unmapped and regression
targets stay scaled. A head owns one model output and its meaning (labels, scales, thresholds), learns
that meaning from the training targets with `fit`, encodes targets for training with `encode_target`, and
turns raw outputs into Arrow columns with `interpret`, so training and prediction cannot disagree.
Head types are found through a registry (`register_head`); sequences.py adds the sequence heads to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from torchpredict.errors import BundleError, ModelLoadError, PreprocessingError
from torchpredict.labels import Labels, check_labels, encode_labels, label_array, take_labels
from torchpredict.outputs import Output, as_tensor, select_output

__all__ = [
    "BinaryClassification",
    "Head",
    "ModelBatch",
    "MulticlassClassification",
    "MultilabelClassification",
    "RawOutput",
    "Regression",
    "head_from_dict",
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

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "params": self._params(), "state": self._state()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Head:
        if not isinstance(d, Mapping) or d.get("type") != cls.type:
            got = d.get("type") if isinstance(d, Mapping) else d
            raise BundleError(f"output head: expected type {cls.type!r}, got {got!r}")
        try:
            head = cls(**d.get("params", {}))
        except TypeError as exc:
            raise BundleError(f"output head {cls.type!r}: {exc}") from None
        head._load_state(d.get("state", {}))
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
            self.mean_ = tuple(float(m) for m in state["mean_"])
            self.std_ = tuple(float(s) for s in state["std_"])


class _Classifier(Head):
    """Labels for single-target classification: given, learned by fit, or (binary only) a default."""

    labels: Labels | None
    labels_: Labels | None
    _default_labels: ClassVar[Labels | None] = None

    @property
    def classes(self) -> Labels:
        """The labels in model-output order: fitted, else given, else the default."""
        labels = self.labels_ or self.labels or self._default_labels
        if labels is None:
            raise PreprocessingError(f"{self._describe()} has no labels; pass labels=[...] or call fit(y)")
        return labels

    def fit(self, y: Any) -> _Classifier:
        y = _column(self, y, self.target) if _is_table(y) else y
        if self.labels is not None:
            encode_labels(self._describe(), self.labels, y)
            self.labels_ = self.labels
        else:
            values = label_array(y, "y")
            if len(values) == 0:
                raise PreprocessingError(f"{self._describe()}: cannot learn labels from 0 rows")
            self.labels_ = self._check_learned(tuple(sorted(pc.unique(values).to_pylist())))
        return self

    def _check_learned(self, labels: Labels) -> Labels:
        return labels

    def _indices(self, y: Any) -> np.ndarray:
        classes = self.classes
        y = _column(self, y, self.target) if _is_table(y) else y
        return encode_labels(self._describe(), classes, y)

    def _state(self) -> dict[str, Any]:
        return {} if self.labels_ is None else {"labels_": list(self.labels_)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        if "labels_" in state:
            self.labels_ = check_labels(state["labels_"])


class BinaryClassification(_Classifier):
    """Label and P(positive) from one score per row; the positive label is the second of `labels`.

    A row is positive when P(positive) > threshold. Without labels and before fit, labels are (0, 1).
    """

    type = "binary"
    _default_labels = (0, 1)

    def __init__(self, target: str = "prediction", *, labels: Sequence[int | str] | None = None,
                 threshold: float = 0.5, output: Output = None, from_logits: bool = True) -> None:
        self.target = _check_target(target)
        self.labels = None if labels is None else self._check_learned(check_labels(labels))
        self.threshold = _check_threshold(threshold)
        self.output = _check_output(output)
        self.from_logits = _check_bool(from_logits, "from_logits")
        self.labels_: Labels | None = None

    def _check_learned(self, labels: Labels) -> Labels:
        if len(labels) != 2:
            raise PreprocessingError(f"{self._describe()} needs exactly 2 labels (negative, positive), "
                                     f"got {len(labels)}: {list(labels)}")
        return labels

    def encode_target(self, y: Any) -> np.ndarray:
        """Targets as float32 0/1 (1 = the positive label), for BCEWithLogitsLoss."""
        return self._indices(y).astype(np.float32)

    def column_names(self) -> list[str]:
        return [self.target, f"{self.target}_probability"]

    def interpret(self, raw: torch.Tensor) -> dict[str, pa.Array]:
        classes, tensor = self.classes, as_tensor(raw)
        if tensor.ndim == 2 and tensor.shape[1] == 1:
            tensor = tensor[:, 0]
        if tensor.ndim != 1:
            expected = "[n] or [n, 1] (one score per row; for [n, 2] use MulticlassClassification)"
            raise _bad_shape(self, expected, tensor)
        probability = torch.sigmoid(tensor.float()) if self.from_logits else tensor.float()
        positive = (probability > self.threshold).numpy().astype(np.int64)
        return {self.target: take_labels(classes, positive),
                f"{self.target}_probability": pa.array(probability.numpy())}

    def _params(self) -> dict[str, Any]:
        return {"target": self.target, "labels": None if self.labels is None else list(self.labels),
                "threshold": self.threshold, "output": self.output, "from_logits": self.from_logits}


class MulticlassClassification(_Classifier):
    """Label, its probability, optionally every class's probability and the top-k labels.

    The label is the argmax of the model's scores (the first one on ties); top-k is ordered by score.
    """

    type = "multiclass"

    def __init__(self, target: str = "prediction", *, labels: Sequence[int | str] | None = None,
                 top_k: int = 0, probabilities: bool = True, from_logits: bool = True,
                 output: Output = None) -> None:
        self.target = _check_target(target)
        self.labels = None if labels is None else check_labels(labels)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise PreprocessingError(f"top_k must be >= 0, got {top_k!r}")
        self.top_k = top_k
        self.probabilities = _check_bool(probabilities, "probabilities")
        self.from_logits = _check_bool(from_logits, "from_logits")
        self.output = _check_output(output)
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

    def interpret(self, raw: torch.Tensor) -> dict[str, pa.Array]:
        classes, tensor = self._check_learned(self.classes), as_tensor(raw)
        if tensor.ndim != 2 or tensor.shape[1] != len(classes):
            raise _bad_shape(self, f"[n, {len(classes)}] (one score per label)", tensor)
        probabilities = torch.softmax(tensor.float(), dim=1) if self.from_logits else tensor.float()
        scores = tensor.to(torch.float64)  # exact for every input dtype, so ties are the model's own
        best = torch.argmax(scores, dim=1)
        chosen = probabilities.gather(1, best[:, None])[:, 0]
        columns = {self.target: take_labels(classes, best.numpy()),
                   f"{self.target}_probability": pa.array(chosen.numpy())}
        if self.probabilities:
            per_class = probabilities.T.contiguous()
            for j, label in enumerate(classes):
                columns[f"{self.target}_probability_{label}"] = pa.array(per_class[j].numpy())
        return columns | self._top_k(scores, probabilities, classes)

    def _top_k(self, scores: torch.Tensor, probabilities: torch.Tensor,
               classes: Labels) -> dict[str, pa.Array]:
        if not self.top_k:
            return {}
        # A stable descending sort keeps equal scores in label order, so top1 is always the argmax.
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : self.top_k]
        top = probabilities.gather(1, order).T.contiguous()
        columns = {}
        for i in range(self.top_k):
            columns[f"{self.target}_top{i + 1}"] = take_labels(classes, order[:, i].numpy())
            columns[f"{self.target}_top{i + 1}_probability"] = pa.array(top[i].numpy())
        return columns

    def _params(self) -> dict[str, Any]:
        return {"target": self.target, "labels": None if self.labels is None else list(self.labels),
                "top_k": self.top_k, "probabilities": self.probabilities, "from_logits": self.from_logits,
                "output": self.output}


class MultilabelClassification(Head):
    """Independent yes/no per label: bool columns {target}_{label}, then {target}_probability_{label}.

    `threshold` is one float for every label or one per label; a label is on when its probability > it.
    """

    type = "multilabel"

    def __init__(self, target: str = "prediction", *, labels: Sequence[int | str],
                 threshold: float | Sequence[float] = 0.5, from_logits: bool = True,
                 output: Output = None) -> None:
        self.target = _check_target(target)
        self.labels = check_labels(labels)
        if isinstance(threshold, Sequence):
            if len(threshold) != len(self.labels):
                raise PreprocessingError(f"threshold must be one float or one per label "
                                         f"({len(self.labels)}), got {len(threshold)}")
            self.threshold: float | tuple[float, ...] = tuple(_check_threshold(t) for t in threshold)
        else:
            self.threshold = _check_threshold(threshold)
        self.from_logits = _check_bool(from_logits, "from_logits")
        self.output = _check_output(output)

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
            raise PreprocessingError(f"{self._describe()}: y must have shape [n, {len(self.labels)}] "
                                     f"(one 0/1 column per label), got {list(matrix.shape)}")
        bad = (matrix != 0) & (matrix != 1)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            value = matrix[row, col].item()
            raise PreprocessingError(f"{self._describe()}: y must hold 0/1 values, got {value!r} "
                                     f"at row {row} (label {self.labels[col]!r})")
        return matrix.astype(np.float32)

    def _multi_hot(self, rows: Any) -> np.ndarray:
        index = {label: j for j, label in enumerate(self.labels)}
        rows = list(rows)
        encoded = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for i, row in enumerate(rows):  # training-time only, never on the prediction path
            for label in [row] if isinstance(row, str | int) else row:
                if label not in index:
                    raise PreprocessingError(f"{self._describe()}: unknown label {label!r} at row {i}; "
                                             f"known labels: {list(self.labels)}")
                encoded[i, index[label]] = 1.0
        return encoded

    def column_names(self) -> list[str]:
        return ([f"{self.target}_{label}" for label in self.labels]
                + [f"{self.target}_probability_{label}" for label in self.labels])

    def interpret(self, raw: torch.Tensor) -> dict[str, pa.Array]:
        tensor = as_tensor(raw)
        if tensor.ndim != 2 or tensor.shape[1] != len(self.labels):
            raise _bad_shape(self, f"[n, {len(self.labels)}] (one score per label)", tensor)
        probabilities = torch.sigmoid(tensor.float()) if self.from_logits else tensor.float()
        on = (probabilities > torch.tensor(self.threshold, dtype=torch.float32)).T.contiguous()
        per_label = probabilities.T.contiguous()
        columns = {f"{self.target}_{label}": pa.array(on[j].numpy()) for j, label in enumerate(self.labels)}
        for j, label in enumerate(self.labels):
            columns[f"{self.target}_probability_{label}"] = pa.array(per_label[j].numpy())
        return columns

    def _params(self) -> dict[str, Any]:
        threshold = self.threshold if isinstance(self.threshold, float) else list(self.threshold)
        return {"target": self.target, "labels": list(self.labels), "threshold": threshold,
                "from_logits": self.from_logits, "output": self.output}


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


for _head in (Regression, BinaryClassification, MulticlassClassification, MultilabelClassification, RawOutput):
    register_head(_head)


def head_from_dict(d: Mapping[str, Any]) -> Head:
    """Rebuild any head from its `to_dict()`, resolving the type through an explicit registry.

    >>> head_from_dict(Regression("y").to_dict()) == Regression("y")
    True
    """
    import torchpredict.sequences  # noqa: F401  (registers the sequence heads; imported here, as it imports us)

    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind not in _HEADS:
        raise BundleError(f"unknown output head type {kind!r}; known types: {sorted(_HEADS)}")
    return _HEADS[kind].from_dict(d)


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


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise PreprocessingError(f"threshold must be in (0, 1), got {threshold!r}")
    return float(threshold)


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
