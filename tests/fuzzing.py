"""What every fuzz test shares: how many examples a run tries, and the corpus of inputs kept under tests/corpus.

The suite tries a few dozen examples per surface (seconds); `scripts/fuzz` sets TP_FUZZ_EXAMPLES to thousands
for a longer run. An input that once broke something is kept under tests/corpus/<surface>/ and replayed every run.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

CORPUS = Path(__file__).resolve().parent / "corpus"
EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def corpus(surface: str) -> list[Path]:
    """The kept inputs of one surface, in name order (README.md files describe them and are not inputs)."""
    return sorted(p for p in (CORPUS / surface).iterdir() if p.is_file() and p.name != "README.md")
