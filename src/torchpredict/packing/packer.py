"""Turn a model trained without torchpredict into a correct bundle.

The usual real case: a checkpoint saved the usual way (a state_dict, a TorchScript file, or a
`torch.save(model)` pickle) and preprocessing done by hand in the training script. `pack` refits that
preprocessing with torchpredict steps on the training data, so the bundle applies it identically, infers the
task from the target and the model's output width when not told, and checks the bundle it wrote on the
training rows (see check.py): a bundle the evidence says is wrong is refused and never written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from torchpredict.bundle.loading import load
from torchpredict.bundle.saving import save
from torchpredict.errors import BundleError, PreprocessingError
from torchpredict.heads.classification import BinaryClassification, MulticlassClassification, MultilabelClassification
from torchpredict.heads.regression import RawOutput, Regression
from torchpredict.io.readers import read_table
from torchpredict.model.checkpoints import load_checkpoint
from torchpredict.packing.check import Alternative, Fit, check_fit, check_labels_match
from torchpredict.packing.tasks import choose_task, output_width
from torchpredict.predictor import Predictor
from torchpredict.preprocessing import Impute, MinMax, OneHot, Preprocessor, Standardize
from torchpredict.schema.tables import as_table

__all__ = ["TASKS", "Packed", "pack"]

TASKS = {"regression": Regression, "binary": BinaryClassification, "multiclass": MulticlassClassification,
         "multilabel": MultilabelClassification, "raw": RawOutput}
ALL_NUMERIC = "*"
UNCHECKED = "not checked on the training rows (--no-check, check=False): nothing confirms its labels or scaling"


@dataclass(frozen=True)
class Packed:
    """What pack wrote: the bundle's path, its task, notes (the task inferred, the check skipped) and its fit on
    the training rows (None when not checked). A path-like, so load(pack(...)) works as when pack returned a Path.
    """

    path: Path
    task: str
    fit: Fit | None = None
    notes: tuple[str, ...] = ()

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def describe(self) -> list[str]:
        """The lines the CLI prints after 'wrote bundle ...': the notes, then the fit."""
        return [*self.notes, *(self.fit.describe() if self.fit else [])]


def pack(checkpoint: str | Path, output: str | Path, *, train: Any, target: str | Sequence[str] | None = None,
         task: str | None = None, factory: str | None = None, factory_kwargs: dict | None = None,
         trust_pickle: bool = False, source: str | Path | None = None, standardize: Sequence[str] = (),
         minmax: Sequence[str] = (), impute: Sequence[str] = (), one_hot: Sequence[str] = (),
         passthrough: Sequence[str] = (), scale_target: bool = False, labels: Sequence[Any] | None = None,
         name: str | None = None, storage: str = "auto", overwrite: bool = False, check: bool = True) -> Packed:
    """Import a checkpoint, fit its preprocessing on the training data, save a bundle and check it on that data.

    train: the training data (a file path or any table-like) the model was trained on; its `target`
    column(s) are split off to learn class labels or the target scale. standardize=["*"] means every
    numeric feature column not named in another step. task: None infers it from the target and the model's
    output width. check: predict the training rows with the written bundle and raise PackError, writing
    nothing, when another label order, target scaling or input standardisation fits far better.

    >>> packed = torchpredict.pack("model.pt", "model.tpk", train="train.csv", target="price",  # doctest: +SKIP
    ...                            factory="mypkg.nets:make_net", standardize=["*"], scale_target=True)
    >>> packed.fit.r2, packed.path                                                             # doctest: +SKIP
    """
    if task is not None and task not in TASKS:
        raise PreprocessingError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    output = _writable(Path(output), overwrite)
    model = load_checkpoint(checkpoint, factory=factory, factory_kwargs=factory_kwargs,
                            trust_pickle=trust_pickle, source=source)
    table = read_table(train) if isinstance(train, (str, Path)) else as_table(train)
    targets = [target] if isinstance(target, str) else list(target or [])
    features_table = table.drop_columns([t for t in targets if t in table.column_names])
    steps = {"standardize": standardize, "minmax": minmax, "impute": impute, "one_hot": one_hot,
             "passthrough": passthrough}
    preprocessor = _preprocessor(features_table, steps)
    _check_targets(targets, table)
    labels = _labels_like(labels, table, targets)
    if check and labels and len(targets) == 1 and task in (None, "binary", "multiclass"):
        check_labels_match(labels, table.column(targets[0]), targets[0])
    task, notes = choose_task(task, targets, table, output_width(model, preprocessor, features_table), labels)
    head = _head(task, targets, table, scale_target=scale_target, labels=labels)
    checking = check and bool(targets) and task != "raw"
    other = _other_inputs(features_table, steps) if checking and task == "regression" else None
    with tempfile.TemporaryDirectory(prefix=".tp-pack-", dir=output.parent) as tmp:
        staged = Path(tmp) / output.name  # written here, moved into place only once checked
        caught = _save_staged(staged, output, model, preprocessor=preprocessor, heads=head, examples=features_table,
                              name=name, storage=storage, factory=factory if isinstance(factory, str) else None,
                              factory_kwargs=factory_kwargs)
        fit = _check(staged, factory, features_table, table.select(targets), other) if checking else None
        _publish(staged, output)
    for message, category in caught:
        warnings.warn(message, category, stacklevel=2)
    return Packed(output, task, fit, (*notes, *_check_notes(check, targets, task)))


def _writable(path: Path, overwrite: bool) -> Path:
    """Refuse before any work what save would refuse at the end: an existing bundle, a missing folder."""
    if path.exists() and not overwrite:
        raise BundleError(f"bundle '{path}' already exists; pass overwrite=True (CLI --overwrite) to replace it")
    if not path.parent.is_dir():
        raise BundleError(f"cannot save bundle '{path}': folder '{path.parent}' does not exist")
    return path


def _preprocessor(table: pa.Table, steps: dict[str, Sequence[str]]) -> Preprocessor:
    return Preprocessor(_steps(table, **steps), passthrough=steps["passthrough"]).fit(table)


def _steps(table: pa.Table, standardize: Sequence[str], minmax: Sequence[str], impute: Sequence[str],
           one_hot: Sequence[str], passthrough: Sequence[str]) -> list:
    standardize = _standardized(table, standardize, minmax, one_hot, passthrough)
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


def _standardized(table: pa.Table, standardize: Sequence[str], minmax: Sequence[str], one_hot: Sequence[str],
                  passthrough: Sequence[str]) -> list[str]:
    """The columns to standardize: those named, or for '*' every numeric one no other step claims."""
    if list(standardize) != [ALL_NUMERIC]:
        return list(standardize)
    claimed = set(minmax) | set(one_hot) | set(passthrough)
    numeric = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
    return [name for name in numeric if name not in claimed]


def _check_columns(table: pa.Table, wanted: dict[str, Sequence[str]]) -> None:
    for option, names in wanted.items():
        missing = [name for name in names if name not in table.column_names]
        if missing:
            raise PreprocessingError(f"{option}: column(s) {', '.join(map(repr, missing))} are not in the training "
                                     f"data (columns: {', '.join(table.column_names)})")


def _check_targets(targets: list[str], table: pa.Table) -> None:
    missing = [t for t in targets if t not in table.column_names]
    if missing:
        raise PreprocessingError(f"target column(s) {', '.join(map(repr, missing))} are not in the training data")


def _labels_like(labels: Sequence[Any] | None, table: pa.Table, targets: list[str]) -> Sequence[Any] | None:
    """Labels typed like the target: for an integer target the CLI's text '0,1,2' means the ints 0, 1, 2."""
    if not labels or len(targets) != 1 or not pa.types.is_integer(table.column(targets[0]).type):
        return labels
    if all(isinstance(label, str) and re.fullmatch(r"[+-]?\d+", label.strip()) for label in labels):
        return [int(label) for label in labels]
    return labels


def _head(task: str, targets: list[str], table: pa.Table, *, scale_target: bool,
          labels: Sequence[Any] | None) -> Any:
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


def _save_staged(staged: Path, output: Path, model: torch.nn.Module, **options: Any) -> list[tuple[str, type]]:
    """save() into the staging path; its warnings come back naming the bundle's real path, to be re-issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save(staged, model, **options)
    return [(str(w.message).replace(str(staged), str(output)), w.category) for w in caught]


def _other_inputs(table: pa.Table, steps: dict[str, Sequence[str]]) -> tuple[Preprocessor, Alternative] | None:
    """The preprocessing with standardisation the other way (all numeric features, or none), for the check."""
    if steps["standardize"]:
        other = Alternative("the inputs not standardised", "no --standardize (standardize=[])")
        return _preprocessor(table, {**steps, "standardize": []}), other
    if not _standardized(table, [ALL_NUMERIC], steps["minmax"], steps["one_hot"], steps["passthrough"]):
        return None
    other = Alternative("the inputs standardised", "--standardize '*' (standardize=['*'])")
    return _preprocessor(table, {**steps, "standardize": [ALL_NUMERIC]}), other


def _check(staged: Path, factory: Any, features: pa.Table, targets: pa.Table,
           other: tuple[Preprocessor, Alternative] | None) -> Fit:
    """Load the bundle as written (trusting the factory pack was given) and check it on the training rows."""
    predictor = load(staged, device="cpu", trust_factory=[factory] if isinstance(factory, str) else [])
    sibling = None
    if other is not None:
        sibling = (Predictor(model=predictor.model, preprocessor=other[0], heads=predictor.heads,
                             model_entry=predictor.model_entry, device=predictor.device), other[1])
    return check_fit(predictor, features, targets, other_inputs=sibling)


def _publish(staged: Path, output: Path) -> None:
    """Move the checked bundle into place (replacing an old one only now, when overwrite was asked for)."""
    if output.exists():
        shutil.rmtree(output) if output.is_dir() and not output.is_symlink() else output.unlink()
    os.replace(staged, output)


def _check_notes(check: bool, targets: list[str], task: str) -> tuple[str, ...]:
    if task == "raw":
        return ()
    if not check:
        return (UNCHECKED,)
    if not targets:
        return ("not checked on the training rows: no target given (--target, target=)",)
    return ()
