"""The CLI as a user runs it: `python -m torchpredict ARGS` in a subprocess, text out (see hostile.run_cli for the
memory-limited variant the hostile-input tests use)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torchpredict", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
