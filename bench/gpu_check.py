"""GPU check: a bundle loaded with device="cuda" predicts what it predicts on the CPU.

Run on a machine with a GPU: `.venv/bin/python bench/gpu_check.py [--md FILE]`. Prints a table (--md: in
markdown to FILE too) and exits 0 when every check passes, 1 when one fails, and 0 with "skipped" where there
is no CUDA device.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from torchpredict.bundle import load, save
from torchpredict.cli.demo import train_wine


def _check(bundle: Path, table, label_column: str, prob_column: str) -> list[tuple[str, str]]:
    started = time.perf_counter()
    cpu = load(bundle, device="cpu").predict(table)
    cpu_s = time.perf_counter() - started
    started = time.perf_counter()
    gpu_predictor = load(bundle, device="cuda", verify=True)
    gpu = gpu_predictor.predict(table)
    gpu_s = time.perf_counter() - started
    same_labels = cpu.column(label_column).to_pylist() == gpu.column(label_column).to_pylist()
    diff = float(np.max(np.abs(cpu.column(prob_column).to_numpy() - gpu.column(prob_column).to_numpy())))
    return [("device", str(gpu_predictor.device)), ("golden examples on cuda", gpu_predictor.verify().describe()),
            ("rows", str(table.num_rows)), ("labels identical", str(same_labels)),
            ("max |prob cpu - prob cuda|", f"{diff:.2e}"), ("cpu load+predict s", f"{cpu_s:.3f}"),
            ("cuda load+predict s", f"{gpu_s:.3f}"), ("verdict", "ok" if same_labels and diff < 1e-4 else "FAILED")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--md", type=Path, help="also write the table, in markdown, to this file (not when skipped)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: skipped (no CUDA device on this machine)")
        return 0
    trained = train_wine()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = save(Path(tmp) / "wine.tpk", trained["model"], preprocessor=trained["preprocessor"],
                      heads=trained["head"], examples=trained["train"])
        rows = _check(bundle, trained["new"], "cultivar", "cultivar_probability")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.md:
        args.md.write_text("\n".join(["| check | value |", "|---|---|", *(f"| {n} | {v} |" for n, v in rows), ""]))
    return 0 if rows[-1][1] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
