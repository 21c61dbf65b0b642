"""Outputs that would overwrite an input or each other are refused, whatever path names the same file."""

from __future__ import annotations

import os

import pytest

from torchpredict.errors import InputError
from torchpredict.jobs.collisions import check_outputs

OUTPUT_FIX = "choose another output (CLI -o)"


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("a\n1\n")
    return tmp_path / "data.csv"


@pytest.mark.parametrize("alias", ["data.csv", "./data.csv", "sub/../data.csv", "ABS", "link.csv", "hard.csv"])
def test_an_output_naming_the_input_file_is_refused(data, alias):
    (data.parent / "sub").mkdir()
    os.symlink("data.csv", data.parent / "link.csv")
    os.link(data, data.parent / "hard.csv")
    output = str(data) if alias == "ABS" else alias
    with pytest.raises(InputError) as info:
        check_outputs(["data.csv"], output)
    assert str(info.value) == f"output '{output}' is the input file 'data.csv'; {OUTPUT_FIX}"


def test_rejects_and_report_naming_an_input_or_an_output_are_refused(data):
    with pytest.raises(InputError, match=r"^rejects file 'data.csv' is the input file 'data.csv'; choose another "
                       r"rejects=\.\.\. \(CLI --rejects\)$"):
        check_outputs(["data.csv"], "out.csv", rejects="data.csv")
    with pytest.raises(InputError, match=r"^report file './out.csv' is the output 'out.csv'; choose another "
                       r"report=\.\.\. \(CLI --report\)$"):
        check_outputs(["data.csv"], "out.csv", report="./out.csv")
    with pytest.raises(InputError, match="^report file 'bad.csv' is the rejects file 'bad.csv'; "):
        check_outputs(["data.csv"], "out.csv", rejects="bad.csv", report="bad.csv")


def test_distinct_outputs_stdio_and_pipes_pass(data):
    check_outputs(["data.csv"], "out.csv", rejects="bad.csv", report="report.json")
    check_outputs(["-"], "-")
    check_outputs(["data.csv"], "-", rejects="bad.csv")
    reader, writer = os.pipe()
    try:  # an input that is no regular file holds nothing an output could overwrite
        check_outputs([f"/dev/fd/{reader}"], f"/dev/fd/{reader}")
    finally:
        os.close(reader)
        os.close(writer)


def test_a_folder_output_must_not_hold_an_input(data):
    (data.parent / "parts").mkdir()
    (data.parent / "parts" / "old.csv").write_text("a\n1\n")
    for output in ("./", str(data.parent), "parts", "parts/"):
        source = "data.csv" if output in ("./", str(data.parent)) else "parts/old.csv"
        with pytest.raises(InputError) as info:
            check_outputs([source], output)
        assert str(info.value) == (f"output folder '{output}' holds the input file '{source}'; write the parts to "
                                   "a folder without inputs (CLI -o)")
    check_outputs(["data.csv"], "out/", rejects="out/bad.csv", report="out/report.json")


@pytest.mark.parametrize("name", ["out/part-00000.parquet", "out/.torchpredict/job.json"])
def test_rejects_and_report_must_not_be_files_a_folder_output_writes(data, name):
    with pytest.raises(InputError, match=f"^report file '{name}' is a file the output folder 'out/' writes; "):
        check_outputs(["data.csv"], "out/", report=name)


@pytest.mark.parametrize("output", ["bundle.tpk/preds.csv", "bundle.tpk/", "bundle.tpk/sub/preds.csv",
                                    "bundle.tpk/schema.json"])
def test_no_output_lands_inside_a_bundle(data, output):
    bundle = data.parent / "bundle.tpk"
    (bundle / "sub").mkdir(parents=True)
    (bundle / "manifest.json").write_text('{\n  "format": "torchpredict.bundle",\n  "format_version": 1\n}\n')
    with pytest.raises(InputError, match=r"^output( folder)? '.*' is inside the bundle '.*bundle\.tpk' \(a bundle "
                                         r"folder holds the bundle's own files, which an output could replace\); "):
        check_outputs([str(data)], output)
    with pytest.raises(InputError, match=r"^rejects file 'bundle\.tpk/bad\.csv' is inside the bundle"):
        check_outputs([str(data)], "preds.csv", rejects="bundle.tpk/bad.csv")


def test_a_folder_with_another_manifest_json_is_no_bundle(data):
    web = data.parent / "site"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "a web app manifest"}')
    check_outputs([str(data)], "site/preds.csv")
