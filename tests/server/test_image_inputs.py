"""Images through the server, on a live `torchpredict serve` of the digits bundle: BYTES tensors from tritonclient
(binary data, and base64 in JSON), records with base64 cells, and a multipart form of files; answers equal the
Python API's, bad images are rejected rows or a 400 naming the input, and a client's text is never a path."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from live_server import AUTH, Server, one_torch_thread, start_server, stop
from torchpredict.bundle import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")
__all__ = ["one_torch_thread"]


@pytest.fixture(scope="module")
def server(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    live = start_server(digits_bundle, tmp_path_factory.mktemp("serve-images") / "server.log", "--quiet")
    yield live
    stop(live)


@pytest.fixture(scope="module")
def files(digits) -> list[Path]:
    return [Path(p) for p in digits["new_paths"][:10]]


@pytest.fixture(scope="module")
def expected(digits_bundle, files) -> dict:
    table = load(digits_bundle, device="cpu").predict({"image": [str(p) for p in files]})
    return {"digit": table.column("digit").to_pylist(), "p": table.column("digit_probability").to_numpy()}


def close(got, want) -> bool:
    return np.allclose(np.asarray(got, dtype=np.float32), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_bytes_tensors_of_image_files(server, files, expected, binary):
    client = triton.InferenceServerClient(server.url)
    data = np.array([p.read_bytes() for p in files], dtype=np.object_)
    tensor = triton.InferInput("image", [len(files)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(data, binary_data=True)
    else:  # JSON: each element the base64 of its file
        tensor.set_data_from_numpy(np.array([base64.b64encode(b).decode() for b in data], dtype=np.object_),
                                   binary_data=False)
    outputs = [triton.InferRequestedOutput("digit", binary_data=False),
               triton.InferRequestedOutput("digit_probability", binary_data=True)]
    result = client.infer("digits", [tensor], outputs=outputs, headers=dict(AUTH))  # infer adds to the dict
    assert [d.decode() if isinstance(d, bytes) else d for d in result.as_numpy("digit")] == expected["digit"]
    assert close(result.as_numpy("digit_probability"), expected["p"])


def test_metadata_lists_the_image_input_as_bytes(server):
    inputs = server.request("GET", "/v2/models/digits").json["inputs"]
    assert inputs == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]


def test_records_with_base64_cells(server, files, expected):
    rows = [{"image": base64.b64encode(p.read_bytes()).decode()} for p in files]
    reply = server.post("/v2/models/digits/records", {"rows": rows})
    assert reply.status == 200, reply.body
    predictions = reply.json["predictions"]
    assert [r["digit"] for r in predictions] == expected["digit"]
    assert close([r["digit_probability"] for r in predictions], expected["p"])


def _form(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_a_multipart_form_of_files_one_row_each_with_its_file_name(server, files, expected):
    body, content_type = _form([("image", p.name, p.read_bytes()) for p in files])
    reply = server.request("POST", "/v2/models/digits/records", body, {"Content-Type": content_type})
    assert reply.status == 200, reply.body
    predictions = reply.json["predictions"]
    assert [r["file"] for r in predictions] == [p.name for p in files]
    assert [r["digit"] for r in predictions] == expected["digit"]
    assert close([r["digit_probability"] for r in predictions], expected["p"])


def test_bad_images_are_rejected_rows_or_a_400_naming_the_input(server, files, expected):
    body, content_type = _form([("image", "good.png", files[0].read_bytes()),
                                ("image", "cut.png", files[1].read_bytes()[:60]), ("rejects", None, b"true")])
    reply = server.request("POST", "/v2/models/digits/records", body, {"Content-Type": content_type})
    assert reply.status == 200, reply.body
    assert [r["file"] for r in reply.json["predictions"]] == ["good.png"]
    assert reply.json["rejected"] == [{"row": 1, "reason": reply.json["rejected"][0]["reason"]}]
    assert reply.json["rejected"][0]["reason"].startswith("column 'image': cannot decode the image")
    reply = server.post("/v2/models/digits/records", {"rows": [{"image": "not base64, not an image"}]})
    assert reply.status == 400
    assert reply.json == {"error": "column 'image': not an image in a known format (PNG, JPEG, WEBP, BMP, GIF) at "
                                   "row 0"}


def test_a_clients_text_is_never_read_as_a_path_on_the_server(server, files):
    reply = server.post("/v2/models/digits/records", {"rows": [{"image": str(files[0])}]})
    assert reply.status == 400 and "not an image in a known format" in reply.json["error"]


@pytest.mark.parametrize(("parts", "message"), [
    ([("photo", "a.png", b"x")], "form file field 'photo' is not an image column of the model ('image')"),
    ([("note", None, b"hi")], "form field 'note' is not known; a records form has files named after the image"),
    ([("rejects", None, b"maybe")], "form field 'rejects' must be true or false, got 'maybe'"),
    ([("rejects", None, b"true")], "the form holds no files"),
])
def test_a_bad_form_is_a_400_saying_what_is_wrong(server, parts, message):
    body, content_type = _form(parts)
    reply = server.request("POST", "/v2/models/digits/records", body, {"Content-Type": content_type})
    assert reply.status == 400 and reply.json["error"].startswith(message), reply.json
