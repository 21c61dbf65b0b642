"""The Open Inference Protocol V2 codec and the records codec, without a server or a model: request bodies made by
tritonclient itself, responses read back by tritonclient's own parser, and every way a request can lie refused
with a message naming the input."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pyarrow as pa
import pytest
import tritonclient.http as triton
from hypothesis import given, settings
from hypothesis import strategies as st

from torchpredict.server import oip
from torchpredict.server.oip import Classes, ModelSpec, RequestError, TensorSpec
from torchpredict.server.records import encode_records, parse_records

SPEC = ModelSpec(
    name="shop",
    version="3",
    inputs=(TensorSpec("price", "FP64", (-1,), "float64"), TensorSpec("city", "BYTES", (-1,), "string"),
            TensorSpec("rooms", "INT64", (-1,), "int64"), TensorSpec("pixels", "FP32", (-1, 3), "float32"),
            TensorSpec("id", "BYTES", (-1,), "string", optional=True)),
    outputs=(TensorSpec("band", "BYTES", (-1,)), TensorSpec("band_probability", "FP32", (-1,))),
    classes={"band": Classes("band", ("low", "high"), ("band_probability_low", "band_probability_high"))},
)


def body_of(inputs: list, outputs: list | None = None, **options) -> tuple[bytes, str | None]:
    """What tritonclient.http would POST for these inputs, and its Inference-Header-Content-Length."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs, **options)
    return body, None if json_size is None else str(json_size)


def tensor(name: str, array: np.ndarray, datatype: str, *, binary: bool = True) -> triton.InferInput:
    entry = triton.InferInput(name, list(array.shape), datatype)
    entry.set_data_from_numpy(array, binary_data=binary)
    return entry


def request_of(*inputs: triton.InferInput, outputs: list | None = None, **options) -> oip.InferRequest:
    return oip.parse_request(*body_of(list(inputs), outputs, **options))


def raw(document: dict, binary: bytes = b"") -> tuple[bytes, str | None]:
    header = orjson.dumps(document)
    return header + binary, (str(len(header)) if binary else None)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_bodies_read_as_columns_binary_and_json(binary: bool):
    price = np.array([1.5, 2.25, -3.0])
    city = np.array(["oslo", "lima", "ünïcode"], dtype=object)
    rooms = np.array([[1], [2], [3]], dtype=np.int64)  # [n, 1] is a column too
    pixels = np.arange(9, dtype=np.float32).reshape(3, 3)
    request = request_of(tensor("price", price, "FP64", binary=binary), tensor("city", city, "BYTES", binary=binary),
                         tensor("rooms", rooms, "INT64", binary=binary),
                         tensor("pixels", pixels, "FP32", binary=binary), request_id="r-1")
    assert request.id == "r-1"
    columns, rows = oip.columns_of(SPEC, request)
    assert rows == 3
    assert columns["price"].tolist() == price.tolist() and columns["price"].dtype == np.float64
    assert list(columns["city"]) == ["oslo", "lima", "ünïcode"]
    assert columns["rooms"].tolist() == [1, 2, 3]
    assert np.asarray(columns["pixels"]).tolist() == pixels.tolist()


def test_other_widths_are_accepted_and_bf16_fp16_read_as_floats():
    half = np.array([0.5, 1.25], dtype=np.float16)
    request = request_of(tensor("price", half, "FP16"), tensor("rooms", np.array([1, 2], np.int32), "INT32"))
    columns, _ = oip.columns_of(SPEC, request)
    assert columns["price"].tolist() == [0.5, 1.25] and columns["rooms"].tolist() == [1, 2]
    bf16 = (np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    document = {"inputs": [{"name": "price", "datatype": "BF16", "shape": [2],
                            "parameters": {"binary_data_size": len(bf16)}}]}
    columns, _ = oip.columns_of(SPEC, oip.parse_request(*raw(document, bf16)))
    assert columns["price"].tolist() == [1.5, -2.0]


def test_nested_json_data_and_nulls():
    document = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]},
                           {"name": "price", "datatype": "FP64", "shape": [2], "data": [1.0, None]}]}
    columns, rows = oip.columns_of(SPEC, oip.parse_request(*raw(document)))
    assert rows == 2 and np.asarray(columns["pixels"]).shape == (2, 3)
    assert columns["price"] == [1.0, None]  # a null goes on to validation, which names the row


@pytest.mark.parametrize(("document", "binary", "message"), [
    ({"inputs": [{"name": "price", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 12}}]},
     b"\0" * 12, r"input 'price': binary_data_size 12 does not match shape \[2\] of FP64 \(16 bytes\)"),
    ({"inputs": [{"name": "price", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}]},
     b"\0" * 12, r"carries 12 bytes of binary tensor data but the inputs' binary_data_size add up to 8"),
    ({"inputs": [{"name": "city", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 9}}]},
     struct.pack("<I", 1) + b"a" + struct.pack("<I", 9), r"input 'city': BYTES element 1 says 9 bytes but only 0"),
    ({"inputs": [{"name": "city", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": 5}}]},
     struct.pack("<I", 1) + b"a", r"input 'city': shape \[3\] holds 3 element\(s\) but its binary data has 1"),
    ({"inputs": [{"name": "price", "datatype": "FP64", "shape": [1], "data": [1.0],
                  "parameters": {"binary_data_size": 8}}]}, b"\0" * 8, r"both 'data' and a binary_data_size"),
])
def test_binary_data_that_disagrees_with_its_sizes_is_refused(document: dict, binary: bytes, message: str):
    with pytest.raises(RequestError, match=message):
        oip.parse_request(*raw(document, binary))


def test_binary_bytes_that_are_not_utf8_are_refused_for_a_string_column_and_kept_for_an_image_one():
    document = {"inputs": [{"name": "city", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 10}}]}
    request = oip.parse_request(*raw(document, struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"\xff"))
    with pytest.raises(RequestError, match=r"^input 'city': BYTES element 1 is not UTF-8 text$"):
        oip.columns_of(SPEC, request)
    images = ModelSpec(name="photos", version="1", inputs=(TensorSpec("city", "BYTES", (-1,), "image"),),
                       outputs=SPEC.outputs)
    columns, rows = oip.columns_of(images, request)
    assert rows == 2 and columns["city"] == [b"a", b"\xff"]  # as sent: text as its UTF-8, bytes as they are


def _element_by_element(data: bytes, count: int) -> list[str] | str:
    """What _binary_strings' loop makes of the data: the texts, or its error message."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(oip, "_uniform_strings", lambda data, count: None)
        patch.setattr(oip, "_varied_strings", lambda data, count: None)
        try:
            return oip._binary_strings("city", (count,), memoryview(data), count)
        except RequestError as exc:
            return str(exc)


def _spoilt(texts: list[str], change: str, shortest_cut: int) -> tuple[list[bytes], bytes, int]:
    """The texts as BYTES binary data, spoilt as change says (a UTF-8 cut in the elements of at least shortest_cut
    bytes); the elements, the data and the element count the request claims."""
    encoded = [t.encode() for t in texts]
    if change == "utf-8 cut" and any(len(e) >= shortest_cut for e in encoded):
        encoded = [e[:-1] + b"\xff" if len(e) >= shortest_cut else e for e in encoded]
    elif change == "a longer one":
        encoded[-1] += b"x"
    data = b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    count = len(encoded) + (change == "an extra element")
    if change == "a byte short":
        data = data[:-1]
    elif change == "a cut prefix":
        data += b"\x01\x00"
    return encoded, data, count


def _read_as_the_loop_reads(data: bytes, count: int) -> list[str] | str:
    """What _binary_strings makes of the data (the texts, or its error message), checked to be the loop's."""
    try:
        got: list[str] | str = oip._binary_strings("city", (count,), memoryview(data), count)
    except RequestError as exc:
        got = str(exc)
    assert got == _element_by_element(data, count)
    return got


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4).flatmap(lambda size: st.lists(st.text(min_size=size, max_size=size), min_size=1,
                                                        max_size=9)),  # one length in characters, often in bytes
       st.sampled_from(["as is", "utf-8 cut", "a longer one", "a byte short", "an extra element"]))
def test_binary_strings_of_one_length_are_read_at_once_as_element_by_element(texts: list[str], change: str):
    encoded, data, count = _spoilt(texts, change, shortest_cut=2)
    got = _read_as_the_loop_reads(data, count)
    if change == "as is":
        assert got == texts
        if len({len(e) for e in encoded}) == 1:  # one length in bytes: read at once
            assert oip._uniform_strings(memoryview(data), count) == texts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=1, max_size=12),
       st.sampled_from(["as is", "utf-8 cut", "a longer one", "a byte short", "an extra element", "a cut prefix"]))
def test_binary_strings_of_various_lengths_read_at_once_as_element_by_element(texts: list[str], change: str):
    _, data, count = _spoilt(texts, change, shortest_cut=1)
    got = _read_as_the_loop_reads(data, count)
    if change == "as is":
        assert got == texts and oip._varied_strings(memoryview(data), count) == texts  # read at once


def test_the_header_length_must_fit_the_body():
    body = orjson.dumps({"inputs": []})
    with pytest.raises(RequestError, match=r"Inference-Header-Content-Length is 999 but the request body has"):
        oip.parse_request(body, "999")
    with pytest.raises(RequestError, match=r"must be a number of bytes, got 'ten'"):
        oip.parse_request(body, "ten")
    with pytest.raises(RequestError, match=r"not valid JSON.*needs the Inference-Header-Content-Length header"):
        oip.parse_request(body + b"\x00\x01binary")


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "price", "datatype": "BYTES", "shape": [1], "data": ["1.5"]},
     r"input 'price': datatype BYTES does not match the model input, a float64 column: send FP64 \(FP32, FP16, BF16 "
     r"accepted too\)"),
    ({"name": "city", "datatype": "FP32", "shape": [1], "data": [1.0]},
     r"input 'city': datatype FP32 does not match the model input, a string column: send BYTES$"),
    ({"name": "rooms", "datatype": "FP64", "shape": [1], "data": [1.0]},
     r"input 'rooms': datatype FP64 does not match the model input, a int64 column: send INT64"),
    ({"name": "price", "datatype": "BOOL", "shape": [1], "data": [True]}, r"datatype BOOL does not match"),
])
def test_datatypes_that_do_not_match_the_schema_are_refused(entry: dict, message: str):
    with pytest.raises(RequestError, match=message):
        oip.columns_of(SPEC, oip.parse_request(*raw({"inputs": [entry]})))


@pytest.mark.parametrize(("entries", "message"), [
    ([{"name": "price", "datatype": "FP64", "shape": [3], "data": [1.0, 2.0]}],
     r"input 'price': shape \[3\] holds 3 value\(s\) but 'data' has 2"),
    ([{"name": "price", "datatype": "FP64", "shape": [3, 2], "data": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}],
     r"input 'price': 'data' has shape \[2, 3\], the tensor says \[3, 2\]"),
    ([{"name": "price", "datatype": "FP64", "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}],
     r"input 'price': shape \[2, 2\] does not fit the column, whose rows hold one value: send shape \[rows\] or "
     r"\[rows, 1\]"),
    ([{"name": "pixels", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}],
     r"input 'pixels': shape \[2, 2\] does not fit the column, whose rows hold \[3\]: send shape \[rows, 3\]"),
    ([{"name": "price", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]},
      {"name": "rooms", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]}],
     r"disagree on the number of rows: input 'price' has 2, input 'rooms' has 3"),
    ([{"name": "price", "datatype": "FP64", "shape": [0], "data": []}], r"the inputs hold no rows"),
    ([{"name": "price", "datatype": "FP64", "shape": [-1], "data": [1.0]}], r"shape must be a list of sizes >= 0"),
    ([{"name": "price", "datatype": "FP64", "shape": [1], "data": ["a"]}],
     r"input 'price': FP64 data must hold numbers, got 'a' at position 0"),
    ([{"name": "rooms", "datatype": "INT64", "shape": [2], "data": [1, 2.5]}],
     r"input 'rooms': INT64 data must hold integers, got 2.5 at position 1"),
    ([{"name": "city", "datatype": "BYTES", "shape": [2], "data": ["a", 3]}],
     r"input 'city': BYTES data must hold strings, got 3 at position 1"),
    ([{"name": "price", "datatype": "FP8", "shape": [1], "data": [1.0]}], r"datatype must be one of BOOL, .*got 'FP8'"),
    ([{"name": "price", "datatype": "FP64", "shape": [1]}], r"input 'price' has neither 'data' nor a binary_data_size"),
    ([{"name": "price", "datatype": "FP64", "shape": [1], "data": [1.0]}] * 2,
     r"input\(s\) 'price' given more than once"),
    ([], r"needs 'inputs', a non-empty list of tensors, got a list"),
    # a value its datatype cannot hold is refused, never wrapped around or made infinite
    ([{"name": "rooms", "datatype": "INT8", "shape": [2], "data": [1, 300]}],
     r"input 'rooms': 300 at position 1 does not fit INT8"),
    ([{"name": "rooms", "datatype": "UINT8", "shape": [2], "data": [-1, 3]}],
     r"input 'rooms': -1 at position 0 does not fit UINT8"),
    ([{"name": "price", "datatype": "FP16", "shape": [1], "data": [1e10]}],
     r"input 'price': 10000000000.0 at position 0 does not fit FP16"),
    ([{"name": "price", "datatype": "FP32", "shape": [1, 1], "data": [[1e300]]}],
     r"input 'price': 1e\+300 at position 0 does not fit FP32"),
])
def test_shapes_and_data_that_lie_are_refused(entries: list, message: str):
    with pytest.raises(RequestError, match=message):
        oip.columns_of(SPEC, oip.parse_request(*raw({"inputs": entries})))


def test_an_input_the_schema_does_not_know_goes_on_to_validation():
    request = oip.parse_request(*raw({"inputs": [{"name": "prise", "datatype": "FP64", "shape": [1, 1],
                                                  "data": [1.0]}]}))
    columns, rows = oip.columns_of(SPEC, request)
    assert rows == 1 and columns["prise"].tolist() == [1.0]  # validation names it, with its "did you mean"


def test_requested_outputs_are_checked_before_predicting():
    price = tensor("price", np.array([1.0]), "FP64")
    with pytest.raises(RequestError, match=r"unknown output 'bnd'; the model's outputs are 'band', 'band_probability'"):
        oip.check_outputs(SPEC, request_of(price, outputs=[triton.InferRequestedOutput("bnd")]))
    with pytest.raises(RequestError, match=r"output 'band_probability': the classification extension needs a "
                                           r"classification head's output; its classification outputs: 'band'"):
        oip.check_outputs(SPEC, request_of(price, outputs=[triton.InferRequestedOutput("band_probability",
                                                                                          class_count=1)]))
    with pytest.raises(RequestError, match=r"output 'id' is a passthrough column: send it as an input"):
        oip.check_outputs(SPEC, request_of(price, outputs=[triton.InferRequestedOutput("id")]))
    with pytest.raises(RequestError, match=r"the request's parameter 'binary_data_output' must be true or false"):
        oip.parse_request(*raw({"inputs": [], "parameters": {"binary_data_output": "yes"}}))


TABLE = pa.table({"band": ["high", "low", "high"], "band_probability": pa.array([0.75, 0.5, 0.625], pa.float32()),
                  "band_probability_low": pa.array([0.25, 0.5, 0.375], pa.float32()),
                  "band_probability_high": pa.array([0.75, 0.5, 0.625], pa.float32())})


@pytest.mark.parametrize("binary", [True, False])
def test_responses_read_back_by_tritonclient(binary: bool):
    outputs = [triton.InferRequestedOutput("band", binary_data=binary),
               triton.InferRequestedOutput("band_probability", binary_data=binary),
               triton.InferRequestedOutput("band", binary_data=binary, class_count=2)]
    request = request_of(tensor("price", np.array([1.0, 2.0, 3.0]), "FP64"), outputs=outputs[:2], request_id="7")
    body, length = oip.encode_response(SPEC, request, TABLE)
    assert (length is not None) == binary
    result = triton.InferResult.from_response_body(body, header_length=length)
    assert result.get_response()["id"] == "7" and result.get_response()["model_version"] == "3"
    assert result.as_numpy("band").astype(str).tolist() == ["high", "low", "high"]
    probability = result.as_numpy("band_probability")
    assert probability.dtype == np.float32 and probability.tolist() == [0.75, 0.5, 0.625]
    request = request_of(tensor("price", np.array([1.0, 2.0, 3.0]), "FP64"), outputs=outputs[2:])
    body, length = oip.encode_response(SPEC, request, TABLE)
    top = triton.InferResult.from_response_body(body, header_length=length).as_numpy("band").astype(str)
    # most probable first, a tie in label order: value:index:label
    assert top.tolist() == [["0.75:1:high", "0.25:0:low"], ["0.5:0:low", "0.5:1:high"], ["0.625:1:high", "0.375:0:low"]]


def test_all_outputs_when_none_are_named_binary_as_the_client_asks():
    request = request_of(tensor("price", np.array([1.0, 2.0, 3.0]), "FP64"))  # tritonclient: binary_data_output
    assert request.outputs is None and request.binary_output
    body, length = oip.encode_response(SPEC, request, TABLE)
    result = triton.InferResult.from_response_body(body, header_length=length)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["band", "band_probability"]
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])


def test_list_columns_are_rows_of_k_padded_when_ragged():
    table = pa.table({"tags": [["a", "b"], ["c"]], "scores": pa.array([[0.5, 0.25], [1.0]], pa.list_(pa.float32()))})
    spec = ModelSpec("m", "1", SPEC.inputs, (TensorSpec("tags", "BYTES", (-1, -1)),
                                            TensorSpec("scores", "FP32", (-1, -1))))
    request = request_of(tensor("price", np.array([1.0, 2.0]), "FP64"))
    body, length = oip.encode_response(spec, request, table)
    result = triton.InferResult.from_response_body(body, header_length=length)
    assert result.as_numpy("tags").astype(str).tolist() == [["a", "b"], ["c", ""]]
    assert np.array_equal(result.as_numpy("scores"), np.array([[0.5, 0.25], [1.0, np.nan]], np.float32),
                          equal_nan=True)


def test_model_spec_from_schema_columns_heads_and_prediction_types():
    class Column:
        def __init__(self, name: str, dtype: str, shape: tuple = (), role: str = "feature") -> None:
            self.name, self.dtype, self.shape, self.role = name, dtype, shape, role

    class Head:
        type, target, classes, probabilities, top_k = "multiclass", "band", ("low", "high"), True, 0

    outputs = TABLE.schema
    spec = oip.model_spec("shop", "3", [Column("price", "float64"), Column("v", "float32", (4,)),
                                        Column("id", "int64", role="passthrough")], [Head()], outputs)
    metadata = oip.model_metadata(spec, ["3"])
    assert metadata["inputs"] == [{"name": "price", "datatype": "FP64", "shape": [-1]},
                                  {"name": "v", "datatype": "FP32", "shape": [-1, 4]},
                                  {"name": "id", "datatype": "INT64", "shape": [-1], "optional": True}]
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        ("band", "BYTES"), ("band_probability", "FP32"), ("band_probability_low", "FP32"),
        ("band_probability_high", "FP32")]
    assert spec.classes["band"].probabilities == ("band_probability_low", "band_probability_high")


def test_records_requests_and_answers():
    parsed = parse_records(b'{"rows": [{"a": 1.5, "b": "x"}, {"a": 2}], "rejects": true, "keep": ["id"]}')
    assert parsed.columns == {"a": [1.5, 2], "b": ["x", None]} and parsed.rows == 2
    assert parsed.rejects and parsed.keep == ("id",)
    assert parse_records(b'[{"a": 1}]').columns == {"a": [1]}
    for body, message in [(b"{", r"not valid JSON"), (b'{"rows": {}}', r"'rows' must be a list of objects"),
                          (b"[]", r"'rows' holds no rows"), (b"[1]", r"rows\[0\] must be an object"),
                          (b'{"rows": [{}], "reject": true}', r"unknown field\(s\) 'reject'"),
                          (b'{"rows": [{}], "keep": "id"}', r"'keep' must be a list of column names")]:
        with pytest.raises(RequestError, match=message):
            parse_records(body)
    rejected = pa.table({"row": pa.array([1], pa.int64()), "reason": ["column 'a': expected float64"], "a": ["x"]})
    answer = orjson.loads(encode_records("m", "1", TABLE.slice(0, 1), rejected))
    assert answer == {"model_name": "m", "model_version": "1", "rejected": [
        {"row": 1, "reason": "column 'a': expected float64"}], "predictions": [
        {"band": "high", "band_probability": 0.75, "band_probability_low": 0.25, "band_probability_high": 0.75}]}
