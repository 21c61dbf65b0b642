"""bench/ scripts run where they are meant to; on a machine without a GPU the GPU check skips cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parents[1] / "bench"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the check really runs")
def test_gpu_check_skips_cleanly_without_cuda():
    result = subprocess.run([sys.executable, str(BENCH / "gpu_check.py")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "skipped (no CUDA device" in result.stdout


def test_latency_bench_runs_quickly_and_prints_its_table():
    result = subprocess.run([sys.executable, str(BENCH / "latency.py"), "--quick"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "predict (records)" in result.stdout and "x numpy" in result.stdout and "in sequence" in result.stdout
    assert "stages (records)" in result.stdout and "one-row predict (records) <= 150" in result.stdout
