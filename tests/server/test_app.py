"""`torchpredict serve` as a real process on 127.0.0.1, driven as its users drive it: tritonclient.http for the Open
Inference Protocol (binary and JSON tensors, metadata, health, the classification extension) and plain HTTP for
the records endpoint and every error status. Predictions equal `Predictor.predict` of the same rows exactly, for a
classifier, a regressor and a seq2seq model.

One server per module serves a folder of the three bundles behind a token; the SIGTERM test starts its own.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from live_server import AUTH, TRUST, Reply, Server, one_torch_thread, start_server, stop
from seq2seq_model import MAX_DIGITS, digit_strings
from seq2seq_model import Seq2Seq as Transformer
from torchpredict.bundle import load, save
from torchpredict.errors import BackendError, SchemaError
from torchpredict.heads.sequences import Seq2Seq
from torchpredict.preprocessing import Preprocessor, TextEncode
from torchpredict.schema.schema import KEEP_HINT

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)  # every module test


def auth() -> dict[str, str]:
    """A fresh headers dict per tritonclient call: infer() adds Inference-Header-Content-Length to the dict it is
    given, which would then go with the next call."""
    return dict(AUTH)

MAX_QUEUE_ROWS = 1000


@pytest.fixture(scope="module")
def sorter_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) encoder-decoder that decodes text: what it says does not matter, only that the server says
    exactly what predict says. Weights + factory, so that the server needs --trust-factory."""
    rng = np.random.default_rng(0)
    texts = digit_strings(300, rng)
    table = pa.table({"digits": texts})
    encoder = TextEncode(["digits"], max_length=MAX_DIGITS + 1)
    preprocessor = Preprocessor([encoder], inputs={"src": ["digits"]}).fit(table)
    head = Seq2Seq("sorted", max_length=MAX_DIGITS + 1).fit(["".join(sorted(s)) for s in texts])
    sizes = {"src_vocab": len(encoder.vocabulary()), "tgt_vocab": len(head.vocabulary)}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "stores weights: loading needs trust_factory"
        return save(tmp_path_factory.mktemp("sort") / "sort.tpk", Transformer(**sizes).eval(),
                    preprocessor=preprocessor, heads=head, examples=table.slice(0, 8), storage="weights",
                    factory="seq2seq_model:Seq2Seq", factory_kwargs=sizes)


@pytest.fixture(scope="module")
def served(wine_bundle: Path, diabetes_bundle: Path, sorter_bundle: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    for bundle in (wine_bundle, diabetes_bundle, sorter_bundle):
        (folder / Path(bundle).name).symlink_to(bundle)
    return folder


@pytest.fixture(scope="module")
def predictors(wine_bundle: Path, diabetes_bundle: Path, sorter_bundle: Path) -> dict:
    return {name: load(path, device="cpu", trust_factory=[TRUST])
            for name, path in (("wine", wine_bundle), ("diabetes", diabetes_bundle), ("sort", sorter_bundle))}


@pytest.fixture(scope="module")
def server(served: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    server = start_server(served, log, "--max-body-mb", "1", "--max-queue-rows", str(MAX_QUEUE_ROWS))
    yield server
    stop(server)


@pytest.fixture
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url, network_timeout=120)
    yield client
    client.close()


def inputs_of(table: pa.Table, datatype: str = "FP64", *, binary: bool = True, shape_1: bool = False) -> list:
    """One InferInput per column of table, as a tritonclient user sends them."""
    inputs = []
    for name in table.column_names:
        values = table.column(name).to_numpy(zero_copy_only=False)
        if datatype == "BYTES":
            values = values.astype(str).astype(object)
        else:
            values = values.astype(triton.triton_to_np_dtype(datatype))
        if shape_1:
            values = values.reshape(-1, 1)
        tensor = triton.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def assert_same(result: triton.InferResult, expected: pa.Table) -> None:
    """Every prediction column of expected, exactly (strings as text, floats bit for bit)."""
    assert [o["name"] for o in result.get_response()["outputs"]] == expected.column_names
    for name in expected.column_names:
        got, column = result.as_numpy(name), expected.column(name)
        if pa.types.is_string(column.type):
            assert got.astype(str).tolist() == column.to_pylist(), name
        else:
            want = column.to_numpy()
            assert got.dtype == want.dtype and np.array_equal(got, want), name


# -- OIP through tritonclient ------------------------------------------------------------------------------


def test_health_and_server_metadata(client: triton.InferenceServerClient, server: Server):
    assert client.is_server_live() and client.is_server_ready()  # no token needed
    assert client.is_model_ready("wine", headers=auth()) and client.is_model_ready("sort", "1", headers=auth())
    metadata = client.get_server_metadata(headers=auth())
    assert metadata["name"] == "torchpredict"
    assert {"binary_tensor_data", "classification"} <= set(metadata["extensions"])
    assert server.request("GET", "/v2/health/live", auth=False).status == 200


def test_model_metadata_lists_schema_columns_and_prediction_columns(client: triton.InferenceServerClient,
                                                                    predictors: dict):
    for name, predictor in predictors.items():
        metadata = client.get_model_metadata(name, headers=auth())
        assert metadata["name"] == name and metadata["versions"] == ["1"]
        assert [i["name"] for i in metadata["inputs"]] == [c.name for c in predictor.schema.features]
        assert all(i["shape"] == [-1] for i in metadata["inputs"])
        assert [o["name"] for o in metadata["outputs"]] == predictor.prediction_columns
        assert client.get_model_metadata(name, model_version="1", headers=auth()) == metadata
    wine = client.get_model_metadata("wine", headers=auth())
    assert {i["datatype"] for i in wine["inputs"]} == {"FP64"}
    assert [o["datatype"] for o in wine["outputs"]] == ["BYTES"] + ["FP32"] * 4
    sort = client.get_model_metadata("sort", headers=auth())
    assert sort["inputs"] == [{"name": "digits", "datatype": "BYTES", "shape": [-1]}]
    assert [o["datatype"] for o in sort["outputs"]] == ["BYTES", "FP32"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classifier_predictions_equal_predict(client: triton.InferenceServerClient, predictors: dict, wine: dict,
                                              binary: bool):
    rows = wine["new"]
    expected = predictors["wine"].predict(rows)
    outputs = None if binary else [triton.InferRequestedOutput(n, binary_data=False) for n in expected.column_names]
    result = client.infer("wine", inputs_of(rows, binary=binary), outputs=outputs, request_id="wine-1", headers=auth())
    assert result.get_response()["id"] == "wine-1" and result.get_response()["model_name"] == "wine"
    assert_same(result, expected)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_regressor_predictions_equal_predict_fp32_inputs_of_shape_n_1(client: triton.InferenceServerClient,
                                                                      predictors: dict, diabetes: dict, binary: bool):
    rows = diabetes["test"]
    as_float32 = {n: rows.column(n).to_numpy().astype(np.float32) for n in rows.column_names}
    expected = predictors["diabetes"].predict(as_float32)
    result = client.infer("diabetes", inputs_of(rows, "FP32", binary=binary, shape_1=True), headers=auth(),
                          outputs=[triton.InferRequestedOutput("progression", binary_data=binary)])
    assert_same(result, expected)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_seq2seq_takes_and_returns_text(client: triton.InferenceServerClient, predictors: dict, binary: bool):
    texts = pa.table({"digits": ["3120", "987654", "55", "10", "ünï"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'ü', 'n' and 'ï' are not digits: unknown tokens
        expected = predictors["sort"].predict(texts)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in expected.column_names]
    result = client.infer("sort", inputs_of(texts, "BYTES", binary=binary), outputs=outputs, headers=auth())
    assert_same(result, expected)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_extension_gives_top_k_as_probability_index_label(client: triton.InferenceServerClient,
                                                                         predictors: dict, wine: dict, binary: bool):
    rows = wine["new"].slice(0, 10)
    expected = predictors["wine"].predict(rows)
    labels = predictors["wine"].heads[0].classes
    result = client.infer("wine", inputs_of(rows), headers=auth(),
                          outputs=[triton.InferRequestedOutput("cultivar", binary_data=binary, class_count=2)])
    top = result.as_numpy("cultivar").astype(str)
    assert top.shape == (10, 2)
    for i, row in enumerate(top):
        probabilities = [expected.column(f"cultivar_probability_{label}")[i].as_py() for label in labels]
        parsed = [entry.split(":") for entry in row]
        assert [label for _, _, label in parsed] == [labels[int(index)] for _, index, _ in parsed]
        assert parsed[0][2] == expected.column("cultivar")[i].as_py()  # the most probable first
        for value, index, _ in parsed:
            assert np.float32(value) == np.float32(probabilities[int(index)])
        assert float(parsed[0][0]) >= float(parsed[1][0])


def test_concurrent_requests_are_batched_together(server: Server, predictors: dict):
    """While the model works on a long request, small ones queue; the model thread takes them as one batch."""
    before = server.metric("torchpredict_batch_requests_count", model="sort", version="1")
    single = before - server.metric("torchpredict_batch_requests_bucket", le="1.0", model="sort", version="1")
    replies: dict[int, Reply] = {}

    def send(i: int, texts: list[str]) -> None:
        replies[i] = server.post("/v2/models/sort/records", {"rows": [{"digits": t} for t in texts]})

    rng = np.random.default_rng(3)
    long = threading.Thread(target=send, args=(-1, digit_strings(500, rng)))
    long.start()
    wait_for(lambda: server.metric("torchpredict_requests_in_flight") >= 2)  # it and this /metrics request
    texts = digit_strings(8, rng)
    small = [threading.Thread(target=send, args=(i, [t])) for i, t in enumerate(texts)]
    for thread in [*small]:
        thread.start()
    for thread in [long, *small]:
        thread.join(60)
    assert all(reply.status == 200 for reply in replies.values()), [r.body for r in replies.values()]
    for i, text in enumerate(texts):
        [prediction] = replies[i].json["predictions"]
        assert prediction["sorted"] == predictors["sort"].predict({"digits": [text]})["sorted"][0].as_py()
    after = server.metric("torchpredict_batch_requests_count", model="sort", version="1")
    joined = after - server.metric("torchpredict_batch_requests_bucket", le="1.0", model="sort", version="1")
    assert joined > single, "no batch held more than one request"
    assert after - before < 9  # the long one, and the 8 small ones in fewer batches than requests
    assert server.metric("torchpredict_rows_total", model="sort", version="1", outcome="predicted") >= 508


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


# -- the records endpoint -----------------------------------------------------------------------------------


def test_records_predict_as_predict_does(server: Server, predictors: dict, wine: dict):
    rows = wine["new"].slice(0, 6).to_pylist()
    expected = predictors["wine"].predict(rows)
    reply = server.post("/v2/models/wine/records", {"rows": rows})
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    answer = reply.json
    assert answer["model_name"] == "wine" and answer["model_version"] == "1" and answer["rejected"] == []
    assert [list(p) for p in answer["predictions"]] == [expected.column_names] * 6
    for name in expected.column_names:
        got = [p[name] for p in answer["predictions"]]
        if name == "cultivar":
            assert got == expected.column(name).to_pylist()
        else:  # JSON carries the float32 in its shortest text: read back, the very same float32
            assert np.array_equal(np.array(got, np.float32), expected.column(name).to_numpy())
    assert server.post("/v2/models/wine/predict", rows).json == answer  # a bare list, and the /predict alias


def test_records_rejects_and_keep(server: Server, predictors: dict, wine: dict):
    rows = wine["new"].slice(0, 4).to_pylist()
    rows[1]["alcohol"] = "forty"
    rows[3]["hue"] = None
    for i, row in enumerate(rows):
        row["id"] = f"w{i}"
    rejected: list[pa.Table] = []
    expected = predictors["wine"].predict(rows, keep=["id"], rejects=rejected.append)
    reasons = pa.concat_tables(rejected).sort_by("row")
    answer = server.post("/v2/models/wine/records", {"rows": rows, "rejects": True, "keep": ["id"]}).json
    assert [p["id"] for p in answer["predictions"]] == expected.column("id").to_pylist() == ["w0", "w2"]
    assert [p["cultivar"] for p in answer["predictions"]] == expected.column("cultivar").to_pylist()
    assert answer["rejected"] == [{"row": r, "reason": why} for r, why in
                                  zip(reasons.column("row").to_pylist(), reasons.column("reason").to_pylist(),
                                      strict=True)]
    assert [r["row"] for r in answer["rejected"]] == [1, 3]
    # without rejects: the first bad row is a 400 with predict's own message
    with pytest.raises(SchemaError) as raised:
        predictors["wine"].predict(rows, keep=["id"])
    reply = server.post("/v2/models/wine/records", {"rows": rows, "keep": ["id"]})
    assert reply.status == 400 and reply.json == {"error": str(raised.value)}


# -- every error status -------------------------------------------------------------------------------------


def test_bad_requests_are_400_with_the_torchpredict_message(server: Server, client: triton.InferenceServerClient,
                                                            predictors: dict, wine: dict):
    rows = wine["new"].slice(0, 3)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("wine", inputs_of(rows, "BYTES"), headers=auth())
    assert raised.value.status() == "400"
    assert raised.value.message().startswith("input 'alcohol': datatype BYTES does not match the model input")
    misspelt = rows.rename_columns(["alchol" if n == "alcohol" else n for n in rows.column_names])
    with pytest.raises(SchemaError) as missing:
        predictors["wine"].predict(misspelt)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("wine", inputs_of(misspelt), headers=auth())
    said_over_http = str(missing.value).replace(KEEP_HINT, "drop them (GET /v2/models/{name} lists the model's inputs)")
    assert raised.value.status() == "400" and raised.value.message() == said_over_http
    assert "did you mean 'alcohol'" in raised.value.message() and "CLI" not in raised.value.message()
    lying = {"inputs": [{"name": "alcohol", "datatype": "FP64", "shape": [3], "parameters": {"binary_data_size": 16}}]}
    header = orjson.dumps(lying)
    reply = server.request("POST", "/v2/models/wine/infer", header + b"\0" * 16,
                           {"Inference-Header-Content-Length": str(len(header))})
    assert reply.status == 400
    assert reply.json == {"error": "input 'alcohol': binary_data_size 16 does not match shape [3] of FP64 (24 bytes)"}
    for body in (b"{not json", b'{"inputs": {}}', b"[1, 2]"):
        reply = server.request("POST", "/v2/models/wine/infer", body)
        assert reply.status == 400 and set(reply.json) == {"error"} and "Traceback" not in reply.json["error"]
    with pytest.raises(SchemaError) as wrong:
        predictors["wine"].predict([{**rows.to_pylist()[0], "alcohol": "forty"}])
    reply = server.post("/v2/models/wine/records", [{**rows.to_pylist()[0], "alcohol": "forty"}])
    assert reply.status == 400 and reply.json["error"] == str(wrong.value)
    assert "column 'alcohol'" in reply.json["error"]
    reply = server.post("/v2/models/wine/infer", {"inputs": [{"name": "alcohol", "datatype": "FP64", "shape": [1],
                                                               "data": [1.0]}],
                                                   "outputs": [{"name": "hue", "parameters": {"classification": 2}}]})
    assert reply.status == 400 and "classification extension needs a classification head's output" in reply.json[
        "error"]


def test_a_token_is_needed_everywhere_but_health(server: Server, client: triton.InferenceServerClient):
    for path in ("/v2", "/v2/models/wine", "/v2/models/wine/ready", "/metrics"):
        reply = server.request("GET", path, auth=False)
        assert reply.status == 401 and reply.headers["www-authenticate"].startswith("Bearer")
        assert "needs a token" in reply.json["error"]
    reply = server.request("GET", "/v2", headers={"Authorization": "Bearer wrong"}, auth=False)
    assert reply.status == 401 and "a wrong bearer token" in reply.json["error"]
    assert server.request("GET", "/v2/health/ready", auth=False).status == 200
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("wine")
    assert raised.value.status() == "401"


def test_unknown_models_versions_and_routes_are_404_wrong_methods_405(server: Server):
    reply = server.request("GET", "/v2/models/nope")
    assert reply.status == 404 and reply.json == {"error": "unknown model 'nope'; this server has 'diabetes', 'sort', "
                                                           "'wine'"}
    reply = server.post("/v2/models/wine/versions/7/infer", {"inputs": []})
    assert reply.status == 404 and reply.json == {"error": "model 'wine' has no version '7'; it has '1'"}
    assert server.request("GET", "/v2/nothing/here").status == 404
    assert server.request("GET", "/").status == 404
    reply = server.request("GET", "/v2/models/wine/infer")
    assert reply.status == 405 and reply.headers["allow"] == "POST" and "use POST" in reply.json["error"]
    assert server.post("/v2/models/wine", {}).status == 405
    assert server.request("DELETE", "/v2/health/live").status == 405


def test_bodies_over_the_limit_are_413(server: Server):
    reply = server.request("POST", "/v2/models/wine/infer", b" " * (2 << 20))
    assert reply.status == 413 and "over this server's limit of 1 MiB (--max-body-mb)" in reply.json["error"]
    bomb = gzip.compress(b" " * (4 << 20))  # small on the wire, 4 MiB once inflated
    reply = server.request("POST", "/v2/models/wine/records", bomb, {"Content-Encoding": "gzip"})
    assert reply.status == 413
    small = gzip.compress(orjson.dumps([{"alcohol": 1.0}]))
    reply = server.request("POST", "/v2/models/wine/records", small, {"Content-Encoding": "gzip"})
    assert reply.status == 400 and "missing column" in reply.json["error"]  # inflated and read


def test_past_the_request_timeout_is_504(client: triton.InferenceServerClient, server: Server):
    texts = pa.table({"digits": digit_strings(300, np.random.default_rng(5))})
    with pytest.raises(InferenceServerException) as raised:
        client.infer("sort", inputs_of(texts, "BYTES"), headers=auth(), timeout=1)  # 1 µs (tritonclient's unit)
    assert raised.value.status() == "504" and "took longer than" in raised.value.message()
    assert server.metric("torchpredict_errors_total", model="sort", type="Timeout") >= 1


def test_a_full_queue_is_503_with_retry_after(server: Server):
    rng = np.random.default_rng(6)
    first, second = ([{"digits": t} for t in digit_strings(500, rng)] for _ in range(2))
    replies: list[Reply] = []
    threads = [threading.Thread(target=lambda rows=rows: replies.append(server.post("/v2/models/sort/records", rows)))
               for rows in (first, second)]
    threads[0].start()  # the model thread takes it at once: the queue is empty again
    wait_for(lambda: server.metric("torchpredict_requests_in_flight") >= 2)
    threads[1].start()  # waits in the queue while the first one runs
    wait_for(lambda: server.metric("torchpredict_queue_rows", model="sort", version="1") >= 500)
    reply = server.post("/v2/models/sort/records", [{"digits": t} for t in digit_strings(MAX_QUEUE_ROWS - 400, rng)])
    for thread in threads:
        thread.join(60)
    assert reply.status == 503 and reply.headers["retry-after"] == "1"
    assert "overloaded" in reply.json["error"] and "at most 1,000 may wait" in reply.json["error"]
    assert [r.status for r in replies] == [200, 200]
    too_many = server.post("/v2/models/sort/records", [{"digits": "1"}] * (MAX_QUEUE_ROWS + 1))
    assert too_many.status == 400 and "send them in smaller requests" in too_many.json["error"]


def test_metrics_count_requests_rows_batches_and_drift(server: Server, wine: dict):
    row = {**wine["new"].to_pylist()[0], "alcohol": 99.0}  # far outside the training range
    assert server.post("/v2/models/wine/records", [row]).status == 200
    assert server.post("/v2/models/wine/records", {"rows": 1}).status == 400  # an error of its own to count
    assert server.request("GET", "/nowhere").status == 404
    text = server.request("GET", "/metrics").body.decode()
    for name in ("torchpredict_requests_total", "torchpredict_request_duration_seconds_bucket",
                 "torchpredict_batch_rows_bucket", "torchpredict_queue_seconds_bucket",
                 "torchpredict_inference_seconds_bucket", "torchpredict_errors_total", "torchpredict_model_info"):
        assert re.search(rf"^{name}\{{", text, re.M), name
    assert server.metric("torchpredict_drift_rows_total", model="wine", version="1", column="alcohol",
                         kind="out_of_range") >= 1
    assert server.metric("torchpredict_requests_total", endpoint="records", model="wine", status="200") >= 1
    assert server.metric("torchpredict_requests_total", endpoint="unknown", model="", status="404") >= 1


# -- shutdown -----------------------------------------------------------------------------------------------


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(sorter_bundle: Path,
                                                                       tmp_path_factory: pytest.TempPathFactory):
    """Two workers (each loads the bundle; their metrics are summed), four requests in flight, then SIGTERM."""
    folder = tmp_path_factory.mktemp("shutdown")
    log = folder / "server.log"
    server = start_server(sorter_bundle, log, "--quiet", "--workers", "2")
    try:
        rng = np.random.default_rng(7)
        requests = [[{"digits": t} for t in digit_strings(200, rng)] for _ in range(4)]
        replies: list[Reply | BaseException] = []

        def send(rows: list) -> None:
            try:
                replies.append(server.post("/v2/models/sort/records", rows))
            except BaseException as exc:
                replies.append(exc)

        threads = [threading.Thread(target=send, args=(rows,)) for rows in requests]
        for thread in threads:
            thread.start()
        wait_for(lambda: server.metric("torchpredict_requests_in_flight") >= len(requests) + 1)
        os.kill(server.process.pid, signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        assert server.process.wait(60) == 0
        assert all(isinstance(r, Reply) and r.status == 200 for r in replies), replies
        assert sorted(len(r.json["predictions"]) for r in replies) == [200] * 4  # type: ignore[union-attr]
        with pytest.raises(OSError):
            server.request("GET", "/v2/health/live", auth=False, timeout=5)
        output = log.read_text()
        assert "Traceback" not in output and '"POST /v2' not in output  # --quiet: no access log
    finally:
        stop(server)


# -- the command line, before anything loads ----------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "error: --workers must be >= 1, got 0"),
    (["--port", "70000"], "error: --port must be in 0..65535, got 70000"),
    (["--max-body-mb", "0"], "error: --max-body-mb must be > 0, got 0"),
    (["--read-timeout-s", "0"], "error: --read-timeout-s must be > 0, got 0"),
    (["--max-delay-ms", "-1"], "error: --max-delay-ms must be >= 0, got -1"),
    (["--threads", "0"], "error: --threads must be >= 1, got 0"),
    (["--device", "tpu"], "error: "),
])
def test_bad_serve_options_are_one_line_and_exit_2(served: Path, capsys, args: list, message: str):
    from torchpredict.cli.commands import main

    assert main(["serve", str(served), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_serve_without_the_server_extra_says_how_to_install_it(served: Path, capsys, monkeypatch):
    import importlib.util

    from torchpredict.cli.commands import main

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "uvicorn" else find_spec(name, *rest))
    assert main(["serve", str(served)]) == 2
    assert capsys.readouterr().err == "error: serving needs uvicorn: pip install 'torchpredict[server]'\n"
    monkeypatch.undo()
    assert main(["serve", str(served / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(("threads", "workers", "cores", "expected"), [
    (None, 1, 4, 3), (None, 2, 4, 1), (None, 1, 1, 1), (None, 3, 2, 1), (5, 1, 2, 5)])
def test_each_worker_runs_torch_on_its_share_of_the_cores_less_one(monkeypatch, threads, workers, cores, expected):
    from torchpredict.server import run

    monkeypatch.setattr(run, "cpu_cores", lambda: cores)
    before = torch.get_num_threads()
    try:
        run._set_threads(threads, workers)
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


# -- in process -------------------------------------------------------------------------------------------


def asgi_call(app, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    """One request to an ASGI app in this process (no server): its status and JSON body."""
    import asyncio

    async def main() -> list[dict]:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
        await app(scope, receive, send)
        return sent

    start, reply = asyncio.run(main())
    return start["status"], orjson.loads(reply["body"])


def test_a_model_name_with_a_slash_is_routed_whole(wine_bundle: Path, wine: dict):
    from torchpredict.server.app import create_app

    app = create_app({"fraud/v2": load(wine_bundle, device="cpu"), "fraud": load(wine_bundle, device="cpu")})
    try:
        status, metadata = asgi_call(app, "GET", "/v2/models/fraud/v2")
        assert status == 200 and metadata["name"] == "fraud/v2"
        status, ready = asgi_call(app, "GET", "/v2/models/fraud/v2/versions/1/ready")
        assert status == 200 and ready == {"name": "fraud/v2", "version": "1", "ready": True}
        row = wine["new"].to_pylist()[0]
        status, answer = asgi_call(app, "POST", "/v2/models/fraud/v2/records", orjson.dumps([row]))
        assert status == 200 and answer["model_name"] == "fraud/v2" and len(answer["predictions"]) == 1
        status, other = asgi_call(app, "GET", "/v2/models/fraud")
        assert status == 200 and other["name"] == "fraud"
        status, missing = asgi_call(app, "GET", "/v2/models/fraud/v3/ready")
        assert status == 404 and "no route" in missing["error"]
    finally:
        app.close(30)


def test_errors_suggest_what_a_request_of_the_endpoint_can_say(wine_bundle: Path, wine: dict):
    from torchpredict.server.app import create_app

    app = create_app({"wine": load(wine_bundle, device="cpu")})
    row = wine["new"].to_pylist()[0]
    try:
        status, error = asgi_call(app, "POST", "/v2/models/wine/records", orjson.dumps([{**row, "note": "x"}]))
        assert status == 400 and "unexpected column(s) 'note'" in error["error"]
        assert 'add "keep": [...] to the request' in error["error"] and "CLI" not in error["error"]
        inputs = [{"name": n, "datatype": "FP64", "shape": [1], "data": [v]} for n, v in row.items()]
        extra = {"name": "note", "datatype": "BYTES", "shape": [1], "data": ["x"]}
        status, error = asgi_call(app, "POST", "/v2/models/wine/infer", orjson.dumps({"inputs": [*inputs, extra]}))
        assert status == 400 and "drop them (GET /v2/models/{name} lists the model's inputs)" in error["error"]
        huge = orjson.dumps([{**row, "alcohol": 1e300}])  # finite, but past float32 once standardized: no score
        status, error = asgi_call(app, "POST", "/v2/models/wine/records", huge)
        assert status == 400 and "not finite" in error["error"]
        assert 'send "rejects": true to have such rows set aside' in error["error"] and "CLI" not in error["error"]
    finally:
        app.close(30)


def test_a_backend_serves_what_predict_on_it_predicts(wine_bundle: Path, wine: dict):
    from torchpredict.server.app import create_app

    app = create_app(wine_bundle, device="cpu", backend="onnxruntime")
    rows = wine["new"].slice(0, 5).to_pylist()
    try:
        [served] = app.served()
        assert served.predictor.backend == "onnxruntime"
        status, answer = asgi_call(app, "POST", "/v2/models/wine/records", orjson.dumps(rows))
        assert status == 200
        expected = load(wine_bundle, device="cpu", backend="onnxruntime").predict(rows).to_pylist()
        for got, want in zip(answer["predictions"], expected, strict=True):  # floats as float32 text
            assert got == {key: np.float32(value) if isinstance(value, float) else value for key, value in want.items()}
        eager = load(wine_bundle, device="cpu").predict(rows)
        assert [r["cultivar"] for r in answer["predictions"]] == eager.column("cultivar").to_pylist()
    finally:
        app.close(30)
    with pytest.raises(BackendError, match=r"backend int8 does not reproduce eager PyTorch"):
        create_app(wine_bundle, device="cpu", backend="int8")


def test_an_optimized_bundle_is_served_without_torch_in_the_process(wine_bundle: Path, wine: dict, tmp_path: Path):
    from torchpredict import optimize

    done = optimize(wine_bundle, tmp_path / "wine.tpk", backends=["onnxruntime"], rows=64)
    if done.report.chosen != "onnxruntime":
        pytest.skip("onnxruntime was not the fastest here; the stored choice is eager")
    server = start_server(done.path, tmp_path / "server.log")
    try:
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "libtorch" not in maps and "onnxruntime" in maps  # torch's libraries never loaded
        rows = wine["new"].slice(0, 6).to_pylist()
        expected = load(done.path, device="cpu").predict(rows)  # the same backend here, torch or not
        reply = server.post("/v2/models/wine/records", {"rows": rows})
        assert reply.status == 200
        predictions = reply.json["predictions"]
        assert [p["cultivar"] for p in predictions] == expected.column("cultivar").to_pylist()
        got = np.array([p["cultivar_probability"] for p in predictions], np.float32)
        assert np.array_equal(got, expected.column("cultivar_probability").to_numpy())
        assert "wine: backend onnxruntime (stored by torchpredict optimize) on cpu" in server.log.read_text()
    finally:
        stop(server)
