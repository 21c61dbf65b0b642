"""An ONNX graph run by ONNX Runtime, called like the model it was exported from.

Called with tensors (the infer stage's forward pass, a decoding loop) it answers tensors in the model's own
structure (a tensor, a tuple, a dict), rebuilt from the output names the export gave ("output",
"output.0", "output.logits"); `run` takes and answers numpy arrays. Importing this module imports neither
torch nor onnxruntime: the session is built on first use of the class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from torchpredict.errors import ModelLoadError

__all__ = ["INSTALL_HINT", "OnnxModel", "nested"]

INSTALL_HINT = "pip install 'torchpredict[onnx]'"
_ROOT = "output"


class OnnxModel:
    """An ONNX Runtime session over a graph whose inputs are the model's (names in forward's order, which
    input_names gives: the exporter drops inputs the graph does not read) and whose outputs are named as above.

    device: "cpu" or "cuda" (the CUDA execution provider, which onnxruntime-gpu has); threads: intra-op threads
    (None: ONNX Runtime's default, one per core).
    """

    def __init__(self, graph: bytes, input_names: Sequence[str], *, device: str = "cpu",
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError(f"the onnxruntime backend needs ONNX Runtime: {INSTALL_HINT}") from None
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelLoadError("this ONNX Runtime has no CUDA execution provider: pip install onnxruntime-gpu")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings about unused initializers are not the user's
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(graph, options, providers=providers)
        except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidGraph, ...) share no base
            raise ModelLoadError(f"ONNX Runtime cannot load the graph: {str(exc).splitlines()[0]}") from None
        self.graph, self.input_names = graph, list(input_names)
        self.used = {i.name for i in self.session.get_inputs()}
        unknown = sorted(self.used - set(self.input_names))
        if unknown:
            raise ModelLoadError(f"the ONNX graph takes inputs the model does not have: {unknown}")
        self.output_names = [o.name for o in self.session.get_outputs()]
        nested(self.output_names, list(range(len(self.output_names))))  # refuses names it cannot rebuild

    def run(self, inputs: Mapping[str, np.ndarray]) -> Any:
        """The graph's outputs for numpy inputs by name, as numpy arrays in the model's output structure."""
        fed = {name: np.ascontiguousarray(array) for name, array in inputs.items() if name in self.used}
        return nested(self.output_names, self.session.run(self.output_names, fed))

    def __call__(self, *tensors: Any) -> Any:
        """The model's forward pass: tensors in forward's order, tensors (on the inputs' device) out."""
        import torch

        if len(tensors) != len(self.input_names):
            raise TypeError(f"the model takes {len(self.input_names)} inputs, got {len(tensors)}")
        device = tensors[0].device if tensors else torch.device("cpu")
        arrays = {name: tensor.detach().cpu().numpy() for name, tensor in zip(self.input_names, tensors, strict=True)}
        return _tensors(self.run(arrays), device, torch)


def _tensors(raw: Any, device: Any, torch: Any) -> Any:
    if isinstance(raw, np.ndarray):
        tensor = torch.from_numpy(raw)
        return tensor if device.type == "cpu" else tensor.to(device)
    if isinstance(raw, dict):
        return {key: _tensors(value, device, torch) for key, value in raw.items()}
    return tuple(_tensors(value, device, torch) for value in raw)


def nested(names: Sequence[str], values: Sequence[Any]) -> Any:
    """Values named like the golden examples' outputs put back in their structure: "output" alone is the value,
    "output.0", "output.1" a tuple, "output.logits" a dict (nesting as deep as the names go).

    >>> nested(["output.0", "output.1.a"], [1, 2])
    (1, {'a': 2})
    """
    paths = []
    for name in names:
        parts = name.split(".")
        if parts[0] != _ROOT:
            raise ModelLoadError(f"ONNX output {name!r} is not named like a model output ('output', 'output.0', ...)")
        paths.append(parts[1:])
    return _nest(list(zip(paths, values, strict=True)), names)


def _nest(items: list[tuple[list[str], Any]], names: Sequence[str]) -> Any:
    if len(items) == 1 and not items[0][0]:
        return items[0][1]
    if any(not path for path, _ in items):
        raise ModelLoadError(f"ONNX outputs {list(names)} name one output both as a value and as a container")
    groups: dict[str, list[tuple[list[str], Any]]] = {}
    for path, value in items:
        groups.setdefault(path[0], []).append((path[1:], value))
    children = {key: _nest(group, names) for key, group in groups.items()}
    if list(children) == [str(i) for i in range(len(children))]:
        return tuple(children.values())
    return children

