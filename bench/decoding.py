"""Decoding throughput: sequences per second for greedy (and beam) decoding at batch 1 vs batch 64.

Trains the digit-sorting Transformer of tests/seq2seq_model.py (fewer steps are fine: this is about
speed), then decodes the same held-out strings one at a time and 64 at a time, with the eager model, with
its torch.export round trip (how bundles store it), and end to end through a saved bundle's
`load(...).predict` (strings in, strings out: preprocessing and detokenisation included).
Run: `.venv/bin/python bench/decoding.py [--md FILE]` (--md: the table in markdown too).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from seq2seq_model import MAX_DIGITS, MAX_POSITIONS, Trained, train_seq2seq  # found through the path above
from torchpredict.bundle import load, save
from torchpredict.heads.sequences import Seq2Seq
from torchpredict.inference.decoding import beam_search, greedy
from torchpredict.model.export_reader import read_archive
from torchpredict.predictor import Predictor
from torchpredict.preprocessing import Preprocessor, TextEncode
from torchpredict.preprocessing.text import BOS_ID, EOS_ID

Decoder = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def exported(trained: Trained, src: torch.Tensor) -> torch.nn.Module:
    """The model after torch.export (dynamic batch, src_len, tgt_len), save and load, as a bundle holds it."""
    dims = {
        "src": {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("src_len", min=1, max=MAX_POSITIONS)},
        "tgt": {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("tgt_len", min=1, max=MAX_POSITIONS)},
    }
    program = torch.export.export(trained.model, (src[:2], torch.full((2, 3), BOS_ID)), dynamic_shapes=dims)
    with tempfile.TemporaryDirectory() as folder:
        torch.export.save(program, Path(folder) / "model.pt2")
        return read_archive(Path(folder) / "model.pt2")  # as load() reads it on the CPU


def bundled(trained: Trained) -> Predictor:
    """The model saved as a bundle, as a training script would save it, and loaded back."""
    train = {"digits": trained.train}
    encoder = TextEncode(["digits"], max_length=MAX_DIGITS + 2, add_bos=True)  # as train_seq2seq encodes "src"
    preprocessor = Preprocessor([encoder], inputs={"src": ["digits"]}).fit(train)
    head = Seq2Seq("sorted", max_length=MAX_DIGITS + 1).fit(trained.answers(trained.train))
    with tempfile.TemporaryDirectory() as folder:
        path = save(Path(folder) / "sort.tpk", trained.model, preprocessor=preprocessor, heads=head, examples=train)
        return load(path, device="cpu")


def bundle_rate(predictor: Predictor, texts: list[str], batch: int, repeats: int) -> float:
    """Median sequences per second of predictor.predict at batch size `batch`: strings in, strings out."""
    predictor.batch_size = batch
    predictor.predict({"digits": texts[:batch]})  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict({"digits": texts})
        times.append(time.perf_counter() - started)
    return len(texts) / statistics.median(times)


def rate(model: Callable, decoder: Decoder, src: torch.Tensor, batch: int, repeats: int) -> float:
    """Median sequences per second over `repeats` passes through all of src in batches of `batch`."""
    kwargs = {"bos_id": BOS_ID, "eos_id": EOS_ID, "max_length": MAX_DIGITS + 1}
    decoder(model, src[:batch], **kwargs)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(src), batch):
            decoder(model, src[i:i + batch], **kwargs)
        times.append(time.perf_counter() - started)
    return len(src) / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--rows", type=int, default=128, help="held-out strings decoded per pass (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="passes; the median is reported (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 2 thrash a shared box)")
    parser.add_argument("--md", type=Path, help="also write the table, in markdown, to this file")
    args = parser.parse_args(argv)
    trained = train_seq2seq(steps=args.steps, n_test=args.rows)
    torch.set_num_threads(args.threads)
    src = trained.src_ids(trained.test)
    with torch.inference_mode():
        ids, _ = greedy(trained.model, src, bos_id=BOS_ID, eos_id=EOS_ID, max_length=MAX_DIGITS + 1)
    accuracy = sum(a == b for a, b in zip(trained.decode(ids), trained.answers(trained.test), strict=True)) / len(src)
    model_line = (f"model: sort digit strings, {args.steps} steps in {trained.seconds:.1f} s, greedy exact match "
                  f"{accuracy:.1%}; {len(src)} sequences of up to {MAX_DIGITS + 1} tokens, "
                  f"torch threads {args.threads}")
    print(model_line)
    models = {"eager": trained.model, "exported": exported(trained, src)}
    decoders: dict[str, Decoder] = {"greedy": greedy, "beam 4": beam_search}
    print(f"{'model':<9} {'decoder':<8} {'batch 1 seq/s':>14} {'batch 64 seq/s':>15} {'speed-up':>9}")
    rows = []
    for model_name, model in models.items():
        for decoder_name, decoder in decoders.items():
            one, many = (rate(model, decoder, src, b, args.repeats) for b in (1, 64))
            rows.append(row(model_name, decoder_name, one, many))
    predictor = bundled(trained)
    for decoder_name, strategy in (("greedy", "greedy"), ("beam 4", "beam")):
        predictor.heads[0].strategy = strategy  # the same bundle decoded the other way, without saving it again
        one, many = (bundle_rate(predictor, trained.test, b, args.repeats) for b in (1, 64))
        rows.append(row("bundle", decoder_name, one, many))
    if args.md:
        args.md.write_text("\n".join([model_line, "", "| model | decoder | batch 1 seq/s | batch 64 seq/s | speed-up |",
                                      "|---|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in rows), ""]))
    return 0


def row(model: str, decoder: str, one: float, many: float) -> tuple[str, str, str, str, str]:
    """One line of the table (printed as soon as measured): sequences/s at batch 1 and 64, and their ratio."""
    cells = (model, decoder, f"{one:.0f}", f"{many:.0f}", f"{many / one:.1f}x")
    print(f"{model:<9} {decoder:<8} {cells[2]:>14} {cells[3]:>15} {cells[4]:>9}")
    return cells


if __name__ == "__main__":
    sys.exit(main())
