"""Run a model over model inputs in batches: eval mode, inference mode, on the bundle's device.

Raw outputs come back on the CPU, keeping the model's structure (tensor, tuple or dict) so that each
interpretation head can pick the output it reads. torch is imported by the functions that run a torch model,
not by this module: `flatten_outputs` also names the numpy outputs of a model run by ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["RawOutput", "flatten_outputs", "to_tensors"]

RawOutput = Any  # torch.Tensor | np.ndarray | tuple[RawOutput, ...] | list[RawOutput] | dict[str, RawOutput]


def to_tensors(inputs: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Numpy model inputs to tensors on the device (none copied on the CPU when contiguous). To CUDA from page-locked
    (pinned) memory, copied without blocking: the copy overlaps what the host does next, and the forward pass on
    the copy's stream waits for it (exercised by bench/gpu_check.py on a machine with a GPU)."""
    import torch

    tensors = {}
    for name, array in inputs.items():
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if device.type == "cuda":
            tensor = tensor.pin_memory()
        tensors[name] = tensor.to(device, non_blocking=True) if device.type != "cpu" else tensor
    return tensors


def forward(model: Callable[..., RawOutput], tensors: Mapping[str, torch.Tensor]) -> RawOutput:
    """One forward pass without autograd, inputs passed positionally in schema order."""
    import torch

    with torch.inference_mode():
        return _to_cpu(model(*tensors.values()))


def _to_cpu(raw: RawOutput) -> RawOutput:
    import torch

    if isinstance(raw, torch.Tensor):
        return raw.detach().cpu()
    if isinstance(raw, dict):
        return {key: _to_cpu(value) for key, value in raw.items()}
    if isinstance(raw, (tuple, list)):
        return type(raw)(_to_cpu(value) for value in raw)
    return raw


def flatten_outputs(raw: RawOutput, prefix: str = "output") -> dict[str, Any]:
    """Name every tensor (or numpy array) in a raw output: 'output', 'output.0', 'output.logits', ... (for golden
    examples)."""
    if isinstance(raw, np.ndarray) or not isinstance(raw, dict | tuple | list):
        return {prefix: raw}
    items = raw.items() if isinstance(raw, dict) else enumerate(raw)
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten_outputs(value, f"{prefix}.{key}"))
    return flat
