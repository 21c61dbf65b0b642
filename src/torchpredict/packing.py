"""Turn a model trained without torchpredict into a correct bundle.

The usual real case: a checkpoint saved the usual way (a state_dict, a TorchScript file, or a
`torch.save(model)` pickle) and preprocessing done by hand in the training script. `pack` refits that
preprocessing with torchpredict steps on the training data, so the bundle applies it identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from torchpredict.bundle import save
from torchpredict.checkpoints import load_checkpoint
from torchpredict.classification import BinaryClassification, MulticlassClassification, MultilabelClassification
from torchpredict.errors import PreprocessingError
from torchpredict.interpretation import RawOutput, Regression
from torchpredict.preprocessing import Impute, MinMax, OneHot, Preprocessor, Standardize
from torchpredict.readers import read_table
from torchpredict.tables import as_table

__all__ = ["TASKS", "pack"]

TASKS = {"regression": Regression, "binary": BinaryClassification, "multiclass": MulticlassClassification,
         "multilabel": MultilabelClassification, "raw": RawOutput}
ALL_NUMERIC = "*"


def pack(checkpoint: str | Path, output: str | Path, *, train: Any, target: str | Sequence[str] | None = None,
         task: str = "regression", factory: str | None = None, factory_kwargs: dict | None = None,
         trust_pickle: bool = False, source: str | Path | None = None, standardize: Sequence[str] = (),
         minmax: Sequence[str] = (), impute: Sequence[str] = (), one_hot: Sequence[str] = (),
         passthrough: Sequence[str] = (), scale_target: bool = False, labels: Sequence[Any] | None = None,
         name: str | None = None, storage: str = "auto", overwrite: bool = False) -> Path:
    """Import a checkpoint, fit its preprocessing on the training data, and save a bundle.

    train: the training data (a file path or any table-like) the model was trained on; its `target`
    column(s) are split off to learn class labels or the target scale. standardize=["*"] means every
    numeric feature column not named in another step.

    >>> torchpredict.pack("model.pt", "model.tpk", train="train.csv", target="price", task="regression",
    ...                   factory="mypkg.nets:make_net", standardize=["*"], scale_target=True)  # doctest: +SKIP
    """
    if task not in TASKS:
        raise PreprocessingError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    model = load_checkpoint(checkpoint, factory=factory, factory_kwargs=factory_kwargs,
                            trust_pickle=trust_pickle, source=source)
    table = read_table(train) if isinstance(train, (str, Path)) else as_table(train)
    targets = [target] if isinstance(target, str) else list(target or [])
    features_table = table.drop_columns([t for t in targets if t in table.column_names])
    preprocessor = Preprocessor(_steps(features_table, standardize, minmax, impute, one_hot, passthrough),
                                passthrough=passthrough).fit(features_table)
    head = _head(task, targets, table, scale_target=scale_target, labels=labels)
    return save(output, model, preprocessor=preprocessor, heads=head, examples=features_table,
                name=name, storage=storage, factory=factory if isinstance(factory, str) else None,
                factory_kwargs=factory_kwargs, overwrite=overwrite)


def _steps(table: pa.Table, standardize: Sequence[str], minmax: Sequence[str], impute: Sequence[str],
           one_hot: Sequence[str], passthrough: Sequence[str]) -> list:
    claimed = set(minmax) | set(one_hot) | set(passthrough)
    if list(standardize) == [ALL_NUMERIC]:
        numeric = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
        standardize = [name for name in numeric if name not in claimed]
    _check_columns(table, {"standardize": standardize, "minmax": minmax, "impute": impute,
                           "one_hot": one_hot, "passthrough": passthrough})
    steps: list = []
    if impute:
        steps.append(Impute(list(impute), strategy="mean"))
    if standardize:
        steps.append(Standardize(list(standardize)))
    if minmax:
        steps.append(MinMax(list(minmax)))
    if one_hot:
        steps.append(OneHot(list(one_hot), handle_unknown="ignore"))
    return steps


def _check_columns(table: pa.Table, wanted: dict[str, Sequence[str]]) -> None:
    for option, names in wanted.items():
        missing = [name for name in names if name not in table.column_names]
        if missing:
            raise PreprocessingError(f"{option}: column(s) {', '.join(map(repr, missing))} are not in the training "
                                     f"data (columns: {', '.join(table.column_names)})")


def _head(task: str, targets: list[str], table: pa.Table, *, scale_target: bool,
          labels: Sequence[Any] | None) -> Any:
    missing = [t for t in targets if t not in table.column_names]
    if missing:
        raise PreprocessingError(f"target column(s) {', '.join(map(repr, missing))} are not in the training data")
    if scale_target and task != "regression":
        raise PreprocessingError(f"scale_target applies to task 'regression' only, got task {task!r}")
    if task == "regression":
        head = Regression(targets[0] if len(targets) == 1 else targets or "prediction", scale=scale_target)
    elif task == "raw":
        return RawOutput(targets[0] if targets else "output")
    elif task == "multilabel":
        return MultilabelClassification(labels=list(labels or targets), target="prediction")
    else:
        kwargs = {"labels": list(labels)} if labels else {}
        head = TASKS[task](targets[0] if targets else "prediction", **kwargs)
    if targets and (task != "regression" or scale_target) and not labels:
        columns = [table.column(t).to_numpy(zero_copy_only=False) for t in targets]
        head.fit(columns[0] if len(columns) == 1 else np.column_stack(columns))
    return head
