"""Backends: rows/s of the infer stage per backend for an MLP and a CNN, as ratios to eager PyTorch in the same run.

Batches of 1, 64, 256 and 4,096 rows.

Two bundles, built here (torch.manual_seed fixed):
  mlp  the serving benchmark's MLP (bench/latency.py: 57 -> 256 -> 256 -> 10 over 32 standardized floats and two
       one-hot categoricals)
  cnn  a CNN trained on scikit-learn's digits (tests/backend_models.py: two conv + max-pool blocks over the 8x8
       image, then a Linear)

Each backend is loaded as a user would (`torchpredict.load(bundle, backend=...)`: built, then verified on the golden
rows; int8 with verify_backend=False, as it is approximate), and the infer stage (tensors in, the forward pass, the
raw outputs back) is timed on the same preprocessed rows for every backend, the backends alternating round by
round; each cell is the median seconds per call. "auto" is what `backend="auto"` chose (timing its candidates on
batches of the largest size here, at most 1,024 rows). torch and ONNX Runtime get the same threads (--threads,
default every core).
Run: `.venv/bin/python bench/backends.py [--quick] [--threads N] [--md FILE]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import bench_bundle, bench_table

from torchpredict import load
from torchpredict.device import cpu_cores
from torchpredict.errors import BackendError

SIZES = (1, 64, 256, 4096)
BACKENDS = ("eager", "onnxruntime", "compile", "int8", "channels_last", "auto")
TARGETS = (("mlp", 64, 1.2), ("cnn", 256, 4.0))  # issue 14: auto >= these times eager


def mlp_bundle(folder: Path) -> tuple[Path, Any]:
    """bench/latency.py's benchmark bundle (its MLP, preprocessing and data), and rows to predict."""
    bench_bundle(folder)
    return folder / "bench.tpk", bench_table(5_000)


def cnn_bundle(folder: Path, steps: int) -> tuple[Path, Any]:
    from backend_models import save_digits_cnn, train_digits_cnn

    trained = train_digits_cnn(steps=steps)
    return save_digits_cnn(folder / "cnn.tpk", trained), trained["train"]


def timed(fn: Callable[[], Any], budget: float) -> float:
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 500):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(bundle: Path, rows: Any, sizes: tuple[int, ...], budget: float, rounds: int,
            threads: int) -> tuple[dict[tuple[str, int], float], str, str]:
    """Seconds per infer call by (backend, batch size), what auto chose, and auto's report."""
    predictors = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for backend in BACKENDS:
            options = {"verify_backend": False} if backend == "int8" else {}
            try:
                predictors[backend] = load(bundle, device="cpu", backend=backend, batch_size=max(sizes),
                                           threads=threads, **options)
            except BackendError as exc:  # channels_last on the MLP: nothing to lay out
                print(f"{bundle.stem} {backend}: {exc}")
    auto = predictors["auto"].backend_report
    inputs = predictors["eager"].preprocess(predictors["eager"].validate(rows.slice(0, max(sizes))))
    found: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for size in sizes:
            batch = {name: np.resize(array, (size, *array.shape[1:])) for name, array in inputs.items()}
            for backend, predictor in predictors.items():
                seconds = timed(lambda p=predictor, b=batch, n=size: list(p.infer(b, batch_size=n)), budget)
                found.setdefault((backend, size), []).append(seconds)
    return {key: statistics.median(values) for key, values in found.items()}, auto.chosen, auto.describe()


def table(results: dict[str, dict[tuple[str, int], float]], sizes: tuple[int, ...], chosen: dict[str, str]) -> str:
    lines = ["| model | backend | " + " | ".join(f"batch {s:,}: rows/s (x eager)" for s in sizes) + " |",
             "| --- | --- | " + " | ".join("---" for _ in sizes) + " |"]
    for model, cells in results.items():
        for backend in (b for b in BACKENDS if (b, sizes[0]) in cells):
            name = f"auto ({chosen[model]})" if backend == "auto" else backend + (" (approximate)" if
                                                                               backend == "int8" else "")
            row = [f"{s / cells[backend, s]:,.0f} ({cells['eager', s] / cells[backend, s]:.2f}x)" for s in sizes]
            lines.append(f"| {model} | {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets(results: dict[str, dict[tuple[str, int], float]], sizes: tuple[int, ...]) -> list[str]:
    lines = []
    for model, size, wanted in TARGETS:
        if size not in sizes:
            continue
        cells = results[model]
        ratio = cells["eager", size] / cells["auto", size]
        lines.append(f"- {model} auto >= {wanted}x eager at batch {size}: {ratio:.2f}x "
                     f"{'MET' if ratio >= wanted else 'NOT MET'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--threads", type=int, default=cpu_cores(), help="torch and ONNX Runtime threads "
                        "(default: every core this process may use)")
    parser.add_argument("--md", type=Path, help="also write the table and the targets, in markdown, to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget, rounds, sizes = (0.05, 1, (1, 64, 256)) if args.quick else (0.4, 3, SIZES)
    results, chosen, reports = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for model, build in (("mlp", lambda: mlp_bundle(Path(tmp))),
                             ("cnn", lambda: cnn_bundle(Path(tmp), 20 if args.quick else 100))):
            bundle, rows = build()
            results[model], chosen[model], reports[model] = measure(bundle, rows, sizes, budget, rounds, args.threads)
    text = table(results, sizes, chosen)
    lines = [f"torch {torch.__version__}, {args.threads} thread(s); infer stage, median seconds per call", "", text, "",
             "Targets:", *targets(results, sizes), "", "auto's own reports:",
             *(f"- {model}: {report}" for model, report in reports.items())]
    print("\n".join(lines))
    if args.md:
        args.md.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
