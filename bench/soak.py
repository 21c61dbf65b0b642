"""Soak: `torchpredict serve` held at about twice its measured capacity, then let go, on 127.0.0.1.

A wine bundle (trained here, seconds) is served pinned to one core (`taskset -c 1` where there is taskset), with
one torch thread, `--max-queue-rows` 4,096; the load comes from this process, an asyncio client on the other core
sending records requests of ROWS rows over kept-alive connections. Three phases:

1. capacity: a closed loop (CONNECTIONS connections, each sending its next request when answered) for --warm
   seconds: the requests/s the server answers when it is kept busy;
2. soak: an open loop offering --factor x that rate for --seconds (new requests on a clock, whatever the answers;
   up to MAX_CONNECTIONS at once): every answer must be 200 or 503 with Retry-After, the queue must stay within
   its limit, the server's memory (VmRSS of its process) is sampled each second;
3. recovery: the closed loop again: its requests/s against phase 1's.

Every request sent is counted answered (200 or 503) or failed; the script exits 1 if any failed, if a 503 came
without Retry-After, if the queue passed its limit, if memory grew more than 10 % from the soak's first 10 s to
its last, or if recovery is under 90 % of capacity.

    .venv/bin/python bench/soak.py                  # 60 s at 2x, ~1.5 minutes in all
    .venv/bin/python bench/soak.py --quick          # 10 s at 2x, a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROWS = 256  # rows per request: enough model work per request that one Python client core can offer 2x
CONNECTIONS = 8  # the closed loop's: 8 x 256 rows stay within the queue limit, and keep the model busy
MAX_CONNECTIONS = 256  # the open loop's, at most at once
MAX_QUEUE_ROWS = 4096
SERVER_CPU, LOAD_CPU = "1", "0"


@dataclass
class Tally:
    """What one phase saw."""

    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ok: list[float] = field(default_factory=list)
    latencies_503: list[float] = field(default_factory=list)
    no_retry_after: int = 0
    failed: list[str] = field(default_factory=list)
    sent: int = 0
    stale: int = 0  # requests sent again because a kept-alive connection had been closed by the server
    seconds: float = 0.0

    def answered(self) -> int:
        return sum(self.statuses.values())

    def rate(self, status: int = 200) -> float:
        return self.statuses.get(status, 0) / self.seconds if self.seconds else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="the soak's length (default 60)")
    parser.add_argument("--factor", type=float, default=2.0, help="offered load / capacity (default 2)")
    parser.add_argument("--warm", type=float, default=10, help="each closed-loop phase's length (default 10)")
    parser.add_argument("--quick", action="store_true", help="a 10 s soak and 5 s phases")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warm = 10.0, 5.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    with tempfile.TemporaryDirectory(prefix="tp-soak-") as tmp:
        bundle, rows = make_bundle(Path(tmp))
        body = request_body(rows)
        with served(bundle, Path(tmp) / "server.log") as (port, pid):
            return asyncio.run(soak(port, pid, body, args))


def make_bundle(folder: Path) -> tuple[Path, list[dict]]:
    from torchpredict.bundle import save
    from torchpredict.cli.demo import train_wine

    wine = train_wine(seed=0)
    path = save(folder / "wine.tpk", wine["model"], preprocessor=wine["preprocessor"], heads=wine["head"],
                examples=wine["train"])
    train = wine["train"]
    return path, [train.slice(i % train.num_rows, 1).to_pylist()[0] for i in range(ROWS)]


def request_body(rows: list[dict]) -> bytes:
    body = orjson.dumps({"rows": rows})
    return (f"POST /v2/models/wine/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@contextlib.contextmanager
def served(bundle: Path, log: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pin = ["taskset", "-c", SERVER_CPU] if shutil.which("taskset") and len(os.sched_getaffinity(0) | {1}) else []
    command = [*pin, sys.executable, "-m", "torchpredict", "serve", str(bundle), "--port", str(port), "--quiet",
               "--device", "cpu", "--threads", "1", "--max-queue-rows", str(MAX_QUEUE_ROWS)]
    print("$", " ".join(command), flush=True)
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    break
            time.sleep(0.2)
        else:
            raise SystemExit(f"the server was not ready after 120 s:\n{log.read_text()}")
        yield port, process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the group this script started, only
        try:
            code = process.wait(timeout=40)
            print(f"server stopped by SIGTERM: exit {code}", flush=True)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            print("server did not stop on SIGTERM: killed", flush=True)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> tuple[int, bool]:
    """One request on a kept-alive connection: its status and whether it carried Retry-After."""
    writer.write(body)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    await reader.readexactly(length)
    return status, b"retry-after:" in head.lower()


async def closed_loop(port: int, body: bytes, seconds: float) -> Tally:
    tally = Tally()
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                tally.sent += 1
                status, _ = await exchange(reader, writer, body)
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                (tally.latencies_ok if status == 200 else tally.latencies_503).append(time.perf_counter() - started)
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    tally.seconds = time.perf_counter() - began
    return tally


async def open_loop(port: int, body: bytes, rate: float, seconds: float) -> Tally:
    """Requests sent on a clock at `rate`/s, each on an idle kept-alive connection or a new one."""
    tally = Tally()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    open_connections = 0
    pending: set[asyncio.Task] = set()

    async def one() -> None:
        nonlocal open_connections
        started = time.perf_counter()
        reused = bool(idle)
        if reused:
            connection = idle.pop()
        else:
            open_connections += 1
            connection = await asyncio.open_connection("127.0.0.1", port)
        try:
            status, retry_after = await exchange(*connection, body)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            connection[1].close()
            if not reused:
                tally.failed.append(f"{type(exc).__name__}: {exc}")
                open_connections -= 1
                return
            # an idle kept-alive connection the server closed (its keep-alive timeout): sent again on a new one,
            # as HTTP clients do
            tally.stale += 1
            connection = await asyncio.open_connection("127.0.0.1", port)
            try:
                status, retry_after = await exchange(*connection, body)
            except Exception as again:
                tally.failed.append(f"{type(again).__name__}: {again}")
                connection[1].close()
                open_connections -= 1
                return
        idle.append(connection)
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if status == 200:
            tally.latencies_ok.append(time.perf_counter() - started)
        else:
            tally.latencies_503.append(time.perf_counter() - started)
            tally.no_retry_after += status == 503 and not retry_after

    began = time.perf_counter()
    while (now := time.perf_counter()) < began + seconds:
        due = int((now - began) * rate) + 1
        while tally.sent < due:
            if open_connections - len(idle) >= MAX_CONNECTIONS:
                break  # the client's own limit: these are not sent (and not counted sent)
            tally.sent += 1
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.sleep(0.001)
    if pending:
        await asyncio.wait(pending, timeout=60)
    tally.seconds = time.perf_counter() - began
    for _, writer in idle:
        writer.close()
    return tally


def rss_mib(pid: int) -> float:
    """VmRSS of the server's Python process (the child of taskset's exec: the same pid)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def queue_rows(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
        text = answer.read().decode()
    match = re.search(r'^torchpredict_queue_rows\{[^}]*\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def sample(port: int, pid: int, seconds: float) -> tuple[list[float], list[float]]:
    memory, queue = [], []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        memory.append(rss_mib(pid))
        with contextlib.suppress(OSError):  # a sample the busy server answered too late is left out
            queue.append(await asyncio.to_thread(queue_rows, port))
        await asyncio.sleep(1.0)
    return memory, queue


def p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def soak(port: int, pid: int, body: bytes, args: argparse.Namespace) -> int:
    await closed_loop(port, body, 2)  # warm-up
    before_mib = rss_mib(pid)
    capacity = await closed_loop(port, body, args.warm)
    rate = capacity.rate() * args.factor
    print(f"capacity {capacity.rate():,.0f} req/s ({ROWS} rows each); offering {rate:,.0f} req/s for "
          f"{args.seconds:g} s", flush=True)
    soaked, (memory, queue) = await asyncio.gather(open_loop(port, body, rate, args.seconds),
                                                   sample(port, pid, args.seconds))
    after_soak_mib = rss_mib(pid)
    recovery = await closed_loop(port, body, args.warm)
    after_mib = rss_mib(pid)
    head = memory[:10] or [before_mib]
    tail = memory[-10:] or [after_soak_mib]
    growth = statistics.median(tail) / statistics.median(head) - 1
    lost = soaked.sent - soaked.answered() - len(soaked.failed)
    other = {s: n for s, n in soaked.statuses.items() if s not in (200, 503)}
    lines = [
        "| phase | offered req/s | answered 200/s | 503/s | p50 ms (200) | p99 ms (200) | p99 ms (503) |",
        "|---|---|---|---|---|---|---|",
        f"| capacity (closed loop, {CONNECTIONS} conns) | - | {capacity.rate():,.0f} | {capacity.rate(503):,.0f} | "
        f"{p(capacity.latencies_ok, .5):.1f} | {p(capacity.latencies_ok, .99):.1f} | - |",
        f"| soak ({args.factor:g}x, {args.seconds:g} s, open loop) | {soaked.sent / soaked.seconds:,.0f} | "
        f"{soaked.rate():,.0f} | {soaked.rate(503):,.0f} | {p(soaked.latencies_ok, .5):.1f} | "
        f"{p(soaked.latencies_ok, .99):.1f} | {p(soaked.latencies_503, .99):.1f} |",
        f"| recovery (closed loop) | - | {recovery.rate():,.0f} | {recovery.rate(503):,.0f} | "
        f"{p(recovery.latencies_ok, .5):.1f} | {p(recovery.latencies_ok, .99):.1f} | - |",
    ]
    print("\n".join(lines))
    print(f"\nsoak: {soaked.sent:,} requests sent, {soaked.statuses.get(200, 0):,} predicted (200), "
          f"{soaked.statuses.get(503, 0):,} refused (503, {soaked.no_retry_after} without Retry-After), "
          f"{len(soaked.failed)} failed, {lost} unanswered, other statuses {other or 'none'}; {soaked.stale:,} sent "
          "again on a new connection (an idle kept-alive one the server had closed)")
    print(f"queue: at most {max(queue, default=0):,.0f} rows (limit {MAX_QUEUE_ROWS:,})")
    print(f"memory (VmRSS): {before_mib:.0f} MiB before, first 10 s {statistics.median(head):.0f}, last 10 s "
          f"{statistics.median(tail):.0f} ({growth:+.1%}), after the soak {after_soak_mib:.0f}, after recovery "
          f"{after_mib:.0f} MiB")
    print(f"recovery: {recovery.rate() / capacity.rate():.0%} of capacity")
    problems = []
    if soaked.failed or lost or other:
        problems.append(f"requests failed or unanswered: {soaked.failed[:3]} {lost} {other}")
    if soaked.no_retry_after:
        problems.append("a 503 without Retry-After")
    if max(queue, default=0) > MAX_QUEUE_ROWS:
        problems.append("the queue passed its limit")
    if growth > 0.10:
        problems.append(f"memory grew {growth:.0%} during the soak")
    if recovery.rate() < 0.9 * capacity.rate():
        problems.append("recovery under 90 % of capacity")
    if not soaked.statuses.get(503):
        problems.append("no 503 at all: the offered load did not pass capacity")
    print("target: every request answered (200 or 503 + Retry-After), queue within its limit, memory flat "
          f"(+10 % at most), recovery >= 90 %: {'met' if not problems else 'NOT met: ' + '; '.join(problems)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
