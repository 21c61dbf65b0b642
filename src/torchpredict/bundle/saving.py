"""Save a bundle: model + fitted preprocessing + schema + output heads + golden examples.

`save` writes the bundle into a staging folder and moves it into place only when complete, every file with
the permissions the process gives a new file (its umask), after running the golden rows through the stored
model the way a loaded Predictor will.
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
import tempfile
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from torchpredict.bundle.manifest import (
    MANIFEST_FILE,
    PREPROCESSING_FILE,
    SCHEMA_FILE,
    Manifest,
    relative_files,
    write_json,
    write_manifest,
)
from torchpredict.errors import BundleError
from torchpredict.golden import GoldenExamples
from torchpredict.inference.batch import run_batch
from torchpredict.inference.calls import Call
from torchpredict.inference.tensors import to_tensors
from torchpredict.model.factories import trust_hint
from torchpredict.model.storage import store_model
from torchpredict.predictor import read_heads
from torchpredict.preprocessing import Preprocessor
from torchpredict.schema.images import embedded
from torchpredict.schema.tables import as_table

CPU = torch.device("cpu")

__all__ = ["publish", "same_modes", "save"]

DEFAULT_EXAMPLE_ROWS = 8


def save(path: str | Path, model: torch.nn.Module, *, preprocessor: Preprocessor, heads: Any, examples: Any,
         name: str | None = None, model_version: str = "1", storage: str = "auto", factory: str | None = None,
         factory_kwargs: dict | None = None, example_rows: int = DEFAULT_EXAMPLE_ROWS,
         overwrite: bool = False) -> Path:
    """Save a trained model with its fitted preprocessing and output heads as a bundle.

    examples: training rows (any table-like); the first example_rows become the golden examples and the
    sample inputs for torch.export. storage: "auto" (torch.export, falling back to weights + factory),
    "export" or "weights". A path ending in .zip writes a zipped bundle. With a Seq2Seq head the model is
    stored to be called as forward(source, prefix) by a decoding loop (see inference.calls.Call), exported with a
    dynamic prefix length, and the golden examples hold the decoded ids and scores.

    >>> torchpredict.save("wine.tpk", model, preprocessor=pre,
    ...                   heads=MulticlassClassification(target="cultivar"), examples=X_train)  # doctest: +SKIP
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"bundle '{path}' already exists; pass overwrite=True (CLI --overwrite) to replace it")
    if not path.parent.is_dir():
        raise BundleError(f"cannot save bundle '{path}': folder '{path.parent}' does not exist")
    head_list = list(heads) if isinstance(heads, (list, tuple)) else [heads]
    if not head_list:
        raise BundleError("heads must name at least one output head, e.g. Regression(target='y')")
    golden_inputs = _golden_inputs(preprocessor, examples, example_rows)
    with tempfile.TemporaryDirectory(prefix=".tp-save-", dir=path.parent) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        options = {"name": name or path.stem.split(".")[0], "model_version": str(model_version),
                   "storage": storage, "factory": factory, "factory_kwargs": factory_kwargs}
        manifest = _write_contents(staging, _cpu_eval(model), preprocessor, head_list, golden_inputs, options)
        write_manifest(staging, manifest)
        same_modes(staging, staging / MANIFEST_FILE)
        publish(staging, path, overwrite)
    if manifest.model["format"] == "weights":
        warnings.warn(f"bundle '{path}' stores {manifest.model['file']} + factory {factory!r}: loading it imports "
                      f"and runs that factory's module, so the loading side must {trust_hint(str(factory))}",
                      stacklevel=2)
    return path


def _golden_inputs(preprocessor: Preprocessor, examples: Any, rows: int) -> pa.Table:
    if rows < 1:
        raise BundleError(f"example_rows must be >= 1, got {rows}")
    table = as_table(examples)
    wanted = [name for name in preprocessor.schema_.names if name in table.column_names]
    table = table.select(wanted).slice(0, rows)
    if table.num_rows == 0:
        raise BundleError("examples must hold at least one row")
    images = [c.name for c in preprocessor.schema_.features if c.dtype == "image"]
    try:
        table = embedded(table, images)  # image paths as the bytes of their files: the bundle carries them
    except OSError as exc:
        raise BundleError(f"cannot read an example image: {exc}") from None
    return preprocessor.schema_.validate(table).table


def _cpu_eval(model: torch.nn.Module) -> torch.nn.Module:
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "cpu" for t in tensors):
        model = copy.deepcopy(model).cpu()
    return model.eval()


def _write_contents(staging: Path, model: torch.nn.Module, preprocessor: Preprocessor, heads: list,
                    golden_inputs: pa.Table, options: dict[str, Any]) -> Manifest:
    inputs = preprocessor.transform(golden_inputs)
    call = Call.plan(model, heads, to_tensors(inputs, CPU))
    batch = run_batch(call, model, heads, inputs, CPU)  # the infer and interpret stages of every Predictor:
    predictions = read_heads(heads, batch)  # a head that cannot read the output fails now, not on a request
    example_inputs, dynamic = call.example_inputs(batch.inputs, heads)
    entry = store_model(model, example_inputs, staging, factory=options["factory"],
                        factory_kwargs=options["factory_kwargs"], method=options["storage"], dynamic=dynamic,
                        call=call.to_dict())
    examples_entry = GoldenExamples.record(golden_inputs, batch.raw, predictions).write(staging)
    write_json(staging / SCHEMA_FILE, preprocessor.schema_.to_dict())
    write_json(staging / PREPROCESSING_FILE, preprocessor.to_dict())
    return Manifest(name=options["name"], model_version=options["model_version"],
                    created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), producer=_producer(),
                    model=entry, heads=[head.to_dict() for head in heads], examples=examples_entry)


def _producer() -> dict[str, str]:
    from torchpredict.version import __version__

    return {"torchpredict": __version__, "torch": torch.__version__, "python": platform.python_version()}


def same_modes(root: Path, reference: Path) -> None:
    """Give every file under root the mode of reference, a file written with open() (so: 0o666 less the umask);
    safetensors writes its files 0o600, which would lock others out of a shared bundle's weights."""
    mode = reference.stat().st_mode & 0o777
    for rel in relative_files(root):
        (root / rel).chmod(mode)


def publish(staging: Path, path: Path, overwrite: bool) -> None:
    """Move the finished bundle into place, so a crash never leaves a half-written bundle at path."""
    if path.suffix == ".zip":
        archive = staging.with_suffix(".zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in relative_files(staging):
                zf.write(staging / rel, rel)
        staging = archive
    if overwrite and path.is_dir():
        shutil.rmtree(path)
    os.replace(staging, path)  # over a file (a zip), atomically
