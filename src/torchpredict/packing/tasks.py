"""Which task (output head) a packed model needs: given and checked, or inferred from the target and the model.

A model's output width and its training target say the task: one float output for a float target is a
regression, K outputs for a target of K distinct labels a multiclass classifier, one output for a target of two
labels a binary one. A given task that cannot read the model's output is refused naming the task that can.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from torchpredict.errors import ModelLoadError, PackError
from torchpredict.inference.tensors import forward, to_tensors
from torchpredict.messages import first_line
from torchpredict.preprocessing import Preprocessor

__all__ = ["TASK_NAMES", "choose_task", "output_width"]

TASK_NAMES = ("regression", "binary", "multiclass", "multilabel", "raw")
WIDTH_ROWS = 8  # training rows run through the model to learn its output width


def output_width(model: torch.nn.Module, preprocessor: Preprocessor, table: pa.Table) -> int | None:
    """Outputs per row the model gives on a few training rows; None when it returns more than one tensor."""
    rows = preprocessor.schema_.validate(table.slice(0, WIDTH_ROWS), on_error="reject",
                                         row_check=preprocessor.check_rows).table
    if rows.num_rows == 0:
        return None
    tensors = to_tensors(preprocessor.transform(rows), torch.device("cpu"))
    try:
        raw = forward(model, tensors)
    except RuntimeError as exc:  # the architecture does not take these inputs
        shapes = ", ".join(f"{name} {list(t.shape)}" for name, t in tensors.items())
        raise ModelLoadError(f"the model fails on the preprocessed training rows (inputs {shapes}): "
                             f"{first_line(exc, with_type=True)}; check --factory/--factory-kwargs and the "
                             "preprocessing options against the training script") from None
    if not isinstance(raw, torch.Tensor) or raw.ndim not in (1, 2):
        return None
    return 1 if raw.ndim == 1 else int(raw.shape[1])


def choose_task(task: str | None, targets: list[str], table: pa.Table, width: int | None,
                labels: Sequence[Any] | None) -> tuple[str, tuple[str, ...]]:
    """The task given (checked against the model's output width), or inferred from the target and that width;
    with the note saying what was inferred."""
    inferred = _infer_task(targets, table, width, labels)
    if task is None and inferred is not None:
        return inferred, (f"task: {inferred}, inferred from {_evidence(targets, table, width)} (--task to choose)",)
    if task is None and width is not None and targets:
        raise PackError(f"cannot infer the task from {_evidence(targets, table, width)}; pass --task "
                        f"({' | '.join(TASK_NAMES)})")
    task = task or "regression"  # no target, or an output that is not one tensor: the default of old
    _check_task_fits(task, targets, table, width, labels, inferred)
    return task, ()


def _infer_task(targets: list[str], table: pa.Table, width: int | None, labels: Sequence[Any] | None) -> str | None:
    if width is None or not targets:
        return None
    if len(targets) > 1:
        if width != len(targets):
            return None
        return "multilabel" if all(_zero_one(table.column(t)) for t in targets) else "regression"
    column = table.column(targets[0])
    classes = len(labels) if labels else _distinct(column)
    if width == 1 and _labelish(column) and classes == 2:
        return "binary"
    if width == 1 and _numeric(column):
        return "regression"
    if width >= 2 and _labelish(column) and classes == width:
        return "multiclass"
    return None


def _check_task_fits(task: str, targets: list[str], table: pa.Table, width: int | None,
                     labels: Sequence[Any] | None, inferred: str | None) -> None:
    """A task that cannot read the model's output, or a regression on a non-numeric target, names the right one."""
    if task == "regression" and len(targets) == 1 and not _numeric(table.column(targets[0])):
        raise PackError(f"task 'regression' needs a numeric target, but {targets[0]!r} holds "
                        f"{table.column(targets[0]).type} values{_suggest(inferred, task)}")
    if width is None or task == "raw":
        return
    classes = len(labels) if labels else (_distinct(table.column(targets[0])) if len(targets) == 1 else len(targets))
    expected = {"regression": max(1, len(targets)), "binary": 1, "multiclass": classes,
                "multilabel": len(labels or targets)}[task]
    if expected and width != expected:  # 0: no labels to count (the head says what it needs)
        what = _evidence(targets, table, width) if targets else f"the model's {_outputs(width)}"
        raise PackError(f"task {task!r} reads {_outputs(expected)}, but the model gives {width} "
                        f"({what}){_suggest(inferred, task)}")


def _suggest(inferred: str | None, task: str) -> str:
    if inferred and inferred != task:
        return f": pass --task {inferred} (task={inferred!r})"
    return ": check --task, --target and --labels against the training script"


def _evidence(targets: list[str], table: pa.Table, width: int | None) -> str:
    """'target 'grade' (string, 3 distinct values) and the model's 3 outputs per row', for messages."""
    if len(targets) == 1:
        column = table.column(targets[0])
        what = f"target {targets[0]!r} ({column.type}, {_distinct(column):,} distinct values)"
    else:
        what = f"{len(targets)} targets"
    return f"{what} and the model's {_outputs(width)}"


def _outputs(width: int | None) -> str:
    if width is None:
        return "outputs (their width unknown)"
    return f"{width} output{'' if width == 1 else 's'} per row"


def _distinct(column: pa.ChunkedArray) -> int:
    return int(pc.count_distinct(column).as_py())


def _numeric(column: pa.ChunkedArray) -> bool:
    return pa.types.is_integer(column.type) or pa.types.is_floating(column.type)


def _labelish(column: pa.ChunkedArray) -> bool:
    """Values that can be class labels: strings, bools, ints, or floats that are all whole numbers."""
    if not pa.types.is_floating(column.type):
        return not pa.types.is_null(column.type)
    values = pc.drop_null(column).to_numpy()
    return bool(np.isfinite(values).all() and (values == np.floor(values)).all())


def _zero_one(column: pa.ChunkedArray) -> bool:
    return _labelish(column) and set(pc.unique(pc.drop_null(column)).to_pylist()) <= {0, 1}  # True == 1, False == 0
