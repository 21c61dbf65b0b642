"""The Ray engine on a real local Ray runtime (2 CPUs, 127.0.0.1), one for the whole module: the same predictions,
rejects, counts and drift as the local engine, every row once, and the errors it says instead of hanging."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import ray

import torchpredict.ray as tpray
from cli_runs import run_cli
from torchpredict.bundle import load
from torchpredict.errors import EngineError, InputError, SchemaError
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table
from torchpredict.ray.engine import loopback_only

WINE = Path(__file__).parents[1] / "data" / "wine-v1"
BUNDLE = WINE / "wine.tpk"


@pytest.fixture(scope="module", autouse=True)
def runtime():
    with loopback_only():
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
                 log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray Data's per-operator metrics at INFO/DEBUG
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def wines() -> pa.Table:
    return read_table(WINE / "new_wines.csv")


def _inputs(wines: pa.Table, folder: Path) -> list[str]:
    """Three CSV files of 1,507, 7 and 0 rows (odd sizes: tail batches of every length), in a folder of their own."""
    folder.mkdir()
    big = pa.concat_tables([wines] * 137)
    names = [folder / "a.csv", folder / "b.csv", folder / "c.csv"]
    write_table(big.slice(0, 1507), names[0])
    write_table(wines.slice(0, 7), names[1])
    write_table(wines.slice(0, 0), names[2])
    return [str(n) for n in names]


def _bad_inputs(wines: pa.Table, folder: Path) -> list[str]:
    """Two CSV files with rows validation rejects ('pale' for a number) and a row whose score the head refuses
    (a proline of 1e300: a valid float64 whose NaN score cannot be read)."""
    folder.mkdir()
    names = []
    for i in range(2):
        rows = pa.concat_tables([wines] * 20).slice(i * 100, 300 + i).to_pylist()
        rows[3]["hue"] = "pale"
        rows[250]["proline"] = 1e300
        rows[290 if i else 17]["alcohol"] = "strong"
        names.append(folder / f"in{i}.csv")
        pacsv.write_csv(pa.Table.from_pylist([{k: str(v) for k, v in row.items()} for row in rows]), names[-1])
    return [str(n) for n in names]


def _collected(ds: ray.data.Dataset) -> pa.Table:
    """A Dataset's rows in block order (an empty file's piece is an empty block without columns)."""
    return pa.concat_tables([t for t in ray.get(ds.to_arrow_refs()) if t.num_rows])


def _parts(run: tpray.RayRun) -> pa.Table:
    return pa.concat_tables([read_table(part) for part in run.parts])


def test_predictions_equal_the_local_engine_exactly_and_parts_sort_in_input_order(wines, tmp_path):
    names = _inputs(wines, tmp_path / "in")
    run = tpray.predict_files(names, BUNDLE, tmp_path / "out", keep=["id"], batch_size=64, piece_rows=200)
    local = load(BUNDLE, device="cpu", batch_size=64)
    local.predict_file(names, tmp_path / "local.parquet", keep=["id"])
    assert _parts(run).to_pylist() == read_table(tmp_path / "local.parquet").to_pylist()
    assert run.stats.rows_in == run.stats.rows_predicted == 1514 and run.stats.rows_rejected == 0
    # pieces of 256 rows (200 rounded up to whole batches of 64): 6 for a.csv, 1 for b.csv, none for empty c.csv
    assert [Path(p).name for p in run.parts] == [f"part-00000-{r:012d}.parquet" for r in range(0, 1507, 256)] + [
        "part-00001-000000000000.parquet"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [Path(p).name for p in run.parts]
    assert run.sizing.actors == 1 and run.sizing.cpus_per_actor == 1 and run.sizing.read_cpus == 1


def test_rejects_counts_and_drift_are_the_local_engines(wines, tmp_path):
    names = _bad_inputs(wines, tmp_path / "in")
    run = tpray.predict_files(names, BUNDLE, tmp_path / "out", keep=["id"], rejects=tmp_path / "rejects.csv",
                              report=tmp_path / "report.json", output_format="csv", batch_size=32, piece_rows=64,
                              actors=2)
    local = load(BUNDLE, device="cpu", batch_size=32)
    stats = local.predict_file(names, tmp_path / "local.csv", keep=["id"], rejects=tmp_path / "local-rejects.csv",
                               report=tmp_path / "local-report.json")
    assert _parts(run).to_pylist() == read_table(tmp_path / "local.csv").to_pylist()
    assert read_table(tmp_path / "rejects.csv").to_pylist() == read_table(tmp_path / "local-rejects.csv").to_pylist()
    rejected = read_table(tmp_path / "rejects.csv")
    assert list(zip(rejected.column("file").to_pylist(), rejected.column("row").to_pylist(), strict=True)) == [
        (names[0], 3), (names[0], 17), (names[0], 250), (names[1], 3), (names[1], 250), (names[1], 290)]
    assert (run.stats.rows_in, run.stats.rows_predicted, run.stats.rows_rejected) == (601, 595, 6) == (
        stats.rows_in, stats.rows_predicted, stats.rows_rejected)
    report, expected = (json.loads((tmp_path / f).read_text()) for f in ("report.json", "local-report.json"))
    assert report["drift"] == expected["drift"] and report["drift"]
    assert report["engine"] == "ray" and report["actors"].startswith("2 actor(s) x 0.5 CPU")
    assert report["rows_rejected"] == 6 and report["startup_seconds"] > 0


def test_a_bad_row_without_rejects_fails_the_job_with_the_local_engines_error_and_leaves_nothing(wines, tmp_path):
    (tmp_path / "in").mkdir()
    names = [str(tmp_path / "in" / "good.csv"), str(tmp_path / "in" / "bad.csv")]
    write_table(wines, names[0])
    rows = wines.to_pylist()
    rows[3]["hue"] = "pale"
    pacsv.write_csv(pa.Table.from_pylist([{k: str(v) for k, v in row.items()} for row in rows]), names[1])
    local = load(BUNDLE, device="cpu")
    with pytest.raises(SchemaError) as expected:
        local.predict_file(names, tmp_path / "local.csv", keep=["id"])
    with pytest.raises(SchemaError) as got:
        tpray.predict_files(names, BUNDLE, tmp_path / "out", keep=["id"])
    assert str(got.value) == str(expected.value)
    assert str(got.value).startswith(f"file '{names[1]}': column 'hue'") and str(got.value).endswith("at row 3")
    assert list((tmp_path / "out").iterdir()) == []


def test_predict_gives_a_dataset_of_the_same_predictions_from_files_or_from_a_dataset(wines, tmp_path):
    names = _inputs(wines, tmp_path / "in")
    local = load(BUNDLE, device="cpu", batch_size=64)
    local.predict_file(names, tmp_path / "local.parquet", keep=["id"])
    expected = read_table(tmp_path / "local.parquet")
    ds = tpray.predict(names, BUNDLE, keep=["id"], batch_size=64, piece_rows=128, preserve_order=True)
    assert _collected(ds).to_pylist() == expected.to_pylist()
    table = pa.concat_tables([read_table(n) for n in names[:2]])
    from_dataset = tpray.predict(ray.data.from_arrow(table), BUNDLE, keep=["id"], columns=["cultivar"],
                                 preserve_order=True)
    got = _collected(from_dataset)
    assert got.column_names == ["id", "cultivar"]
    assert got.to_pylist() == expected.select(["id", "cultivar"]).to_pylist()
    with pytest.raises(InputError, match=r"unknown prediction column\(s\) 'score'"):
        tpray.predict(ray.data.from_arrow(table), BUNDLE, columns=["score"])


def test_output_and_input_mistakes_are_refused_before_the_job(wines, digits, digits_bundle, tmp_path):
    names = _inputs(wines, tmp_path / "in")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="exists and is not an empty folder"):
        tpray.predict_files(names, BUNDLE, tmp_path / "full")
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="reads files, not stdin"):
        tpray.predict_files("-", BUNDLE, tmp_path / "out", format="csv")
    with pytest.raises(InputError, match="the Ray engine predicts data files, not a folder or glob of images"):
        tpray.predict_files(digits["folder"] / "new", digits_bundle, tmp_path / "out")
    with pytest.raises(InputError, match="holds the input file .*a.csv'; write the parts to a folder without inputs"):
        tpray.predict_files(names, BUNDLE, tmp_path / "in")
    with pytest.raises(EngineError, match=r"2 actors x 1 CPU leave 0 of the cluster's 2 CPU\(s\) for reading.*"
                                          r"wait forever.*at most 0.5 CPU per actor"):
        tpray.predict_files(names, BUNDLE, tmp_path / "out", actors=2, cpus_per_actor=1)
    with pytest.raises(EngineError, match=r"1 GPU per actor asked for; the Ray cluster has 0 GPU\(s\)"):
        tpray.predict_files(names, BUNDLE, tmp_path / "out", gpus_per_actor=1)


def test_the_cli_joins_a_running_cluster_and_says_what_ran(wines, tmp_path):
    names = _inputs(wines, tmp_path / "in")
    address = ray.get_runtime_context().gcs_address
    done = run_cli("predict", BUNDLE, *names, "-o", tmp_path / "out", "--engine", "ray", "--ray-address", address,
                   "--keep", "id", "--actors", "2", "--report", tmp_path / "report.json")
    assert done.returncode == 0, done.stderr
    assert "predicted 1,514 rows" in done.stderr and "(2 part(s))" in done.stderr
    assert "ray: 2 actor(s) x 0.5 CPU on a cluster of 2 CPU(s)" in done.stderr
    local = run_cli("predict", BUNDLE, *names, "-o", tmp_path / "local.parquet", "--keep", "id")
    assert local.returncode == 0, local.stderr
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert pa.concat_tables([read_table(p) for p in parts]).to_pylist() == read_table(
        tmp_path / "local.parquet").to_pylist()


def test_the_cli_refuses_local_only_flags_and_ray_flags_without_the_engine(tmp_path):
    for args, message in (
            (["--engine", "ray"], "--engine ray writes a folder of parts: pass -o OUT_DIR"),
            (["--engine", "ray", "-o", tmp_path / "o", "--resume"],
             "--resume is for the local engine: a failed Ray job leaves no parts to resume from"),
            (["--engine", "ray", "-o", tmp_path / "o", "--threads", "2"],
             "--threads is for the local engine: each actor's threads follow --cpus-per-actor"),
            (["--actors", "2", "-o", tmp_path / "o.csv"], "--actors is for the Ray engine: add --engine ray")):
        done = run_cli("predict", BUNDLE, WINE / "new_wines.csv", *args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith(f"error: {message}"), done.stderr


def test_without_ray_installed_the_engine_says_how_to_install_it(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "ray.py").write_text("raise ImportError('No module named ray')\n")
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": f"{blocked}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "torchpredict", "predict", str(BUNDLE), str(WINE / "new_wines.csv"),
                           "-o", str(tmp_path / "out"), "--engine", "ray"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: the Ray engine needs Ray Data, which is not installed: "
                                   "pip install 'torchpredict[ray]'")


@pytest.mark.parametrize(("resources", "asked", "sized"), [
    ({"CPU": 2}, {}, (1, 1.0, 1.0)),  # one whole-CPU actor and a CPU for reading
    ({"CPU": 2}, {"actors": 2}, (2, 0.5, 1.0)),  # two actors share the CPU left
    ({"CPU": 1}, {}, (1, 0.5, 0.5)),  # one CPU: half for the actor, half for reading
    ({"CPU": 16}, {}, (15, 1.0, 1.0)),
    ({"CPU": 16}, {"cpus_per_actor": 4}, (3, 4.0, 1.0)),
    ({"CPU": 16, "GPU": 4}, {"gpus_per_actor": 1}, (4, 1.0, 1.0)),
    ({"CPU": 16, "GPU": 4}, {"gpus_per_actor": 0.5}, (8, 1.0, 1.0)),
])
def test_actors_are_sized_to_leave_the_read_tasks_a_cpu(resources, asked, sized):
    sizing = tpray.size_actors(resources, **asked)
    assert (sizing.actors, sizing.cpus_per_actor, sizing.read_cpus) == sized
    assert sizing.actors * sizing.cpus_per_actor + sizing.read_cpus <= resources["CPU"]
    assert sizing.threads == max(1, int(sizing.cpus_per_actor))


@pytest.mark.parametrize(("resources", "asked", "message"), [
    ({"CPU": 2}, {"actors": 2, "cpus_per_actor": 1}, r"2 actors x 1 CPU leave 0 of the cluster's 2 CPU\(s\) for "
     r"reading, which needs 1: the job would wait forever for a CPU; ask for at most 0.5 CPU per actor"),
    ({"CPU": 2}, {"actors": 300}, r"300 actors do not fit the cluster's 2 CPU\(s\) with 1 left for reading"),
    ({"CPU": 4, "GPU": 1}, {"gpus_per_actor": 2}, r"2 GPU per actor asked for; the Ray cluster has 1 GPU\(s\)"),
    ({"CPU": 4, "GPU": 2}, {"gpus_per_actor": 1, "actors": 3}, r"3 actors x 1 GPU do not fit the cluster's 2 GPU"),
    ({}, {}, "the Ray cluster has no CPU to run the job on"),
    ({"CPU": 2}, {"actors": 0}, "actors must be > 0, got 0"),
    ({"CPU": 2}, {"gpus_per_actor": -1}, "gpus_per_actor must be >= 0, got -1"),
])
def test_sizes_that_would_hang_or_cannot_fit_are_refused_with_what_would(resources, asked, message):
    with pytest.raises(EngineError, match=message):
        tpray.size_actors(resources, **asked)


def test_the_cli_starts_a_local_runtime_of_its_own_without_an_address(wines, tmp_path):
    names = _inputs(wines, tmp_path / "in")
    done = run_cli("predict", BUNDLE, *names[:2], "-o", tmp_path / "out", "--engine", "ray", "--keep", "id",
                   "--quiet", "--rejects", tmp_path / "rejects.csv")
    assert done.returncode == 0, done.stderr
    assert "predicted" not in done.stderr  # --quiet: no summary (and no progress bars)
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert sum(read_table(p).num_rows for p in parts) == 1514
    local = run_cli("predict", BUNDLE, *names[:2], "-o", tmp_path / "local.csv", "--keep", "id", "--quiet",
                    "--rejects", tmp_path / "local-rejects.csv")
    assert local.returncode == 0, local.stderr
    header = (tmp_path / "local-rejects.csv").read_text()
    assert (tmp_path / "rejects.csv").read_text() == header and header.startswith('"file","row","reason","alcohol"')
