"""Dynamic int8 quantization of a model's Linear layers: weights stored as int8 (one scale per output
channel), activations quantized per batch as they come; an approximation, faster on large batches.

An exported graph keeps no `nn.Linear` modules (its layers are `aten.linear` calls on its weights), so
torch.ao's `quantize_dynamic` finds nothing in it: here each such call whose weight and bias are the graph's
own tensors is replaced by a quantized linear. A factory-built module goes through `quantize_dynamic`. The
eager model is left as it is (the quantized one shares nothing it could change).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import fx, nn

from torchpredict.errors import ModelLoadError

__all__ = ["quantize_linear"]


class _Int8Linear(nn.Module):
    """One Linear layer with int8 weights, run by torch's dynamic quantized kernel (fbgemm/onednn on x86)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        quantized = torch.quantize_per_channel(weight, scales, torch.zeros_like(scales, dtype=torch.long), 0,
                                               torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self.packed)


def quantize_linear(model: Any) -> Any:
    """A copy of the model with its float32 Linear layers int8; ModelLoadError when it has none."""
    graph_module = getattr(model, "graph_module", None)
    with warnings.catch_warnings():  # torch deprecates its quantized dtypes; they are what this backend is
        warnings.simplefilter("ignore")
        if isinstance(graph_module, fx.GraphModule):
            return _quantized_graph(model, graph_module)
        if not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise ModelLoadError("the model has no Linear layers to quantize")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def _quantized_graph(model: Any, graph_module: fx.GraphModule) -> Any:
    graph = copy.deepcopy(graph_module.graph)
    layers: dict[str, nn.Module] = {}
    for node in list(graph.nodes):
        weights = _linear_weights(graph_module, node)
        if weights is None:
            continue
        name = f"int8_linear_{len(layers)}"
        layers[name] = _Int8Linear(*weights)
        with graph.inserting_before(node):
            replacement = graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
    if not layers:
        raise ModelLoadError("the model has no float32 Linear layers (aten.linear on its own weights) to quantize")
    root = nn.Module()
    for name, module in graph_module.named_children():
        root.add_module(name, module)
    for name, tensor in [*graph_module.named_parameters(recurse=False), *graph_module.named_buffers(recurse=False)]:
        setattr(root, name, tensor)
    for name, layer in layers.items():
        root.add_module(name, layer)
    graph_module = fx.GraphModule(root, graph)
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    quantized = copy.copy(model)  # the wrapper's specs, its graph swapped
    quantized._modules = dict(model._modules)
    quantized.graph_module = graph_module
    return quantized


def _linear_weights(graph_module: fx.GraphModule, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) of an aten.linear call on the graph's own float32 tensors; None for any other node."""
    if node.op != "call_function" or node.target is not torch.ops.aten.linear.default:
        return None
    weight_node = node.args[1]
    bias_node = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    tensors = [_attribute(graph_module, n) for n in (weight_node, bias_node) if n is not None]
    if any(t is None or t.dtype != torch.float32 for t in tensors):
        return None
    weight = tensors[0]
    if weight is None or weight.ndim != 2:
        return None
    return weight, tensors[1] if len(tensors) > 1 else None


def _attribute(graph_module: fx.GraphModule, node: Any) -> torch.Tensor | None:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value: Any = graph_module
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None
