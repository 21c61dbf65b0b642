"""What every fuzz test shares: how many examples a run tries, and the corpus of inputs kept under tests/corpus.

The suite tries a few dozen examples per surface (seconds); `scripts/fuzz` sets TP_FUZZ_EXAMPLES to thousands
for a longer run. An input that once broke something is kept under tests/corpus/<surface>/ and replayed every run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.csv as pacsv
from hypothesis import HealthCheck, settings

from torchpredict.errors import TorchPredictError

CORPUS = Path(__file__).resolve().parent / "corpus"
EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def corpus(surface: str) -> list[Path]:
    """The kept inputs of one surface, in name order (README.md files describe them and are not inputs)."""
    return sorted(p for p in (CORPUS / surface).iterdir() if p.is_file() and p.name != "README.md")


def predicted_or_refused(predictor, path: Path, fmt: str | None) -> str:
    """Run the file job with a rejects file; 'refused' when a torchpredict error of one short line said why, else
    'predicted' after checking that every input row is predicted or rejected."""
    out, rejects = path.with_name("out.csv"), path.with_name("rejects.csv")
    for stale in (out, rejects):
        stale.unlink(missing_ok=True)
    try:
        stats = predictor.predict_file(path, out, format=fmt, rejects=rejects, keep=["id"] if b"id" in
                                       path.read_bytes()[:200] else [])
    except TorchPredictError as exc:
        message = str(exc)
        assert message and len(message) < 1000 and "Traceback" not in message, message
        return "refused"
    assert stats.rows_in == stats.rows_predicted + stats.rows_rejected
    assert pacsv.read_csv(out).num_rows == stats.rows_predicted
    written = pacsv.read_csv(rejects, read_options=pacsv.ReadOptions(block_size=1 << 26)).num_rows
    assert written == stats.rows_rejected
    return "predicted"
