"""The Ray engine on a simulated cluster of three nodes on this machine (ray.cluster_utils.Cluster, 127.0.0.1):
the same predictions as the local engine when the actors run on other nodes, and every row exactly once when an
actor process is killed mid-job or a worker node is removed mid-job (Ray restarts the actor and reruns the lost
pieces; a rerun piece rewrites its own part)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import ray
from ray.cluster_utils import Cluster

import torchpredict.ray as tpray
from torchpredict.bundle import load
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table
from torchpredict.ray.engine import loopback_only

WINE = Path(__file__).parents[1] / "data" / "wine-v1"
BUNDLE = WINE / "wine.tpk"
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 150 * 1024 * 1024}


@pytest.fixture(scope="module")
def cluster():
    with loopback_only():  # every node's processes listen on 127.0.0.1 only
        cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
        try:
            workers = [cluster.add_node(**NODE) for _ in range(2)]
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            logging.getLogger("ray").setLevel(logging.WARNING)
            yield cluster, workers
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A CSV of 60,000 wines (117 pieces of 512 rows) and the local engine's predictions for it."""
    folder = tmp_path_factory.mktemp("job")
    write_table(pa.concat_tables([read_table(WINE / "new_wines.csv")] * 1500), folder / "in.csv")
    load(BUNDLE, device="cpu", batch_size=256).predict_file(folder / "in.csv", folder / "local.parquet", keep=["id"])
    return folder / "in.csv", read_table(folder / "local.parquet")


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _actors_on(node) -> list[int]:
    """The PIDs of the Ray Data actor processes (MapWorker) this test's node started."""
    raylet = node.all_processes["raylet"][0].process.pid
    pids = []
    for pid in _children(raylet):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"MapWorker" in title:
            pids.append(pid)
    return pids


def _run_with_fault(source: Path, out: Path, fault) -> tpray.RayRun:
    """predict_files in a thread; fault() once the first part is written (the job is under way)."""
    result: dict = {}

    def run() -> None:
        try:
            result["run"] = tpray.predict_files(source, BUNDLE, out, keep=["id"], batch_size=256, piece_rows=512,
                                                actors=2, cpus_per_actor=0.5)
        except BaseException as exc:  # handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    staging = out / ".torchpredict-ray"
    deadline = time.monotonic() + 120
    while not (staging.is_dir() and any(staging.glob("part-*"))) and thread.is_alive():
        assert time.monotonic() < deadline, "the job wrote no part in 120 s"
        time.sleep(0.05)
    assert thread.is_alive(), f"the job ended before the fault: {result}"
    fault()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the job did not finish within 300 s of the fault"
    if "error" in result:
        raise result["error"]
    return result["run"]


def _every_row_once(run: tpray.RayRun, expected: pa.Table) -> None:
    names = [Path(p).name for p in run.parts]
    assert names == sorted(set(names)) and len(names) == 118  # 60,000 / 512, rounded up: one part each
    assert pa.concat_tables([read_table(p) for p in run.parts]).to_pylist() == expected.to_pylist()
    assert run.stats.rows_in == run.stats.rows_predicted == 60_000
    assert not list(Path(run.parts[0]).parent.glob(".*partial*"))  # no half-written part of a killed actor left


def test_actors_on_other_nodes_predict_what_the_local_engine_does(cluster, job, tmp_path):
    source, expected = job
    run = tpray.predict_files(source, BUNDLE, tmp_path / "out", keep=["id"], batch_size=256, piece_rows=512)
    assert run.sizing.cluster_cpus == 3 and run.sizing.actors == 2 and run.sizing.cpus_per_actor == 1
    _every_row_once(run, expected)


def test_an_actor_killed_mid_job_is_restarted_and_every_row_comes_out_once(cluster, job, tmp_path):
    _, workers = cluster
    source, expected = job
    killed = []

    def kill_an_actor() -> None:
        pids = [pid for node in workers for pid in _actors_on(node)]
        assert pids, "no actor process found on the worker nodes"
        os.kill(pids[0], signal.SIGKILL)
        killed.append(pids[0])

    run = _run_with_fault(source, tmp_path / "out", kill_an_actor)
    assert killed
    _every_row_once(run, expected)


def test_a_worker_node_removed_mid_job_loses_no_row(cluster, job, tmp_path):
    cluster_, workers = cluster
    source, expected = job
    removed = []

    def remove_a_node() -> None:
        node = next((n for n in workers if _actors_on(n)), workers[0])
        cluster_.remove_node(node, allow_graceful=False)
        removed.append(node)

    run = _run_with_fault(source, tmp_path / "out", remove_a_node)
    assert removed
    _every_row_once(run, expected)
