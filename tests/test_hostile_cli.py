"""The CLI against hostile files (issue 10, points 4 and 10): no output overwrites an input, and a bad input or
bundle is one short line on stderr, however large or noisy what it holds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hostile import copy_bundle, one_line, pickle_bomb, rehash, run_cli
from torchpredict.bundle.manifest import sha256
from torchpredict.messages import MAX_LINE

GOLDEN = Path(__file__).parent / "data" / "wine-v1"
BUNDLE = GOLDEN / "wine.tpk"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A copy of the golden bundle's new rows (with an 'id' column) as data.csv, the input to protect."""
    source = tmp_path / "data.csv"
    source.write_bytes((GOLDEN / "new_wines.csv").read_bytes())
    return source


def _refused(result, data: Path, before: str, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert one_line(result) == message
    assert sha256(data) == before


@pytest.mark.parametrize("alias", ["data.csv", "./data.csv", "link.csv", "hard.csv"])
def test_an_output_naming_the_input_leaves_the_input_unchanged(data, alias):
    os.symlink("data.csv", data.parent / "link.csv")
    os.link(data, data.parent / "hard.csv")
    before = sha256(data)
    result = run_cli("predict", BUNDLE, "data.csv", "-o", alias, "--keep", "id", cwd=data.parent)
    _refused(result, data, before, f"error: output '{alias}' is the input file 'data.csv'; choose another output "
                                   "(CLI -o)")
    assert sorted(p.name for p in data.parent.iterdir()) == ["data.csv", "hard.csv", "link.csv"]


def test_rejects_naming_the_input_leaves_the_input_unchanged(data):
    before = sha256(data)
    result = run_cli("predict", BUNDLE, "data.csv", "-o", "out.csv", "--keep", "id", "--rejects", "data.csv",
                     cwd=data.parent)
    _refused(result, data, before, "error: rejects file 'data.csv' is the input file 'data.csv'; choose another "
                                   "rejects=... (CLI --rejects)")
    assert not (data.parent / "out.csv").exists()


def test_a_report_naming_the_output_is_refused_before_anything_is_written(data):
    before = sha256(data)
    result = run_cli("predict", BUNDLE, "data.csv", "-o", "out.csv", "--keep", "id", "--report", "out.csv",
                     cwd=data.parent)
    _refused(result, data, before, "error: report file 'out.csv' is the output 'out.csv'; choose another "
                                   "report=... (CLI --report)")
    assert sorted(p.name for p in data.parent.iterdir()) == ["data.csv"]


def test_a_folder_output_holding_the_input_is_refused(data):
    before = sha256(data)
    result = run_cli("predict", BUNDLE, ".", "-o", "./", "--keep", "id", cwd=data.parent)
    _refused(result, data, before, "error: output folder './' holds the input file 'data.csv'; write the parts "
                                   "to a folder without inputs (CLI -o)")
    assert sorted(p.name for p in data.parent.iterdir()) == ["data.csv"]


def test_ten_thousand_unexpected_columns_are_one_short_line_naming_the_first_and_last(tmp_path):
    lines = (GOLDEN / "new_wines.csv").read_text().splitlines()[:3]
    extra = [f"x{i}" for i in range(10_000)]
    wide = tmp_path / "wide.csv"
    wide.write_text("\n".join([",".join([lines[0], *extra]), *(",".join([row, *["1"] * len(extra)])
                                                               for row in lines[1:])]) + "\n")
    result = run_cli("predict", BUNDLE, "wide.csv", "-o", "out.csv", "--keep", "id", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == ("error: file 'wide.csv': 10,000 unexpected columns: 'x0', 'x1', 'x2', 'x3', 'x4', "
                                "… 'x9999'; pass keep=[...] (CLI --keep) to copy them to the output, or drop them")


@pytest.mark.parametrize("where", ["value", "name"])
def test_a_five_megabyte_value_or_column_name_is_echoed_cut_with_its_length(tmp_path, where):
    header, first = (GOLDEN / "new_wines.csv").read_text().splitlines()[:2]
    row = dict(zip(header.replace('"', "").split(","), map(float, first.split(",")), strict=True))
    huge = "a" * 5_000_000
    if where == "value":
        row["alcohol"] = huge
    else:
        row[huge] = 1.0
    (tmp_path / "big.jsonl").write_text(json.dumps(row) + "\n")
    result = run_cli("predict", BUNDLE, "big.jsonl", "-o", "out.csv", "--keep", "id", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert f"'{'a' * 50}…' (5,000,000 chars)" in line
    assert len(line) < MAX_LINE and "cut at" not in line  # the value's cap keeps it short, not the line's
    assert line.startswith("error: file 'big.jsonl': column 'alcohol': expected float64, got 'aaa" if where == "value"
                           else "error: file 'big.jsonl': unexpected column(s) 'aaa")


def test_an_error_line_is_cut_at_the_limit_whatever_the_message(tmp_path):
    missing = "/".join(["m" * 200] * 15) + ".csv"  # each part under NAME_MAX, the whole under PATH_MAX
    result = run_cli("predict", BUNDLE, missing, "-o", "out.csv", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("error: input file 'mmm")
    assert line.endswith(f"… (cut at {MAX_LINE} of {len(f'error: input file {missing!r} does not exist'):,} chars)")


def test_the_payload_runs_when_unpickled(tmp_path):
    """The bomb of the next test is live: torch.load with weights_only=False creates its marker."""
    pickle_bomb(tmp_path / "model.pt2", tmp_path / "MARK")
    torch.load(tmp_path / "model.pt2", weights_only=False)
    assert (tmp_path / "MARK").exists()


@pytest.mark.parametrize("command", ["predict", "verify"])
def test_a_pickle_named_model_pt2_is_one_line_and_never_unpickled(data, tmp_path, command):
    bundle = copy_bundle(BUNDLE, tmp_path / "bomb.tpk")
    pickle_bomb(bundle / "model.pt2", tmp_path / "MARK")
    rehash(bundle)
    args = ("predict", bundle, data, "-o", tmp_path / "out.csv", "--keep", "id") if command == "predict" else (
        "verify", bundle)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line.startswith("error: ") and "model.pt2" in line
    assert "Traceback" not in line
    assert not (tmp_path / "MARK").exists()
    assert not (tmp_path / "out.csv").exists()
