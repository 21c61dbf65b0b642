"""torch.export.load behind checks, for `.pt2` archives the torch-free reader does not build.

Only used when the user trusts the bundle (`trust_torch_loader=True`, CLI `--trust-torch-loader`): the
checks close the ways torch's loader is known to run code from an archive, but torch's deserializer is large
and reads much more than export_reader does.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchpredict.errors import ModelLoadError
from torchpredict.model.export_reader import MAX_JSON_BYTES, SYMBOLIC_OPS, Unsupported, read_member
from torchpredict.model.symbolic import SYMBOL, check_expression

__all__ = ["load_checked"]

_OVERLOAD = re.compile(r"torch\.ops\.\w+\.\w+(\.\w+)?", re.ASCII)  # aten.add.Tensor, higher_order.cond
_MAX_PT_BYTES = 1 << 31


def load_checked(path: str | Path) -> torch.export.ExportedProgram:
    """torch.export.load, after checking that it will neither unpickle nor evaluate anything from the archive.

    torch.export.load reads payloads marked use_pickle and custom objects with pickle, retries a sample-inputs
    file that torch.load(weights_only=True) refuses with weights_only=False, hands every symbolic expression to
    sympy.sympify (an eval), and resolves a node's target "torch.x.y" by getattr from the torch module. So: no
    payload may be pickled or a custom object, every .pt member must load under weights_only=True here first,
    every expression must parse in symbolic's grammar and every target must be an operator overload or a
    symbolic-int function. Use it only for archives the user trusts (`trust_torch_loader`).
    """
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".json"):
                document = json.loads(read_member(archive, info, MAX_JSON_BYTES))
                if info.filename.endswith("_config.json"):
                    _check_config(info.filename, document)
                _check_strings(info.filename, document)
            elif info.filename.endswith(".pt"):
                _check_weights_only(info.filename, read_member(archive, info, _MAX_PT_BYTES))
    return torch.export.load(path)


def _check_config(name: str, config: Mapping[str, Any]) -> None:
    for item, meta in (config.get("config") or {}).items():
        if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
            raise Unsupported(f"'{item}' in {name} is a pickle or custom object; torchpredict does not unpickle")


def _check_weights_only(name: str, data: bytes) -> None:
    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise Unsupported(f"'{name}' holds more than plain tensors (refused by torch.load(weights_only=True))") from exc


def _check_strings(name: str, document: Any) -> None:
    """Every string torch's deserializer evaluates or resolves: expressions, range symbols, node targets."""
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            _check_entry(name, item)
            pending.extend(item.values())


def _check_entry(name: str, entry: Mapping[str, Any]) -> None:
    if "expr_str" in entry:
        check_expression(entry["expr_str"])
    for symbol in entry.get("range_constraints") or {}:
        if not (isinstance(symbol, str) and SYMBOL.fullmatch(symbol)):
            raise ModelLoadError(f"'{name}': range constraint {str(symbol)[:60]!r} is not a size symbol like 's0'")
    targets = [entry["target"]] if {"target", "inputs", "outputs"} <= entry.keys() else []
    for target in [*targets, *([entry["as_operator"]] if "as_operator" in entry else [])]:
        if not (isinstance(target, str) and (target in SYMBOLIC_OPS or _OVERLOAD.fullmatch(target))):
            raise ModelLoadError(f"'{name}': node target {str(target)[:60]!r} is not an operator overload")
