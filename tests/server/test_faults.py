"""`torchpredict serve` under faults, as a real process on 127.0.0.1: clients that trickle their headers or body
(slowloris) are cut off at the read timeout, clients that hang up mid-request leave their batch-mates' answers
whole, a model whose code raises on some rows fails only the requests holding them, and a bundle replaced on disk
while served changes nothing that is served. One server per module (read timeout 1 s) serves the wine model, a
fussy copy of it (tests/fussy_model.py) and a bundle the last test replaces."""

from __future__ import annotations

import copy
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from fussy_model import fussy_from
from live_server import TOKEN, Reply, Server, one_torch_thread, start_server, stop
from torchpredict.bundle import load, save
from torchpredict.bundle.manifest import relative_files

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)  # every module test

READ_TIMEOUT_S = 1.0
FUSSY = "fussy_model"


@pytest.fixture(scope="module")
def bundles(wine: dict, wine_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = tmp_path_factory.mktemp("fault-bundles")
    parts = {"preprocessor": wine["preprocessor"], "heads": wine["head"], "examples": wine["train"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "stores weights: loading needs trust_factory"
        fussy = save(made / "fussy.tpk", fussy_from(wine["model"]), name="fussy", storage="weights",
                     factory="fussy_model:Fussy", factory_kwargs={"features": 13, "classes": 3}, **parts)
    halved = copy.deepcopy(wine["model"])  # the session's model itself stays as it is
    halved.load_state_dict({k: v * 0.5 for k, v in wine["model"].state_dict().items()})
    return {"wine": Path(wine_bundle), "fussy": fussy,
            "target": save(made / "target-v1.tpk", wine["model"], name="target", **parts),
            "target-v2": save(made / "target-v2.tpk", halved, name="target", model_version="2", **parts)}


@pytest.fixture(scope="module")
def served(bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served-faults")
    (folder / "wine.tpk").symlink_to(bundles["wine"])
    (folder / "fussy.tpk").symlink_to(bundles["fussy"])
    shutil.copytree(bundles["target"], folder / "target.tpk")  # a real folder: the last test rewrites it
    return folder


@pytest.fixture(scope="module")
def server(served: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("fault-logs") / "server.log"
    server = start_server(served, log, "--read-timeout-s", str(READ_TIMEOUT_S), trust=FUSSY)
    yield server
    stop(server)


@pytest.fixture(scope="module")
def predictors(bundles: dict[str, Path]) -> dict:
    return {name: load(path, device="cpu", trust_factory=[FUSSY]) for name, path in bundles.items()}


def request_bytes(path: str, document: object) -> bytes:
    body = orjson.dumps(document)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response on a kept-alive connection: its status line and headers, and its body (Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"the server closed the connection after {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail("the server closed the connection mid-body")
    return head, body


def assert_predicted(reply: Reply, expected) -> None:
    """A records answer holding predict's predictions: labels exactly, probabilities to float32's last bits (a
    matrix product rounds a row by the batch around it, and these requests share batches: server.batcher)."""
    assert reply.status == 200, reply.body
    rows = reply.json["predictions"]
    assert len(rows) == expected.num_rows
    for name in expected.column_names:
        got, column = [row[name] for row in rows], expected.column(name)
        if column.type == "string":
            assert got == column.to_pylist(), name
        else:
            np.testing.assert_allclose(np.array(got, np.float32), column.to_numpy(), rtol=1e-5, atol=1e-7,
                                       err_msg=name)


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- slow clients -------------------------------------------------------------------------------------------


def test_clients_trickling_their_headers_are_cut_off_with_408_while_others_are_served(server: Server,
                                                                                       predictors: dict,
                                                                                       wine: dict):
    rows = wine["new"].slice(0, 3).to_pylist()
    slow = [connect(server) for _ in range(20)]
    silent = connect(server)  # connects and never sends a byte
    started = time.monotonic()
    head = request_bytes("/v2/models/wine/records", rows).split(b"\r\n\r\n")[0]
    answers: list[bytes] = []

    def trickle(sock: socket.socket) -> None:
        try:
            for byte in head:  # one byte every 0.2 s: the headers would take minutes
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:  # the server closed the connection
            pass
        answers.append(read_all(sock))

    threads = [threading.Thread(target=trickle, args=(sock,)) for sock in slow]
    for thread in threads:
        thread.start()
    served = [server.post("/v2/models/wine/records", rows) for _ in range(5)]  # meanwhile, at once
    assert time.monotonic() - started < READ_TIMEOUT_S
    for reply in served:
        assert_predicted(reply, predictors["wine"].predict(rows))
    for thread in threads:
        thread.join(30)
    answers.append(read_all(silent))
    elapsed = time.monotonic() - started
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 5
    assert len(answers) == 21
    for answer in answers:
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 408 ") and b"connection: close" in status
        assert orjson.loads(body) == {"error": "the request's headers did not arrive within 1 s (the server's "
                                               "--read-timeout-s)"}
    for sock in [*slow, silent]:
        sock.close()


def test_a_client_trickling_its_body_is_cut_off_with_408(server: Server, wine: dict):
    whole = request_bytes("/v2/models/wine/records", wine["new"].slice(0, 3).to_pylist())
    head, _, body = whole.partition(b"\r\n\r\n")
    with connect(server) as sock:
        sock.sendall(head + b"\r\n\r\n" + body[:10])
        started = time.monotonic()
        try:
            for byte in body[10:]:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        answer = read_all(sock)
    assert READ_TIMEOUT_S <= time.monotonic() - started < READ_TIMEOUT_S + 5
    status, _, text = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(text) == {"error": "the request body did not arrive within 1 s of its headers (the "
                                           "server's --read-timeout-s)"}
    assert server.metric("torchpredict_errors_total", model="wine", type="ReadTimeout") >= 1


def test_a_keep_alive_connection_gets_a_fresh_header_deadline_after_each_answer(server: Server, wine: dict):
    rows = wine["new"].slice(0, 2).to_pylist()
    with connect(server) as sock:
        for _ in range(3):  # three requests on one connection, each sent well within, the whole well past it
            time.sleep(READ_TIMEOUT_S * 0.6)
            sock.sendall(request_bytes("/v2/models/wine/records", rows))
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 ") and orjson.loads(body)["predictions"], head


# -- clients that hang up -----------------------------------------------------------------------------------


def test_clients_that_hang_up_mid_request_do_not_poison_the_batch_they_were_in(server: Server, predictors: dict,
                                                                               wine: dict):
    table = wine["train"]
    requests = [table.slice(i * 5, 40).to_pylist() for i in range(16)]
    before_batches = server.metric("torchpredict_batch_requests_count", model="wine", version="1")
    replies: dict[int, Reply] = {}
    gate = threading.Barrier(len(requests) + 12)

    def patient(i: int) -> None:
        gate.wait()
        replies[i] = server.post("/v2/models/wine/records", requests[i])

    def hangs_up(i: int, part: float) -> None:
        whole = request_bytes("/v2/models/wine/records", requests[i % len(requests)])
        with connect(server) as sock:
            gate.wait()
            sock.sendall(whole[:int(len(whole) * part)])  # all of it (then gone before the answer), or a part
        # closed here, the answer unread

    threads = [threading.Thread(target=patient, args=(i,)) for i in range(len(requests))]
    threads += [threading.Thread(target=hangs_up, args=(i, 1.0 if i < 8 else 0.7)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i, rows in enumerate(requests):
        assert_predicted(replies[i], predictors["wine"].predict(rows))
    wait_for(lambda: server.metric("torchpredict_requests_in_flight") == 1)  # the /metrics request itself
    batches = server.metric("torchpredict_batch_requests_count", model="wine", version="1") - before_batches
    assert batches < len(requests) + 8, "every request ran in a batch of its own: nothing was shared"
    assert_predicted(server.post("/v2/models/wine/records", requests[0]), predictors["wine"].predict(requests[0]))
    assert "Traceback" not in server.log.read_text()


# -- a model that raises ------------------------------------------------------------------------------------


def test_a_model_that_raises_on_some_rows_fails_only_the_requests_holding_them(server: Server, predictors: dict,
                                                                              wine: dict):
    good = [wine["train"].slice(i * 10, 10).to_pylist() for i in range(8)]
    bad = [[*rows[:3], {**rows[3], "alcohol": 1e6}] for rows in good[:4]]  # one row far out, in each
    replies: dict[tuple[str, int], Reply] = {}
    gate = threading.Barrier(len(good) + len(bad))

    def send(kind: str, i: int, rows: list) -> None:
        gate.wait()
        replies[(kind, i)] = server.post("/v2/models/fussy/records", rows)

    threads = [threading.Thread(target=send, args=("good", i, rows)) for i, rows in enumerate(good)]
    threads += [threading.Thread(target=send, args=("bad", i, rows)) for i, rows in enumerate(bad)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i, rows in enumerate(good):
        assert_predicted(replies[("good", i)], predictors["fussy"].predict(rows))
    for i in range(len(bad)):
        reply = replies[("bad", i)]
        assert reply.status == 500 and list(reply.json) == ["error"]
        assert reply.json["error"] == ("model 'fussy' failed on this request's rows: ValueError: an input is more "
                                       "than 50 standard deviations out; this model refuses it")
    assert server.metric("torchpredict_errors_total", model="fussy", type="ValueError") >= len(bad)
    assert_predicted(server.post("/v2/models/fussy/records", good[0]), predictors["fussy"].predict(good[0]))


# -- the bundle on disk -------------------------------------------------------------------------------------


def test_a_bundle_replaced_on_disk_while_served_changes_nothing_served(server: Server, served: Path,
                                                                       bundles: dict[str, Path],
                                                                       predictors: dict, wine: dict):
    rows = wine["new"].to_pylist()
    expected = predictors["target"].predict(rows)
    assert not predictors["target-v2"].predict(rows).equals(expected)  # the versions differ
    target = served / "target.tpk"
    for rel in relative_files(bundles["target-v2"]):  # the next version copied over it, file by file, in place
        shutil.copyfile(bundles["target-v2"] / rel, target / rel)
        assert_predicted(server.post("/v2/models/target/records", rows), expected)
    shutil.rmtree(target)  # then gone altogether
    assert_predicted(server.post("/v2/models/target/records", rows), expected)
    metadata = server.request("GET", "/v2/models/target")
    assert metadata.status == 200 and metadata.json["versions"] == ["1"]
