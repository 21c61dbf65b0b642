"""Read a torch.export archive (`model.pt2`) into a runnable module without `torch.export.load`.

Two reasons. Speed: `torch.export.load` imports torch._dynamo through its deserializer (about 1.5 s, and
~100 MB of memory, in every process) and rebuilds symbolic shapes the inference path never uses; this
reader builds the same aten graph from the archive's JSON and raw weights in milliseconds. Safety:
`torch.export.load` retries a sample-inputs pickle that the weights-only unpickler refuses with
`weights_only=False`, reads pickled payloads and custom objects, and evaluates the archive's size expressions
with sympy, so a crafted archive runs code; this reader never unpickles and never evaluates a string.

What it reads: archive version 0, schema major version 8, graphs of `torch.ops` operator overloads and
symbolic-int arithmetic with raw (unpickled) weights and tensor constants, user inputs and outputs that are
tensors. It builds on any device, as torch's move_to_device_pass would: weights and constants are copied
there and every device argument in the graph names it. Anything else raises `Unsupported`, and a caller the
user has allowed to may fall back to torch_loader.load_checked. Every member's declared size is checked before it is
read: a tensor must fit its member, a member may not be far larger than its tensors need or inflate like a
zip bomb, and model.json is capped, each a ModelLoadError naming the member.
"""

from __future__ import annotations

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

from torchpredict.errors import ModelLoadError
from torchpredict.io.archive import MAX_JSON_BYTES, member_problem  # model.json of a large transformer is a few MB

__all__ = ["MAX_JSON_BYTES", "SYMBOLIC_OPS", "ExportedModule", "Unsupported", "read_archive", "read_member"]

SCHEMA_MAJOR = 8
ARCHIVE_VERSION = "0"
_SLACK = 1 << 20  # bytes a weights member may hold beyond twice what its tensors need

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
SYMBOLIC_OPS: dict[str, Callable[..., Any]] = {
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
        # the usual export: tensors in, positionally, and one tensor out, which need no pytree walk per call
        self._tensors_in = pytree.tree_flatten((tuple(range(self._positional)), {}))[1] == in_spec
        self._tensor_out = pytree.tree_flatten(0)[1] == out_spec

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._tensors_in and not kwargs and len(args) == self._positional and \
                all(type(a) is torch.Tensor for a in args):  # what tree_flatten would make of them, and check
            out = self.graph_module(*args)
            return out[0] if self._tensor_out else pytree.tree_unflatten(list(out), self.out_spec)
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


def read_archive(path: str | Path, device: torch.device | str = "cpu") -> ExportedModule:
    """Build the archive's model on `device`, in eval mode, without torch.export.load and without unpickling.

    >>> module = read_archive("bundle/model.pt2", "cuda")  # doctest: +SKIP
    >>> module(torch.randn(4, 13, device="cuda")).shape  # doctest: +SKIP
    torch.Size([4, 3])
    """
    device = torch.device(device)
    with zipfile.ZipFile(path) as archive:
        root = _archive_root(archive)
        program = _json(archive, f"{root}/models/model.json")
        _check_versions(archive, root, program)
        state = _payloads(archive, root, "weights", device) | _payloads(archive, root, "constants", device)
        module = _build(program, state, device)
    module.train(False)
    return module


def _archive_root(archive: zipfile.ZipFile) -> str:
    roots = {name.split("/", 1)[0] for name in archive.namelist() if name.endswith("/archive_format")}
    if len(roots) != 1:
        raise Unsupported("not a single-model torch.export archive")
    return roots.pop()


def _json(archive: zipfile.ZipFile, name: str) -> Any:
    return json.loads(read_member(archive, _info(archive, name), MAX_JSON_BYTES))


def _info(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    try:
        return archive.getinfo(name)
    except KeyError as exc:
        raise Unsupported(f"the archive has no '{name}'") from exc


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, once its declared size is known to be at most `limit` and not bomb-like: zipfile
    stops at the declared size, so nothing larger is ever allocated."""
    problem = member_problem(info, limit)
    if problem:
        raise ModelLoadError(problem)
    return archive.read(info)


def _text(archive: zipfile.ZipFile, name: str) -> str:
    return read_member(archive, _info(archive, name), 64).decode(errors="replace").strip()


def _check_versions(archive: zipfile.ZipFile, root: str, program: Mapping[str, Any]) -> None:
    version = _text(archive, f"{root}/archive_version")
    major = (program.get("schema_version") or {}).get("major")
    order = _text(archive, f"{root}/byteorder") if f"{root}/byteorder" in archive.namelist() else None
    if version != ARCHIVE_VERSION or major != SCHEMA_MAJOR:
        raise Unsupported(f"archive version {version}, schema major {major} (reads {ARCHIVE_VERSION}, {SCHEMA_MAJOR})")
    if order not in (None, sys.byteorder):
        raise Unsupported(f"weights stored {order}-endian on a {sys.byteorder}-endian machine")
    if program.get("graph_module", {}).get("treespec_namedtuple_fields"):
        raise Unsupported("namedtuple inputs or outputs")


def _payloads(archive: zipfile.ZipFile, root: str, kind: str, device: torch.device) -> dict[str, torch.Tensor]:
    """Weights or constants by name, read from raw bytes onto `device`; tensors sharing a file share its storage.

    Every tensor's extent is checked against its member's declared size before any member is read.
    """
    config = _json(archive, f"{root}/data/{kind}/model_{kind}_config.json")["config"]
    layouts = {name: _layout(kind, name, meta) for name, meta in config.items()}
    files = {member: _raw(archive, _info(archive, f"{root}/data/{kind}/{member}"), dtype, need, device)
             for member, (dtype, need) in _member_needs(kind, layouts).items()}
    tensors = {}
    for name, (member, _, sizes, strides, offset) in layouts.items():
        tensor = files[member].as_strided(sizes, strides, offset)
        tensors[name] = nn.Parameter(tensor, requires_grad=False) if config[name].get("is_param") else tensor
    return tensors


def _layout(kind: str, name: str, meta: Mapping[str, Any]) -> tuple[str, torch.dtype, list[int], list[int], int]:
    """(member, dtype, sizes, strides, storage offset) of one stored tensor, refusing pickles."""
    if meta.get("use_pickle") or not meta["path_name"].startswith(("weight_", "tensor_")):
        raise Unsupported(f"{kind} '{name}' is stored as a pickle or custom object")
    if not _NAME.fullmatch(meta["path_name"]):
        raise Unsupported(f"{kind} '{name}' is stored in member {meta['path_name']!r}")
    tensor_meta = meta["tensor_meta"]
    sizes, strides = _ints(tensor_meta["sizes"]), _ints(tensor_meta["strides"])
    offset = _ints([tensor_meta["storage_offset"]])[0]
    if len(sizes) != len(strides) or min([*sizes, *strides, offset], default=0) < 0:
        raise ModelLoadError(f"{kind} '{name}': sizes {sizes}, strides {strides} and offset {offset} do not describe "
                             "a tensor")
    return meta["path_name"], _enum(_DTYPES, tensor_meta["dtype"], "dtype"), sizes, strides, offset


def _member_needs(kind: str, layouts: Mapping[str, tuple]) -> dict[str, tuple[torch.dtype, int]]:
    """Each member's dtype and the bytes its largest tensor reaches (tensors sharing a member share a dtype)."""
    needs: dict[str, tuple[torch.dtype, int]] = {}
    for name, (member, dtype, sizes, strides, offset) in layouts.items():
        reach = sum((size - 1) * stride for size, stride in zip(sizes, strides, strict=True))
        extent = 0 if 0 in sizes else offset + 1 + reach
        known_dtype, known = needs.get(member, (dtype, 0))
        if known_dtype != dtype:
            raise Unsupported(f"{kind} '{name}' reads member '{member}' as {dtype}, another tensor as {known_dtype}")
        needs[member] = (dtype, max(known, extent * dtype.itemsize))
    return needs


def _raw(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: torch.dtype, need: int,
         device: torch.device) -> torch.Tensor:
    """A member's bytes as a flat tensor on `device`, after checking its declared size against `need`."""
    if info.file_size < need:
        raise ModelLoadError(f"member '{info.filename}' holds {info.file_size:,} bytes, but its tensors need {need:,}")
    if info.file_size > 2 * need + _SLACK:
        raise ModelLoadError(f"member '{info.filename}' declares {info.file_size:,} bytes, but its tensors need only "
                             f"{need:,}")
    data = bytearray(read_member(archive, info, info.file_size))
    if len(data) % dtype.itemsize:
        raise ModelLoadError(f"member '{info.filename}' holds {len(data):,} bytes, not a whole number of {dtype}")
    flat = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
    return flat if device.type == "cpu" else flat.to(device)


def _ints(values: list[Mapping[str, Any]]) -> list[int]:
    if any("as_int" not in value for value in values):
        raise Unsupported("a stored tensor with a symbolic size")
    if any(type(value["as_int"]) is not int for value in values):
        raise ModelLoadError(f"a stored tensor's sizes are not integers: {str(values)[:80]}")
    return [value["as_int"] for value in values]


def _enum(table: Mapping[int, Any], value: int, what: str) -> Any:
    if value not in table:
        raise Unsupported(f"{what} {value}")
    return table[value]


# --- the graph --------------------------------------------------------------------------------------------


def _build(program: Mapping[str, Any], state: dict[str, torch.Tensor], device: torch.device) -> ExportedModule:
    graph_module = program["graph_module"]
    serialized = graph_module["graph"]
    builder = _GraphBuilder(device)
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
    """Turns serialized nodes into an fx.Graph, keeping a map from serialized value names to fx nodes.

    Every device argument becomes `device`, as torch's move_to_device_pass rewrites them.
    """

    def __init__(self, device: torch.device) -> None:
        self.graph = fx.Graph()
        self.values: dict[str, fx.Node] = {}
        self.device = device

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
        if kind == "as_device":
            return self.device
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
}


def _operator(target: str) -> Callable[..., Any]:
    """An aten/prims/custom operator overload or a symbolic-int function; never any other callable."""
    if target in SYMBOLIC_OPS:
        return SYMBOLIC_OPS[target]
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
