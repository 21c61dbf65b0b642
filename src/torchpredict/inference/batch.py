"""One model batch through the infer stage: the inputs aligned and moved to the device, the call run, and what
came back kept with the inputs for the heads that read them. A model run by ONNX Runtime (inference.onnx_runner)
takes and gives numpy arrays, so that batch never touches torch: this module imports it only to run a torch model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from torchpredict.inference.calls import Call
from torchpredict.inference.onnx_runner import OnnxModel

if TYPE_CHECKING:
    import torch

__all__ = ["ALIGNMENT", "ModelBatch", "finite_rows", "run_batch"]

ALIGNMENT = 64  # bytes: where every CPU model batch starts (the widest SIMD load)


@dataclass(frozen=True)
class ModelBatch:
    """One batch through the infer stage: what the model (or a decoding loop around it) returned, and the
    model inputs it was given, on the CPU, so that a head can read them too (e.g. which positions hold tokens)."""

    raw: Any
    inputs: Mapping[str, Any]  # tensors, or for a model run by ONNX Runtime the numpy arrays it was given
    _finite: dict[int, tuple[Any, np.ndarray]] = field(default_factory=dict, compare=False, repr=False)

    def finite_rows(self, output: Any) -> np.ndarray:
        """Per row of one of raw's tensors, whether its values are all finite; worked out once per tensor and
        batch (the interpret and refused stages both ask)."""
        found = self._finite.get(id(output))
        if found is not None and found[0] is output:
            return found[1]
        finite = finite_rows(output)
        self._finite[id(output)] = (output, finite)  # output kept: its id is not reused while the batch lives
        return finite


_NUMPY_FLOATS = ("torch.float32", "torch.float64", "torch.float16")


def finite_rows(output: Any) -> np.ndarray:
    """Per row (a value of a 1-D array or tensor, a row of a 2-D or larger one), whether its values are all finite:
    by numpy for an array or a CPU tensor numpy can view (a fraction of torch's cost per call on a small batch),
    else by torch."""
    if isinstance(output, np.ndarray):
        rows = output.reshape(len(output), math.prod(output.shape[1:])) if output.ndim > 1 else output.reshape(-1, 1)
        if rows.dtype.kind not in "fc":
            return np.ones(len(rows), bool)
        return np.asarray(np.isfinite(rows).all(axis=1))
    import torch

    values = output.detach()
    if values.device.type == "cpu" and str(values.dtype) in _NUMPY_FLOATS:
        array = values.numpy()
        rows = array.reshape(-1, 1) if array.ndim <= 1 else array.reshape(array.shape[0], math.prod(array.shape[1:]))
        return np.isfinite(rows).all(axis=1)
    values = values.cpu()
    values = values.flatten(start_dim=1) if values.ndim > 1 else values.reshape(-1, 1)
    return torch.isfinite(values).all(dim=1).numpy()


def run_batch(call: Call, model: Any, heads: Sequence[Any], inputs: Mapping[str, np.ndarray],
              device: torch.device | Any) -> ModelBatch:
    """One model batch through the call on the device, with its inputs on the CPU for the heads: the one
    forward path of the infer stage, which the save-time check shares before there is a Predictor. A forward
    pass of a model run by ONNX Runtime takes the numpy inputs as they are."""
    if call.kind == "forward" and isinstance(model, OnnxModel):
        return ModelBatch(model.run(inputs), inputs)
    import torch

    from torchpredict.inference.tensors import to_tensors

    cpu = torch.device("cpu")
    if device.type == "cpu":
        tensors = to_tensors({name: _aligned(array) for name, array in inputs.items()}, cpu)
        return ModelBatch(call.run(model, dict(tensors), heads), tensors)  # the same tensors: built once
    raw = call.run(model, to_tensors(inputs, device), heads)
    return ModelBatch(raw, to_tensors(inputs, cpu))


def _aligned(array: np.ndarray) -> np.ndarray:
    """The array contiguous at a 64-byte boundary, copied only where it is not: a CPU kernel may round
    differently for another alignment, and a batch cut out of a chunk starts wherever the cut fell."""
    if array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0:
        return array
    buffer = np.empty(array.nbytes + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    aligned = buffer[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    aligned[...] = array
    return aligned
