"""The Ray engine against the local engine on the same file, in the same run, with Ray's fixed cost apart.

Writes a CSV of N wines (tests/data/wine-v1's new rows repeated; 1,000,000 by default) and predicts it with the
wine bundle through the CLI, each a whole `torchpredict predict` process as a user runs it: the local engine
(one file out) and the Ray engine (a local Ray runtime started by the command, a folder of parts out) with its
default actors and with two half-CPU actors. The fixed cost of each engine is the same command on a 40-row file;
rows/s are given over the whole process and with the fixed cost taken off, and the crossover (the rows from
which the Ray engine would finish first) follows from the two. Checks that the parts hold exactly the local
engine's predictions.

    .venv/bin/python bench/ray.py [--rows 1000000] [--reps 2] [--md FILE]

Each process has a timeout and the script stops by itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
WINE = ROOT / "tests" / "data" / "wine-v1"
BUNDLE = WINE / "wine.tpk"
TORCHPREDICT = [sys.executable, "-m", "torchpredict"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the big file (default 1,000,000)")
    parser.add_argument("--reps", type=int, default=2, help="runs per variant, the median reported (default 2)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per process (default 600)")
    parser.add_argument("--quick", action="store_true", help="200,000 rows, one run each")
    parser.add_argument("--md", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.reps = 200_000, 1
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # this file is bench/ray.py: `import ray` must find Ray, not it
    try:
        import ray  # noqa: F401
    except ImportError:
        print("skipped: Ray is not installed (pip install 'torchpredict[ray]')")
        return 0
    work = Path(tempfile.mkdtemp(prefix="tp-bench-ray-"))
    try:
        return _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path) -> int:
    wines = pacsv.read_csv(WINE / "new_wines.csv")
    big, small = work / "big.csv", work / "small.csv"
    _write_rows(wines, args.rows, big)
    pacsv.write_csv(wines, small)
    variants = {
        "local": lambda src, out: ["-o", str(out / "out.parquet")],
        "ray (default actors)": lambda src, out: ["-o", str(out / "parts"), "--engine", "ray"],
        "ray (2 actors x 0.5 CPU)": lambda src, out: ["-o", str(out / "parts"), "--engine", "ray", "--actors", "2"],
    }
    timings: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.reps):
        for name, options in variants.items():  # alternating, so that drift in the machine's load hits all alike
            for size, source in (("fixed", small), ("big", big)):
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                seconds = _run([*TORCHPREDICT, "predict", str(BUNDLE), str(source), "--keep", "id", "--quiet",
                                *options(source, out)], args.timeout)
                timings.setdefault((name, size), []).append(seconds)
                if size == "big" and name != "local":
                    _check_same(out / "parts", work / "expected.parquet")
                elif size == "big":
                    shutil.copy(out / "out.parquet", work / "expected.parquet")
    lines = _table(args.rows, variants, timings)
    text = "\n".join(lines)
    print(text)
    if args.md:
        args.md.write_text(text + "\n")
    return 0


def _write_rows(wines: pa.Table, rows: int, path: Path) -> None:
    block = pa.concat_tables([wines] * 2500)  # 100,000 rows
    with pacsv.CSVWriter(path, wines.schema) as writer:
        for start in range(0, rows, block.num_rows):
            writer.write_table(block.slice(0, min(block.num_rows, rows - start)))


def _run(command: list[str], timeout: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, start_new_session=True,
                          env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def _check_same(parts: Path, expected: Path) -> None:
    got = pa.concat_tables([pq.read_table(p) for p in sorted(parts.glob("part-*.parquet"))])
    if not got.equals(pq.read_table(expected)):
        raise SystemExit(f"the Ray engine's parts in {parts} differ from the local engine's predictions")


def _table(rows: int, variants: dict, timings: dict[tuple[str, str], list[float]]) -> list[str]:
    median = {key: statistics.median(values) for key, values in timings.items()}
    local_fixed, local_big = median[("local", "fixed")], median[("local", "big")]
    local_rate = rows / max(local_big - local_fixed, 1e-9)
    lines = [f"### Ray engine vs local engine: {rows:,}-row CSV -> predictions, wine bundle, {os.cpu_count()} CPUs",
             "", "| engine | fixed cost (40 rows), s | whole run, s | rows/s (whole) | rows/s (less the fixed cost) "
             "| vs local (whole) | crossover, rows |", "|---|---|---|---|---|---|---|"]
    for name in variants:
        fixed, big = median[(name, "fixed")], median[(name, "big")]
        rate = rows / max(big - fixed, 1e-9)
        if name == "local":
            crossover = "-"
        elif rate > local_rate:
            crossover = f"{(fixed - local_fixed) / (1 / local_rate - 1 / rate):,.0f}"
        else:
            crossover = "none here (slower per row)"
        lines.append(f"| {name} | {fixed:.2f} | {big:.2f} | {rows / big:,.0f} | {rate:,.0f} | {local_big / big:.2f}x "
                     f"| {crossover} |")
    lines += ["", "Each a whole `torchpredict predict` process (median of the runs); the Ray rows start a local Ray "
              "runtime on this machine's CPUs in the command. Parts checked equal to the local engine's output."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
