"""Batch prediction: `torchpredict predict` against the floors and a tutorial script, in the same run.

Drives the peers harness (../shared/peers, see its README.md) on its fixed workload: a 1,000,000-row CSV
(an id, 32 floats, 2 categories) and an MLP 57 -> 256 -> 256 -> 10 behind standardize + one-hot. The
bundle is built here with torchpredict.save from the peers' own state_dict and training rows, so the
preprocessing statistics are the peers' ones. Prints one table: the read and forward floors, the
tutorial script, MLflow's pyfunc (in the harness's own virtualenv), torchpredict on 1M rows (as saved; from
a weights bundle; and optimized: `torchpredict optimize` stored ONNX Runtime as its backend, so the job runs
without torch) and on the same rows 5 times over, with wall time, peak RSS and the ratios the targets are stated
in; then checks that each torchpredict output equals Predictor.predict of its bundle on the whole table in memory.

    bash ../shared/peers/setup.sh                      # once: the peers' venv in /tmp/peers/venv
    /tmp/peers/venv/bin/python ../shared/peers/gen_data.py   # once: the data in /tmp/peers/data
    .venv/bin/python bench/batch.py [--reps 3] [--md FILE]

Every step has a timeout, and the script stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("PEERS_DIR", ROOT.parent / "shared" / "peers"))
PEERS_PY = Path(os.environ.get("PEERS_PY", "/tmp/peers/venv/bin/python"))
DATA = Path(os.environ.get("PEERS_DATA", "/tmp/peers/data"))
WORK = Path(os.environ.get("PEERS_OUT", "/tmp/peers/out"))
BUNDLE = Path("/tmp/peers/bundle")  # the model as a torch.export program (the default storage)
WEIGHTS_BUNDLE = Path("/tmp/peers/bundle-weights")  # safetensors + the peers' factory, common:build_model
FAST_BUNDLE = Path("/tmp/peers/bundle-fast")  # BUNDLE after `torchpredict optimize`: model.onnx + the choice
TORCHPREDICT = f"{sys.executable} -m torchpredict"
FLOORS = "F1-polars,F1-pyarrow,F2-forward,N-naive,M-mlflow-pyfunc"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions per variant (default 3)")
    parser.add_argument("--times", type=int, default=5, help="the large run reads the rows this many times")
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per process (default 300)")
    parser.add_argument("--extra", default="", help="extra torchpredict predict options, e.g. '--batch-size 8192'")
    parser.add_argument("--floors", default=FLOORS, help=f"the harness variants to compare with (default {FLOORS})")
    parser.add_argument("--cuda", action="store_true", help="also run torchpredict with --device cuda (TP-cuda)")
    parser.add_argument("--md", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    missing = [p for p in (PEERS / "run_batch.py", PEERS_PY, DATA / "data.csv", DATA / "model.pt") if not p.exists()]
    if missing:
        print(f"missing {', '.join(map(str, missing))}: run `bash {PEERS}/setup.sh` and "
              f"`{PEERS_PY} {PEERS}/gen_data.py` first", file=sys.stderr)
        return 2
    build_bundles()
    if "M-mlflow-pyfunc" in args.floors and not (DATA / "mlflow_model").exists():
        subprocess.run([str(PEERS_PY), str(PEERS / "build_mlflow.py")], check=True, timeout=args.timeout, cwd=PEERS)
    tp = f"{TORCHPREDICT} predict {{bundle}} {{csv}} -o {{out}} --quiet {args.extra}".strip()
    weights = f"PYTHONPATH={PEERS} {tp.replace('{bundle}', str(WEIGHTS_BUNDLE))} --trust-factory common"
    fast = f"{tp.replace('{bundle}', str(FAST_BUNDLE))} --device cpu"
    variants = {"TP": tp, "TP-weights": weights, "TP-optimized": fast,
                **({"TP-cuda": f"{tp} --device cuda"} if args.cuda else {})}
    harness = run_harness(variants, args.floors, args.reps, args.timeout)
    large = run_large(args.times, args.reps, args.timeout, args.extra)
    same = {"TP": same_as_in_memory(WORK / "TP.csv", BUNDLE),
            "TP-optimized": same_as_in_memory(WORK / "TP-optimized.csv", FAST_BUNDLE)}
    text = table(harness, large, args.times, same)
    print(text)
    if args.md:
        args.md.write_text(text.lstrip("\n") + "\n")
    return 0


def build_bundles() -> None:
    """The peers' model and preprocessing as bundles: standardize f0..f31, one-hot c0 and c1, id passed.

    Twice: with the model as a torch.export program (storage "auto", what `pack` and `save` make by
    default), and as safetensors weights + the peers' own factory (storage "weights"), which needs the
    model's Python class importable where it is loaded.
    """
    sys.path.insert(0, str(PEERS))
    import common  # the peers' workload definition (model class, columns, paths)

    from torchpredict.bundle import save
    from torchpredict.heads.classification import MulticlassClassification
    from torchpredict.preprocessing import OneHot, Preprocessor, Standardize

    train = pacsv.read_csv(DATA / "data_100k.csv")  # the rows the peers' statistics come from
    preprocessor = Preprocessor([Standardize(common.FEATS), OneHot(common.CATS)],
                                features=common.FEATS + common.CATS, passthrough=["id"]).fit(train)
    check_statistics(preprocessor, common.load_stats(DATA / "stats.json"))
    head = MulticlassClassification(target="pred", labels=list(range(common.N_CLASSES)), probabilities=False)
    model = common.load_model(DATA / "model.pt")
    save(BUNDLE, model, preprocessor=preprocessor, heads=head, examples=train.slice(0, 64), name="peers-mlp",
         overwrite=True)
    save(WEIGHTS_BUNDLE, model, preprocessor=preprocessor, heads=head, examples=train.slice(0, 64),
         name="peers-mlp", storage="weights", factory="common:build_model", overwrite=True)
    from torchpredict import optimize

    done = optimize(BUNDLE, FAST_BUNDLE, overwrite=True)  # the CLI job's batches are 4,096 rows; 1,024 timed
    print("\n".join(done.describe()), flush=True)


def check_statistics(preprocessor, stats: dict) -> None:
    """The fitted steps hold the peers' training statistics (else the comparison would be unfair)."""
    standardize = preprocessor.steps[0]
    state = standardize.to_dict()["state"]
    means = np.asarray([stats["mean"][c] for c in standardize.columns])
    stds = np.asarray([stats["std"][c] for c in standardize.columns])
    assert np.allclose(np.asarray(state["mean_"], dtype=float), means, rtol=1e-12), "standardize means differ"
    assert np.allclose(np.asarray(state["scale_"], dtype=float), stds, rtol=1e-12), "standardize scales differ"
    assert preprocessor.feature_names_[32:] == tuple(
        f"{c}={v}" for c in ("c0", "c1") for v in stats["categories"][c]), "one-hot columns differ"


def run_harness(variants: dict[str, str], floors: str, reps: int, timeout: int) -> dict:
    results = WORK.parent / "results" / "batch-torchpredict.json"
    command = [str(PEERS_PY), str(PEERS / "run_batch.py"), "--reps", str(reps), "--only", ",".join([floors, *variants]),
               "--bundle", str(BUNDLE), "--timeout", str(timeout), "--json", str(results)]
    for name, template in variants.items():
        command += ["--add", f"{name}={template}", "--add-check", f"{name}=csv,pred,pred_probability"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, timeout=timeout * (reps * 6 + 2), cwd=PEERS)
    return json.loads(results.read_text())


def run_large(times: int, reps: int, timeout: int, extra: str) -> list[dict]:
    """torchpredict on the 1M rows read `times` times over (header once), as one file."""
    big = DATA / f"data_x{times}.csv"
    if not big.exists():
        source = DATA / "data.csv"
        with open(source, "rb") as head:
            header_bytes = len(head.readline())
        with open(big, "wb") as out, open(source, "rb") as data:
            for i in range(times):
                data.seek(0 if i == 0 else header_bytes)
                shutil.copyfileobj(data, out, 16 << 20)
    runs = []
    for _ in range(reps):
        command = f"{TORCHPREDICT} predict {BUNDLE} {big} -o {WORK / 'TP-large.csv'} --quiet {extra}"
        runs.append(timed(command, timeout * times))
        print(f"[large x{times}] wall={runs[-1]['wall_s']:.2f}s rss={runs[-1]['rss_mb']:.0f}MB", flush=True)
    return runs


def timed(command: str, timeout: int) -> dict:
    done = subprocess.run(["/usr/bin/time", "-v", "bash", "-c", command], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{command} failed: {done.stderr[-2000:]}")
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", done.stderr).group(1)
    wall = sum(float(p) * 60 ** i for i, p in enumerate(reversed(clock.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) / 1024
    return {"wall_s": wall, "rss_mb": rss}


def same_as_in_memory(output: Path, bundle: Path) -> str:
    """Whether the CLI's output equals Predictor.predict of the same bundle (and backend, on the CPU) on the
    whole CSV read into memory."""
    import warnings

    from torchpredict.bundle import load
    from torchpredict.io.readers import read_table

    predictor = load(bundle, device="cpu", batch_size=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the drift warning: rows 100k.. reach beyond the training range
        expected = predictor.predict(read_table(DATA / "data.csv"))
    got = pacsv.read_csv(output, convert_options=pacsv.ConvertOptions(
        column_types={"pred": pa.int64(), "pred_probability": pa.float32()}))
    same = all(got.column(n).to_pylist() == expected.column(n).to_pylist() for n in expected.column_names)
    return f"identical ({expected.num_rows:,} rows, columns {expected.column_names})" if same else "DIFFERENT"


def table(harness: dict, large: list[dict], times: int, same: dict[str, str]) -> str:
    summary = harness["summary"]
    f1, f2 = harness["floor_read_s"], harness["floor_forward_s"]
    floors = f1 + f2
    tp, naive = summary["TP"], summary["N-naive"]
    big_wall = statistics.median(r["wall_s"] for r in large)
    big_rss = statistics.median(r["rss_mb"] for r in large)
    lines = ["", "| variant | rows | wall s (median) | rows/s | peak RSS MB | x (F1+F2) | check |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        check = s.get("check") or {}
        shown = (f"agree={check['pred_agree']:.4f} dprob={check['prob_max_abs_diff']:.1e}" if check else "")
        lines.append(f"| {name} | {s['rows']:,} | {s['wall_med_s']:.2f} ({s['wall_min_s']:.2f}-{s['wall_max_s']:.2f})"
                     f" | {s['rows_per_s']:,.0f} | {s['rss_med_mb']:,.0f} | {s['wall_med_s'] / floors:.2f} | {shown} |")
    rows = tp["rows"] * times
    lines.append(f"| TP x{times} rows | {rows:,} | {big_wall:.2f} | {rows / big_wall:,.0f} | {big_rss:,.0f} | "
                 f"{big_wall / (floors * times):.2f} (per row) | |")
    growth = big_rss / tp["rss_med_mb"] - 1
    lines += ["", f"floors: read F1 = {f1:.2f} s, forward F2 = {f2:.2f} s, F1+F2 = {floors:.2f} s", "",
              "| target | measured | met |", "|---|---|---|"]
    for name in [n for n in summary if n.startswith("TP")]:
        wall = summary[name]["wall_med_s"]
        lines += [target_row(f"{name}: wall <= 1.3 x (F1+F2)", f"{wall / floors:.2f} x", wall <= 1.3 * floors),
                  target_row(f"{name}: >= 2x faster than the tutorial script", f"{naive['wall_med_s'] / wall:.2f}x",
                          naive["wall_med_s"] >= 2 * wall)]
    lines += [target_row("peak RSS <= 700 MB on 1M rows", f"{tp['rss_med_mb']:.0f} MB", tp["rss_med_mb"] <= 700),
              target_row(f"RSS growth < 15% at {times}x rows", f"{growth:+.1%}", growth < 0.15)]
    lines += optimized_targets(summary, floors)
    lines += [target_row(f"{name} output equals Predictor.predict in memory", text, text.startswith("identical"))
              for name, text in same.items()]
    return "\n".join(lines)


def optimized_targets(summary: dict, floors: float) -> list[str]:
    """Issue 14's targets for the optimized bundle: against the tutorial script, MLflow's pyfunc and the floors."""
    fast = summary.get("TP-optimized")
    if fast is None:
        return []
    wall, rss = fast["wall_med_s"], fast["rss_med_mb"]
    rows = [target_row("TP-optimized: wall <= 0.8 x (F1+F2)", f"{wall / floors:.2f} x", wall <= 0.8 * floors)]
    for name, times in (("N-naive", 3), ("M-mlflow-pyfunc", 4)):
        peer = summary.get(name)
        if peer is None:
            rows.append(target_row(f"TP-optimized: >= {times}x {name}'s rows/s", f"{name} not run", False))
            continue
        rows += [target_row(f"TP-optimized: >= {times}x {name}'s rows/s", f"{peer['wall_med_s'] / wall:.2f}x",
                            peer["wall_med_s"] >= times * wall),
                 target_row(f"TP-optimized: peak RSS < 1/3 of {name}'s", f"{rss:.0f} / {peer['rss_med_mb']:.0f} MB",
                            rss < peer["rss_med_mb"] / 3)]
    return rows


def target_row(name: str, measured: str, met: bool) -> str:
    """One row of a targets table: what, the figure, met or not."""
    return f"| {name} | {measured} | {'yes' if met else 'NO'} |"


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"\nbench/batch.py done in {time.perf_counter() - started:.0f} s")
    sys.exit(code)
