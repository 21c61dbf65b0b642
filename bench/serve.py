"""Serving: `torchpredict serve` against the peers' servers and the HTTP floors, in the same run.

Drives the peers' server harness (../shared/peers/run_servers.py, see its README.md): every server runs pinned to
one core (taskset -c 1, in its own process group, stopped by that group), wrk to the other (taskset -c 0), one row
per request, at 1, 16 and 64 connections for 15 s each after a 3 s warm-up. torchpredict serves the peers' MLP
(bench/batch.py's bundle: 32 standardized floats + two one-hot categories, 57 -> 256 -> 256 -> 10) and gets each
row as an Open Inference Protocol V2 JSON request (one named input per column). Before anything is measured its
answers are checked against Predictor.predict (256 JSON rows one by one, and one 4,096-row binary tensor request
sent by tritonclient): the script stops if they differ.

Then the large-request case: that 4,096-row request (binary tensor data, the body tritonclient.http builds) posted
by wrk at 1 and 2 connections, as rows/s against the forward floor (../shared/peers/floor_forward.py: the same MLP's
eager forward in 4,096-row batches, on the same core), measured in the same run.

Prints one table (requests/s, p50, p99 per server and connection count) and the targets: at 64 connections
torchpredict's req/s >= 2x TorchServe's and its p99 against TorchServe's; at 1 connection its p50 <= 1 ms; the
4,096-row request >= 80 % of the forward floor's rows/s.

    bash ../shared/peers/setup.sh                             # once: the peers' venv in /tmp/peers/venv
    /tmp/peers/venv/bin/python ../shared/peers/gen_data.py    # once: the data in /tmp/peers/data
    .venv/bin/python bench/serve.py                           # ~8 minutes (TorchServe starts slowly)
    .venv/bin/python bench/serve.py --quick                   # smoke run: the HTTP floor + torchpredict, ~1 minute

Every step has a timeout, and the script stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from batch import BUNDLE, DATA, PEERS, PEERS_PY, WORK, build_bundles, target_row  # noqa: E402  (the same bundle, built alike)

RESULTS = WORK.parent / "results"
LOGS = Path(os.environ.get("PEERS_LOGS", "/tmp/peers/logs"))
MODEL = "peers-mlp"  # the bundle's name: its OIP path is /v2/models/peers-mlp/infer
PEER_SERVERS = "S0-asgi-floor,S0m-asgi-floor+model,S1-fastapi,S2-litserve,S3-torchserve"
QUICK_SERVERS = "S0-asgi-floor"
TORCHSERVE = "S3-torchserve"
TP = "TP"
ROWS = 4096  # the large request's rows (the batch size of the forward floor too)
SERVER_CPU, LOAD_CPU = "1", "0"
LABELS = {"S0-asgi-floor": "HTTP floor (no model)", "S0m-asgi-floor+model": "ASGI + model, no batching",
          "S1-fastapi": "FastAPI, no batching", "S2-litserve": "LitServe, batch 64 / 5 ms",
          "S2b-litserve-fastqueue": "LitServe + fast_queue", "S3-torchserve": "TorchServe, batch 64 / 5 ms",
          TP: "torchpredict serve"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: only {QUICK_SERVERS} and torchpredict, 3 s per point, 2 s binary points")
    parser.add_argument("--duration", type=int, help="seconds per load point (default 15, --quick 3; at most 20)")
    parser.add_argument("--conns", default="1,16,64", help="connection counts (default 1,16,64)")
    parser.add_argument("--only", help=f"harness servers to compare with, comma-separated (default {PEER_SERVERS}; "
                                       f"torchpredict, {TP}, always runs)")
    parser.add_argument("--extra", default="", help="extra `torchpredict serve` options, e.g. '--max-delay-ms 1'")
    parser.add_argument("--json", default=str(RESULTS / "serve-torchpredict.json"), help="where the results go")
    parser.add_argument("--md", default="", help="also write the table to this file")
    args = parser.parse_args()
    duration = args.duration or (3 if args.quick else 15)
    if not 1 <= duration <= 20:
        parser.error("--duration must be 1..20 s (the harness bounds each load point)")
    conns = [int(c) for c in args.conns.split(",")]
    peers = [s for s in (args.only or (QUICK_SERVERS if args.quick else PEER_SERVERS)).split(",") if s and s != TP]
    missing = [p for p in (PEERS / "run_servers.py", PEERS_PY, DATA / "bodies.jsonl", DATA / "model.pt",
                           DATA / "data_100k.csv") if not p.exists()]
    tools = [t for t in ("wrk", "taskset") if not _which(t)]
    if missing or tools:
        print(f"missing {', '.join([*map(str, missing), *tools])}: run `bash {PEERS}/setup.sh` and "
              f"`{PEERS_PY} {PEERS}/gen_data.py` first", file=sys.stderr)
        return 2
    for folder in (WORK, RESULTS, LOGS):
        folder.mkdir(parents=True, exist_ok=True)
    extra = args.extra.split()
    load_start = _load()

    print("[bundle] building the peers' MLP bundle (bench/batch.py's build_bundles)", flush=True)
    build_bundles()
    binary_s = 2 if args.quick else min(duration, 10)
    with torchpredict_server(extra) as url:
        checked = check_predictions(url)
        print(f"[check] {checked}", flush=True)
        body_file, header_length = binary_body()
        large = {c: run_wrk(url, c, binary_s, body_file, header_length) for c in (1, 2)}
    for c, r in large.items():
        print(f"[binary {ROWS} rows] c={c}: {r['rps'] * ROWS:,.0f} rows/s  p50={r['p50_us'] / 1000:.2f} ms", flush=True)
    forward = forward_floor(1 if args.quick else 3)
    print(f"[forward floor] {forward:,.0f} rows/s (floor_forward.py, taskset -c {SERVER_CPU})", flush=True)
    harness = run_harness(peers, conns, duration, 1 if args.quick else 3, extra)

    text = table(harness, conns, large, forward, checked)
    text += (f"\n\nload average (1 min) at the start {load_start:.2f}, at the end {_load():.2f} on "
             f"{os.cpu_count()} cores (anything else running shares the server's and wrk's cores)")
    print(text)
    Path(args.json).write_text(json.dumps({"harness": harness, "binary": {str(c): r for c, r in large.items()},
                                           "forward_floor_rows_per_s": forward, "check": checked,
                                           "duration_s": duration, "extra": args.extra,
                                           "when": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
    if args.md:
        Path(args.md).write_text(text + "\n")
    return 0


# -- torchpredict's own server: correctness, then the large binary request -------------------------------------


@contextlib.contextmanager
def torchpredict_server(extra: list[str]):
    """`torchpredict serve` of the bundle pinned to the server core, in its own process group; its URL."""
    port = free_port()
    command = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "torchpredict", "serve", str(BUNDLE),
               "--host", "127.0.0.1", "--port", str(port), "--quiet", *extra]
    print("$", " ".join(command), flush=True)
    with open(LOGS / "TP-check.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process, timeout=120)
            yield url
        finally:
            stop(process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"torchpredict serve exited ({process.returncode}) before it was ready; see "
                             f"{LOGS / 'TP-check.log'}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"torchpredict serve was not ready after {timeout:.0f} s; see {LOGS / 'TP-check.log'}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group we created, then SIGKILL to whatever is left of that group only."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def v2_request(row: dict) -> bytes:
    """One row as the harness sends it (run_servers.py's 'v2' body): one input per column, shape [1]."""
    inputs = [{"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
              for k, v in row.items()]
    return json.dumps({"inputs": inputs}).encode()


def post(url: str, body: bytes, timeout: float = 10) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"torchpredict serve answered {exc.code}: {exc.read()[:500]!r}") from None


def check_predictions(url: str) -> str:
    """torchpredict serve's answers equal Predictor.predict of the same request, exactly (else stop here):
    the harness's 256 rows one request each (JSON), and 4,096 rows in one binary tensor request (tritonclient)."""
    import pyarrow.csv as pacsv
    import tritonclient.http as triton

    from torchpredict.bundle import load

    predictor = load(BUNDLE, device="cpu", batch_size=256)  # the server's default --max-batch-size
    rows = [json.loads(line) for line in (DATA / "bodies.jsonl").read_text().splitlines() if line.strip()]
    bad = []
    for i, row in enumerate(rows):
        got = {o["name"]: o["data"] for o in post(f"{url}/v2/models/{MODEL}/infer", v2_request(row))["outputs"]}
        want = predictor.predict([row])
        if (got["pred"] != want.column("pred").to_pylist()
                or np.float32(got["pred_probability"][0]) != want.column("pred_probability").to_numpy()[0]):
            bad.append(f"row {i}: served {got}, predict {want.to_pylist()}")
    if bad:
        raise SystemExit(f"torchpredict serve differs from Predictor.predict on {len(bad)} of {len(rows)} rows:\n"
                         + "\n".join(bad[:5]))

    table = pacsv.read_csv(DATA / "data_100k.csv").slice(0, ROWS).drop_columns(["id"])
    client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)
    try:
        result = client.infer(MODEL, binary_inputs(table), outputs=binary_outputs())
    finally:
        client.close()
    want = predictor.predict(table)
    for name in ("pred", "pred_probability"):
        served, expected = result.as_numpy(name), want.column(name).to_numpy()
        if served.shape != expected.shape or not np.array_equal(served, expected):
            differ = int((served != expected).sum()) if served.shape == expected.shape else "shape"
            raise SystemExit(f"torchpredict serve's {name} differs from Predictor.predict on the {ROWS}-row binary "
                             f"request ({differ} values)")
    return (f"identical to Predictor.predict: {len(rows)} JSON rows (one request each) and one {ROWS}-row binary "
            "tensor request (tritonclient.http), columns pred, pred_probability")


def binary_inputs(table) -> list:
    import tritonclient.http as triton

    inputs = []
    for name in table.column_names:
        values = table.column(name).to_numpy(zero_copy_only=False)
        datatype = "BYTES" if values.dtype == object else "FP64"
        tensor = triton.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values if datatype == "BYTES" else values.astype(np.float64), binary_data=True)
        inputs.append(tensor)
    return inputs


def binary_outputs() -> list:
    import tritonclient.http as triton

    return [triton.InferRequestedOutput(name, binary_data=True) for name in ("pred", "pred_probability")]


def binary_body() -> tuple[Path, int]:
    """The 4,096-row request's body as tritonclient.http sends it (JSON header + binary tensor data)."""
    import pyarrow.csv as pacsv
    import tritonclient.http as triton

    table = pacsv.read_csv(DATA / "data_100k.csv").slice(0, ROWS).drop_columns(["id"])
    body, header_length = triton.InferenceServerClient.generate_request_body(binary_inputs(table),
                                                                             outputs=binary_outputs())
    path = WORK / f"oip_binary_{ROWS}.bin"
    path.write_bytes(body)
    return path, header_length


def run_wrk(url: str, conns: int, duration: int, body_file: Path, header_length: int) -> dict:
    command = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s",
               "-s", str(BENCH / "post_binary.lua"), f"{url}/v2/models/{MODEL}/infer"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60,
                          env={**os.environ, "BODY_FILE": str(body_file), "HEADER_LENGTH": str(header_length)})
    found = re.search(r"WRKJSON=(\{.*\})", done.stdout)
    if not found:
        raise SystemExit(f"wrk failed: {done.stdout}\n{done.stderr}")
    result = json.loads(found.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    if result["errors"]:
        raise SystemExit(f"the {ROWS}-row binary request failed {result['errors']} times under wrk: {result}")
    return result


def forward_floor(reps: int) -> float:
    """rows/s of floor_forward.py's forward phase (1M preprocessed rows in 4,096-row batches) on the server core."""
    speeds = []
    for _ in range(reps):
        done = subprocess.run(["taskset", "-c", SERVER_CPU, str(PEERS_PY), str(PEERS / "floor_forward.py")],
                              capture_output=True, text=True, timeout=300, cwd=PEERS)
        found = re.search(r"^PHASES=(\{.*\})$", done.stdout, re.MULTILINE)
        if done.returncode or not found:
            raise SystemExit(f"floor_forward.py failed: {done.stdout[-1000:]}\n{done.stderr[-2000:]}")
        phases = json.loads(found.group(1))
        speeds.append(phases["rows"] / phases["forward"])
    return statistics.median(speeds)


# -- the harness: one row per request ---------------------------------------------------------------------------


def run_harness(peers: list[str], conns: list[int], duration: int, warmup: int, extra: list[str]) -> dict:
    results = RESULTS / "servers-torchpredict.json"
    results.unlink(missing_ok=True)
    serve = " ".join([sys.executable, "-m", "torchpredict", "serve", "{bundle}", "--host", "127.0.0.1",
                      "--port", "{port}", "--quiet", *extra])
    servers = [*peers, TP]
    command = [str(PEERS_PY), str(PEERS / "run_servers.py"), "--only", ",".join(servers),
               "--conns", ",".join(map(str, conns)), "--duration", str(duration), "--warmup", str(warmup),
               "--server-cpu", SERVER_CPU, "--load-cpu", LOAD_CPU, "--base-port", str(base_port(len(servers))),
               "--add", f"{TP}={serve}", "--add-path", f"{TP}=/v2/models/{MODEL}/infer", "--add-body", f"{TP}=v2",
               "--bundle", str(BUNDLE), "--json", str(results)]
    print("$", " ".join(f"'{c}'" if " " in c else c for c in command), flush=True)
    # per server: start (TorchServe's allowance is 600 s), warm-up, the points, stop
    timeout = 600 + len(servers) * (120 + warmup + len(conns) * (duration + 70))
    subprocess.run(command, check=True, timeout=timeout, cwd=PEERS)
    return json.loads(results.read_text())["results"]


def base_port(count: int) -> int:
    """A base port whose count ports base + 10 i are free (the harness numbers its servers so)."""
    for base in range(18000, 19900, 100):
        if all(_port_free(base + 10 * i) for i in range(count)):
            return base
    raise SystemExit("no free ports in 18000..19999 for the harness")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _load() -> float:
    return os.getloadavg()[0]


def _which(tool: str) -> bool:
    return any((Path(p) / tool).exists() for p in os.environ.get("PATH", "").split(os.pathsep))


# -- the table --------------------------------------------------------------------------------------------------


def table(harness: dict, conns: list[int], large: dict, forward: float, checked: str) -> str:
    ts = harness.get(TORCHSERVE, {}).get("points", {})
    tp = harness.get(TP, {}).get("points", {})
    lines = ["", "| server | connections | requests/s | p50 ms | p99 ms | errors | TP req/s ÷ this |",
             "|---|---|---|---|---|---|---|"]
    for name, result in harness.items():
        label = f"{name} {LABELS.get(name, '')}".strip()
        if not result.get("points"):
            lines.append(f"| {label} | - | failed: {result.get('error', '?')[:150]} | | | | |")
            continue
        for c, point in result["points"].items():
            ratio = tp.get(c, {}).get("rps", 0) / point["rps"] if name != TP and point["rps"] else None
            lines.append(f"| {label} | {c} | {point['rps']:,.0f} | {point['p50_us'] / 1000:.2f} | "
                         f"{point['p99_us'] / 1000:.2f} | {point['errors']} | "
                         f"{'' if ratio is None else f'{ratio:.2f}x'} |")
        if "error" in result:
            lines.append(f"| {label} | (then failed) | {result['error'][:150]} | | | | |")
    for c, point in large.items():
        lines.append(f"| TP one {ROWS}-row binary request | {c} | {point['rps']:,.1f} "
                     f"(= {point['rps'] * ROWS:,.0f} rows/s) | {point['p50_us'] / 1000:.2f} | "
                     f"{point['p99_us'] / 1000:.2f} | {point['errors']} | |")
    lines.append(f"| forward floor (floor_forward.py, batch {ROWS}, 1 core) | - | {forward:,.0f} rows/s | | | | |")

    lines += ["", "| target | measured | met |", "|---|---|---|"]
    top, one = str(max(conns)), str(min(conns))
    if str(64) in tp and str(64) in ts:
        rps, p99 = tp["64"]["rps"] / ts["64"]["rps"], tp["64"]["p99_us"] / ts["64"]["p99_us"]
        lines.append(target_row("req/s at 64 connections >= 2x TorchServe's",
                             f"{tp['64']['rps']:,.0f} / {ts['64']['rps']:,.0f} = {rps:.2f}x", rps >= 2))
        lines.append(target_row("p99 at 64 connections vs TorchServe's (not worse)",
                             f"{tp['64']['p99_us'] / 1000:.2f} ms vs {ts['64']['p99_us'] / 1000:.2f} ms "
                             f"= {p99:.2f}x", p99 <= 1))
    else:
        why = harness.get(TORCHSERVE, {}).get("error", "not run") if TORCHSERVE in harness else "not run"
        lines.append(f"| req/s and p99 at 64 connections vs TorchServe | TorchServe: {why[:150]}"
                     f"{'' if '64' in tp else '; no 64-connection point'} | n/a |")
    if "1" in tp:
        lines.append(target_row("p50 at 1 connection <= 1 ms", f"{tp['1']['p50_us'] / 1000:.2f} ms",
                             tp["1"]["p50_us"] <= 1000))
    else:
        lines.append(f"| p50 at 1 connection <= 1 ms | no 1-connection point (connections {one}..{top}) | n/a |")
    best = max(large.values(), key=lambda r: r["rps"])
    rows_s = best["rps"] * ROWS
    lines.append(target_row(f"{ROWS}-row binary request >= 80% of the forward floor's rows/s",
                         f"{rows_s:,.0f} / {forward:,.0f} = {rows_s / forward:.0%} (best of 1, 2 connections)",
                         rows_s >= 0.8 * forward))
    lines.append(target_row("served predictions equal Predictor.predict", checked, checked.startswith("identical")))
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"\nbench/serve.py done in {time.perf_counter() - started:.0f} s")
    sys.exit(code)
