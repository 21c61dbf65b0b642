"""Save and load bundles: model + fitted preprocessing + schema + output heads + golden examples.

`save` writes the bundle into a staging folder and moves it into place only when complete, every file with
the permissions the process gives a new file (its umask); `load` checks every file's sha256 and the
manifest's settings_sha256, refuses newer formats and never unpickles. A `.zip` of the folder is accepted
wherever a bundle path is.
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import torch

from torchpredict.device import resolve_device
from torchpredict.errors import BundleError, TorchPredictError
from torchpredict.factories import trust_hint
from torchpredict.golden import GoldenExamples
from torchpredict.inference import to_tensors
from torchpredict.interpretation import head_from_dict
from torchpredict.manifest import (
    MANIFEST_FILE,
    Manifest,
    check_hashes,
    load_json,
    opened,
    read_manifest_at,
    relative_files,
    write_json,
    write_manifest,
)
from torchpredict.predictor import CPU, DEFAULT_BATCH_SIZE, Predictor, read_heads, run_batch
from torchpredict.preprocessing import Preprocessor
from torchpredict.sequences import Call
from torchpredict.storage import load_model, store_model
from torchpredict.tables import as_table

__all__ = ["load", "save"]

SCHEMA_FILE = "schema.json"
PREPROCESSING_FILE = "preprocessing.json"
DEFAULT_EXAMPLE_ROWS = 8
T = TypeVar("T")


def save(path: str | Path, model: torch.nn.Module, *, preprocessor: Preprocessor, heads: Any, examples: Any,
         name: str | None = None, model_version: str = "1", storage: str = "auto", factory: str | None = None,
         factory_kwargs: dict | None = None, example_rows: int = DEFAULT_EXAMPLE_ROWS,
         overwrite: bool = False) -> Path:
    """Save a trained model with its fitted preprocessing and output heads as a bundle.

    examples: training rows (any table-like); the first example_rows become the golden examples and the
    sample inputs for torch.export. storage: "auto" (torch.export, falling back to weights + factory),
    "export" or "weights". A path ending in .zip writes a zipped bundle. With a Seq2Seq head the model is
    stored to be called as forward(source, prefix) by a decoding loop (see sequences.Call), exported with a
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
        _same_modes(staging, staging / MANIFEST_FILE)
        _publish(staging, path, overwrite)
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
    from torchpredict import __version__

    return {"torchpredict": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _same_modes(root: Path, reference: Path) -> None:
    """Give every file under root the mode of reference, a file written with open() (so: 0o666 less the umask);
    safetensors writes its files 0o600, which would lock others out of a shared bundle's weights."""
    mode = reference.stat().st_mode & 0o777
    for rel in relative_files(root):
        (root / rel).chmod(mode)


def _publish(staging: Path, path: Path, overwrite: bool) -> None:
    """Move the finished bundle into place, so a crash never leaves a half-written bundle at path."""
    if path.suffix == ".zip":
        archive = staging.with_suffix(".zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in relative_files(staging):
                zf.write(staging / rel, rel)
        staging = archive
    if overwrite and path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(staging, path)


def load(path: str | Path, *, device: str | torch.device = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
         verify: bool = False, trust_factory: Sequence[str] = (), trust_torch_loader: bool = False) -> Predictor:
    """Load a bundle as a Predictor on a device ("auto", "cpu", "cuda", "cuda:N", "mps"), running no code from it.

    Every file's sha256 is checked; the model is in eval mode and runs under inference_mode.
    verify=True re-runs the golden examples and raises BundleError if they deviate.
    trust_factory: modules you vouch for ("mypkg" covers mypkg.nets), from which a weights bundle's factory
    may be imported and called (installed packages may declare theirs under the "torchpredict.factories"
    entry point instead). trust_torch_loader: let torch.export.load build a model.pt2 that torchpredict's
    own reader does not; torch's loader can run code from a crafted archive, so only for bundles you trust.

    >>> predictor = torchpredict.load("wine.tpk", device="cpu")    # doctest: +SKIP
    >>> predictor = torchpredict.load("net.tpk", trust_factory=["mypkg"])    # doctest: +SKIP
    """
    origin = str(path)
    target = resolve_device(device)
    with opened(Path(path)) as root:
        manifest = read_manifest_at(root, origin)
        check_hashes(root, manifest, origin)
        _require_files(manifest, origin, [PREPROCESSING_FILE, manifest.model.get("file", "model")])
        preprocessor, heads, golden = _read_parts(root, manifest, origin)
        model = load_model(root, manifest.model, target, trust_factory=trust_factory,
                           trust_torch_loader=trust_torch_loader)
    predictor = Predictor(model=model, preprocessor=preprocessor, heads=heads, model_entry=manifest.model,
                          device=target, batch_size=batch_size, manifest=manifest, golden=golden)
    if verify:
        report = predictor.verify()
        if not report.passed:
            raise BundleError(f"bundle '{origin}': golden examples do not reproduce on {target}: {report.describe()}")
    return predictor


def _require_files(manifest: Manifest, origin: str, names: Sequence[str]) -> None:
    for name in names:
        if name not in manifest.files:
            raise BundleError(f"bundle '{origin}': manifest does not list '{name}'")


def _read_parts(root: Path, manifest: Manifest, origin: str) -> tuple[Preprocessor, list, GoldenExamples]:
    """The JSON parts of a bundle; anything malformed becomes a BundleError naming the bundle, file and field."""
    preprocessor = _part(origin, PREPROCESSING_FILE,
                         lambda: Preprocessor.from_dict(load_json(root, PREPROCESSING_FILE, origin)))
    heads = [_part(origin, f"manifest.json heads[{i}] ({head['type']}):", lambda head=head: head_from_dict(head))
             for i, head in enumerate(manifest.heads)]
    golden = _part(origin, "", lambda: GoldenExamples.read(root, manifest.examples))
    return preprocessor, heads, golden


def _part(origin: str, where: str, read: Callable[[], T]) -> T:
    """read(), its errors (and any a malformed file provokes in it) a BundleError: bundle 'x': WHERE error."""
    prefix = f"bundle '{origin}': {where + ' ' if where else ''}"
    try:
        return read()
    except TorchPredictError as exc:
        if str(exc).startswith(f"bundle '{origin}'"):
            raise
        raise BundleError(f"{prefix}{exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError, OSError,
            pa.ArrowException) as exc:
        raise BundleError(f"{prefix}malformed contents ({type(exc).__name__}: {exc})") from None
