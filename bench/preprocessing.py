"""Preprocessing throughput: rows per second through torchpredict vs scikit-learn's ColumnTransformer.

The workload is 1,000,000 rows with 32 numeric columns (1% missing) and 4 categorical ones (5, 12, 30 and
60 categories, 1% missing): impute + standardize the numbers, impute + one-hot the categories. The
ColumnTransformer is fitted once; torchpredict runs the Preprocessor converted from it (from_sklearn), so
both compute the same matrix, which is checked. Each side gets its native input: scikit-learn a pandas
DataFrame, torchpredict an Arrow table (a row for torchpredict on the DataFrame, conversion included, is
printed too). Repetitions alternate; the best time of each counts.
Run: `.venv/bin/python bench/preprocessing.py [--rows N] [--reps N] [--md FILE]` (--md: the table in markdown too).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from torchpredict.preprocessing import from_sklearn

N_NUMBERS, CARDINALITIES, MISSING = 32, (5, 12, 30, 60), 0.01


def workload(n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(N_NUMBERS):
        x = rng.normal(loc=i, scale=1 + i % 5, size=n_rows)
        x[rng.random(n_rows) < MISSING] = np.nan
        columns[f"n{i}"] = x
    for j, k in enumerate(CARDINALITIES):
        values = np.array([f"cat{j}_{v}" for v in range(k)], dtype=object)[rng.zipf(1.5, n_rows) % k]
        values[rng.random(n_rows) < MISSING] = None
        columns[f"c{j}"] = values
    return pd.DataFrame(columns)


def column_transformer(frame: pd.DataFrame) -> ColumnTransformer:
    numbers = [c for c in frame.columns if c.startswith("n")]
    categories = [c for c in frame.columns if c.startswith("c")]
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), numbers),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore", sparse_output=False)), categories),
    ])


def best(fn: Callable[[], Any], times: list[float]) -> Any:
    started = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions per variant (default 3)")
    parser.add_argument("--md", type=Path, help="also write the table, in markdown, to this file")
    args = parser.parse_args()

    frame = workload(args.rows)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ct = column_transformer(frame).fit(frame.iloc[:200_000])
    pre = from_sklearn(ct)

    variants: dict[str, Callable[[], np.ndarray]] = {
        "scikit-learn ColumnTransformer (DataFrame)": lambda: ct.transform(frame),
        "torchpredict Preprocessor (Arrow table)": lambda: pre.transform(table)["x"],
        "torchpredict Preprocessor (DataFrame)": lambda: pre.transform(frame)["x"],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, fn in variants.items():
            out = best(fn, times[name])
            del out

    expected, got = ct.transform(frame.iloc[:100_000]), pre.transform(table.slice(0, 100_000))["x"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # the same matrix, to float32 precision

    baseline = min(times[next(iter(variants))])
    about = (f"{args.rows:,} rows x ({N_NUMBERS} numeric + {len(CARDINALITIES)} categorical) -> "
             f"{expected.shape[1]} model inputs; best of {args.reps}")
    rows = [(name, f"{min(measured):.2f}", f"{args.rows / min(measured):,.0f}", f"{baseline / min(measured):.2f}x")
            for name, measured in times.items()]
    print(about)
    print(f"{'variant':<46} {'seconds':>8} {'rows/s':>12} {'vs sklearn':>10}")
    for name, seconds, rate, ratio in rows:
        print(f"{name:<46} {seconds:>8} {rate:>12} {ratio:>10}")
    if args.md:
        args.md.write_text("\n".join([about, "", "| variant | seconds | rows/s | vs sklearn |", "|---|---|---|---|",
                                      *("| " + " | ".join(r) + " |" for r in rows), ""]))


if __name__ == "__main__":
    main()
