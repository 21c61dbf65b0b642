"""Model outputs: which tensor of a model's raw output (tensor, tuple/list or dict) a head reads.

A model may return one tensor, a tuple or list of them, a namedtuple or a dict. Each output head names
the part it reads (`output`: None, a tuple index or a key); picking it out is done here, once, with
messages that say what the model actually returned. Outputs are torch tensors (eager PyTorch) or numpy
arrays (ONNX Runtime); nothing here imports torch: a tensor can only exist where torch was imported already.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from torchpredict.errors import ModelLoadError

__all__ = ["Output", "as_array", "is_tensor", "select_output"]

Output = str | int | None


def is_tensor(value: Any) -> bool:
    """Whether value is a torch.Tensor, without importing torch (none exists unless torch was imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_array(value: Any) -> np.ndarray:
    """A selected output as a numpy array on the CPU, what the heads compute with: a CPU tensor's own memory (no
    copy), a tensor of a dtype numpy lacks (bfloat16) as float32."""
    if isinstance(value, np.ndarray):
        return value
    if is_tensor(value):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(value)


def select_output(raw: Any, output: Output, *, head: str = "prediction") -> Any:
    """Pick one head's tensor out of a model's return value: a tensor (or numpy array), a tuple/list, or a dict.

    output None means the model's only output; an int is a tuple index; a str is a dict key (or a
    namedtuple field). What it returns is the model's own object: a tensor, or a numpy array.

    >>> select_output({"logits": np.zeros((2, 3))}, "logits", head="species").shape
    (2, 3)
    """
    if output is None:
        value = _only_output(raw, head)
    elif isinstance(output, str):
        value = _keyed_output(raw, output, head)
    else:
        value = _indexed_output(raw, output, head)
    if not _is_leaf(value):
        raise ModelLoadError(f"head {head!r} reads {_which(output)}, which is a {type(value).__name__}, "
                             "not a tensor")
    return value


def _only_output(raw: Any, head: str) -> Any:
    if _is_leaf(raw):
        return raw
    if isinstance(raw, Mapping | tuple | list) and len(raw) == 1:
        return next(iter(raw.values())) if isinstance(raw, Mapping) else raw[0]
    if isinstance(raw, Mapping):
        fix = "set output='<key>' to pick one"
    elif isinstance(raw, tuple | list):
        fix = f"set output=0..{len(raw) - 1} to pick one" if raw else "the model returned nothing"
    else:
        fix = "expected a tensor, tuple, list or dict"
    raise ModelLoadError(f"head {head!r} reads the model's only output but the model returned "
                         f"{_returned(raw)}; {fix}")


def _keyed_output(raw: Any, key: str, head: str) -> Any:
    if isinstance(raw, Mapping) and key in raw:
        return raw[key]
    if isinstance(raw, tuple) and key in getattr(raw, "_fields", ()):
        return getattr(raw, key)
    raise ModelLoadError(f"head {head!r} reads output {key!r} but the model returned {_returned(raw)}")


def _indexed_output(raw: Any, index: int, head: str) -> Any:
    if isinstance(raw, tuple | list) and index < len(raw):
        return raw[index]
    fix = "; set output to a key" if isinstance(raw, Mapping) else ""
    fix = "; use output=None" if _is_leaf(raw) else fix
    raise ModelLoadError(f"head {head!r} reads output {index} but the model returned {_returned(raw)}{fix}")


def _returned(raw: Any) -> str:
    """How a model's return value is described in messages."""
    if _is_leaf(raw):
        return "a single tensor"
    if isinstance(raw, Mapping):
        return f"keys {list(raw.keys())!r}"
    if isinstance(raw, tuple) and hasattr(raw, "_fields"):
        return f"a {type(raw).__name__} with fields {list(raw._fields)!r}"
    if isinstance(raw, tuple | list):
        return f"a {type(raw).__name__} of {len(raw)} output(s)"
    return f"a {type(raw).__name__}"


def _which(output: Output) -> str:
    return "the model's only output" if output is None else f"output {output!r}"


def _is_leaf(raw: Any) -> bool:
    return isinstance(raw, np.ndarray) or is_tensor(raw)
