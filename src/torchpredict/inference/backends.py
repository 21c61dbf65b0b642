"""The backends the infer stage can run a model on, each built from the loaded eager model and called exactly
like it (tensors in forward's order in, the model's output structure out), so that the forward pass, the
decoding loop and the heads never know which one runs.

eager: the model as loaded, the baseline every other backend is checked against. onnxruntime: the model
exported to ONNX (or the bundle's stored model.onnx) in an ONNX Runtime session. compile: torch.compile,
compiled on the example inputs now rather than on the first batch (seconds; for long jobs). int8: Linear
layers dynamically quantized, an approximation. channels_last: eager PyTorch with a convolutional model's 4-D
weights in channels-last memory order, which oneDNN's convolutions run faster on the CPU. Whether a built
backend's outputs may be trusted is decided by the caller, on the bundle's golden rows; a backend that cannot be
built here raises Unavailable, saying why.
Importing this module imports no torch (an ONNX Runtime backend over a stored graph needs none).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchpredict.errors import ModelLoadError
from torchpredict.inference.onnx_runner import OnnxModel
from torchpredict.messages import first_line

if TYPE_CHECKING:
    import torch

__all__ = ["APPROXIMATE", "BACKENDS", "Built", "NotApplicable", "Unavailable", "build_backend", "stored_onnx"]

BACKENDS = ("eager", "onnxruntime", "compile", "int8", "channels_last")
APPROXIMATE = frozenset({"int8"})  # outputs differ from eager by design; held to the tolerance all the same


class Unavailable(Exception):
    """A backend cannot be built for this model or device; the message says why."""


class NotApplicable(Unavailable):
    """A backend has nothing to change in this model (channels_last without convolutions)."""


@dataclass(frozen=True)
class Built:
    """A backend ready to run: the callable that replaces the model, and for onnxruntime the graph it runs."""

    name: str
    model: Any
    onnx: bytes | None = None


def build_backend(name: str, model: Any, example_inputs: Mapping[str, torch.Tensor], device: torch.device, *,
                  dynamic: Mapping[str, Mapping[int, Any]] | None = None, onnx: bytes | None = None,
                  threads: int | None = None) -> Built:
    """Build one backend for the model on the device; example_inputs: a few real rows of every model input, in
    forward's order (what the graph is exported or compiled for). onnx: a stored graph to run instead of exporting.
    threads: ONNX Runtime's intra-op threads on the CPU (default: as many as torch has)."""
    if name not in BACKENDS:
        raise Unavailable(f"unknown backend {name!r} (one of {', '.join(BACKENDS)})")
    try:
        if name == "eager":
            return Built(name, model)
        if name == "onnxruntime":
            return _onnxruntime(model, example_inputs, device, dynamic, onnx, threads)
        if name == "compile":
            return Built(name, _compiled(model, example_inputs))
        if name == "channels_last":
            return Built(name, _channels_last(model))
        return Built(name, _int8(model, device))
    except ModelLoadError as exc:
        raise Unavailable(str(exc)) from None
    except Unavailable:
        raise
    except Exception as exc:  # whatever torch or ONNX Runtime raise while building: that backend is not used
        raise Unavailable(f"building it failed: {first_line(exc, with_type=True)}") from None


def _onnxruntime(model: Any, example_inputs: Mapping[str, torch.Tensor], device: torch.device,
                 dynamic: Mapping[str, Mapping[int, Any]] | None, onnx: bytes | None, threads: int | None) -> Built:
    _onnxruntime_here(device.type)
    if onnx is None and any(dynamic.values() if dynamic else ()):
        raise Unavailable("declined for a model called with inputs whose sizes vary beyond the batch (a decoding "
                          "loop's prefix): the ONNX export traces it at one size")
    if onnx is None:
        from torchpredict.inference.onnx_export import export_onnx

        onnx = export_onnx(model, example_inputs, dynamic)
    if threads is None and device.type == "cpu":
        import torch

        threads = torch.get_num_threads()  # the share of the cores torch was given
    return Built("onnxruntime", OnnxModel(onnx, list(example_inputs), device=device.type, threads=threads), onnx)


def stored_onnx(graph: bytes, input_names: list[str], device: str, threads: int | None) -> Built:
    """The onnxruntime backend over a bundle's stored graph, built without torch (inputs named in forward's order)."""
    _onnxruntime_here(device)
    try:
        return Built("onnxruntime", OnnxModel(graph, input_names, device=device, threads=threads), graph)
    except ModelLoadError as exc:
        raise Unavailable(str(exc)) from None


def _onnxruntime_here(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise Unavailable(f"ONNX Runtime does not run on {device}")
    import importlib.util

    try:
        missing = importlib.util.find_spec("onnxruntime") is None  # before exporting: that alone takes a while
    except (ImportError, ValueError):  # a finder refuses it, or it is in sys.modules as None: blocked
        missing = True
    if missing:
        raise Unavailable("ONNX Runtime is not installed: pip install 'torchpredict[onnx]'")


def _compiled(model: Any, example_inputs: Mapping[str, torch.Tensor]) -> Any:
    import torch

    compiled = torch.compile(model, dynamic=True)
    try:  # compile now, on two batch sizes, so that no request pays for it
        with torch.inference_mode(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            for rows in (2, 3):
                compiled(*(_rows(tensor, rows) for tensor in example_inputs.values()))
    except Exception as exc:
        raise Unavailable(f"torch.compile failed: {first_line(exc, with_type=True)}") from None
    return compiled


def _rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    return tensor.repeat(rows, *([1] * (tensor.ndim - 1)))[:rows] if len(tensor) < rows else tensor[:rows]


def _channels_last(model: Any) -> Any:
    import copy

    import torch

    if not any(tensor.ndim == 4 for tensor in (*model.parameters(), *model.buffers())):
        raise NotApplicable("the model has no 4-D (convolution) weights to lay out channels-last")
    with warnings.catch_warnings():  # deep-copying an exported graph's tree specs warns of torch's deprecations
        warnings.simplefilter("ignore")
        laid_out = copy.deepcopy(model)
    return laid_out.to(memory_format=torch.channels_last)


def _int8(model: Any, device: torch.device) -> Any:
    if device.type != "cpu":
        raise Unavailable(f"int8 dynamic quantization runs on the CPU only, not on {device.type}")
    from torchpredict.inference.int8 import quantize_linear

    return quantize_linear(model)
