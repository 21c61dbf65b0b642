"""Fuzzing the server's request readers, alone and through a real `torchpredict serve` on 127.0.0.1: Open Inference
Protocol JSON and binary requests built to lie (shapes that do not match the data, datatypes that do not match
the values, binary_data_size and Inference-Header-Content-Length that disagree with the body) and records
requests of odd JSON. The readers raise only their one-line request errors; the server answers every such
request with a status below 500 and, for an error, a JSON body holding one short message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import FUZZ, corpus
from live_server import Server, start_server, stop
from torchpredict.errors import TorchPredictError
from torchpredict.server.oip import parse_request
from torchpredict.server.records import parse_records

WINE = Path(__file__).parents[1] / "data" / "wine-v1"
NAMES = [n.strip('"') for n in (WINE / "new_wines.csv").read_text().splitlines()[0].split(",")]
DATATYPES = ["FP32", "FP64", "FP16", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES", "BF16", "XYZ", "", 7]

_json = st.recursive(st.none() | st.booleans() | st.floats() | st.integers(-2**70, 2**70) | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner,
                                                                                 max_size=3), max_leaves=15)


@st.composite
def tensors(draw: st.DrawFn, binary: bool) -> tuple[dict, bytes]:
    """One input tensor (its JSON entry, and its binary data when binary) that may lie in any of its fields."""
    rows = draw(st.integers(0, 5))
    shape = draw(st.one_of(st.just([rows]), st.just([rows, 1]), st.lists(st.integers(-3, 2**62), max_size=3),
                           _json))
    datatype = draw(st.sampled_from(DATATYPES))
    entry: dict = {"name": draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=4), _json)),
                   "datatype": datatype, "shape": shape}
    payload = b""
    if binary:
        payload = draw(st.binary(max_size=64))
        size = draw(st.one_of(st.just(len(payload)), st.integers(-5, 200), _json))
        entry["parameters"] = {"binary_data_size": size}
    else:
        entry["data"] = draw(st.one_of(st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=3),
                                                          st.booleans()), max_size=rows + 2), _json))
    if draw(st.booleans()):
        entry.pop(draw(st.sampled_from(["name", "datatype", "shape"])), None)
    return entry, payload


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """An OIP infer body and its Inference-Header-Content-Length (None: a JSON request)."""
    binary = draw(st.booleans())
    entries = draw(st.lists(tensors(binary), max_size=15))
    document: dict = {"inputs": [e for e, _ in entries]}
    if draw(st.booleans()):
        document["outputs"] = draw(st.one_of(st.lists(st.fixed_dictionaries(
            {"name": st.text(max_size=8)}, optional={"parameters": _json}), max_size=3), _json))
    if draw(st.booleans()):
        document["parameters"] = draw(st.one_of(st.dictionaries(st.sampled_from(
            ["binary_data_output", "rejects", "keep", "classification"]), _json, max_size=3), _json))
    if draw(st.integers(0, 9)) == 0:
        document = draw(_json)  # not even an object
    header = json.dumps(document).encode()  # Python's JSON: integers of any size, NaN and Infinity too
    if not binary:
        return header, None
    tail = b"".join(p for _, p in entries) + draw(st.binary(max_size=8))
    length = draw(st.one_of(st.just(str(len(header))), st.integers(-3, len(header) + len(tail) + 3).map(str),
                            st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4)))
    return header + tail, length


@st.composite
def records_bodies(draw: st.DrawFn) -> bytes:
    rows = st.lists(st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=4)),
                                    st.one_of(st.floats(), st.integers(), st.text(max_size=3), _json), max_size=15),
                    max_size=4)
    document = draw(st.one_of(rows, st.fixed_dictionaries({"rows": rows}, optional={
        "keep": _json, "rejects": _json, "columns": _json}), _json))
    body = json.dumps(document).encode()
    return body if draw(st.integers(0, 9)) else body[:draw(st.integers(0, len(body)))]  # sometimes cut short


def _refused_in_one_line(call) -> None:
    try:
        call()
    except TorchPredictError as exc:
        assert str(exc) and len(str(exc)) < 1000 and "\n" not in str(exc), str(exc)


@FUZZ
@given(body=infer_bodies())
def test_the_oip_reader_parses_or_says_what_is_wrong(body: tuple[bytes, str | None]):
    _refused_in_one_line(lambda: parse_request(*body))


@FUZZ
@given(body=records_bodies())
def test_the_records_reader_parses_or_says_what_is_wrong(body: bytes):
    _refused_in_one_line(lambda: parse_records(body))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("served")
    (folder / "wine.tpk").symlink_to(WINE / "wine.tpk")
    server = start_server(folder, tmp_path_factory.mktemp("logs") / "server.log", "--max-body-mb", "1")
    yield server
    stop(server)


def _answered_below_500(reply) -> None:
    assert reply.status < 500, (reply.status, reply.body[:500])
    if reply.status >= 400:
        message = orjson.loads(reply.body)["error"]
        assert message and len(message) < 1000, message


@FUZZ
@given(body=infer_bodies())
def test_the_server_answers_every_infer_request_below_500(server: Server, body: tuple[bytes, str | None]):
    data, length = body
    headers = {} if length is None else {"Inference-Header-Content-Length": length}
    _answered_below_500(server.request("POST", "/v2/models/wine/infer", data, headers))


@FUZZ
@given(body=records_bodies())
def test_the_server_answers_every_records_request_below_500(server: Server, body: bytes):
    _answered_below_500(server.request("POST", "/v2/models/wine/records", body))


@pytest.mark.parametrize("path", corpus("payloads"), ids=lambda p: p.name)
def test_the_kept_requests_are_answered_below_500(server: Server, path: Path):
    """Files named *.infer.json / *.records.json are sent as they are; *.infer.bin carries its header length
    in its first line."""
    data = path.read_bytes()
    if path.name.endswith(".infer.bin"):
        length, _, data = data.partition(b"\n")
        reply = server.request("POST", "/v2/models/wine/infer", data,
                               {"Inference-Header-Content-Length": length.decode()})
    else:
        route = "records" if path.name.endswith(".records.json") else "infer"
        reply = server.request("POST", f"/v2/models/wine/{route}", data)
    _answered_below_500(reply)
