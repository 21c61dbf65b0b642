"""Read a torch.export archive (`model.pt2`) into a runnable module without `torch.export.load`.

Two reasons. Speed: `torch.export.load` imports torch._dynamo through its deserializer (about 1.5 s, and
~100 MB of memory, in every process) and rebuilds symbolic shapes the inference path never uses; this
reader builds the same aten graph from the archive's JSON and raw weights in milliseconds. Safety:
`torch.export.load` retries a sample-inputs pickle that the weights-only unpickler refuses with
`weights_only=False`, and reads pickled payloads and custom objects, so a crafted archive runs code; this
reader never unpickles, and the checked fallback (`load_checked`) refuses archives that would need it.

What it reads: archive version 0, schema major version 8, graphs of `torch.ops` operator overloads and
symbolic-int arithmetic with raw (unpickled) weights and tensor constants, user inputs and outputs that are
tensors. Anything else raises `Unsupported`, and the caller may fall back to `load_checked`.
"""

from __future__ import annotations

import io
import json
import keyword
import math
import operator
import re
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

__all__ = ["ExportedModule", "Unsupported", "load_checked", "read_archive"]

SCHEMA_MAJOR = 8
ARCHIVE_VERSION = "0"

# torch._export.serde.schema's enums, by value (the schema version pins them).
_DTYPES = {
    1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
    7: torch.float32, 8: torch.float64, 9: torch.complex32, 10: torch.complex64, 11: torch.complex128,
    12: torch.bool, 13: torch.bfloat16, 28: torch.uint16, 34: torch.uint32, 35: torch.uint64,
}
_LAYOUTS = {7: torch.strided}
_MEMORY_FORMATS = {
    1: torch.contiguous_format, 2: torch.channels_last, 3: torch.channels_last_3d, 4: torch.preserve_format,
}
_FLOATS = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}
_SYMBOLIC_OPS: dict[str, Callable[..., Any]] = {
    **{f"_operator.{name}": getattr(operator, name) for name in (
        "eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub", "floordiv", "mod", "pow",
        "truediv", "and_", "or_", "lshift", "rshift",
    )},
    "math.trunc": math.trunc,
    **{f"torch.{name}": getattr(torch, name) for name in (
        "sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt",
    )},
}
_NAME = re.compile(r"[A-Za-z0-9_]+")


class Unsupported(Exception):
    """The archive uses something this reader does not build; the message says what."""


class ExportedModule(nn.Module):
    """An exported graph with its weights, called like the original model (positional and keyword args)."""

    def __init__(self, graph_module: fx.GraphModule, in_spec: pytree.TreeSpec, out_spec: pytree.TreeSpec,
                 arg_names: list[str]) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.in_spec, self.out_spec, self.arg_names = in_spec, out_spec, arg_names
        args_spec, kwargs_spec = _children(in_spec)
        self._positional, self._keywords = args_spec.num_children, list(kwargs_spec.context or [])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        flat, spec = pytree.tree_flatten(self._arranged(args, kwargs))
        if spec != self.in_spec:
            raise TypeError(f"the exported model takes inputs shaped like {self.in_spec}, got {spec}")
        return pytree.tree_unflatten(list(self.graph_module(*flat)), self.out_spec)

    def _arranged(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) in the layout of the export call: named positionals moved, keywords in spec order."""
        names = self.arg_names[len(args):self._positional]
        args = (*args, *(kwargs.pop(name) for name in names if name in kwargs))
        return args, {key: kwargs.pop(key) for key in self._keywords if key in kwargs} | kwargs


def _children(spec: pytree.TreeSpec) -> list[pytree.TreeSpec]:
    """A spec's children (`children()` since torch 2.10; the `children_specs` field before)."""
    return spec.children() if callable(getattr(spec, "children", None)) else spec.children_specs


# --- the archive ------------------------------------------------------------------------------------------


def read_archive(path: str | Path) -> ExportedModule:
    """Build the archive's model on the CPU, in eval mode, without torch.export.load and without unpickling.

    >>> module = read_archive("bundle/model.pt2")  # doctest: +SKIP
    >>> module(torch.randn(4, 13)).shape  # doctest: +SKIP
    torch.Size([4, 3])
    """
    with zipfile.ZipFile(path) as archive:
        root = _archive_root(archive)
        program = _json(archive, f"{root}/models/model.json")
        _check_versions(archive, root, program)
        state = _payloads(archive, root, "weights") | _payloads(archive, root, "constants")
        module = _build(program, state)
    module.train(False)
    return module


def _archive_root(archive: zipfile.ZipFile) -> str:
    roots = {name.split("/", 1)[0] for name in archive.namelist() if name.endswith("/archive_format")}
    if len(roots) != 1:
        raise Unsupported("not a single-model torch.export archive")
    return roots.pop()


def _json(archive: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(archive.read(name))
    except KeyError as exc:
        raise Unsupported(f"the archive has no '{name}'") from exc


def _check_versions(archive: zipfile.ZipFile, root: str, program: Mapping[str, Any]) -> None:
    version = archive.read(f"{root}/archive_version").decode().strip()
    major = (program.get("schema_version") or {}).get("major")
    order = archive.read(f"{root}/byteorder").decode().strip() if f"{root}/byteorder" in archive.namelist() else None
    if version != ARCHIVE_VERSION or major != SCHEMA_MAJOR:
        raise Unsupported(f"archive version {version}, schema major {major} (reads {ARCHIVE_VERSION}, {SCHEMA_MAJOR})")
    if order not in (None, sys.byteorder):
        raise Unsupported(f"weights stored {order}-endian on a {sys.byteorder}-endian machine")
    if program.get("graph_module", {}).get("treespec_namedtuple_fields"):
        raise Unsupported("namedtuple inputs or outputs")


def _payloads(archive: zipfile.ZipFile, root: str, kind: str) -> dict[str, torch.Tensor]:
    """Weights or constants by name, read from raw bytes; tensors sharing a file share its storage."""
    config = _json(archive, f"{root}/data/{kind}/model_{kind}_config.json")["config"]
    files: dict[str, torch.Tensor] = {}
    tensors = {}
    for name, meta in config.items():
        if meta.get("use_pickle") or not meta["path_name"].startswith(("weight_", "tensor_")):
            raise Unsupported(f"{kind} '{name}' is stored as a pickle or custom object")
        tensor_meta = meta["tensor_meta"]
        dtype = _enum(_DTYPES, tensor_meta["dtype"], "dtype")
        if meta["path_name"] not in files:
            files[meta["path_name"]] = _raw(archive, f"{root}/data/{kind}/{meta['path_name']}", dtype)
        tensor = files[meta["path_name"]].as_strided(
            _ints(tensor_meta["sizes"]), _ints(tensor_meta["strides"]), _ints([tensor_meta["storage_offset"]])[0]
        )
        tensors[name] = nn.Parameter(tensor, requires_grad=False) if meta.get("is_param") else tensor
    return tensors


def _raw(archive: zipfile.ZipFile, name: str, dtype: torch.dtype) -> torch.Tensor:
    data = bytearray(archive.read(name))
    return torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)


def _ints(values: list[Mapping[str, Any]]) -> list[int]:
    if any("as_int" not in value for value in values):
        raise Unsupported("a stored tensor with a symbolic size")
    return [value["as_int"] for value in values]


def _enum(table: Mapping[int, Any], value: int, what: str) -> Any:
    if value not in table:
        raise Unsupported(f"{what} {value}")
    return table[value]


# --- the graph --------------------------------------------------------------------------------------------


def _build(program: Mapping[str, Any], state: dict[str, torch.Tensor]) -> ExportedModule:
    graph_module = program["graph_module"]
    serialized = graph_module["graph"]
    builder = _GraphBuilder()
    holder = nn.Module()
    for spec, value in zip(graph_module["signature"]["input_specs"], serialized["inputs"], strict=True):
        builder.add_input(spec, value, state, holder)
    for node in serialized["nodes"]:
        builder.add_node(node)
    builder.add_outputs(graph_module["signature"]["output_specs"])
    call = graph_module["module_call_graph"][0]["signature"]
    arg_names = list(call.get("forward_arg_names") or [])
    if not all(name.isidentifier() and not keyword.iskeyword(name) for name in arg_names):
        raise Unsupported("an input name that is not a Python identifier")
    return ExportedModule(fx.GraphModule(holder, builder.graph), pytree.treespec_loads(call["in_spec"]),
                          pytree.treespec_loads(call["out_spec"]), arg_names)


class _GraphBuilder:
    """Turns serialized nodes into an fx.Graph, keeping a map from serialized value names to fx nodes."""

    def __init__(self) -> None:
        self.graph = fx.Graph()
        self.values: dict[str, fx.Node] = {}

    def add_input(self, spec: Mapping[str, Any], value: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                  holder: nn.Module) -> None:
        (kind, body), = spec.items()
        name = _tensor_name(value)
        if kind == "user_input":
            self.values[name] = self.graph.placeholder(name)
            return
        if kind not in ("parameter", "buffer", "tensor_constant"):
            raise Unsupported(f"a graph input of kind '{kind}'")
        target = body.get("parameter_name") or body.get("buffer_name") or body.get("tensor_constant_name")
        if not all(_NAME.fullmatch(part) for part in str(target).split(".")):
            raise Unsupported(f"state name {target!r}")
        if target not in state:
            raise Unsupported(f"{kind} '{target}' has no stored tensor")
        _attach(holder, target, state[target], parameter=kind == "parameter")
        self.values[name] = self.graph.get_attr(target)

    def add_node(self, node: Mapping[str, Any]) -> None:
        target = _operator(node["target"])
        if isinstance(target, torch._ops.OpOverload):
            args, kwargs = self._op_inputs(target, node["inputs"])
        else:
            args, kwargs = tuple(self._value(item["arg"]) for item in node["inputs"]), {}
        outputs = node["outputs"]
        single = len(outputs) == 1 and _output_name(outputs[0])
        fx_node = self.graph.call_function(target, args, kwargs)
        if single:
            self.values[single] = fx_node
        elif outputs and not (len(outputs) == 1 and "as_none" in outputs[0]):
            items = outputs[0]["as_tensors"] if len(outputs) == 1 and "as_tensors" in outputs[0] else outputs
            for index, item in enumerate(items):
                name = item.get("name") or _output_name(item)
                if name:
                    self.values[name] = self.graph.call_function(operator.getitem, (fx_node, index))

    def add_outputs(self, specs: list[Mapping[str, Any]]) -> None:
        values = []
        for spec in specs:
            (kind, body), = spec.items()
            if kind != "user_output":
                raise Unsupported(f"a graph output of kind '{kind}' (the model mutates its state)")
            values.append(self._value(body["arg"]))
        self.graph.output(tuple(values))

    def _op_inputs(self, op: torch._ops.OpOverload, inputs: list[Mapping[str, Any]]) -> tuple[tuple, dict]:
        """Positional and keyword arguments in schema order, as torch's own deserializer lays them out."""
        given = {item["name"]: item for item in inputs}
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for argument in op._schema.arguments:
            if argument.name not in given:
                continue
            item = given[argument.name]
            value = self._value(item["arg"])
            kind = item.get("kind")
            positional = kind == 1 or (kind != 2 and not argument.kwarg_only and not argument.has_default_value())
            if positional or keyword.iskeyword(argument.name):
                args.append(value)
            else:
                kwargs[argument.name] = value
        return tuple(args), kwargs

    def _value(self, argument: Mapping[str, Any]) -> Any:
        (kind, value), = argument.items()
        if kind in _SCALARS:
            return _SCALARS[kind](value)
        if kind in ("as_tensor", "as_optional_tensor"):
            return self._named(value)
        if kind in ("as_tensors", "as_optional_tensors", "as_sym_ints", "as_sym_bools", "as_sym_floats"):
            return [self._named(item) for item in value]
        if kind in ("as_sym_int", "as_sym_bool", "as_sym_float"):
            return self._named(value)
        raise Unsupported(f"an argument of kind '{kind}'")

    def _named(self, value: Mapping[str, Any]) -> Any:
        """A reference to an earlier value ({"name"} or {"as_name"}), a None, or a literal int/bool/float."""
        if "as_none" in value:
            return None
        name = value.get("name", value.get("as_name", value.get("as_tensor", {}).get("name")))
        if name is None:
            (_, literal), = value.items()
            return literal
        if name not in self.values:
            raise Unsupported(f"value '{name}' is used before it is defined")
        return self.values[name]


_SCALARS: dict[str, Callable[[Any], Any]] = {
    "as_none": lambda _: None,
    "as_int": int,
    "as_ints": list,
    "as_float": lambda value: _FLOATS.get(value, value),
    "as_floats": lambda values: [_FLOATS.get(value, value) for value in values],
    "as_bool": bool,
    "as_bools": list,
    "as_string": str,
    "as_strings": list,
    "as_int_lists": lambda values: [tuple(value) for value in values],
    "as_float_lists": lambda values: [list(value) for value in values],
    "as_complex": lambda value: complex(value["real"], value["imag"]),
    "as_scalar_type": lambda value: _enum(_DTYPES, value, "dtype"),
    "as_layout": lambda value: _enum(_LAYOUTS, value, "layout"),
    "as_memory_format": lambda value: _enum(_MEMORY_FORMATS, value, "memory format"),
    "as_device": lambda value: torch.device(value["type"], value.get("index")),
}


def _operator(target: str) -> Callable[..., Any]:
    """An aten/prims/custom operator overload or a symbolic-int function; never any other callable."""
    if target in _SYMBOLIC_OPS:
        return _SYMBOLIC_OPS[target]
    parts = target.split(".")
    if len(parts) != 5 or parts[:2] != ["torch", "ops"] or parts[2] == "higher_order":
        raise Unsupported(f"operator '{target}'")
    try:
        overload = getattr(getattr(getattr(torch.ops, parts[2]), parts[3]), parts[4])
    except (AttributeError, RuntimeError) as exc:
        raise Unsupported(f"operator '{target}' is not registered in this process") from exc
    if not isinstance(overload, torch._ops.OpOverload):
        raise Unsupported(f"operator '{target}'")
    return overload


def _tensor_name(value: Mapping[str, Any]) -> str:
    if "as_tensor" not in value:
        raise Unsupported(f"a graph input that is not a tensor ({next(iter(value))})")
    return value["as_tensor"]["name"]


def _output_name(output: Mapping[str, Any]) -> str | None:
    """The name a single-valued node output defines (a tensor or a symbolic int/bool/float)."""
    (kind, value), = output.items()
    if kind == "as_tensor":
        return value["name"]
    if kind in ("as_sym_int", "as_sym_bool", "as_sym_float"):
        return value.get("as_name")
    return None


def _attach(holder: nn.Module, target: str, tensor: torch.Tensor, *, parameter: bool) -> None:
    """Register `tensor` at the dotted path `target` ("encoder.0.weight"), creating empty parent modules."""
    *path, leaf = target.split(".")
    module = holder
    for part in path:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    if parameter:
        module.register_parameter(leaf, tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, False))
    else:
        module.register_buffer(leaf, tensor)


# --- the checked fallback ---------------------------------------------------------------------------------


def load_checked(path: str | Path) -> torch.export.ExportedProgram:
    """torch.export.load, after checking that it will not unpickle anything beyond plain tensors.

    torch.export.load reads payloads marked use_pickle and custom objects with pickle, and retries a
    sample-inputs file that torch.load(weights_only=True) refuses with weights_only=False. So: no payload
    may be pickled or a custom object, and every .pt member must load under weights_only=True here first.
    """
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("_config.json"):
                _check_config(name, json.loads(archive.read(name)))
            elif name.endswith(".pt"):
                _check_weights_only(name, archive.read(name))
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
