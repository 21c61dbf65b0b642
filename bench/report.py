"""Run every bench/ script, one after another, and write their tables into bench/README.md.

Each script measures its ratios against baselines in its own run and writes its table with --md; this puts them
under one header that says how, when and on what they were measured (the machine, the versions). A script
whose setup is missing (the peers harness for batch.py and serve.py, a GPU for gpu_check.py) is listed as
skipped with why; one that fails is listed with its last lines, and the run ends with exit status 1.
Run: `scripts/bench [--quick] [--only NAME,NAME] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEERS_PY = Path(os.environ.get("PEERS_PY", "/tmp/peers/venv/bin/python"))
PEERS_DATA = Path(os.environ.get("PEERS_DATA", "/tmp/peers/data"))
PEERS_HINT = ("the peers harness is not set up: `bash ../shared/peers/setup.sh` and "
              "`$PEERS_PY ../shared/peers/gen_data.py`")


@dataclass(frozen=True)
class Script:
    name: str
    full: tuple[str, ...]  # its options for a full run
    quick: tuple[str, ...]  # and for --quick
    timeout_s: int
    needs_peers: bool = False


SCRIPTS = (
    Script("latency", (), ("--quick",), 600),
    Script("backends", (), ("--quick",), 900),
    Script("preprocessing", (), ("--rows", "100000", "--reps", "1"), 900),
    Script("decoding", (), ("--steps", "40", "--rows", "64", "--repeats", "1"), 900),  # 64: its batch size
    Script("batch", (), ("--reps", "1", "--times", "2"), 3600, needs_peers=True),
    Script("serve", (), ("--quick",), 3600, needs_peers=True),
    Script("ray", (), ("--quick",), 1800),
    Script("soak", (), ("--quick",), 600),
    Script("images", (), ("--quick",), 900),
    Script("gpu_check", (), (), 900),
)
VERSIONS = ("torch", "numpy", "pyarrow", "onnxruntime", "uvicorn", "ray", "torchpredict")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each script's short settings (minutes in all)")
    parser.add_argument("--only", help="comma-separated scripts to run (default all: "
                        f"{','.join(s.name for s in SCRIPTS)})")
    parser.add_argument("--out", type=Path, default=BENCH / "README.md", help="where the report goes")
    args = parser.parse_args(argv)
    wanted = [s for s in SCRIPTS if args.only is None or s.name in args.only.split(",")]
    unknown = sorted(set(args.only.split(",")) - {s.name for s in SCRIPTS}) if args.only else []
    if unknown or not wanted:
        print(f"unknown script(s) {unknown}; known: {[s.name for s in SCRIPTS]}", file=sys.stderr)
        return 2
    sections, failed = [], False
    for script in wanted:
        text, ok = run(script, quick=args.quick)
        sections.append(text)
        failed |= not ok
    args.out.write_text(header(args.quick, wanted) + "\n".join(sections))
    print(f"wrote {args.out}" + (" (a script failed)" if failed else ""))
    return 1 if failed else 0


def run(script: Script, *, quick: bool) -> tuple[str, bool]:
    """One script's section of the report, and whether it ran (or was skipped) without failing."""
    path = BENCH / f"{script.name}.py"
    title = f"## {script.name}: {_first_line(path)}\n\n"
    missing = _missing_peers(script.name) if script.needs_peers else []
    if missing:
        return f"{title}Skipped: {PEERS_HINT} (missing {', '.join(missing)}).\n", True
    options = script.quick if quick else script.full
    with tempfile.TemporaryDirectory() as tmp:
        md = Path(tmp) / "table.md"
        command = [sys.executable, str(path), *options, "--md", str(md)]
        shown = " ".join(["python", f"bench/{path.name}", *options])
        print(f"$ {shown}", flush=True)
        started = time.perf_counter()
        # Its own process group, so that a timeout also ends the servers and jobs it started (the harness's).
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=BENCH.parent, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=script.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return f"{title}`{shown}` FAILED: no answer within {script.timeout_s} s.\n", False
        done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        seconds = time.perf_counter() - started
        if done.returncode:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
            return f"{title}`{shown}` FAILED (exit {done.returncode}):\n\n```text\n{tail}\n```\n", False
        if not md.exists():  # it ran and had nothing to measure (gpu_check without a GPU)
            last = done.stdout.strip().splitlines()[-1:] or [""]
            return f"{title}`{shown}`: {last[0]}\n", True
        return f"{title}`{shown}` ({seconds:.0f} s):\n\n{md.read_text().strip()}\n", True


def header(quick: bool, scripts: list[Script]) -> str:
    mode = "quick settings: short runs, noisier" if quick else "full settings"
    return (f"# Benchmarks\n\nGenerated by `scripts/bench{' --quick' if quick else ''}` on "
            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {mode}; every ratio is against a baseline "
            f"measured in the same run. Scripts: {', '.join(s.name for s in scripts)}. Regenerate with "
            "`scripts/bench` (this file is overwritten).\n\n"
            f"Machine: {_cpu()}, {os.cpu_count()} cores, {_memory()}; {_gpu()}. Python {platform.python_version()}; "
            + ", ".join(f"{name} {_version(name)}" for name in VERSIONS) + ".\n\n")


def _first_line(path: Path) -> str:
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.splitlines()[0].rstrip(".") if doc else path.stem


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
        return f"{kb / 1024 ** 2:.0f} GiB memory"
    except (OSError, StopIteration, ValueError):
        return "memory unknown"


def _missing_peers(name: str) -> list[str]:
    """What the peers harness lacks for a script (batch: its python and data; serve: also wrk, taskset, bodies)."""
    needed = [PEERS_PY, PEERS_DATA / "data.csv"] + ([PEERS_DATA / "bodies.jsonl"] if name == "serve" else [])
    missing = [str(path) for path in needed if not path.exists()]
    return missing + [tool for tool in (("wrk", "taskset") if name == "serve" else ()) if shutil.which(tool) is None]


def _gpu() -> str:
    """Whether torch here sees CUDA (what the benchmarks can use), and the device's name."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        name = done.stdout.strip()
        return f"CUDA on {name}" if done.returncode == 0 and name else "no CUDA device for torch"
    except (OSError, subprocess.TimeoutExpired):
        return "no CUDA device for torch"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
