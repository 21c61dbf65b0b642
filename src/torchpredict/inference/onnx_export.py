"""Export a loaded model to ONNX, in memory, for the onnxruntime backend and for `torchpredict optimize`.

The model exported is the one the bundle loads (an exported graph or a factory-built module), so a bundle
made by any torchpredict can be optimized without its training code. Inputs keep their model-input names
and outputs take the golden examples' names ("output", "output.0", "output.logits"), from which the runner
rebuilds the model's tuple or dict; every dimension that may vary (the batch, a decoder prefix's length, any
output size) is symbolic. TorchScript's exporter (`dynamo=False`) is used: it builds an MLP or a CNN in
~0.1 s and needs no onnxscript, where the dynamo exporter takes seconds and cannot trace the reader's
positional-only graph. Whether the result may be trusted is not decided here: the caller checks its outputs
against eager PyTorch on the golden rows.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from torchpredict.errors import ModelLoadError
from torchpredict.inference.tensors import flatten_outputs
from torchpredict.messages import first_line

__all__ = ["ONNX_FILE", "export_onnx"]

ONNX_FILE = "model.onnx"


def export_onnx(model: Any, example_inputs: Mapping[str, torch.Tensor],
                dynamic: Mapping[str, Mapping[int, Any]] | None = None) -> bytes:
    """The model as an ONNX graph (bytes) for inputs shaped like example_inputs (named in forward's order).

    dynamic: dimensions besides the batch that vary, {input: {dimension: anything}}.
    """
    inputs = {name: tensor if tensor.shape[0] >= 2 else torch.cat([tensor, tensor])  # a size-1 batch is fixed
              for name, tensor in example_inputs.items()}
    try:
        with torch.inference_mode():
            outputs = list(flatten_outputs(model(*inputs.values())).items())
    except Exception as exc:
        raise ModelLoadError(f"the model fails on the example inputs: {first_line(exc, with_type=True)}") from None
    axes: dict[str, dict[int, str]] = {
        name: {0: "batch", **{dim: f"{name}_{dim}" for dim in (dynamic or {}).get(name, {})}} for name in inputs}
    axes.update({name: {0: "batch", **{dim: f"{name}_{dim}" for dim in range(1, tensor.ndim)}}
                 for name, tensor in outputs})
    buffer = io.BytesIO()
    # The exporter warns about its own deprecation and prints graph diagnostics: the caller gets one line instead.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, tuple(inputs.values()), buffer, dynamo=False,  # type: ignore[arg-type]
                              input_names=list(inputs), output_names=[name for name, _ in outputs],
                              dynamic_axes=axes)
        except Exception as exc:
            raise ModelLoadError(f"ONNX export failed: {first_line(exc, with_type=True)}") from None
    return buffer.getvalue()
