"""`torchpredict optimize`: store the model as an ONNX graph in the bundle, and the backend that runs it
fastest on this kind of device, so that every later load gets that speed without a flag.

The graph is exported from the model the bundle loads (no training code needed) and kept only if ONNX
Runtime reproduces eager PyTorch on the golden rows within the bundle's tolerance; the choice is "auto"'s,
measured here (see bundle.backends). Both go into the manifest's `backends` field, the graph as `model.onnx`,
hashed like every file. The bundle is written whole into a staging folder and moved into place: a new path, or
with in_place the bundle itself (a folder is swapped with a rename, a zip replaced).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from torchpredict.bundle.backends import AUTO_TRIES, BackendReport, Trial, choose_backend
from torchpredict.bundle.loading import load
from torchpredict.bundle.manifest import MANIFEST_FILE, Manifest, opened, read_manifest_at, write_manifest
from torchpredict.bundle.saving import publish, same_modes
from torchpredict.errors import BackendError, BundleError
from torchpredict.inference.onnx_export import ONNX_FILE
from torchpredict.version import __version__

__all__ = ["Optimized", "optimize"]


@dataclass(frozen=True)
class Optimized:
    """What optimize wrote: the bundle's path, the choice made (auto's report), and why no ONNX graph was
    stored if none was."""

    path: Path
    report: BackendReport
    onnx_stored: bool
    onnx_reason: str = ""

    def describe(self) -> list[str]:
        stored = f"stored {ONNX_FILE} (verified on the golden rows)" if self.onnx_stored else \
            f"no {ONNX_FILE} stored: {self.onnx_reason}"
        return [f"optimized bundle '{self.path}': {stored}", self.report.describe()]


def optimize(path: str | Path, output: str | Path | None = None, *, in_place: bool = False,
             device: str | torch.device = "cpu", backends: Sequence[str] = AUTO_TRIES, rows: int | None = None,
             atol: float | None = None, rtol: float | None = None, overwrite: bool = False,
             trust_factory: Sequence[str] = (), trust_torch_loader: bool = False) -> Optimized:
    """Export the bundle's model to ONNX, choose its fastest verified backend on device, and write both into
    the bundle at output (or, with in_place, into the bundle itself).

    backends: those "auto" tries besides eager (default onnxruntime and int8); rows: the batch size timed
    (default 1,024); atol, rtol: the tolerance against eager (default the bundle's).

    >>> torchpredict.optimize("wine.tpk", in_place=True).report.chosen    # doctest: +SKIP
    'onnxruntime'
    """
    source = Path(path)
    target = _target(source, output, in_place=in_place, overwrite=overwrite)
    predictor = load(source, device=device, backend="eager", trust_factory=trust_factory,
                     trust_torch_loader=trust_torch_loader)
    if predictor.manifest is None or not predictor.manifest.settings_hashed:
        raise BundleError(f"bundle '{source}' was written before torchpredict 0.2 (its settings are not "
                          "hash-checked): save it again from its model before optimizing it")
    graph, reason = _verified_graph(predictor, atol, rtol)
    chosen = choose_backend(predictor, "auto", atol=atol, rtol=rtol, onnx=graph, rows=rows,
                            tries=[b for b in backends if graph is not None or b != "onnxruntime"])
    report: BackendReport = chosen.backend_report
    if graph is None and "onnxruntime" in backends:
        report = replace(report, trials=(*report.trials, Trial("onnxruntime", "unavailable", reason)))
    choice = {"backend": report.chosen, "speedup": report.speedup(), "rows": report.rows,
              "measured_by": f"torchpredict {__version__}",
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write(source, target, predictor.device.type, choice, graph, in_place=in_place, overwrite=overwrite)
    return Optimized(target, report, graph is not None, reason)


def _target(source: Path, output: str | Path | None, *, in_place: bool, overwrite: bool) -> Path:
    if in_place == (output is not None):
        raise BundleError("say where the optimized bundle goes: an output path (CLI -o OUT), or in_place=True "
                          "(CLI --in-place) to rewrite the bundle itself")
    if in_place:
        return source
    target = Path(output)  # type: ignore[arg-type]
    if target.resolve() == source.resolve():
        raise BundleError(f"output '{target}' is the bundle itself: pass in_place=True (CLI --in-place) instead")
    if target.exists() and not overwrite:
        raise BundleError(f"bundle '{target}' already exists; pass overwrite=True (CLI --overwrite) to replace it")
    if not target.parent.is_dir():
        raise BundleError(f"cannot write bundle '{target}': folder '{target.parent}' does not exist")
    return target


def _verified_graph(predictor: Any, atol: float | None, rtol: float | None) -> tuple[bytes | None, str]:
    """The model as an ONNX graph that ONNX Runtime runs to eager's outputs on the golden rows; else why not."""
    try:
        on_onnx = choose_backend(predictor, "onnxruntime", atol=atol, rtol=rtol)
    except BackendError as exc:
        return None, str(exc)
    return on_onnx.model.graph, ""


def _write(source: Path, target: Path, device: str, choice: dict[str, Any], graph: bytes | None, *,
           in_place: bool, overwrite: bool) -> None:
    with opened(source) as root, tempfile.TemporaryDirectory(prefix=".tp-optimize-", dir=target.parent) as tmp:
        manifest = read_manifest_at(root, str(source))
        staging = Path(tmp) / "bundle"
        for rel in manifest.files:
            if rel != ONNX_FILE:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / rel, staging / rel)
        backends = dict(manifest.backends or {})
        if graph is not None:
            (staging / ONNX_FILE).write_bytes(graph)
            backends["onnx"] = {"file": ONNX_FILE}
        elif backends.get("onnx", {}).get("file") == ONNX_FILE:
            del backends["onnx"]  # a graph that no longer verifies is not carried on
        backends["choices"] = {**backends.get("choices", {}), device: choice}
        write_manifest(staging, _updated(manifest, backends))
        same_modes(staging, staging / MANIFEST_FILE)
        if in_place and source.is_dir():
            _swap(staging, source)
        else:
            publish(staging, target, overwrite=overwrite or in_place)


def _updated(manifest: Manifest, backends: dict[str, Any]) -> Manifest:
    return replace(manifest, backends=backends, files={}, settings_sha256=None)


def _swap(staging: Path, folder: Path) -> None:
    """Put staging where folder is: renamed aside, then the new one renamed in, then the old one removed (a crash
    in between leaves the old bundle as FOLDER.old-optimize, whole)."""
    aside = folder.with_name(f"{folder.name}.old-optimize")
    if aside.exists():
        raise BundleError(f"'{aside}' exists (left by an interrupted optimize?): move it away first")
    os.rename(folder, aside)
    try:
        os.rename(staging, folder)
    except BaseException:
        os.rename(aside, folder)
        raise
    shutil.rmtree(aside)
