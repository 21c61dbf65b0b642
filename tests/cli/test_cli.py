"""The CLI in a subprocess, as a user runs it: real bundles, real files, exit codes and messages."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cli_runs import run_cli
from conftest import training_time_predictions
from torchpredict.bundle import load, save
from torchpredict.errors import InputError
from torchpredict.heads.regression import Regression
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table
from torchpredict.jobs.pipeline import predict_file
from torchpredict.preprocessing import Preprocessor


def _with_ids(table: pa.Table) -> pa.Table:
    return table.add_column(0, "id", pa.array(range(100, 100 + table.num_rows), pa.int64()))


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_predict_matches_training_time_predictions(wine, wine_bundle, tmp_path, suffix):
    source = tmp_path / f"new.{suffix}"
    write_table(_with_ids(wine["new"]), source)
    output = tmp_path / f"predictions.{suffix}"
    result = run_cli("predict", wine_bundle, source, "-o", output, "--keep", "id")
    assert result.returncode == 0, result.stderr
    assert f"predicted {wine['new'].num_rows} rows" in result.stderr
    predictions = read_table(output)
    expected = training_time_predictions(wine, wine["new"])
    assert predictions.column_names == ["id", *expected]
    assert predictions.column("id").to_pylist() == list(range(100, 100 + wine["new"].num_rows))
    assert predictions.column("cultivar").to_pylist() == expected["cultivar"].to_pylist()
    np.testing.assert_allclose(
        predictions.column("cultivar_probability").to_numpy(),
        expected["cultivar_probability"].to_numpy(),
        rtol=1e-6,
    )


def test_predict_regression_parquet_is_bit_identical_to_the_python_api(diabetes, diabetes_bundle, tmp_path):
    source = tmp_path / "test.parquet"
    pq.write_table(diabetes["test"], source)
    output = tmp_path / "out.parquet"
    assert run_cli("predict", diabetes_bundle, source, "-o", output, "--quiet").returncode == 0
    via_cli = pq.read_table(output).column("progression").to_numpy()
    via_api = load(diabetes_bundle, device="cpu").predict(diabetes["test"]).column("progression").to_numpy()
    expected = training_time_predictions(diabetes, diabetes["test"])["progression"].to_numpy()
    assert np.array_equal(via_cli, via_api)
    assert np.array_equal(via_cli, expected)


def test_predict_writes_csv_to_stdout_without_an_output(diabetes_bundle, diabetes, tmp_path):
    source = tmp_path / "test.csv"
    write_table(diabetes["test"].slice(0, 3), source)
    result = run_cli("predict", diabetes_bundle, source, "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == '"progression"'
    assert len(lines) == 4


def test_missing_column_is_exit_2_with_one_readable_line(wine_bundle, wine, tmp_path):
    source = tmp_path / "bad.csv"
    write_table(wine["new"].drop_columns(["alcohol"]), source)
    result = run_cli("predict", wine_bundle, source, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and "'alcohol'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_wrong_value_names_the_column_row_and_value(wine_bundle, wine, tmp_path):
    rows = wine["new"].slice(0, 5).to_pylist()
    rows[3]["alcohol"] = "forty"
    source = tmp_path / "bad.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_cli("predict", wine_bundle, source, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    assert "column 'alcohol'" in result.stderr and "'forty'" in result.stderr and "row 3" in result.stderr


def test_missing_bundle_and_missing_input_are_exit_2(wine_bundle, tmp_path):
    result = run_cli("predict", tmp_path / "nope.tpk", tmp_path / "in.csv")
    assert result.returncode == 2
    assert "bundle" in result.stderr and "does not exist" in result.stderr
    result = run_cli("predict", wine_bundle, tmp_path / "in.csv")
    assert result.returncode == 2
    assert "input file" in result.stderr and "does not exist" in result.stderr


def test_bad_usage_is_exit_2(wine_bundle):
    assert run_cli().returncode == 2
    assert run_cli("predict", wine_bundle).returncode == 2
    result = run_cli("predict", wine_bundle, "x.csv", "--device", "tpu")
    assert result.returncode == 2
    assert "device must be" in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("predict", tmp_path / "nope.tpk", tmp_path / "in.csv", "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_inspect_reads_the_bundle_description(wine_bundle):
    result = run_cli("inspect", wine_bundle)
    assert result.returncode == 0, result.stderr
    assert "bundle 'wine'" in result.stdout
    assert "alcohol: float" in result.stdout
    assert "multiclass: target 'cultivar', labels" in result.stdout
    described = json.loads(run_cli("inspect", wine_bundle, "--json").stdout)
    assert described["manifest"]["format"] == "torchpredict.bundle"
    assert [c["name"] for c in described["schema"]["columns"]][:2] == ["alcohol", "malic_acid"]


def test_inspect_shows_the_preprocessing_the_target_scaling_and_the_labels(wine_bundle, diabetes, diabetes_bundle,
                                                                          tmp_path):
    shown = run_cli("inspect", wine_bundle).stdout
    assert ("  preprocessing:\n    standardize 13 columns: 'alcohol', 'malic_acid', 'ash', 'alcalinity_of_ash', "
            "'magnesium', … 'proline': mean_ [13.05, 2.3") in shown
    assert "multiclass: target 'cultivar', labels ['class_0', 'class_1', 'class_2']" in shown
    mean, std = diabetes["head"].mean_[0], diabetes["head"].std_[0]
    assert (f"regression: target 'progression', scaled: mean {mean:.4g}, std {std:.4g} (predictions are un-scaled)"
            in run_cli("inspect", diabetes_bundle).stdout)
    plain = save(tmp_path / "plain.tpk", torch.nn.Linear(1, 1), preprocessor=Preprocessor([]).fit({"a": [1.0, 2.0]}),
                 heads=Regression("y"), examples={"a": [1.0, 2.0]})
    shown = run_cli("inspect", plain).stdout
    assert "  preprocessing: none\n" in shown and "regression: target 'y', not scaled" in shown
    described = json.loads(run_cli("inspect", wine_bundle, "--json").stdout)
    assert [step["type"] for step in described["preprocessing"]["steps"]] == ["standardize"]
    assert described["preprocessing"]["steps"][0]["state"]["mean_"][0] == pytest.approx(13.05, abs=0.01)


def test_a_closed_stdout_is_no_error(wine, wine_bundle, tmp_path):
    job = subprocess.Popen([sys.executable, "-m", "torchpredict", "inspect", str(wine_bundle)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    job.stdout.close()  # before it prints: every write it makes fails with EPIPE
    assert job.wait(timeout=60) == 0
    assert job.stderr.read() == b""
    source = tmp_path / "big.csv"
    write_table(pa.concat_tables([wine["new"]] * 250), source)  # 10,000 rows: far more than a pipe buffers
    piped = subprocess.run(f"set -o pipefail; '{sys.executable}' -m torchpredict predict '{wine_bundle}' '{source}' "
                           "| head -1", shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert (piped.returncode, piped.stderr) == (0, "")
    assert piped.stdout.startswith('"cultivar","cultivar_probability"')


def test_debug_goes_before_or_after_the_command(tmp_path):
    for args in (("--debug", "inspect", tmp_path / "nope.tpk"), ("inspect", tmp_path / "nope.tpk", "--debug")):
        result = run_cli(*args)
        assert result.returncode == 1 and "Traceback" in result.stderr
        assert f"BundleError: bundle '{tmp_path / 'nope.tpk'}' does not exist" in result.stderr
    assert "Traceback" not in run_cli("inspect", tmp_path / "nope.tpk").stderr


def test_every_command_has_a_description_and_every_option_help():
    from torchpredict.cli.commands import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(commands) == ["demo", "inspect", "optimize", "pack", "predict", "serve", "verify"]
    for name, command in commands.items():
        assert command.description, f"{name} has no description"
        undocumented = [a.dest for a in command._actions if not a.help]
        assert undocumented == [], f"{name}: options without help: {undocumented}"


def test_inspect_does_not_import_torch(wine_bundle):
    code = (
        "import sys; from torchpredict.cli.commands import main; main(['inspect', sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'inspect imported torch'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(wine_bundle)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_verify_reports_the_largest_deviation(wine_bundle):
    result = run_cli("verify", wine_bundle, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "ok: 8 golden rows, largest deviation" in result.stdout


def test_demo_trains_saves_and_predicts_and_its_shell_line_predicts_its_own_file(tmp_path):
    result = run_cli("demo", "--output", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    predictions = read_table(tmp_path / "demo" / "predictions.csv")
    assert predictions.num_rows == 40
    assert predictions.column_names[:3] == ["id", "cultivar", "cultivar_probability"]
    bundle, inputs, output = tmp_path / "demo" / "wine.tpk", tmp_path / "demo" / "new_wines.csv", tmp_path / "again.csv"
    shell_line = next(line for line in result.stdout.splitlines() if line.startswith("same from the shell"))
    assert shell_line.endswith(f" predict {bundle} {inputs} -o {tmp_path / 'demo' / 'predictions.csv'}")
    again = run_cli("predict", bundle, inputs, "-o", output)  # no --keep: the bundle passes 'id' through
    assert again.returncode == 0, again.stderr
    assert read_table(output).equals(predictions)


def test_a_misspelt_column_gets_a_did_you_mean_and_inf_is_a_bad_row(wine, wine_bundle, tmp_path):
    source = tmp_path / "new.csv"
    write_table(wine["new"].rename_columns(["ALCOHOL", *wine["new"].column_names[1:]]), source)
    result = run_cli("predict", wine_bundle, source, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    assert result.stderr == (f"error: file '{source}': missing column(s) 'alcohol'; unexpected column(s) 'ALCOHOL' "
                             "(did you mean 'alcohol'?); pass keep=[...] (CLI --keep) to copy them to the output, or "
                             "drop them\n")
    rows = wine["new"].to_pylist()
    rows[3]["hue"], rows[7]["proline"] = float("inf"), float("-inf")
    write_table(pa.Table.from_pylist(rows), source)
    result = run_cli("predict", wine_bundle, source, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    assert result.stderr == f"error: file '{source}': column 'hue': expected a finite number, got inf at row 3\n"
    result = run_cli("predict", wine_bundle, source, "-o", tmp_path / "out.csv", "--rejects", tmp_path / "bad.csv")
    assert result.returncode == 0, result.stderr
    assert read_table(tmp_path / "out.csv").num_rows == 38
    assert read_table(tmp_path / "bad.csv").select(["row", "reason"]).to_pylist() == [
        {"row": 3, "reason": "column 'hue': expected a finite number, got inf"},
        {"row": 7, "reason": "column 'proline': expected a finite number, got -inf"}]


def _new_wines(wine, tmp_path: Path, bad_rows: tuple[int, ...] = ()) -> Path:
    rows = _with_ids(wine["new"]).to_pylist()
    for row in bad_rows:
        rows[row]["alcohol"] = "strong"
    source = tmp_path / "new.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return source


def test_stdin_to_stdout_in_the_format_given(wine, wine_bundle, tmp_path):
    source = _new_wines(wine, tmp_path)
    result = subprocess.run([sys.executable, "-m", "torchpredict", "predict", str(wine_bundle), "-", "--format",
                             "jsonl", "--keep", "id", "--columns", "cultivar", "--quiet"],
                            input=source.read_text(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = training_time_predictions(wine, wine["new"])["cultivar"].to_pylist()
    assert rows == [{"id": 100 + i, "cultivar": label} for i, label in enumerate(expected)]
    assert result.stderr == ""


def test_rejects_report_and_summary_count_every_row(wine, wine_bundle, tmp_path):
    source = _new_wines(wine, tmp_path, bad_rows=(3, 17))
    result = run_cli("predict", wine_bundle, source, "-o", tmp_path / "out.csv", "--keep", "id",
                     "--rejects", tmp_path / "bad.csv", "--report", tmp_path / "report.json")
    assert result.returncode == 0, result.stderr
    assert f"predicted 38 of 40 rows (2 rejected -> {tmp_path / 'bad.csv'}) in " in result.stderr
    assert read_table(tmp_path / "out.csv").num_rows == 38
    bad = read_table(tmp_path / "bad.csv")
    assert bad.column("row").to_pylist() == [3, 17]
    assert bad.column("reason").to_pylist() == ["column 'alcohol': expected float64, got 'strong' (string)"] * 2
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["rows_in"], report["rows_predicted"], report["rows_rejected"]) == (40, 38, 2)


def test_a_folder_output_in_parts_and_its_resumption(wine, wine_bundle, tmp_path):
    source = tmp_path / "new.csv"
    write_table(_with_ids(wine["new"]), source)
    args = ("predict", wine_bundle, source, "-o", f"{tmp_path / 'out'}/", "--part-rows", "15", "--keep", "id")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    (tmp_path / "out" / ".torchpredict" / "part-00002.json").unlink()  # as if killed before the last commit
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "predicted 40 rows" in resumed.stderr


def test_progress_bar_on_a_terminal_only(wine, wine_bundle, tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import termios

    source = tmp_path / "new.csv"
    write_table(wine["new"], source)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    job = subprocess.Popen([sys.executable, "-m", "torchpredict", "predict", str(wine_bundle), str(source),
                            "-o", str(tmp_path / "out.csv")], stderr=terminal, stdout=subprocess.DEVNULL)
    os.close(terminal)
    shown = b""
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:
            break
        if not data:
            break
        shown += data
    assert job.wait(timeout=120) == 0
    text = shown.decode(errors="replace")
    assert "40.0/40.0" in text and "rows/s" in text.split("predicted")[0]  # the bar, then the summary
    assert "predicted 40 rows" in text


def test_predict_file_refuses_outputs_that_would_overwrite_an_input(wine, wine_bundle, tmp_path):
    source = tmp_path / "new.csv"
    write_table(_with_ids(wine["new"]), source)
    before = source.read_bytes()
    predictor = load(wine_bundle, device="cpu")
    alias = tmp_path / "sub" / ".." / "new.csv"
    with pytest.raises(InputError) as info:
        predict_file(predictor, source, alias, keep=["id"])
    assert str(info.value) == f"output '{alias}' is the input file '{source}'; choose another output (CLI -o)"
    with pytest.raises(InputError, match=r"^rejects file '.*new.csv' is the input file '.*new.csv'; choose another "
                       r"rejects=\.\.\. \(CLI --rejects\)$"):
        predictor.predict_file(source, tmp_path / "out.csv", keep=["id"], rejects=source)
    with pytest.raises(InputError, match=r"^report file '.*out.csv' is the output '.*out.csv'; "):
        predict_file(predictor, source, tmp_path / "out.csv", keep=["id"], report=tmp_path / "out.csv")
    with pytest.raises(InputError, match=r"^output folder '.*/' holds the input file '.*new.csv'; write the parts "
                       r"to a folder without inputs \(CLI -o\)$"):
        predict_file(predictor, str(tmp_path / "*.csv"), f"{tmp_path}/", keep=["id"])
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv"]  # nothing written, not even a temporary file


def test_loading_silences_torch_while_it_loads_and_restores_it_after():
    import logging
    import warnings

    from torchpredict.cli.commands import _quiet_torch

    export = logging.getLogger("torch.export")
    before = (logging.getLogger("torch").level, export.level)
    with _quiet_torch(), warnings.catch_warnings(record=True) as caught:
        export.warning("Ran into the following error when deserializing")
        warnings.warn("deprecated", UserWarning, stacklevel=1)
        assert not export.isEnabledFor(logging.CRITICAL)
        assert not logging.getLogger("torch.made_while_loading").isEnabledFor(logging.CRITICAL)
    assert caught == []
    assert (logging.getLogger("torch").level, export.level) == before
    assert export.isEnabledFor(logging.WARNING)


def test_importing_the_cli_sets_up_no_logging():
    code = ("import logging, torchpredict, torchpredict.cli.commands, torchpredict.messages; "
            "assert not logging.root.handlers; print(sorted(n for n in logging.root.manager.loggerDict "
            "if n.startswith('torch')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("option", "message"), [
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--threads", "-1"], "--threads must be >= 1, got -1"),
    (["--part-rows", "0", "-o", "out/"], "--part-rows must be >= 1, got 0"),
    (["--format", "xls"], "--format must be one of csv, tsv, parquet, jsonl, npy, images, got 'xls'"),
    (["--output-format", "xlsx"], "--output-format must be one of csv, tsv, parquet, jsonl, npy, got 'xlsx'"),
    (["--columns", ","], "--columns must name at least one prediction column"),
    (["--device", "cuda:x"], "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'cuda:x'"),
    (["--resume", "-o", "out.csv"], "--resume needs a folder output (-o out/), whose parts are committed one by one"),
])
def test_bad_predict_options_are_one_line_before_the_bundle_loads(tmp_path, option, message):
    """The bundle does not exist: the option's own line shows that it was checked first, not after a load."""
    result = run_cli("predict", tmp_path / "nope.tpk", tmp_path / "in.csv", *option, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n")


def test_bad_verify_device_and_pack_factory_kwargs_are_one_line(tmp_path):
    result = run_cli("verify", tmp_path / "nope.tpk", "--device", "tpu")
    assert (result.returncode, result.stderr) == (2, "error: device must be 'auto', 'cpu', 'cuda', 'cuda:N' or "
                                                     "'mps', got 'tpu'\n")
    for kwargs, why in (("{bad", "--factory-kwargs must be a JSON object: Expecting property name"),
                        ("[1]", "--factory-kwargs must be a JSON object, got '[1]'")):
        result = run_cli("pack", tmp_path / "x.pt", "-o", tmp_path / "b.tpk", "--train", tmp_path / "t.csv",
                         "--factory-kwargs", kwargs)
        assert result.returncode == 2 and result.stderr.startswith(f"error: {why}"), result.stderr
        assert result.stderr.count("\n") == 1


def test_predict_on_a_backend_says_which_and_predicts_what_eager_does(diabetes, diabetes_bundle, tmp_path):
    source = tmp_path / "test.parquet"
    pq.write_table(diabetes["test"], source)
    eager, onnx = tmp_path / "eager.parquet", tmp_path / "onnx.parquet"
    assert run_cli("predict", diabetes_bundle, source, "-o", eager, "--quiet").returncode == 0
    result = run_cli("predict", diabetes_bundle, source, "-o", onnx, "--backend", "onnxruntime")
    assert result.returncode == 0, result.stderr
    assert "backend onnxruntime on cpu, verified on 8 golden rows (largest deviation" in result.stderr
    np.testing.assert_allclose(pq.read_table(onnx).column("progression").to_numpy(),
                               pq.read_table(eager).column("progression").to_numpy(), rtol=1e-5)


@pytest.mark.parametrize(("flags", "message"), [
    (["--backend", "int8", "--atol", "0", "--rtol", "0"],
     "error: backend int8 does not reproduce eager PyTorch: outputs deviate from eager by"),
    (["--no-verify"], "error: --no-verify needs a --backend other than eager and auto"),
    (["--backend", "auto", "--no-verify"], "error: --no-verify goes with an explicit --backend"),
    (["--backend", "onnxruntime", "--atol", "-1"], "error: --atol must be >= 0, got -1"),
])
def test_backend_flags_a_user_gets_wrong_are_one_line_and_exit_2(wine, wine_bundle, tmp_path, flags, message):
    source = tmp_path / "new.csv"
    write_table(wine["new"], source)
    result = run_cli("predict", wine_bundle, source, "-o", tmp_path / "out.csv", *flags)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.csv").exists()


def test_optimize_then_predict_runs_the_stored_backend_without_a_flag(wine, wine_bundle, tmp_path):
    target = tmp_path / "fast.tpk"
    result = run_cli("optimize", wine_bundle, "-o", target, "--rows", "256")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"optimized bundle '{target}': stored model.onnx (verified on the golden rows)"
    chosen = lines[1].split()[1]
    assert lines[1].startswith(f"backend {chosen} (auto) on cpu")
    source = tmp_path / "new.csv"
    write_table(wine["new"], source)
    again = run_cli("predict", target, source, "-o", tmp_path / "out.csv")
    assert again.returncode == 0, again.stderr
    if chosen != "eager":
        assert f"backend {chosen} (stored by torchpredict optimize) on cpu" in again.stderr
    if chosen == "onnxruntime":  # the whole command, without torch
        code = ("import sys; from torchpredict.cli.commands import main; code = main(sys.argv[1:]); "
                "print('torch' in sys.modules); sys.exit(code)")
        free = subprocess.run([sys.executable, "-c", code, "predict", str(target), str(source), "-o",
                               str(tmp_path / "free.csv"), "--device", "cpu", "--quiet"], capture_output=True,
                              text=True, timeout=120)
        assert free.returncode == 0, free.stderr
        assert free.stdout.strip() == "False"
        assert (tmp_path / "free.csv").read_text() == (tmp_path / "out.csv").read_text()
    verified = run_cli("verify", target, "--device", "cpu")
    assert verified.returncode == 0 and "ok: 8 golden rows" in verified.stdout
    refused = run_cli("optimize", wine_bundle, "-o", target)
    assert refused.returncode == 2 and "already exists; pass overwrite=True (CLI --overwrite)" in refused.stderr
    neither = run_cli("optimize", wine_bundle)
    assert neither.returncode == 2 and "one of the arguments -o/--output --in-place is required" in neither.stderr
    bad = run_cli("optimize", wine_bundle, "--in-place", "--backends", "tensorrt")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: --backends must name some of onnxruntime, compile, int8, channels_last, got "
                                  "'tensorrt'")


def test_the_digits_demo_predicts_a_folder_of_pngs_from_its_bundle(tmp_path):
    result = run_cli("demo", "digits", "--output", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("(accuracy ")[1].split("%")[0])
    assert accuracy > 90, result.stdout
    predictions = read_table(tmp_path / "d" / "predictions.csv")
    assert predictions.num_rows == 360 and predictions.column_names[:2] == ["path", "digit"]
    assert sorted(predictions.column("path").to_pylist()) == predictions.column("path").to_pylist()
    assert f"torchpredict predict {tmp_path / 'd' / 'digits.tpk'} {tmp_path / 'd' / 'new'}" in result.stdout


def test_inspect_shows_an_image_steps_operations(digits_bundle):
    result = run_cli("inspect", digits_bundle)
    assert result.returncode == 0, result.stderr
    assert "    image: image [feature]" in result.stdout
    assert ("image_encode column(s) 'image': decode mode 'L' -> resize size [16, 16] interpolation 'bilinear' -> "
            "rescale method 'multiply' -> normalize; shape_ [1, 16, 16], mean_ ") in result.stdout
