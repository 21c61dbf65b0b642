"""The Open Inference Protocol V2 (KServe V2 / Triton REST) codec: request bytes in, columns out; a table in,
response bytes out. Pure functions over plain data: no HTTP, no model.

A model's inputs are its schema columns, one tensor per column (shape [n] or [n, 1], or [n, k] for a column of
k-value rows), its outputs the prediction columns. Both JSON tensors and the binary tensor data extension
(`Inference-Header-Content-Length`, `binary_data_size`, `binary_data` / `binary_data_output`) are read and
written, and the classification extension (`"classification": k` on a requested output) answers the top k
classes of a classification head as BYTES "probability:index:label". Everything a request can get wrong is a
RequestError (HTTP 400) whose message names the input or output and what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from torchpredict.errors import TorchPredictError
from torchpredict.messages import counted, first_line, quoted, shown
from torchpredict.server.columns import BlockColumns, layout

__all__ = [
    "EXTENSIONS",
    "Classes",
    "InferInput",
    "InferRequest",
    "ModelSpec",
    "RequestError",
    "RequestedOutput",
    "TensorSpec",
    "check_outputs",
    "columns_of",
    "encode_response",
    "model_metadata",
    "model_spec",
    "parse_request",
]

EXTENSIONS = ("binary_tensor_data", "classification", "torchpredict_records")
PLATFORM = "torchpredict"
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

# Fixed-width datatypes and their little-endian layout in binary tensor data.
FIXED: dict[str, np.dtype] = {name: np.dtype(code) for name, code in (
    ("BOOL", "?"), ("UINT8", "u1"), ("UINT16", "<u2"), ("UINT32", "<u4"), ("UINT64", "<u8"), ("INT8", "i1"),
    ("INT16", "<i2"), ("INT32", "<i4"), ("INT64", "<i8"), ("FP16", "<f2"), ("FP32", "<f4"), ("FP64", "<f8"),
    ("BF16", "<u2"))}
DATATYPES = (*FIXED, "BYTES")
_FLOATS = ("FP64", "FP32", "FP16", "BF16")
_INTS = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")

# schema dtype -> the datatype metadata names first, then the others a request may send for it
ACCEPTED: dict[str, tuple[str, ...]] = {
    "float64": ("FP64", "FP32", "FP16", "BF16"),
    "float32": ("FP32", "FP64", "FP16", "BF16"),
    "int64": ("INT64", *_INTS[1:]),
    "int32": ("INT32", "INT64", *_INTS[2:]),
    "bool": ("BOOL",),
    "string": ("BYTES",),
    "image": ("BYTES",),  # each element an encoded image: raw in binary data, base64 in JSON
}


class RequestError(TorchPredictError, ValueError):
    """An inference request that does not follow the protocol or does not fit the model's inputs (HTTP 400)."""


# -- what a model takes and gives -----------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as model metadata lists it; dtype: the schema dtype of an input column."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    dtype: str = ""
    optional: bool = False

    def metadata(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        return entry | ({"optional": True} if self.optional else {})


@dataclass(frozen=True)
class Classes:
    """A classification head, for the classification extension: the output it is asked on (the head's target),
    its labels in model-output order and, per label, the column holding its probability ("" when the bundle
    does not output it). binary: probabilities[1] is P(positive) and P(negative) is 1 minus it. top: the
    (label, probability) columns of a multiclass head's top_k, for a head without per-label columns."""

    output: str
    labels: tuple[str, ...]
    probabilities: tuple[str, ...]
    binary: bool = False
    top: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """A served model as the protocol sees it."""

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    classes: Mapping[str, Classes] = field(default_factory=dict)

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    @cached_property
    def _inputs_by_name(self) -> dict[str, TensorSpec]:
        found: dict[str, TensorSpec] = {}
        for spec in self.inputs:
            found.setdefault(spec.name, spec)
        return found

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs_by_name.get(name)

    @cached_property
    def single_value_inputs(self) -> dict[str, frozenset[str]]:
        """The inputs whose rows hold one value, and the datatypes each accepts (for columns_of's fast path)."""
        return {name: frozenset(ACCEPTED.get(spec.dtype, DATATYPES)) for name, spec in self._inputs_by_name.items()
                if len(spec.shape) == 1}

    def takes(self, names: tuple[str, ...], datatypes: tuple[str, ...]) -> bool:
        """Whether every input named is a single-value column of the model and its datatype one that column
        accepts; remembered (clients send the same inputs request after request), up to 1,024 kinds of request."""
        known = self._takes.get((names, datatypes))
        if known is None:
            accepted = self.single_value_inputs
            known = all(datatype in accepted.get(name, ()) for name, datatype in zip(names, datatypes, strict=True))
            if len(self._takes) >= 1024:
                self._takes.clear()
            self._takes[names, datatypes] = known
        return known

    @cached_property
    def _takes(self) -> dict[tuple[tuple[str, ...], tuple[str, ...]], bool]:
        return {}

    def default_outputs(self, binary: bool) -> list[RequestedOutput]:
        """The outputs of a request that names none: every prediction column."""
        return self._default_outputs[binary]

    @cached_property
    def _default_outputs(self) -> dict[bool, list[RequestedOutput]]:
        return {binary: [RequestedOutput(name, binary) for name in self.output_names] for binary in (False, True)}


def model_spec(name: str, version: str, columns: Sequence[Any], heads: Sequence[Any], outputs: pa.Schema) -> ModelSpec:
    """The spec of a model from its schema columns (torchpredict.schema.columns.Column), its heads and the Arrow
    schema of its prediction columns (a prediction's, passthrough columns left out)."""
    inputs = tuple(TensorSpec(c.name, _input_datatype(c.dtype), (-1, *c.shape), c.dtype, c.role != "feature")
                   for c in columns)
    specs = tuple(TensorSpec(f.name, *_output_layout(f.type)) for f in outputs)
    return ModelSpec(name, version, inputs, specs, _classification_heads(heads, set(outputs.names)))


def _input_datatype(dtype: str) -> str:
    if dtype in ACCEPTED:
        return ACCEPTED[dtype][0]
    try:  # a passthrough column keeps its Arrow type name
        return _output_layout(_arrow_type(dtype))[0]
    except (ValueError, TypeError, KeyError):
        return "BYTES"


def _arrow_type(name: str) -> pa.DataType:
    return pa.from_numpy_dtype(np.dtype(name)) if name not in ("string", "large_string") else pa.string()


def _output_layout(arrow: pa.DataType) -> tuple[str, tuple[int, ...]]:
    """The datatype and metadata shape of an output column of this Arrow type."""
    if pa.types.is_fixed_size_list(arrow):
        return _output_layout(arrow.value_type)[0], (-1, arrow.list_size)
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return _output_layout(arrow.value_type)[0], (-1, -1)
    return _scalar_datatype(arrow), (-1,)


def _scalar_datatype(arrow: pa.DataType) -> str:
    if pa.types.is_boolean(arrow):
        return "BOOL"
    if pa.types.is_floating(arrow):
        return {16: "FP16", 32: "FP32"}.get(arrow.bit_width, "FP64")
    if pa.types.is_integer(arrow):
        return f"{'INT' if pa.types.is_signed_integer(arrow) else 'UINT'}{arrow.bit_width}"
    return "BYTES"


def _classification_heads(heads: Sequence[Any], columns: set[str]) -> dict[str, Classes]:
    """Classes of the binary, multiclass and multilabel heads, keyed by the output the extension is asked on."""
    found = {}
    for head in heads:
        kind, target = getattr(head, "type", ""), getattr(head, "target", "")
        if kind in ("binary", "multiclass"):
            labels = tuple(str(label) for label in head.classes)
            probabilities: tuple[str, ...]
            if kind == "binary":
                probabilities = ("", f"{target}_probability")
            else:
                per_label = tuple(f"{target}_probability_{label}" for label in head.classes)
                probabilities = per_label if all(p in columns for p in per_label) else ("",) * len(labels)
            top = tuple((f"{target}_top{i}", f"{target}_top{i}_probability")
                        for i in range(1, getattr(head, "top_k", 0) + 1))
            found[target] = Classes(target, labels, probabilities, kind == "binary", top)
        elif kind == "multilabel":
            found[target] = Classes(target, tuple(str(label) for label in head.labels),
                                    tuple(f"{target}_probability_{label}" for label in head.labels))
    return found


def model_metadata(spec: ModelSpec, versions: Sequence[str]) -> dict[str, Any]:
    """GET v2/models/{name}[/versions/{v}]: inputs (the schema columns) and outputs (the prediction columns)."""
    return {"name": spec.name, "versions": list(versions), "platform": PLATFORM,
            "inputs": [s.metadata() for s in spec.inputs], "outputs": [s.metadata() for s in spec.outputs]}


# -- requests -------------------------------------------------------------------------------------------


@dataclass
class InferInput:
    """One input tensor: its values flat, in row-major order (numbers as an array, BYTES as a list of str)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray | list[Any]


class Inputs(Sequence[InferInput]):
    """A request's input tensors held column-wise (names, datatypes, shapes, values, in request order), so that
    reading a one-row request of many inputs makes no object per input; an InferInput is made when one is asked for.
    columns: the values as the fast path read them, in blocks (then values is made from it when asked for)."""

    __slots__ = ("_values", "columns", "datatypes", "names", "shapes")

    def __init__(self, names: list[str], datatypes: list[str], shapes: list[tuple[int, ...]],
                 values: list[np.ndarray | list[Any]] | None, columns: BlockColumns | None = None) -> None:
        self.names, self.datatypes, self.shapes, self._values, self.columns = names, datatypes, shapes, values, columns

    @classmethod
    def of(cls, tensors: Sequence[InferInput]) -> Inputs:
        return cls([t.name for t in tensors], [t.datatype for t in tensors], [t.shape for t in tensors],
                   [t.values for t in tensors])

    @property
    def values(self) -> list[np.ndarray | list[Any]]:
        if self._values is None:
            assert self.columns is not None
            self._values = [self.columns[name] for name in self.names]
        return self._values

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return InferInput(self.names[index], self.datatypes[index], self.shapes[index], self.values[index])


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0


@dataclass
class InferRequest:
    """A parsed inference request. outputs: None when the request named none (all prediction columns)."""

    id: str | None
    inputs: Inputs
    outputs: list[RequestedOutput] | None
    binary_output: bool
    parameters: dict[str, Any]

    @property
    def timeout_s(self) -> float | None:
        """The request's `timeout` parameter (microseconds, as tritonclient sends it) in seconds."""
        value = self.parameters.get("timeout")
        return None if value is None else value / 1e6


def parse_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Read an inference request: JSON, or with header_length (the Inference-Header-Content-Length header) a
    JSON header of that many bytes followed by the binary tensor data of the inputs that say binary_data_size."""
    length = len(body) if header_length is None else _header_length(header_length, len(body))
    try:
        document = orjson.loads(body[:length])
    except orjson.JSONDecodeError as exc:
        hint = ("; binary tensor data needs the Inference-Header-Content-Length header"
                if header_length is None else "")
        raise RequestError(f"the request is not valid JSON: {first_line(exc)}{hint}") from None
    if not isinstance(document, dict):
        raise RequestError(f"an inference request must be a JSON object, got {_kind(document)}")
    parameters = _parameters(document.get("parameters"), "the request's 'parameters'")
    binary_output = _flag(parameters, "binary_data_output", "the request's parameter")
    timeout = parameters.get("timeout")
    if timeout is not None and (not _is_number(timeout) or timeout <= 0):
        raise RequestError(f"the request's parameter 'timeout' must be a positive number of microseconds, got "
                           f"{shown(timeout)}")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"the request's 'id' must be a string, got {shown(request_id)}")
    binary = memoryview(body)[length:]
    value = document.get("inputs")
    inputs = _fast_inputs(value, binary)
    if inputs is None:  # anything unusual: the general path, which says what is wrong
        inputs = Inputs.of(_inputs(value, binary))
    return InferRequest(request_id, inputs, _outputs(document.get("outputs"), binary_output), binary_output,
                        parameters)


def _header_length(text: str, size: int) -> int:
    try:
        length = int(text)
    except ValueError:
        raise RequestError(f"Inference-Header-Content-Length must be a number of bytes, got {shown(text)}") from None
    if not 0 <= length <= size:
        raise RequestError(f"Inference-Header-Content-Length is {length:,} but the request body has {size:,} bytes")
    return length


def _inputs(value: Any, binary: memoryview) -> list[InferInput]:
    if not isinstance(value, list) or not value:
        raise RequestError(f"an inference request needs 'inputs', a non-empty list of tensors, got {_kind(value)}")
    sizes = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise RequestError(f"inputs[{i}] must be an object with name, datatype, shape and data, got {_kind(entry)}")
        sizes.append(_binary_size(entry, i))
    total = sum(size for size in sizes if size is not None)
    if total != len(binary):
        raise RequestError(f"the request carries {len(binary):,} bytes of binary tensor data but the inputs' "
                           f"binary_data_size add up to {total:,}")
    found, offset = [], 0
    for i, (entry, size) in enumerate(zip(value, sizes, strict=True)):
        name, datatype, shape = _tensor_header(entry, i)
        if size is None:
            if "data" not in entry:
                raise RequestError(f"input {shown(name)} has neither 'data' nor a binary_data_size parameter")
            values = _json_values(name, datatype, shape, entry["data"])
        else:
            if "data" in entry:
                raise RequestError(f"input {shown(name)} has both 'data' and a binary_data_size parameter")
            values = _binary_values(name, datatype, shape, binary[offset:offset + size])
            offset += size
        found.append(InferInput(name, datatype, shape, values))
    names = [entry.name for entry in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RequestError(f"{counted('input', twice)} given more than once")
    return found


# The common request shape, read with a handful of checks over all inputs at once: every input a JSON object of
# exactly name, datatype, shape [n] or [n, 1] and either a flat "data" list of n scalars or the parameters
# {"binary_data_size": size} alone. It gives exactly what _inputs gives, or None wherever _inputs could refuse the
# request or read it another way (then _inputs reads it, and says what is wrong).
_FAST_KINDS: dict[str, str] = {**{name: "f" for name in _FLOATS}, **{name: "i" for name in _INTS}, "BOOL": "b",
                               "BYTES": "s"}
_FAST_TYPES: dict[str, frozenset[type]] = {"f": frozenset({float, int}), "i": frozenset({int}),
                                          "b": frozenset({bool}), "s": frozenset({str, type(None)})}
_EXACT = 2.0 ** 53  # ints below it convert to floats exactly, one by one or in an array


def _fast_inputs(value: Any, binary: memoryview) -> Inputs | None:
    if type(value) is not list or not value:
        return None
    return _fast_json(value) if not binary else _fast_entries(value, binary)


_DICT, _LIST, _INT, _STR, _FOUR = frozenset({dict}), frozenset({list}), frozenset({int}), frozenset({str}), {4}
_NAME, _DATATYPE, _SHAPE, _DATA = (itemgetter(key) for key in ("name", "datatype", "shape", "data"))


def _fast_json(value: list[Any]) -> Inputs | None:
    """The fast path for JSON tensors all of one shape, read a check at a time over all inputs (each check one
    pass in C), not input by input: a one-row request has as many inputs as the model has columns."""
    if set(map(type, value)) != _DICT or set(map(len, value)) != _FOUR:
        return None
    try:
        names, datatypes = list(map(_NAME, value)), list(map(_DATATYPE, value))
        shapes, datas = list(map(_SHAPE, value)), list(map(_DATA, value))
        kinds = list(map(_FAST_KINDS.get, datatypes))
    except (KeyError, TypeError):  # a key missing, or an unhashable datatype
        return None
    if set(map(type, names)) != _STR or "" in names or None in kinds or len(set(names)) != len(names) or \
            set(map(type, shapes)) != _LIST or set(map(type, chain.from_iterable(shapes))) != _INT:
        return None
    forms = list(map(tuple, shapes))
    n = forms[0][0] if forms[0] else 0
    if n <= 0 or not set(forms) <= {(n,), (n, 1)} or set(map(type, datas)) != _LIST or set(map(len, datas)) != {n}:
        return None
    where = layout(tuple(names), tuple(datatypes), _BLOCKED)
    blocks = []
    for rows in where.blocks:
        datatype = datatypes[rows[0]]
        kind = _FAST_KINDS[datatype]
        array = _json_array(list(chain.from_iterable(datas if len(rows) == len(datas) else [datas[i] for i in rows])),
                            kind)
        array = None if array is None else _as_datatype(array, datatype)
        if array is None:
            return None
        blocks.append(array.reshape(len(rows), n))
    others = [datas[i] for i in where.others]  # strings: their lists as they are
    if others and not set(map(type, chain.from_iterable(others))) <= _FAST_TYPES["s"]:
        return None
    return Inputs(names, datatypes, forms, None, BlockColumns(where, blocks, others))


_BLOCKED = frozenset(name for name, kind in _FAST_KINDS.items() if kind != "s")  # datatypes read into blocks


def _json_array(items: list[Any], kind: str) -> np.ndarray | None:
    """The JSON values of one numeric kind (f, i, b) of the fast paths as one array (floats as float64), or None
    where the general path could read them otherwise: another type among them, an int a float cannot hold
    exactly, an int beyond int64 (numpy reads those another way per input)."""
    types = set(map(type, items))
    if not types <= _FAST_TYPES[kind]:
        return None
    array = np.array(items, dtype=np.float64 if kind == "f" else None)
    if (kind == "f" and int in types and not np.abs(array).max() < _EXACT) or (kind == "i" and array.dtype != np.int64):
        return None
    return array


def _as_datatype(array: np.ndarray, datatype: str) -> np.ndarray | None:
    """The array in the datatype's dtype (itself when already), or None when a value does not fit it (the general
    path names that value)."""
    native = _native(datatype)
    if array.dtype == native:
        return array
    with np.errstate(over="ignore"):
        converted = array.astype(native)
    return None if _changed(array, converted) is not None else converted


def _fast_entries(value: list[Any], binary: memoryview) -> Inputs | None:
    """The fast path input by input: for requests with binary tensor data."""
    headers: list[tuple[str, str, tuple[int, ...]]] = []
    pending: list[tuple[str, Any]] = []  # per input: its kind and its data list, or its binary size
    flat: dict[str, list[Any]] = {"f": [], "i": [], "b": [], "s": []}
    total = 0
    for entry in value:
        if type(entry) is not dict or len(entry) != 4:
            return None
        name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
        if type(name) is not str or not name or type(shape) is not list or datatype not in _FAST_KINDS:
            return None
        if len(shape) != 1 and (len(shape) != 2 or type(shape[1]) is not int or shape[1] != 1):
            return None
        n = shape[0]
        if type(n) is not int or n <= 0:
            return None
        data = entry.get("data")
        if data is None:  # binary tensor data, or something to refuse
            parameters = entry.get("parameters")
            if type(parameters) is not dict or len(parameters) != 1 or datatype == "BYTES":
                return None
            size = parameters.get("binary_data_size")
            if type(size) is not int or size != n * FIXED[datatype].itemsize:
                return None
            pending.append(("", size))
            total += size
        else:
            if type(data) is not list or len(data) != n:
                return None
            kind = _FAST_KINDS[datatype]
            flat[kind] += data
            pending.append((kind, data))
        headers.append((name, datatype, tuple(shape)))
    if total != len(binary) or len({header[0] for header in headers}) != len(headers):
        return None
    arrays: dict[str, Any] = {}
    for kind, items in flat.items():
        if not items:
            continue
        if kind == "s":
            if not set(map(type, items)) <= _FAST_TYPES["s"]:
                return None
            continue
        array = _json_array(items, kind)
        if array is None:
            return None
        arrays[kind] = array
    found: list[InferInput] = []
    offsets, at = dict.fromkeys(flat, 0), 0
    converted: dict[str, np.ndarray] = {}  # each datatype's values, all converted at once
    for (name, datatype, shape), (kind, data) in zip(headers, pending, strict=True):
        values: np.ndarray | list[Any]
        if not kind:
            values = _binary_values(name, datatype, shape, binary[at:at + data])
            at += data
        elif kind == "s":
            values = list(data)
        else:
            start = offsets[kind]
            offsets[kind] = end = start + len(data)
            whole = converted.get(datatype)
            if whole is None:
                whole = _as_datatype(arrays[kind], datatype)
                if whole is None:
                    return None
                converted[datatype] = whole
            values = whole[start:end]
        found.append(InferInput(name, datatype, shape, values))
    return Inputs.of(found)


def _binary_size(entry: dict, i: int) -> int | None:
    parameters = _parameters(entry.get("parameters"), f"inputs[{i}]'s 'parameters'")
    size = parameters.get("binary_data_size")
    if size is not None and (not _is_count(size)):
        raise RequestError(f"inputs[{i}]: binary_data_size must be a number of bytes, got {shown(size)}")
    return size


def _tensor_header(entry: dict, i: int) -> tuple[str, str, tuple[int, ...]]:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(f"inputs[{i}] needs a 'name' (a non-empty string), got {shown(name)}")
    datatype = entry.get("datatype")
    if datatype not in DATATYPES:
        raise RequestError(f"input {shown(name)}: datatype must be one of {', '.join(DATATYPES)}, got "
                           f"{shown(datatype)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not shape or not all(_is_count(d) for d in shape):
        raise RequestError(f"input {shown(name)}: shape must be a list of sizes >= 0 ([rows] or [rows, k]), got "
                           f"{shown(shape)}")
    return name, datatype, tuple(shape)


def _json_values(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray | list[Any]:
    """The 'data' of a JSON tensor, flat or nested, checked against its datatype and shape."""
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = list(_flatten(data, name))
        bad = next((i for i, v in enumerate(flat) if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise RequestError(f"input {shown(name)}: BYTES data must hold strings, got {shown(flat[bad])} at "
                               f"position {bad}")
        _check_count(name, shape, len(flat), count)
        return flat
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise RequestError(f"input {shown(name)}: 'data' is not a {list(shape)} tensor of {datatype}: "
                           f"{first_line(exc)}") from None
    if array.ndim > 1 and array.shape != shape and array.size == count:
        raise RequestError(f"input {shown(name)}: 'data' has shape {list(array.shape)}, the tensor says "
                           f"{list(shape)}")
    _check_count(name, shape, array.size, count)
    if array.dtype == object:  # nulls, or values of mixed kinds
        flat = list(_flatten(data, name))
        bad = next((i for i, v in enumerate(flat) if v is not None and not _fits(v, datatype)), None)
        if bad is not None:
            raise RequestError(_wrong_value(name, datatype, flat[bad], bad))
        return flat
    if array.size and not _kind_fits(array.dtype.kind, datatype):  # [] reads as floats: no value is wrong
        flat = list(_flatten(data, name))
        bad = next((i for i, v in enumerate(flat) if not _fits(v, datatype)), 0)
        raise RequestError(_wrong_value(name, datatype, flat[bad], bad))
    flat_array = array.reshape(-1)
    try:
        with np.errstate(over="ignore"):  # an overflow is found below, and named
            converted = flat_array.astype(_native(datatype))
    except OverflowError as exc:
        raise RequestError(f"input {shown(name)}: a value does not fit {datatype}: {first_line(exc)}") from None
    changed = _changed(flat_array, converted)
    if changed is not None:
        raise RequestError(f"input {shown(name)}: {shown(flat_array[changed].item())} at position {changed} does not "
                           f"fit {datatype}")
    return converted


def _changed(values: np.ndarray, converted: np.ndarray) -> int | None:
    """The position of the first value the conversion to a datatype changed (an integer wrapped around, a finite
    number overflowed to infinity), or None: the server never hands the model a value the client did not send."""
    if converted.dtype.kind in "iu" and values.dtype.kind in "iu":
        wrapped = np.flatnonzero(converted != values)
    elif converted.dtype.kind == "f":
        wrapped = np.flatnonzero(np.isinf(converted) & ~np.isinf(values))
    else:
        return None
    return int(wrapped[0]) if len(wrapped) else None


def _flatten(data: list[Any], name: str, depth: int = 0) -> Iterator[Any]:
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item, name, depth + 1)
        elif isinstance(item, dict):
            raise RequestError(f"input {shown(name)}: 'data' holds an object; it must be a (nested) list of values")
        else:
            yield item


def _fits(value: Any, datatype: str) -> bool:
    if datatype == "BOOL":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return datatype in _FLOATS or isinstance(value, int)


def _kind_fits(kind: str, datatype: str) -> bool:
    if datatype == "BOOL":
        return kind == "b"
    return kind in "iu" or (kind == "f" and datatype in _FLOATS)


def _wrong_value(name: str, datatype: str, value: Any, position: int) -> str:
    wanted = "true or false" if datatype == "BOOL" else "integers" if datatype in _INTS else "numbers"
    return f"input {shown(name)}: {datatype} data must hold {wanted}, got {shown(value)} at position {position}"


def _native(datatype: str) -> np.dtype:
    return np.dtype("float32") if datatype == "BF16" else FIXED[datatype].newbyteorder("=")


def _check_count(name: str, shape: tuple[int, ...], got: int, count: int) -> None:
    if got != count:
        raise RequestError(f"input {shown(name)}: shape {list(shape)} holds {count:,} value(s) but 'data' has "
                           f"{got:,}")


def _binary_values(name: str, datatype: str, shape: tuple[int, ...], data: memoryview) -> np.ndarray | list[Any]:
    """An input's binary tensor data: little-endian values, or for BYTES a 4-byte length before each element."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _binary_strings(name, shape, data, count)
    layout = FIXED[datatype]
    if len(data) != count * layout.itemsize:
        raise RequestError(f"input {shown(name)}: binary_data_size {len(data):,} does not match shape {list(shape)} "
                           f"of {datatype} ({count * layout.itemsize:,} bytes)")
    if datatype == "BOOL":
        return np.frombuffer(data, np.uint8) != 0
    values = np.frombuffer(data, layout)
    if datatype == "BF16":  # the high half of a float32
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(layout.newbyteorder("="), copy=False)


class RawElements(list):
    """BYTES elements of which some are not UTF-8 text, kept as bytes (images); columns_of refuses them for any
    input but an image column's, with the error the reader would have given."""

    first_raw: int = 0


def _binary_strings(name: str, shape: tuple[int, ...], data: memoryview, count: int) -> list[Any]:
    read = _uniform_strings(data, count)
    if read is None:
        read = _varied_strings(data, count)
    if read is not None:
        return read
    raw, at = bytes(data), 0
    found: list[Any] = []
    first_raw = None
    while at < len(raw):
        if at + 4 > len(raw):
            raise RequestError(f"input {shown(name)}: BYTES element {len(found)} has a cut length prefix "
                               f"({len(raw) - at} of 4 bytes)")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise RequestError(f"input {shown(name)}: BYTES element {len(found)} says {size:,} bytes but only "
                               f"{len(raw) - at:,} are left of its binary_data_size")
        try:
            found.append(raw[at:at + size].decode("utf-8"))
        except UnicodeDecodeError:
            first_raw = len(found) if first_raw is None else first_raw
            found.append(raw[at:at + size])  # an image, or an error once the input's column is known
        at += size
    if len(found) != count:
        raise RequestError(f"input {shown(name)}: shape {list(shape)} holds {count:,} element(s) but its binary "
                           f"data has {len(found):,}")
    if first_raw is not None:
        kept = RawElements(found)
        kept.first_raw = first_raw
        return kept
    return found


def _uniform_strings(data: memoryview, count: int) -> list[str] | None:
    """BYTES elements that all have the same length (category codes often do), read by Arrow without a loop per
    element; None for any other data, and for data the loop refuses (it says what is wrong)."""
    if not count or len(data) < 4:
        return None
    size = int.from_bytes(data[:4], "little")
    if len(data) != count * (4 + size) or count * size >= 1 << 31:
        return None
    rows = np.frombuffer(data, np.uint8).reshape(count, 4 + size)
    if not (rows[:, :4] == rows[0, :4]).all():
        return None
    return _utf8_strings(np.arange(count + 1, dtype=np.int32) * np.int32(size), np.ascontiguousarray(rows[:, 4:]))


def _utf8_strings(offsets: np.ndarray, text: np.ndarray) -> list[str] | None:
    """Strings laid out as Arrow holds them (int32 offsets, their bytes back to back), checked as UTF-8 by Arrow at
    once; None where one is not."""
    strings = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(text))
    try:
        strings.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return strings.to_pylist()


_LENGTH = struct.Struct("<I")


def _varied_strings(data: memoryview, count: int) -> list[str] | None:
    """BYTES elements of various lengths: only their lengths read one by one, the texts cut out and checked as UTF-8
    by Arrow at once (about half the loop's cost); None for data the loop refuses (it says what is wrong)."""
    if not count:
        return None
    raw = bytes(data)
    sizes: list[int] = []
    unpack, append, at, end = _LENGTH.unpack_from, sizes.append, 0, len(raw)
    try:
        while at < end:
            (size,) = unpack(raw, at)
            append(size)
            at += 4 + size
    except struct.error:  # a cut length prefix
        return None
    if at != end or len(sizes) != count:
        return None
    lengths = np.array(sizes, dtype=np.int64)
    if int(lengths.sum()) >= 1 << 31:
        return None
    prefixes = (np.cumsum(lengths + 4) - lengths - 4)[:, None] + np.arange(4)  # where each length prefix lies
    text = np.ones(end, dtype=bool)
    text[prefixes.ravel()] = False
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return _utf8_strings(offsets, np.frombuffer(raw, np.uint8)[text])


def _outputs(value: Any, binary_output: bool) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise RequestError(f"'outputs' must be a list of objects with a name, got {_kind(value)}")
    found = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise RequestError(f"outputs[{i}] must be an object with a 'name', got {shown(entry)}")
        where = f"output {shown(entry['name'])}"
        parameters = _parameters(entry.get("parameters"), f"{where}'s 'parameters'")
        binary = parameters.get("binary_data", binary_output)
        if not isinstance(binary, bool):
            raise RequestError(f"{where}: binary_data must be true or false, got {shown(binary)}")
        k = parameters.get("classification", 0)
        if not _is_count(k):
            raise RequestError(f"{where}: classification must be a number of classes >= 0, got {shown(k)}")
        found.append(RequestedOutput(entry["name"], binary, k))
    return found


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{where} must be an object, got {_kind(value)}")
    return value


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(f"{where} {name!r} must be true or false, got {shown(value)}")
    return value


# -- inputs as columns ----------------------------------------------------------------------------------


def columns_of(spec: ModelSpec, request: InferRequest) -> tuple[Mapping[str, np.ndarray | list[Any]], int]:
    """The request's inputs as columns of rows for the model's schema, and the row count.

    Each input is one column: [n] or [n, 1] for a column of single values, [n, *shape] for a column whose rows
    hold shape values; its datatype must be one the column's dtype accepts. An input the schema does not know is
    passed on as it is, for validation to refuse with its usual message.
    """
    images = {i.name for i in spec.inputs if i.dtype == "image"}
    if not images and request.inputs.columns is None:  # the general reader's inputs: it keeps bytes not UTF-8
        for name, values in zip(request.inputs.names, request.inputs.values, strict=True):
            if isinstance(values, RawElements):  # bytes only an image column takes
                raise RequestError(f"input {shown(name)}: BYTES element {values.first_raw} is not UTF-8 text")
    fast = None if images else _fast_columns(spec, request.inputs)
    if fast is not None:
        return fast
    columns: dict[str, np.ndarray | list[Any]] = {}
    rows: dict[str, int] = {}
    for tensor in request.inputs:
        column = spec.input(tensor.name)
        values = tensor.values
        if tensor.name in images and tensor.datatype == "BYTES":
            values = image_elements(tensor.name, values)
        elif isinstance(values, RawElements):
            raise RequestError(f"input {shown(tensor.name)}: BYTES element {values.first_raw} is not UTF-8 text")
        if column is not None and column.dtype in ACCEPTED and tensor.datatype not in ACCEPTED[column.dtype]:
            raise RequestError(_wrong_datatype(tensor, column))
        shape = tensor.shape
        per_row = column.shape[1:] if column is not None else shape[1:]
        if len(shape) == 2 and shape[1] == 1 and (column is None or not per_row):
            shape, per_row = shape[:1], ()
        if shape[1:] != per_row:
            rows_of = "[rows]" if not per_row else str([-1, *per_row]).replace("-1", "rows")
            raise RequestError(f"input {shown(tensor.name)}: shape {list(tensor.shape)} does not fit the column, "
                               f"whose rows hold {list(per_row) or 'one value'}: send shape {rows_of}"
                               + (" or [rows, 1]" if not per_row else ""))
        rows[tensor.name] = shape[0]
        columns[tensor.name] = _column_values(values, shape)
    counts = set(rows.values())
    if len(counts) > 1:
        first, *others = rows.items()
        other = next(item for item in others if item[1] != first[1])
        raise RequestError(f"the inputs disagree on the number of rows: input {shown(first[0])} has {first[1]:,}, "
                           f"input {shown(other[0])} has {other[1]:,}")
    n = counts.pop()
    if not n:
        raise RequestError("the inputs hold no rows")
    return columns, n


def image_elements(name: str, values: Any) -> list[Any]:
    """An image input's BYTES elements as the encoded images: bytes as they came in binary data, text as the base64
    of the file (JSON), or, where it is no base64, as its UTF-8 bytes (binary data that happened to be text); a
    client's text is never read as a path on the server."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                value = value.encode("utf-8")
        out.append(value)
    return out


def _fast_columns(spec: ModelSpec, inputs: Inputs) -> tuple[Mapping[str, np.ndarray | list[Any]], int] | None:
    """columns_of for inputs of single-value columns the model knows, each of shape [n] or [n, 1] and an accepted
    datatype, all of the same n > 0; None for anything else (columns_of then says what is wrong)."""
    shapes = inputs.shapes
    n = shapes[0][0] if shapes and shapes[0] else 0
    where = None if inputs.columns is None else inputs.columns.layout
    names, datatypes = (tuple(inputs.names), tuple(inputs.datatypes)) if where is None else (where.names, where.groups)
    if n <= 0 or not set(shapes) <= {(n,), (n, 1)} or not spec.takes(names, datatypes):
        return None
    return (inputs.columns if inputs.columns is not None else dict(zip(inputs.names, inputs.values, strict=True))), n


def _wrong_datatype(tensor: InferInput, column: TensorSpec) -> str:
    accepted = ACCEPTED[column.dtype]
    also = f" ({', '.join(accepted[1:])} accepted too)" if len(accepted) > 1 else ""
    return (f"input {shown(tensor.name)}: datatype {tensor.datatype} does not match the model input, a "
            f"{column.dtype} column: send {accepted[0]}{also}")


def _column_values(values: np.ndarray | list[Any], shape: tuple[int, ...]) -> np.ndarray | list[Any]:
    if len(shape) == 1:
        return values
    if isinstance(values, np.ndarray):
        return values.reshape(shape)
    width = math.prod(shape[1:])
    rows = [values[i:i + width] for i in range(0, len(values), width)]
    return rows if len(shape) == 2 else [np.asarray(r).reshape(shape[1:]).tolist() for r in rows]


# -- responses ------------------------------------------------------------------------------------------


def check_outputs(spec: ModelSpec, request: InferRequest) -> None:
    """Refuse requested outputs the model does not give (and classification asked of an output that is not a
    classifier's) before any row is predicted."""
    for output in request.outputs or ():
        if output.classification:
            classes = spec.classes.get(output.name)
            if classes is None:
                heads = f"; its classification outputs: {quoted(list(spec.classes))}" if spec.classes else \
                    "; this model has no classification head"
                raise RequestError(f"output {shown(output.name)}: the classification extension needs a "
                                   f"classification head's output{heads}")
            if not all(classes.probabilities) and not classes.binary and output.classification > len(classes.top):
                raise RequestError(f"output {shown(output.name)}: classification {output.classification} needs the "
                                   f"per-label probabilities, which this bundle does not output (its head has "
                                   f"probabilities=False and top_k={len(classes.top)})")
        elif output.name not in spec.output_names:
            column = spec.input(output.name)
            if column is None or not column.optional:
                raise RequestError(f"unknown output {shown(output.name)}; the model's outputs are "
                                   f"{quoted(list(spec.output_names))}")
            if output.name not in {tensor.name for tensor in request.inputs}:
                raise RequestError(f"output {shown(output.name)} is a passthrough column: send it as an input to "
                                   "have it back")


def encode_response(spec: ModelSpec, request: InferRequest, table: pa.Table) -> tuple[bytes, int | None]:
    """The response to a request whose predictions are table: the body, and the length of its JSON header when
    binary tensor data follows it (the Inference-Header-Content-Length), else None."""
    wanted = request.outputs
    if wanted is None:
        wanted = spec.default_outputs(request.binary_output)
    entries, blobs = [], []
    for output in wanted:
        values: np.ndarray | list[str]
        if output.classification:
            datatype, shape, values = "BYTES", *_classification(spec.classes[output.name], table,
                                                                output.classification)
        else:
            datatype, shape, values = _output_values(table.column(output.name))
        entry: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": list(shape)}
        if output.binary:
            blob = _binary(datatype, values)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = values if datatype == "BYTES" else _json_ready(values)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": spec.name, "model_version": spec.version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = entries
    header = orjson.dumps(document, option=JSON_OPTIONS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _output_values(column: pa.ChunkedArray) -> tuple[str, tuple[int, ...], np.ndarray | list[str]]:
    """An output column as a datatype, a shape and its values flat: a list column as [n, k] (rows shorter than
    the longest padded with "", NaN, 0 or false)."""
    array = column if not isinstance(column, pa.ChunkedArray) else column.chunk(0) if column.num_chunks == 1 else \
        column.combine_chunks()
    datatype = _SCALAR_DATATYPES.get(array.type)  # the usual types, told without asking pa.types
    if datatype is None:
        arrow = array.type
        if pa.types.is_fixed_size_list(arrow) or pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
            return _list_values(array)
        datatype = _scalar_datatype(arrow)
    return datatype, (len(array),), _flat_values(array, datatype)


_SCALAR_DATATYPES = {arrow: _scalar_datatype(arrow) for arrow in (
    pa.bool_(), pa.float16(), pa.float32(), pa.float64(), pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(),
    pa.uint16(), pa.uint32(), pa.uint64(), pa.string())}


def _list_values(array: pa.Array) -> tuple[str, tuple[int, ...], np.ndarray | list[str]]:
    n = len(array)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(array), 0), dtype=np.int64)
    width = int(lengths.max()) if n else 0
    inner = pc.list_flatten(array)
    datatype = _scalar_datatype(inner.type)
    flat = _flat_values(inner, datatype)
    if (lengths == width).all():
        return datatype, (n, width), flat
    positions = np.repeat(np.arange(n) * width - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    positions += np.arange(len(positions))
    if isinstance(flat, list):
        padded: list[str] = [""] * (n * width)
        for at, value in zip(positions.tolist(), flat, strict=True):
            padded[at] = value
        return datatype, (n, width), padded
    fill = np.nan if flat.dtype.kind == "f" else 0
    out = np.full(n * width, fill, dtype=flat.dtype)
    out[positions] = flat
    return datatype, (n, width), out


def _flat_values(array: pa.Array, datatype: str) -> np.ndarray | list[str]:
    if datatype == "BYTES":
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            array = pc.cast(array, pa.string())
        values = array.to_pylist()
        return values if not array.null_count else [value if value is not None else "" for value in values]
    if array.null_count:
        fill = float("nan") if pa.types.is_floating(array.type) else False if datatype == "BOOL" else 0
        array = pc.fill_null(array, pa.scalar(fill, array.type))
    return np.ascontiguousarray(array.to_numpy(zero_copy_only=False))


def _classification(classes: Classes, table: pa.Table, k: int) -> tuple[tuple[int, ...], list[str]]:
    """The top k classes of each row as "probability:index:label", most probable first (ties in label order)."""
    n = table.num_rows
    if classes.binary:
        positive = table.column(classes.probabilities[1]).to_numpy().astype(np.float32)
        probabilities = np.stack([np.float32(1) - positive, positive], axis=1)
    elif all(classes.probabilities):
        probabilities = np.stack([table.column(p).to_numpy() for p in classes.probabilities], axis=1)
    else:  # only the head's top_k columns: already in order
        index = {label: i for i, label in enumerate(classes.labels)}
        k = min(k, len(classes.top))
        labels = [[str(v) for v in table.column(label).to_pylist()] for label, _ in classes.top[:k]]
        scores = [table.column(p).to_numpy() for _, p in classes.top[:k]]
        text = [f"{_number(scores[j][i])}:{index[labels[j][i]]}:{labels[j][i]}" for i in range(n) for j in range(k)]
        return (n, k), text
    k = min(k, len(classes.labels))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    chosen = np.take_along_axis(probabilities, order, axis=1)
    text = [f"{_number(p)}:{j}:{classes.labels[j]}" for p, j in zip(chosen.ravel().tolist(),
                                                                     order.ravel().tolist(), strict=True)]
    return (n, k), text


def _number(value: Any) -> str:
    """A probability as its shortest text that reads back as the same float32."""
    return str(np.float32(value))


def _binary(datatype: str, values: np.ndarray | list[str]) -> bytes:
    if datatype == "BYTES":
        encoded = [v.encode("utf-8") for v in values]
        return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    assert isinstance(values, np.ndarray)
    return values.astype(FIXED[datatype], copy=False).tobytes()


def _json_ready(values: np.ndarray | list[str]) -> Any:
    """Values orjson writes as JSON: numpy arrays of the types it knows, others as lists."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub" and values.dtype != np.float16:
        return values
    return values.tolist() if isinstance(values, np.ndarray) else values


# -- small checks ---------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), shown(value))
