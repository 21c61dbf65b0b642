"""The README's code blocks run as pasted, in order, after `scripts/demo`, as in one terminal.

Python blocks run in this process (a `python` started in the terminal's folder), shell blocks in bash; a `cd`
carries over to the blocks after it. The folder is a temporary one holding a `.venv` link to the repository's,
so that `source .venv/bin/activate` works there as in a checkout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from torchpredict.io.readers import read_table

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
VENV = Path(sys.prefix)  # the environment running the tests: the repository's .venv under scripts/test
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", flags=re.S | re.M)
TIMEOUT = 300  # seconds per shell block; the whole README runs in well under a minute


def _terminal_env() -> dict[str, str]:
    """The environment of a terminal with the repository's .venv/bin first on PATH."""
    return {**os.environ, "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run_shell(code: str, cwd: Path) -> Path:
    """Run one shell block as pasted (stopping at the first failing command); returns the folder it ends in."""
    where = cwd / ".readme-cwd"
    script = f"set -eo pipefail\n{code}\npwd > '{where}'\n"
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=_terminal_env(), capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, f"README block failed:\n{code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return Path(where.read_text().strip())


def test_readme_blocks_run_in_order_after_the_demo(tmp_path, monkeypatch, capsys):
    blocks = BLOCK.findall(README.read_text())
    assert [kind for kind, _ in blocks].count("bash") >= 4 and [kind for kind, _ in blocks].count("python") >= 3
    setup_kind, setup = blocks[0]  # "Run it": scripts/demo (install, then the demo) and scripts/test (this suite)
    assert setup_kind == "bash" and setup.startswith("scripts/demo ")
    (tmp_path / ".venv").symlink_to(VENV)
    cwd = _run_shell("torchpredict demo", tmp_path)  # what scripts/demo runs once .venv is installed
    namespace: dict = {}
    monkeypatch.syspath_prepend(str(tmp_path / "demo-output"))  # a python started there imports mynets.py
    try:
        for kind, code in blocks[1:]:
            if kind == "bash":
                cwd = _run_shell(code, cwd)
            else:
                monkeypatch.chdir(cwd)
                exec(compile(code, str(README), "exec"), namespace)
    finally:
        sys.modules.pop("mynets", None)
    printed = capsys.readouterr().out
    assert "cultivar_probability" in printed and "ok: 8 golden rows" in printed
    _check_what_the_blocks_left(tmp_path / "demo-output", namespace)


def _check_what_the_blocks_left(folder: Path, namespace: dict) -> None:
    predictions = read_table(folder / "predictions.csv")
    assert predictions.num_rows == 40 and predictions.column_names[:2] == ["id", "cultivar"]  # id passes through
    fast = read_table(folder / "fast.csv")  # the optimized bundle's backend predicts what eager predicted
    assert fast.column("cultivar").to_pylist() == predictions.column("cultivar").to_pylist()
    np.testing.assert_allclose(fast.column("cultivar_probability").to_numpy(),
                               predictions.column("cultivar_probability").to_numpy(), atol=1e-5)
    again = read_table(folder / "digits" / "again.csv")  # the digits demo's folder, predicted again from the shell
    assert again.num_rows == 360 and again.column_names[:2] == ["path", "digit"]
    parts = sorted(p.name for p in (folder / "out").glob("part-*.parquet"))
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sum(pq.read_metadata(folder / "out" / p).num_rows for p in parts) == 10_000
    assert json.loads((folder / "drift.json").read_text())["rows_in"] == 10_000
    # the retrofitted bundle predicts what the training script's own model, scaled by hand, predicts
    data = namespace["data"]
    x = data.drop(columns="progression").to_numpy(np.float64)
    target = data["progression"].to_numpy(np.float64)
    new = (x[-20:] - x.mean(axis=0)) / x.std(axis=0)
    with torch.no_grad():
        scaled = namespace["model"](torch.from_numpy(new.astype(np.float32)))[:, 0].numpy()
    expected = scaled * target.std() + target.mean()
    got = read_table(folder / "progression.csv").column("progression").to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
