"""Latency per call: what each Predictor stage and Predictor.predict cost at 1, 16, 256 and 4,096 rows.

Three bundles, built here from generated data (torch.manual_seed fixed):
  bench  the serving benchmark: 32 standardized floats, two one-hot categoricals (5 and 20 categories), an id
         passed through, an MLP 57 -> 256 -> 256 -> 10 and a MulticlassClassification head; compared with the
         same computation written by hand in numpy (standardize, one-hot, argmax + softmax) around the same eager
         torch model, in the same run
  wine   the demo bundle (torchpredict.cli.demo.train_wine: 13 standardized floats, a small MLP)
  text   a tiny seq2seq Transformer sorting digit strings (tests/seq2seq_model.py), greedy decoding

Each cell is the median time of one call over many repeats (µs), on one torch thread, after gc.freeze() (as a
serving process would do after loading). The stages are timed on an Arrow table of the rows; predict on the
table and on a list of records (what a server parses a JSON body into). "stages" is the sum of the five, each
timed in a loop of its own (its code and data hot in the caches); "stages (records)" the same with validate,
preprocess and assemble on records (a few records take the small path: no Arrow table); "in sequence" times the five
one after the other, as predict and the server run them, which on a small batch costs about twice as much (the
caches cold for each). The targets of the benchmark bundle follow the table.
Run: `.venv/bin/python bench/latency.py [--quick] [--json FILE] [--compare FILE] [--md FILE]`; --compare prints the
ratio of each cell to the same cell of an earlier --json run (e.g. of the code before a change); --md also writes
the table in markdown (scripts/bench collects it into bench/README.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from torchpredict.bundle import load, save
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.predictor import Predictor
from torchpredict.preprocessing import OneHot, Preprocessor, Standardize

SIZES = (1, 16, 256, 4096)
FEATS = [f"f{i}" for i in range(32)]
CATS = {"c0": 5, "c1": 20}
STAGES = ("validate", "preprocess", "infer", "interpret", "assemble")
RATIO = " x numpy"  # the suffix of the ratio lines' names


# -- the bundles ------------------------------------------------------------------------------------------


def bench_table(n_rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {"id": pa.array(np.arange(n_rows), pa.int64())}
    for i, name in enumerate(FEATS):
        columns[name] = rng.normal(loc=i, scale=1 + i % 5, size=n_rows)
    for name, k in CATS.items():
        columns[name] = pa.array(np.array([f"{name}_{v}" for v in range(k)], dtype=object)[rng.integers(0, k, n_rows)],
                                 pa.string())
    return pa.table(columns)


def bench_bundle(folder: Path) -> tuple[Predictor, Callable[[pa.Table], Any], Any]:
    """The benchmark bundle, and the same computation by hand in numpy (with its own input form)."""
    train = bench_table(20_000)
    preprocessor = Preprocessor([Standardize(FEATS), OneHot(list(CATS))], features=FEATS + list(CATS),
                                passthrough=["id"]).fit(train)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(57, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 10)).eval()
    head = MulticlassClassification(target="pred", labels=list(range(10)), probabilities=False)
    path = save(folder / "bench.tpk", model, preprocessor=preprocessor, heads=head, examples=train.slice(0, 64),
                name="bench-mlp")
    predictor = load(path, device="cpu", batch_size=max(SIZES))

    standardize, onehot = preprocessor.steps
    mean, scale = np.array(standardize.mean_), np.array(standardize.scale_)
    lookups = [{c: j for j, c in enumerate(cats)} for cats in onehot.categories_]
    offsets = np.cumsum([0, *(len(c) for c in onehot.categories_)])[:-1] + len(FEATS)

    def by_hand(rows: tuple[np.ndarray, list[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
        floats, cats, ids = rows
        x = np.zeros((len(floats), 57), dtype=np.float32)
        x[:, :32] = (floats - mean) / scale
        for lookup, offset, values in zip(lookups, offsets, cats, strict=True):
            x[np.arange(len(values)), offset + np.array([lookup[v] for v in values])] = 1.0
        with torch.inference_mode():
            h = model(torch.from_numpy(x)).numpy()
        best = h.argmax(axis=1)
        e = np.exp(h - h.max(axis=1, keepdims=True))
        return {"id": ids, "pred": best, "pred_probability": (e[np.arange(len(h)), best] / e.sum(axis=1))}

    def hand_input(table: pa.Table) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        floats = np.column_stack([table.column(n).to_numpy() for n in FEATS])
        return floats, [table.column(n).to_numpy(zero_copy_only=False) for n in CATS], table.column("id").to_numpy()

    return predictor, by_hand, hand_input


def wine_bundle(folder: Path) -> tuple[Predictor, pa.Table]:
    from torchpredict.cli.demo import train_wine

    trained = train_wine(seed=0, ids=True)
    path = save(folder / "wine.tpk", trained["model"], preprocessor=trained["preprocessor"], heads=trained["head"],
                examples=trained["train"])
    return load(path, device="cpu", batch_size=max(SIZES)), pa.concat_tables([trained["train"], trained["new"]])


def text_bundle(folder: Path) -> tuple[Predictor, pa.Table]:
    """A tiny digit-sorting seq2seq model (a few training steps: this is about time, not accuracy)."""
    from seq2seq_model import MAX_DIGITS, TASKS, Seq2Seq, digit_strings, fit
    from torchpredict.heads.sequences import Seq2Seq as Seq2SeqHead
    from torchpredict.preprocessing import TextEncode

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    texts = digit_strings(600, rng)
    table = pa.table({"src": texts, "tgt": [TASKS["sort"](s) for s in texts]})
    encoder = TextEncode(["src", "tgt"], max_length=MAX_DIGITS + 2, add_bos=True).fit(table)
    encoded = encoder.transform(table)
    src, tgt = (torch.from_numpy(np.asarray(encoded.column(n).combine_chunks().flatten()).reshape(len(texts), -1))
                for n in ("src", "tgt"))
    model = Seq2Seq(len(encoder.vocabulary("src")), len(encoder.vocabulary("tgt")), d_model=16, nhead=2, layers=1,
                    ff=32)
    fit(model, src, tgt[:, :-1], tgt[:, 1:], steps=20, batch_size=64, rng=rng)
    train = {"digits": texts}
    preprocessor = Preprocessor([TextEncode(["digits"], max_length=MAX_DIGITS + 2, add_bos=True)],
                                inputs={"src": ["digits"]}).fit(train)
    head = Seq2SeqHead("sorted", max_length=MAX_DIGITS + 1).fit([TASKS["sort"](s) for s in texts])
    path = save(folder / "text.tpk", model, preprocessor=preprocessor, heads=head, examples=train)
    return load(path, device="cpu", batch_size=max(SIZES)), pa.table({"digits": texts})


# -- timing -----------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], budget: float, min_reps: int = 5, max_reps: int = 2000) -> float:
    """Median seconds of one call of fn, repeated for about `budget` seconds (at least min_reps times)."""
    fn()  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < min_reps or (time.perf_counter() < deadline and len(times) < max_reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def rows_of(table: pa.Table, n: int) -> pa.Table:
    """n rows: the table's first n, repeated when it has fewer."""
    if table.num_rows < n:
        table = pa.concat_tables([table] * (n // table.num_rows + 1))
    return table.slice(0, n).combine_chunks()


def measure(predictor: Predictor, table: pa.Table, budget: float) -> dict[str, float]:
    """Seconds per call of each stage, of their sum, and of predict on the table and on records."""
    validated = predictor.validate(table)
    inputs = predictor.preprocess(validated)
    [batch] = list(predictor.infer(inputs))
    columns, reasons = predictor.interpret(batch), predictor.refused(batch)
    records = table.to_pylist()
    from_records = predictor.validate(records)  # a few records: validated without a table (the small path)
    calls: dict[str, Callable[[], Any]] = {
        "validate": lambda: predictor.validate(table),
        "preprocess": lambda: predictor.preprocess(validated),
        "infer": lambda: list(predictor.infer(inputs)),
        "interpret": lambda: (predictor.interpret(batch), predictor.refused(batch)),
        "assemble": lambda: predictor.assemble(validated, columns, reasons),
        "validate (records)": lambda: predictor.validate(records),
        "preprocess (records)": lambda: predictor.preprocess(from_records),
        "assemble (records)": lambda: predictor.assemble(from_records, columns, reasons),
        "predict (Arrow table)": lambda: predictor.predict(table),
        "predict (records)": lambda: predictor.predict(records),
    }

    def in_sequence() -> Any:
        checked = predictor.validate(table)
        [ran] = list(predictor.infer(predictor.preprocess(checked)))
        return predictor.assemble(checked, predictor.interpret(ran), predictor.refused(ran))

    found = {name: timed(call, budget) for name, call in calls.items()}
    found["stages"] = sum(found[s] for s in STAGES)
    found["stages (records)"] = sum(found[f"{s} (records)"] if f"{s} (records)" in found else found[s] for s in STAGES)
    found["in sequence"] = timed(in_sequence, budget)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (seconds, not a minute), for a smoke test")
    parser.add_argument("--json", type=Path, help="also write the measurements (seconds) to this file")
    parser.add_argument("--compare", type=Path, help="an earlier --json file: print each cell's ratio to it")
    parser.add_argument("--md", type=Path, help="also write the table and the targets, in markdown, to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    budget = 0.02 if args.quick else 0.25
    warnings.simplefilter("ignore")  # drift warnings: the repeated rows are not the point here
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        predictor, by_hand, hand_input = bench_bundle(Path(folder))
        wine, wine_rows = wine_bundle(Path(folder))
        text, text_rows = text_bundle(Path(folder))
    gc.collect()
    gc.freeze()
    bench_rows = bench_table(max(SIZES), seed=1)
    for name, (p, rows) in {"bench": (predictor, bench_rows), "wine": (wine, wine_rows),
                            "text": (text, text_rows)}.items():
        sizes = SIZES[:3] if args.quick and name == "text" else SIZES
        for n in sizes:
            table = rows_of(rows, n)
            cell = measure(p, table, budget if name != "text" else budget / 2)
            if name == "bench":
                hand = hand_input(table)
                same = by_hand(hand)["pred"].tolist() == p.predict(table).column("pred").to_pylist()
                assert same, "the hand-written numpy predicts other labels than the bundle"
                cell["numpy by hand"] = timed(lambda hand=hand: by_hand(hand), budget)
            results.setdefault(name, {})[str(n)] = cell
    earlier = json.loads(args.compare.read_text()) if args.compare else None
    goals = targets(results["bench"], earlier)
    print(report(results, earlier))
    print(goals)
    if args.md:
        args.md.write_text(report_md(results, earlier, goals))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\nbench/latency.py done in {time.perf_counter() - started:.0f} s (torch threads: 1)")
    return 0


def targets(bench: dict[str, dict[str, float]], earlier: dict | None) -> str:
    """The issue's targets for the benchmark bundle, one thread: a one-row predict <= 150 µs, the stages' fixed
    cost (their sum on one record over the same computation by hand) <= 50 µs, 4,096-row calls no slower."""
    one, most = bench["1"], bench[str(max(SIZES))]
    fixed = one["stages (records)"] - one["numpy by hand"]
    lines = ["", "target (bench bundle, one thread)                    measured          met",
             f"one-row predict (records) <= 150 µs                  {one['predict (records)'] * 1e6:7.0f} µs"
             f"        {'yes' if one['predict (records)'] <= 150e-6 else 'NO'}",
             f"one-row predict (Arrow table), for comparison        {one['predict (Arrow table)'] * 1e6:7.0f} µs",
             f"stages' fixed cost per call <= 50 µs (1 record)      {fixed * 1e6:7.0f} µs"
             f"        {'yes' if fixed <= 50e-6 else 'NO'}"]
    before = (earlier or {}).get("bench", {}).get(str(max(SIZES)))
    for name in ("predict (Arrow table)", "predict (records)"):
        if before and name in before:
            ratio = most[name] / before[name]
            lines.append(f"{max(SIZES):,}-row {name} vs the earlier run      {ratio:7.2f}x"
                         f"          {'yes' if ratio <= 1.1 else 'NO'} (within 10 %: this machine's noise)")
        else:
            lines.append(f"{max(SIZES):,}-row {name}: {most[name] * 1e3:.1f} ms (--compare an earlier run to check)")
    return "\n".join(lines)


def report(results: dict[str, dict[str, dict[str, float]]], earlier: dict | None) -> str:
    """One table: µs per call per bundle, stage and row count; ratios to numpy by hand (and to an earlier run)."""
    sizes = [str(n) for n in SIZES]
    header = f"{'bundle':<6} {'call':<22}" + "".join(f"{n + ' rows':>13}" for n in sizes)
    lines = [caption(earlier), header, "-" * len(header)]
    for bundle, calls in cells(results, earlier).items():
        for name, row in calls:
            label = f"{name.removesuffix(RATIO)[:13]}{RATIO}" if name.endswith(RATIO) else name
            lines.append(f"{bundle:<6} {label:<22}" + "".join(f"{cell:>13}" for cell in row))
        lines.append("")
    return "\n".join(lines)


def report_md(results: dict[str, dict[str, dict[str, float]]], earlier: dict | None, targets_text: str) -> str:
    """The same table in markdown (the calls' names in full), then the targets as printed."""
    lines = [caption(earlier), "", "| bundle | call | " + " | ".join(f"{n} rows" for n in SIZES) + " |",
             "|---|---|" + "---|" * len(SIZES)]
    for bundle, calls in cells(results, earlier).items():
        lines += [f"| {bundle} | {name} | " + " | ".join(row) + " |" for name, row in calls]
    return "\n".join([*lines, "", "```text", targets_text.strip("\n"), "```", ""])



def caption(earlier: dict | None) -> str:
    return ("µs per call (median); 'x numpy': the cell over numpy by hand" +
            ("; '(xN)': the earlier run's cell over this one" if earlier else ""))


def cells(results: dict[str, dict[str, dict[str, float]]],
          earlier: dict | None) -> dict[str, list[tuple[str, list[str]]]]:
    """Per bundle, its lines: a call (or 'CALL x numpy', a ratio) and its cell per row count ('-' where not run)."""
    sizes = [str(n) for n in SIZES]
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for bundle, by_size in results.items():
        lines = found.setdefault(bundle, [])
        for name in next(iter(by_size.values())):
            row = []
            for n in sizes:
                value = by_size.get(n, {}).get(name)
                text = "-" if value is None else f"{value * 1e6:,.0f}"
                before = (earlier or {}).get(bundle, {}).get(n, {}).get(name)
                if value is not None and before:
                    text += f" (x{before / value:.1f})"
                row.append(text)
            lines.append((name, row))
        if bundle == "bench":
            for name in ("stages", "stages (records)", "in sequence", "predict (Arrow table)", "predict (records)"):
                lines.append((name + RATIO, [f"{by_size[n][name] / by_size[n]['numpy by hand']:.1f}x" for n in sizes]))
    return found

if __name__ == "__main__":
    sys.exit(main())
