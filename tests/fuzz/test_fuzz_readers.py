"""Fuzzing the file readers through a whole file job: random bytes, and CSV / JSONL text built to be hostile
(quoting, embedded newlines, encodings, a byte-order mark, huge fields, ragged rows, many columns, odd JSON).
Every input is predicted row by row or refused with a torchpredict error of one short line; with a rejects file,
every input row is predicted or rejected (the counts add up, and the files hold them)."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import FUZZ, corpus, predicted_or_refused
from torchpredict.bundle import load

WINE = Path(__file__).parents[1] / "data" / "wine-v1"
ATHERIS = Path(__file__).with_name("atheris_readers.py")
ATHERIS_RUNS = int(os.environ.get("TP_ATHERIS_RUNS", "300"))  # scripts/fuzz: -1, bounded by the seconds
ATHERIS_SECONDS = int(os.environ.get("TP_ATHERIS_SECONDS", "120"))
NAMES = [name.strip('"') for name in (WINE / "new_wines.csv").read_text().splitlines()[0].split(",")]


@pytest.fixture(scope="module")
def predictor():
    return load(WINE / "wine.tpk", device="cpu", batch_size=16)


def _cell() -> st.SearchStrategy[str]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-10**30, 10**30).map(str),
        st.sampled_from(["", "nan", "NaN", "inf", "-inf", "null", "NULL", "1e309", "-0", "0x1F", "1,5", " 7 ",
                         '"quoted,comma"', '"multi\nline"', '"a""b"', '"unterminated', "é", "\u2028", "\x00"]),
        st.text(max_size=12),
        st.integers(1, 200_000).map(lambda n: "9" * n),  # a huge field
    )


@st.composite
def csv_texts(draw: st.DrawFn) -> bytes:
    many = draw(st.booleans()) and draw(st.integers(100, 3000))
    header = [f"c{i}" for i in range(many)] if many else draw(
        st.lists(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), max_size=20))
    width = len(header)
    rows = draw(st.lists(st.lists(_cell(), min_size=max(0, width - 2), max_size=width + 2), max_size=20))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join([",".join(header), *(",".join(row) for row in rows)])
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


_json = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=4), max_leaves=12)


@st.composite
def jsonl_texts(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 15))):
        kind = draw(st.sampled_from(["row", "row", "json", "garbage"]))
        if kind == "row":
            names = draw(st.lists(st.sampled_from(NAMES), max_size=len(NAMES), unique=True))
            row = {name: draw(st.one_of(st.floats(), st.integers(), st.text(max_size=5), st.none(), _json))
                   for name in names}
            lines.append(json.dumps(row))
        elif kind == "json":
            lines.append(json.dumps(draw(_json)))
        else:
            lines.append(draw(st.text(max_size=20)))
    return "\n".join(lines).encode("utf-8", errors="replace")


@FUZZ
@given(data=st.binary(max_size=3000), fmt=st.sampled_from(["csv", "tsv", "jsonl", "parquet", "npy"]),
       gzipped=st.booleans())
def test_random_bytes_are_predicted_or_refused(predictor, tmp_path_factory, data: bytes, fmt: str, gzipped: bool):
    path = tmp_path_factory.mktemp("bytes") / f"in.{fmt}"
    path.write_bytes(gzip.compress(data) if gzipped and fmt in ("csv", "tsv", "jsonl") else data)
    predicted_or_refused(predictor, path, None)


@FUZZ
@given(data=csv_texts())
def test_hostile_csv_is_predicted_or_refused(predictor, tmp_path_factory, data: bytes):
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    path.write_bytes(data)
    predicted_or_refused(predictor, path, None)


@FUZZ
@given(data=jsonl_texts())
def test_hostile_jsonl_is_predicted_or_refused(predictor, tmp_path_factory, data: bytes):
    path = tmp_path_factory.mktemp("jsonl") / "in.jsonl"
    path.write_bytes(data)
    predicted_or_refused(predictor, path, None)


@pytest.mark.parametrize("path", corpus("readers"), ids=lambda p: p.name)
def test_the_kept_inputs_are_predicted_or_refused(predictor, tmp_path, path: Path):
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    predicted_or_refused(predictor, copy, None)


def test_a_coverage_guided_run_over_the_readers_finds_nothing(tmp_path: Path):
    """atheris (libFuzzer) mutates the kept inputs, keeping those that reach new branches of torchpredict; a
    finding is an input that is neither predicted nor refused in one line, a crash, a hang or 1.5 GB more memory."""
    seeds, grown = tmp_path / "seeds", tmp_path / "grown"
    grown.mkdir()
    subprocess.run([sys.executable, ATHERIS, "--seeds", seeds], check=True, capture_output=True)
    # libFuzzer reads its peak RSS with getrusage, which on Linux starts a child at its parent's peak (this test
    # process, over 1.5 GB late in the suite): the limit is 1.5 GB above that
    limit_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + 1500
    run = subprocess.run([sys.executable, ATHERIS, f"-runs={ATHERIS_RUNS}", f"-max_total_time={ATHERIS_SECONDS}",
                          "-timeout=20", f"-rss_limit_mb={limit_mb}", "-max_len=4096", f"-artifact_prefix={tmp_path}/",
                          grown, seeds], capture_output=True, text=True, timeout=ATHERIS_SECONDS + 120)
    log = "\n".join(line for line in run.stderr.splitlines() if "Instrumenting" not in line)
    findings = sorted(p.name for p in tmp_path.glob("*-*") if p.name.split("-")[0] in ("crash", "timeout", "oom"))
    assert run.returncode == 0 and not findings, f"{findings} in {tmp_path}\n{log[-4000:]}"
    done = [line for line in log.splitlines() if line.startswith("Done ")]
    assert done and (ATHERIS_RUNS < 0 or done[0].startswith(f"Done {ATHERIS_RUNS} runs")), log[-2000:]
    print(done[0], f"({len(list(grown.iterdir()))} new inputs kept, in {grown})")
