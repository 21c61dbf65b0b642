"""A real `torchpredict serve` process on 127.0.0.1 for the tests that drive one (tests/server, tests/fuzz): started
on a free port behind a token, asked over plain HTTP, stopped by its PID."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

TESTS = Path(__file__).resolve().parent
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRUST = "seq2seq_model"  # the seq2seq bundle stores weights + the tests' own factory
STARTUP_S = 120


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return orjson.loads(self.body)


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, *,
                auth: bool = True, timeout: float = 60) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers={**(AUTH if auth else {}), **(headers or {})})
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def post(self, path: str, document: object, **options) -> Reply:
        return self.request("POST", path, orjson.dumps(document), **options)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of GET /metrics (0 when absent)."""
        text = self.request("GET", "/metrics").body.decode()
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            if metric == name and dict(re.findall(r'(\w+)="([^"]*)"', rest)) == labels:
                return float(value)
        return 0.0


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Predict in the test with the server's one thread (--threads 1): a thread count can change a float's last
    bit. A module that compares answers to predict's imports it and marks itself to use it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: Path, log: Path, *options: str, trust: str = TRUST) -> Server:
    """`python -m torchpredict serve folder` on a free port, once it answers ready (trust: the factory module
    the served bundles may import: the tests' seq2seq model's)."""
    port = free_port()
    env = {**os.environ, "TORCHPREDICT_TOKEN": TOKEN,
           "PYTHONPATH": os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "torchpredict", "serve", str(folder), "--port", str(port),
                                    "--device", "cpu", "--threads", "1", "--trust-factory", trust, *options],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(port, process, log)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if server.request("GET", "/v2/health/ready", auth=False, timeout=5).status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop(server)
    pytest.fail(f"the server was not ready after {STARTUP_S} s:\n{log.read_text()}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()
