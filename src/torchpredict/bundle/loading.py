"""Load a bundle: check every file's sha256 and the manifest's settings_sha256, refuse newer formats, and never
unpickle; a `.zip` of the folder is accepted wherever a bundle path is."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from torchpredict.bundle.backends import choose_backend, run_stored_onnx
from torchpredict.bundle.manifest import (
    PREPROCESSING_FILE,
    SCHEMA_FILE,
    Manifest,
    check_hashes,
    load_json,
    opened,
    read_manifest_at,
)
from torchpredict.device import HOST_CPU, resolve_device, torch_installed
from torchpredict.errors import BackendError, BackendWarning, BundleError, ModelLoadError, TorchPredictError
from torchpredict.golden import GoldenExamples
from torchpredict.heads.registry import head_from_dict
from torchpredict.model.entry import ModelEntry
from torchpredict.predictor import Predictor
from torchpredict.preprocessing import Preprocessor

if TYPE_CHECKING:
    import torch

__all__ = ["load", "needs_torch"]

T = TypeVar("T")

def load(path: str | Path, *, device: str | torch.device = "auto", batch_size: int | None = None,
         verify: bool = False, trust_factory: Sequence[str] = (), trust_torch_loader: bool = False,
         backend: str | None = None, verify_backend: bool = True, atol: float | None = None,
         rtol: float | None = None, threads: int | None = None) -> Predictor:
    """Load a bundle as a Predictor on a device ("auto", "cpu", "cuda", "cuda:N", "mps"), running no code from it.

    Every file's sha256 is checked; the model is in eval mode and runs under inference_mode. batch_size: rows per
    forward pass (default 1,024; for a model of images, as many as fit 8 MB of input: 13 of 3 x 224 x 224).
    verify=True re-runs the golden examples and raises BundleError if they deviate.
    trust_factory: modules you vouch for ("mypkg" covers mypkg.nets), from which a weights bundle's factory
    may be imported and called (installed packages may declare theirs under the "torchpredict.factories"
    entry point instead). trust_torch_loader: let torch.export.load build a model.pt2 that torchpredict's
    own reader does not; torch's loader can run code from a crafted archive, so only for bundles you trust.

    backend: what runs the model ("eager", "onnxruntime", "compile", "int8", or "auto": the fastest of those
    that verify; None: the choice `torchpredict optimize` stored for this kind of device, else eager). Every
    backend but eager must reproduce eager's outputs on the golden rows within the bundle's tolerance (or atol
    and rtol) first: see bundle.backends; verify_backend=False runs an explicit one unchecked. threads: ONNX
    Runtime's intra-op threads (default torch's). `predictor.backend_report` says what was chosen and why.

    >>> predictor = torchpredict.load("wine.tpk", device="cpu")    # doctest: +SKIP
    >>> predictor = torchpredict.load("net.tpk", trust_factory=["mypkg"])    # doctest: +SKIP
    >>> predictor = torchpredict.load("wine.tpk", backend="auto")   # doctest: +SKIP
    """
    origin = str(path)
    with opened(Path(path)) as root:
        manifest = read_manifest_at(root, origin)
        check_hashes(root, manifest, origin)
        _require_files(manifest, origin, [PREPROCESSING_FILE, manifest.model.get("file", "model")])
        stored = manifest.backends or {}
        onnx_file = stored.get("onnx", {}).get("file")
        onnx = (root / onnx_file).read_bytes() if onnx_file and backend in (None, "auto", "onnxruntime") else None
        why_torch = needs_torch(manifest, device, backend, onnx is not None)
        if why_torch is not None and not torch_installed():
            raise ModelLoadError(f"bundle '{origin}' needs PyTorch here ({why_torch}): pip install torch")
        preprocessor, heads, golden = _read_parts(root, manifest, origin)
        parts: dict[str, Any] = {"preprocessor": preprocessor, "heads": heads, "batch_size": batch_size,
                                 "model_entry": ModelEntry.from_dict(manifest.model), "manifest": manifest,
                                 "golden": golden}
        choice = stored.get("choices", {})
        if why_torch is None and onnx is not None:  # the stored ONNX graph runs it, torch never imported
            try:
                on_onnx = run_stored_onnx(Predictor(model=None, device=HOST_CPU, **parts), onnx,
                                          stored=backend is None, atol=atol, rtol=rtol, threads=threads)
                return _verified(on_onnx, verify, origin)
            except BackendError as exc:
                if backend is not None or not torch_installed():
                    raise
                warnings.warn(f"the bundle's stored backend onnxruntime is not used ({exc}); running eager",
                              BackendWarning, stacklevel=2)
                choice = {}
        from torchpredict.model.storage import load_model

        target = resolve_device(device)
        model = load_model(root, manifest.model, target, trust_factory=trust_factory,
                           trust_torch_loader=trust_torch_loader)
    predictor = choose_backend(Predictor(model=model, device=target, **parts), backend, verify=verify_backend,
                               atol=atol, rtol=rtol, onnx=onnx, stored=choice.get(target.type), threads=threads)
    return _verified(predictor, verify, origin)


def _verified(predictor: Predictor, verify: bool, origin: str) -> Predictor:
    """The predictor, after its golden examples reproduced (verify=True)."""
    if verify:
        report = predictor.verify()
        if not report.passed:
            raise BundleError(f"bundle '{origin}': golden examples do not reproduce on {predictor.device}: "
                              f"{report.describe()}")
    return predictor


def needs_torch(manifest: Manifest, device: Any, backend: str | None, onnx: bool | None = None) -> str | None:
    """Why loading this bundle needs torch, or None when its stored ONNX graph can run it without: ONNX Runtime
    asked for (or stored by optimize as the choice for the CPU), on the CPU, a plain forward pass.

    onnx: whether the graph was read (default: whether the manifest lists one)."""
    if onnx is None:
        onnx = bool((manifest.backends or {}).get("onnx", {}).get("file"))
    wanted = backend if backend is not None else (manifest.backends or {}).get("choices", {}).get("cpu", {}).get(
        "backend", "eager")
    if wanted != "onnxruntime":
        return f"backend {wanted}" if backend is not None else "its model runs on PyTorch (torchpredict optimize " \
            "stores an ONNX graph that can run it without)"
    if not onnx:
        return "no stored ONNX graph (torchpredict optimize stores one)"
    if (manifest.model.get("call") or {}).get("kind", "forward") != "forward":
        return "its decoding loop runs on PyTorch"
    if str(device) == "cpu" or (str(device) == "auto" and not torch_installed()):
        return None
    return f"device {device!s}"


def _require_files(manifest: Manifest, origin: str, names: Sequence[str]) -> None:
    for name in names:
        if name not in manifest.files:
            raise BundleError(f"bundle '{origin}': manifest does not list '{name}'")


def _read_parts(root: Path, manifest: Manifest, origin: str) -> tuple[Preprocessor, list, GoldenExamples]:
    """The JSON parts of a bundle; anything malformed becomes a BundleError naming the bundle, file and field."""
    document = load_json(root, PREPROCESSING_FILE, origin)
    preprocessor = _part(origin, PREPROCESSING_FILE, lambda: Preprocessor.from_dict(document))
    _check_schema_copy(root, manifest, origin, document)
    heads = [_part(origin, f"manifest.json heads[{i}] ({head['type']}):", partial(head_from_dict, head))
             for i, head in enumerate(manifest.heads)]
    golden = _part(origin, "", lambda: GoldenExamples.read(root, manifest.examples))
    return preprocessor, heads, golden


def _check_schema_copy(root: Path, manifest: Manifest, origin: str, preprocessing: Any) -> None:
    """schema.json is a copy of the schema preprocessing.json holds (what predicting uses), for readers such as
    `inspect`; a copy that differs (an edit resealed, a writer's bug) would show inputs the model does not take."""
    state = preprocessing.get("state") if isinstance(preprocessing, dict) else None
    held = state.get("schema") if isinstance(state, dict) else None
    if SCHEMA_FILE not in manifest.files or held is None:
        return
    if load_json(root, SCHEMA_FILE, origin) != held:
        raise BundleError(f"bundle '{origin}': schema.json differs from the schema preprocessing.json holds, which "
                          "is the one predicting uses: the bundle was edited after it was saved; save it again "
                          "from its model")


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
