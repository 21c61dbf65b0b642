"""The codec's fast path for the common request shape against its general path: on generated requests, valid and
malformed, JSON and binary, both give the same inputs and columns, or the same RequestError message."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchpredict.server import oip
from torchpredict.server.oip import ModelSpec, RequestError, TensorSpec

SPEC = ModelSpec(
    name="shop",
    version="3",
    inputs=(TensorSpec("price", "FP64", (-1,), "float64"), TensorSpec("city", "BYTES", (-1,), "string"),
            TensorSpec("rooms", "INT64", (-1,), "int64"), TensorSpec("small", "FP32", (-1,), "float32"),
            TensorSpec("ok", "BOOL", (-1,), "bool"), TensorSpec("pixels", "FP32", (-1, 3), "float32"),
            TensorSpec("id", "BYTES", (-1,), "string", optional=True)),
    outputs=(TensorSpec("band", "BYTES", (-1,)),),
)
NAMES = ("price", "city", "rooms", "small", "ok", "pixels", "id", "other")

scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-2 ** 70, 2 ** 70),
    st.integers(-1000, 1000), st.sampled_from([2 ** 53, -(2 ** 53), 2 ** 63 - 1, 2 ** 63, 2 ** 64, 2 ** 24 + 1]),
    st.booleans(), st.none(), st.text(max_size=3))


@st.composite
def entries(draw: Any) -> tuple[dict[str, Any], bytes]:
    """One input tensor (mostly well formed, sometimes not in one way or another) and its binary data."""
    datatype = draw(st.sampled_from([*oip.DATATYPES, "FLOAT", None]))
    n = draw(st.integers(0, 3))
    shape: Any = draw(st.sampled_from([[n], [n], [n, 1], [n, 3], [], [n, 1, 1], [True], [-1], [n, True], "n"]))
    entry: dict[str, Any] = {"name": draw(st.sampled_from([*NAMES, "", 7])), "datatype": datatype, "shape": shape}
    binary = b""
    how = draw(st.sampled_from(["json", "json", "json", "binary", "scalar", "nested", "both", "none"]))
    count = n * (3 if shape == [n, 3] else 1)
    if how in ("json", "both", "nested"):
        if datatype in ("FP64", "FP32", "FP16", "BF16"):
            kind = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2 ** 60, 2 ** 60))
        elif datatype in ("INT64", "INT32", "INT8", "UINT8", "UINT64"):
            kind = st.integers(-2 ** 64, 2 ** 64)
        elif datatype == "BOOL":
            kind = st.booleans()
        else:
            kind = st.text(max_size=3)
        values = st.one_of(kind, scalars) if draw(st.booleans()) else kind
        size = draw(st.sampled_from([count, count, count + 1, max(count - 1, 0)]))
        data = draw(st.lists(values, min_size=size, max_size=size))
        entry["data"] = [[v] for v in data] if how == "nested" else data
    if how == "scalar":
        entry["data"] = draw(scalars)
    if how in ("binary", "both"):
        layout = oip.FIXED.get(datatype or "", np.dtype("<f8"))
        if datatype == "BYTES":
            texts = draw(st.lists(st.text(max_size=3), min_size=count, max_size=count))
            binary = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
        else:
            binary = draw(st.binary(min_size=count * layout.itemsize, max_size=count * layout.itemsize))
        size = draw(st.sampled_from([len(binary), len(binary), len(binary) + 1, True, "8"]))
        entry["parameters"] = {"binary_data_size": size}
        if draw(st.booleans()) and draw(st.booleans()):
            entry["parameters"]["other"] = 1
    if draw(st.integers(0, 9)) == 0:
        entry["extra"] = 1
    return entry, binary


GOOD = {"price": ("FP64", "FP32", "FP16", "BF16"), "small": ("FP32", "FP64"), "rooms": ("INT64", "INT32", "UINT8"),
        "ok": ("BOOL",), "city": ("BYTES",), "id": ("BYTES",)}
VALUES = {"F": st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-2 ** 24, 2 ** 24)),
          "I": st.integers(-100, 100), "U": st.integers(0, 255), "B": st.booleans(),
          "S": st.one_of(st.text(max_size=3), st.none())}


@st.composite
def good_entries(draw: Any, n: int) -> tuple[dict[str, Any], bytes]:
    """An input the fast path takes: a known single-value column, an accepted datatype, [n] or [n, 1]."""
    name = draw(st.sampled_from(sorted(GOOD)))
    datatype = draw(st.sampled_from(GOOD[name]))
    shape = draw(st.sampled_from([[n], [n, 1]]))
    kind = "B" if datatype == "BOOL" else "S" if datatype == "BYTES" else "U" if datatype == "UINT8" else \
        "I" if datatype.startswith("INT") else "F"
    data = draw(st.lists(VALUES[kind], min_size=n, max_size=n))
    if kind != "S" and draw(st.integers(0, 3)) == 0:
        array = np.asarray(data, dtype=oip.FIXED[datatype] if datatype != "BF16" else "<f4")
        blob = array.tobytes() if datatype != "BF16" else (array.view(np.uint32) >> 16).astype("<u2").tobytes()
        return {"name": name, "datatype": datatype, "shape": shape,
                "parameters": {"binary_data_size": len(blob)}}, blob
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}, b""


@st.composite
def requests(draw: Any) -> tuple[bytes, str | None]:
    n = draw(st.integers(1, 3))
    drawn = draw(st.lists(st.one_of(good_entries(n), good_entries(n), entries()), min_size=0, max_size=6))
    if drawn and draw(st.booleans()):  # each name once, as most requests
        drawn = list({entry["name"]: (entry, blob) for entry, blob in drawn}.values())
    document: dict[str, Any] = {"inputs": [entry for entry, _ in drawn]}
    binary = b"".join(blob for _, blob in drawn)
    if draw(st.integers(0, 9)) == 0:
        binary += b"x"
    header = json.dumps(document).encode()  # json: orjson writes no ints beyond 64 bits
    if binary or draw(st.integers(0, 5)) == 0:
        return header + binary, str(len(header))
    return header, None


def outcome(body: bytes, header: str | None) -> Any:
    """What parse_request and columns_of make of a request: its inputs and columns, or the error message."""
    try:
        request = oip.parse_request(body, header)
    except RequestError as exc:
        return "parse", str(exc)
    inputs = [(t.name, t.datatype, t.shape, _plain(t.values)) for t in request.inputs]
    try:
        columns, n = oip.columns_of(SPEC, request)
    except RequestError as exc:
        return inputs, str(exc)
    return inputs, {name: _plain(values) for name, values in columns.items()}, n


def _plain(values: Any) -> Any:
    if isinstance(values, np.ndarray):
        return values.dtype.str, values.shape, values.tobytes()
    return type(values).__name__, repr(values)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # good_entries' FP16 blobs
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_fast_and_general_paths_agree(monkeypatch_request: Any) -> None:
    body, header = monkeypatch_request
    fast = outcome(body, header)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(oip, "_fast_inputs", lambda value, binary: None)
        patch.setattr(oip, "_fast_columns", lambda spec, inputs: None)
        general = outcome(body, header)
    assert fast == general


def test_the_fast_path_takes_the_common_shape() -> None:
    document = {"inputs": [{"name": "price", "datatype": "FP64", "shape": [2], "data": [1.5, 2]},
                           {"name": "city", "datatype": "BYTES", "shape": [2, 1], "data": ["oslo", None]},
                           {"name": "rooms", "datatype": "INT32", "shape": [2], "data": [3, 4]},
                           {"name": "small", "datatype": "FP32", "shape": [2], "data": [0.1, 7]}]}
    inputs = oip._fast_inputs(document["inputs"], memoryview(b""))
    assert inputs is not None
    columns = oip._fast_columns(SPEC, inputs)
    assert columns is not None
    found, n = columns
    assert n == 2 and found["city"] == ["oslo", None]
    assert found["rooms"].dtype == np.int32 and found["rooms"].tolist() == [3, 4]
    assert found["price"].tolist() == [1.5, 2.0] and found["small"].dtype == np.float32
    blob = np.array([1.5, -2.0]).tobytes()
    binary = [{"name": "price", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}}]
    read = oip._fast_inputs(binary, memoryview(blob))
    assert read is not None and read[0].values.tolist() == [1.5, -2.0]  # type: ignore[union-attr]
