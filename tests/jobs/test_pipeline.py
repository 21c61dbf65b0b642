"""The streaming batch job: every format in and out, rejects, atomic outputs, parts and kill-and-resume."""

from __future__ import annotations

import bz2
import gzip
import inspect
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from torchpredict.bundle import load, save
from torchpredict.errors import InputError, SchemaError
from torchpredict.heads.regression import Regression
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table
from torchpredict.jobs.pipeline import predict_file
from torchpredict.preprocessing import OneHot, Preprocessor, Standardize
from torchpredict.schema.schema import Schema

NUMERIC = ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def patients() -> pa.Table:
    """scikit-learn's diabetes rows with sex as text ('F'/'M') and an id: numbers, a category, a passthrough."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    table = pa.Table.from_pandas(frame.drop(columns=["target", "sex"]), preserve_index=False)
    sex = np.where(frame["sex"].to_numpy() > 0, "M", "F")
    table = table.add_column(1, "sex", pa.array(sex))
    return table.add_column(0, "id", pa.array(np.arange(table.num_rows) + 1000, pa.int64()))


@pytest.fixture(scope="module")
def bundle(patients: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_diabetes

    target = load_diabetes().target[:300]
    train = patients.slice(0, 300)
    preprocessor = Preprocessor([Standardize(NUMERIC), OneHot(["sex"], handle_unknown="ignore")],
                                passthrough=["id"]).fit(train)
    head = Regression(target="progression", scale=True).fit(target)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(preprocessor.n_features_, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    model.eval()
    return save(tmp_path_factory.mktemp("pipeline") / "patients.tpk", model, preprocessor=preprocessor,
                heads=head, examples=train)


@pytest.fixture(scope="module")
def predictor(bundle: Path):
    return load(bundle, device="cpu", batch_size=64)


@pytest.fixture
def needs_rejects():
    """The rejects tests need Schema.validate(on_error="reject"); fail loudly, never skip, until it exists."""
    if "on_error" not in inspect.signature(Schema.validate).parameters:
        pytest.fail("Schema.validate(on_error='reject') is not there yet (H-validation); rejects cannot work")


def _same(got: pa.Table, expected: pa.Table) -> None:
    """Equal tables, reading float columns back at the precision they were written with."""
    assert got.column_names == expected.column_names
    for name in expected.column_names:
        want = expected.column(name)
        have = got.column(name).cast(want.type) if got.column(name).type != want.type else got.column(name)
        assert have.to_pylist() == want.to_pylist(), name


def _write_jsonl(table: pa.Table, path: Path) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.parquet", "in.jsonl", "in.csv.gz", "in.jsonl.zst"])
def test_every_input_format_predicts_what_predict_gives_in_memory(predictor, patients, tmp_path, name):
    source = tmp_path / name
    if name.endswith(".zst"):
        raw = tmp_path / "plain.jsonl"
        _write_jsonl(patients, raw)
        with pa.output_stream(str(source), compression="zstd") as out:
            out.write(raw.read_bytes())
    elif name.endswith(".gz"):
        write_table(patients, tmp_path / "plain.csv")
        source.write_bytes(gzip.compress((tmp_path / "plain.csv").read_bytes()))
    else:
        write_table(patients, source)
    stats = predict_file(predictor, source, tmp_path / "out.parquet", block_bytes=2048)
    _same(pq.read_table(tmp_path / "out.parquet"), predictor.predict(patients))
    assert (stats.rows_in, stats.rows_predicted, stats.rows_rejected) == (442, 442, 0)


def test_npy_inputs_plain_2d_in_feature_order_or_structured(wine, wine_bundle, tmp_path):
    predictor = load(wine_bundle, device="cpu")
    table = wine["new"]
    plain = np.column_stack([table.column(n).to_numpy() for n in table.column_names])
    np.save(tmp_path / "plain.npy", plain)
    structured = np.rec.fromarrays([table.column(n).to_numpy() for n in table.column_names],
                                   names=table.column_names)
    np.save(tmp_path / "structured.npy", np.asarray(structured))
    expected = predictor.predict(table)
    for name in ("plain.npy", "structured.npy"):
        predict_file(predictor, tmp_path / name, tmp_path / "out.parquet", batch_rows=16)
        _same(pq.read_table(tmp_path / "out.parquet"), expected)
    np.save(tmp_path / "narrow.npy", plain[:, :3])
    with pytest.raises(InputError, match=r"shape \(40, 3\) does not give 13 column\(s\) \(alcohol, malic_acid"):
        predict_file(predictor, tmp_path / "narrow.npy", tmp_path / "out.parquet")


@pytest.mark.parametrize("name", ["out.csv", "out.tsv", "out.jsonl", "out.npy", "out.csv.bz2"])
def test_every_output_format_reads_back_as_the_predictions(predictor, patients, tmp_path, name):
    write_table(patients, tmp_path / "in.parquet")
    predict_file(predictor, tmp_path / "in.parquet", tmp_path / name, batch_rows=100)
    expected = predictor.predict(patients)
    if name.endswith(".npy"):
        back = np.load(tmp_path / name)
        assert back.dtype.names == ("id", "progression")
        assert np.array_equal(back["progression"], expected.column("progression").to_numpy())
        return
    if name.endswith(".bz2"):
        (tmp_path / "plain.csv").write_bytes(bz2.decompress((tmp_path / name).read_bytes()))
        name = "plain.csv"
    _same(read_table(tmp_path / name), expected)


def test_keep_and_columns_choose_what_is_written(predictor, patients, tmp_path):
    source = tmp_path / "in.csv"
    write_table(patients.append_column("note", pa.array(["x"] * patients.num_rows)), source)
    predict_file(predictor, source, tmp_path / "out.csv", keep=["note"], columns=["progression"])
    assert read_table(tmp_path / "out.csv").column_names == ["id", "note", "progression"]
    with pytest.raises(InputError, match=r"unknown prediction column\(s\) 'score'; the bundle writes 'progression'"):
        predict_file(predictor, source, tmp_path / "out.csv", keep=["note"], columns=["score"])


def test_a_folder_or_glob_of_inputs_is_read_in_name_order(predictor, patients, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, start in enumerate(range(0, 442, 150)):
        write_table(patients.slice(start, 150), folder / f"part-{i}.csv")
    (folder / "README.txt").write_text("not data")
    expected = predictor.predict(patients)
    for source in (folder, str(folder / "part-*.csv"), [folder / "part-0.csv", str(folder / "part-[12].csv")]):
        stats = predict_file(predictor, source, tmp_path / "out.parquet")
        _same(pq.read_table(tmp_path / "out.parquet"), expected)
        assert stats.rows_in == 442
    with pytest.raises(InputError, match="no input file matches"):
        predict_file(predictor, str(folder / "*.tsv"), tmp_path / "out.parquet")


def _with_bad_rows(patients: pa.Table, path: Path) -> None:
    """A CSV whose rows 5 ('forty' for a number) and 300 (no bmi) are bad."""
    lines = pacsv_text(patients).splitlines()
    header = lines[0].split(",")
    row5 = lines[1 + 5].split(",")
    row5[header.index('"age"')] = "forty"
    lines[1 + 5] = ",".join(row5)
    row300 = lines[1 + 300].split(",")
    row300[header.index('"bmi"')] = ""
    lines[1 + 300] = ",".join(row300)
    path.write_text("\n".join(lines) + "\n")


def pacsv_text(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes().decode()


def test_rejects_take_the_bad_rows_with_reasons_and_the_job_goes_on(predictor, patients, tmp_path, needs_rejects):
    source = tmp_path / "in.csv"
    _with_bad_rows(patients, source)
    stats = predict_file(predictor, source, tmp_path / "out.parquet", rejects=tmp_path / "bad.csv",
                         report=tmp_path / "report.json", block_bytes=4096)
    assert (stats.rows_in, stats.rows_predicted, stats.rows_rejected) == (442, 440, 2)
    bad = read_table(tmp_path / "bad.csv")
    assert bad.column("row").to_pylist() == [5, 300]
    assert bad.column("reason").to_pylist() == [
        "column 'age': expected float64, got 'forty' (string)",
        "column 'bmi': missing value (null or NaN); the column is not nullable",
    ]
    assert bad.column("id").to_pylist() == [1005, 1300]
    good = patients.filter(pa.array([i not in (5, 300) for i in range(442)]))
    _same(pq.read_table(tmp_path / "out.parquet"), predictor.predict(good))
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["rows_in"], report["rows_predicted"], report["rows_rejected"]) == (442, 440, 2)
    assert "columns" in report["drift"]


def test_rejects_file_exists_even_when_no_row_is_rejected(predictor, patients, tmp_path, needs_rejects):
    write_table(patients, tmp_path / "in.csv")
    predict_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", rejects=tmp_path / "bad.csv")
    assert (tmp_path / "bad.csv").read_text().splitlines() == ['"row","reason","age","sex","bmi","bp","s1","s2",'
                                                               '"s3","s4","s5","s6","id"']


def test_jsonl_values_of_the_wrong_kind_are_rejected_by_row(predictor, patients, tmp_path, needs_rejects):
    rows = patients.to_pylist()
    rows[7]["s1"] = "high"
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = predict_file(predictor, source, tmp_path / "out.csv", rejects=tmp_path / "bad.jsonl", block_bytes=8192)
    assert stats.rows_rejected == 1
    (bad,) = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert bad["row"] == 7 and bad["reason"] == "column 's1': expected float64, got 'high' (string)"


def test_without_rejects_the_first_bad_row_stops_the_job_and_leaves_no_output(predictor, patients, tmp_path):
    source = tmp_path / "in.csv"
    _with_bad_rows(patients, source)
    with pytest.raises(SchemaError, match=r"file '.*in.csv': column 'age': expected float64, got 'forty'.* at row 5"):
        predict_file(predictor, source, tmp_path / "out.csv", block_bytes=1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.fixture(scope="module")
def strict_predictor(patients: pa.Table, tmp_path_factory: pytest.TempPathFactory):
    """The patients model with OneHot's default handle_unknown='error': a new 'sex' value is a bad row."""
    train = patients.slice(0, 300)
    preprocessor = Preprocessor([Standardize(NUMERIC), OneHot(["sex"])], passthrough=["id"]).fit(train)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(preprocessor.n_features_, 1)).eval()
    path = save(tmp_path_factory.mktemp("strict") / "strict.tpk", model, preprocessor=preprocessor,
                heads=Regression(target="progression"), examples=train)
    return load(path, device="cpu", batch_size=64)


def test_an_unknown_category_is_a_bad_row_named_by_its_input_row(strict_predictor, patients, tmp_path):
    source = tmp_path / "in.csv"
    lines = pacsv_text(patients).splitlines()
    sex = lines[0].split(",").index('"sex"')
    row = lines[1 + 300].split(",")
    row[sex] = '"X"'
    lines[1 + 300] = ",".join(row)
    source.write_text("\n".join(lines) + "\n")

    stats = predict_file(strict_predictor, source, tmp_path / "out.csv", rejects=tmp_path / "bad.csv",
                         block_bytes=4096)  # row 300 is many chunks in
    assert (stats.rows_in, stats.rows_predicted, stats.rows_rejected) == (442, 441, 1)
    bad = read_table(tmp_path / "bad.csv")
    assert bad.select(["row", "reason", "sex"]).to_pylist() == [
        {"row": 300, "reason": "column 'sex': unknown category 'X'", "sex": "X"}]
    # the rows of Predictor.predict with rejects, batched alike: rows that passed among input rows [64k, 64k + 64)
    rejected = []
    _same(read_table(tmp_path / "out.csv"), strict_predictor.predict(read_table(source), rejects=rejected.append))
    assert rejected[0].column("row").to_pylist() == [300]

    with pytest.raises(SchemaError, match=r"column 'sex': unknown category 'X' at row 300 \(1 row\(s\) unknown\)"):
        predict_file(strict_predictor, source, tmp_path / "out2.csv", block_bytes=4096)
    with pytest.raises(SchemaError, match=r"unknown category 'X' at row 300"):
        strict_predictor.predict(read_table(source))


def test_a_failure_after_some_chunks_leaves_no_output_and_no_temporary_file(predictor, patients, tmp_path):
    source = tmp_path / "in.csv"
    lines = pacsv_text(patients).splitlines()
    source.write_text("\n".join([*lines, "1,2,3"]) + "\n")  # a malformed last line, many chunks in
    with pytest.raises(InputError, match="cannot read it as csv"):
        predict_file(predictor, source, tmp_path / "out.parquet", block_bytes=1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_header_only_file_gives_an_empty_output_with_the_columns(predictor, patients, tmp_path):
    write_table(patients.slice(0, 0), tmp_path / "in.csv")
    stats = predict_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv")
    assert stats.rows_in == 0
    assert (tmp_path / "out.csv").read_text().strip() == '"id","progression"'


def test_progress_reports_rows_done_and_an_estimate_of_all_rows(predictor, patients, tmp_path):
    write_table(patients, tmp_path / "in.csv")
    calls = []
    predict_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", block_bytes=4096,
                 progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 3
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1] == (442, 442)


def test_folder_output_commits_parts_that_together_equal_the_one_file_output(predictor, patients, tmp_path):
    write_table(patients, tmp_path / "in.csv")
    predict_file(predictor, tmp_path / "in.csv", tmp_path / "one.csv")
    predict_file(predictor, tmp_path / "in.csv", f"{tmp_path / 'parts'}/", part_rows=100, output_format="csv",
                 block_bytes=3000)
    parts = sorted((tmp_path / "parts").glob("part-*.csv"))
    assert [p.name for p in parts] == [f"part-0000{i}.csv" for i in range(5)]
    together = pa.concat_tables([read_table(p) for p in parts])
    _same(together, read_table(tmp_path / "one.csv"))
    with pytest.raises(InputError, match="holds parts of an earlier run; pass --resume"):
        predict_file(predictor, tmp_path / "in.csv", tmp_path / "parts", part_rows=100, output_format="csv")


_SLOW_JOB = """
import sys, time
from torchpredict.bundle import load
from torchpredict.jobs.pipeline import predict_file
predictor = load(sys.argv[1], device="cpu", batch_size=16)
predict_file(predictor, sys.argv[2], sys.argv[3], part_rows=50, block_bytes=1500, output_format="csv",
             rejects=sys.argv[4], progress=lambda done, total: time.sleep(0.05))
"""


def test_a_killed_job_resumed_equals_an_uninterrupted_run(bundle, predictor, patients, tmp_path, needs_rejects):
    source = tmp_path / "in.csv"
    _with_bad_rows(patients, source)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    job = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_SLOW_JOB), str(bundle), str(source),
                            f"{killed}/", str(tmp_path / "bad-killed.csv")])
    deadline = time.monotonic() + 60
    while not (killed / ".torchpredict" / "part-00001.json").exists() and job.poll() is None:
        assert time.monotonic() < deadline, "the job committed no part within 60 s"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not (killed / ".torchpredict" / "part-00008.json").exists(), "the job finished before it was killed"
    assert not (tmp_path / "bad-killed.csv").exists()
    resumed = predict_file(predictor, source, killed, part_rows=50, block_bytes=1500, output_format="csv",
                           rejects=tmp_path / "bad-killed.csv", resume=True)
    straight = predict_file(predictor, source, f"{whole}/", part_rows=50, output_format="csv",
                            rejects=tmp_path / "bad-whole.csv")
    names = sorted(p.name for p in whole.glob("part-*.csv"))
    assert names == sorted(p.name for p in killed.glob("part-*.csv")) and len(names) == 9
    for name in names:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    assert (tmp_path / "bad-killed.csv").read_bytes() == (tmp_path / "bad-whole.csv").read_bytes()
    assert (resumed.rows_in, resumed.rows_predicted, resumed.rows_rejected) == (442, 440, 2)
    assert resumed.drift.to_dict() == straight.drift.to_dict()
    assert not list(killed.glob(".*partial*")) and not list((killed / ".torchpredict").glob(".*partial*"))


def test_resume_refuses_a_changed_input_and_a_file_output(predictor, patients, tmp_path):
    write_table(patients, tmp_path / "in.csv")
    predict_file(predictor, tmp_path / "in.csv", f"{tmp_path / 'parts'}/", part_rows=200)
    write_table(patients.slice(0, 10), tmp_path / "in.csv")
    with pytest.raises(InputError, match="cannot resume into .*: the input files differ from the run"):
        predict_file(predictor, tmp_path / "in.csv", tmp_path / "parts", part_rows=200, resume=True)
    with pytest.raises(InputError, match=r"resume needs a folder output \(-o out/\)"):
        predict_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", resume=True)


def test_csv_values_spanning_lines_survive_the_cut_between_chunks(wine, wine_bundle, tmp_path):
    predictor = load(wine_bundle, device="cpu")
    table = wine["new"].add_column(0, "note", pa.array([f"line one\nline {i}, two" for i in range(40)]))
    write_table(table, tmp_path / "in.csv")
    predict_file(predictor, tmp_path / "in.csv", tmp_path / "out.parquet", keep=["note"], block_bytes=700)
    _same(pq.read_table(tmp_path / "out.parquet"), predictor.predict(table, keep=["note"]))


def test_the_model_gets_its_threads_for_the_run_only(predictor, patients, tmp_path):
    write_table(patients, tmp_path / "in.parquet")
    before = torch.get_num_threads()
    seen = []
    predict_file(predictor, tmp_path / "in.parquet", tmp_path / "out.csv", threads=1,
                 progress=lambda done, total: seen.append(torch.get_num_threads()))
    assert set(seen) == {1} and torch.get_num_threads() == before
    with pytest.raises(InputError, match="threads must be >= 1, got 0"):
        predict_file(predictor, tmp_path / "in.parquet", tmp_path / "out.csv", threads=0)


def test_an_output_extension_that_says_no_format_asks_for_output_format(predictor, patients, tmp_path):
    write_table(patients, tmp_path / "in.csv")
    with pytest.raises(InputError, match=r"extension '.txt'.*pass output_format=... \(CLI --output-format\)"):
        predict_file(predictor, tmp_path / "in.csv", tmp_path / "out.txt")
    predict_file(predictor, tmp_path / "in.csv", tmp_path / "out.txt", output_format="tsv")
    assert (tmp_path / "out.txt").read_text().startswith('"id"\t"progression"')


def test_rows_whose_score_is_not_finite_join_the_rejected_rows_and_every_row_is_counted(tmp_path):
    """Two files into a folder of parts: a bad value (rejected at validation) and a proline of 1e300 (a valid
    float64 whose NaN score is refused after the model) are both rejected rows, in row order, with their file."""
    predictor = load(Path(__file__).parents[1] / "data" / "wine-v1" / "wine.tpk", device="cpu", batch_size=3)
    table = read_table(Path(__file__).parents[1] / "data" / "wine-v1" / "new_wines.csv")
    names = []
    for i, (start, bad) in enumerate(((0, 1), (10, 4))):
        rows = table.slice(start, 10).to_pylist()
        rows[bad]["proline"] = 1e300
        rows[2]["hue"] = "pale"
        path = tmp_path / f"in{i}.csv"
        pacsv.write_csv(pa.Table.from_pylist([{k: str(v) for k, v in row.items()} for row in rows]), path)
        names.append(str(path))
    rejects = tmp_path / "rejects.csv"
    stats = predict_file(predictor, names, f"{tmp_path}/out/", keep=["id"], rejects=rejects, part_rows=7)
    assert stats.rows_in == 20 == stats.rows_predicted + stats.rows_rejected and stats.rows_rejected == 4
    refused = read_table(rejects)
    assert list(zip(refused.column("file").to_pylist(), refused.column("row").to_pylist(), strict=True)) == [
        (names[0], 1), (names[0], 2), (names[1], 2), (names[1], 4)]
    assert "is not finite (nan) for this row" in refused.column("reason")[0].as_py()
    assert "column 'hue'" in refused.column("reason")[1].as_py()
    predicted = pa.concat_tables(read_table(part) for part in sorted((tmp_path / "out").glob("part-*.parquet")))
    assert predicted.num_rows == 16 and predicted.column("cultivar").null_count == 0


class _MeanId(torch.nn.Module):
    """A score from the token ids alone: enough for a bundle whose input is encoded text."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.float().mean(dim=1, keepdim=True)


def test_text_counts_survive_a_folder_of_parts_and_its_resumption(tmp_path):
    """Truncated texts and unknown tokens are counted per part, stored in the part's marker and added up at
    the end, so that a folder output (resumed or not) reports what one file does."""
    from torchpredict.preprocessing import TextEncode

    train = pa.table({"s": ["ab", "ba", "aab"]})
    preprocessor = Preprocessor([TextEncode(["s"], max_length=4)], inputs={"ids": ["s"]}).fit(train)
    head = Regression("score").fit(np.array([1.0, 2.0, 3.0]))
    bundle = save(tmp_path / "text.tpk", _MeanId(), preprocessor=preprocessor, heads=head, examples=train)
    predictor = load(bundle, device="cpu")
    texts = ["ab", "abz", "abababab", "zz", "a", "bbbbbbbbz", "q"]  # 2 truncated, 4 unknown tokens, 3 parts
    write_table(pa.table({"s": texts}), tmp_path / "in.csv")
    whole = predict_file(predictor, tmp_path / "in.csv", tmp_path / "out.csv", report=tmp_path / "report.json")
    assert whole.text and whole.text.truncated == {"s": 2}
    report = json.loads((tmp_path / "report.json").read_text())["text"]
    assert report == {"truncated": {"s": 2}, "unknown": whole.text.unknown} and report["unknown"] == {"s": 4}
    parts = predict_file(predictor, tmp_path / "in.csv", f"{tmp_path}/parts/", part_rows=3)
    assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == 3
    assert (parts.text, parts.text.summary()) == (whole.text, whole.text.summary())
    (tmp_path / "parts" / ".torchpredict" / "part-00002.json").unlink()  # as if killed before the last commit
    resumed = predict_file(predictor, tmp_path / "in.csv", f"{tmp_path}/parts/", part_rows=3, resume=True)
    assert (resumed.rows_in, resumed.text) == (whole.rows_in, whole.text)


def test_a_chunk_without_valid_rows_goes_through_the_stages_not_back_into_predict(predictor, patients, tmp_path,
                                                                                 monkeypatch, needs_rejects):
    ages = patients.column("age").to_pylist()
    table = patients.set_column(patients.column_names.index("age"), "age",
                                pa.array([None] * 10 + ages[10:], pa.float64()))
    write_table(table, tmp_path / "in.parquet")

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline called predictor.predict")

    monkeypatch.setattr(predictor, "predict", refuse)
    stats = predict_file(predictor, tmp_path / "in.parquet", tmp_path / "out.parquet", rejects=tmp_path / "bad.csv",
                         batch_rows=10, keep=["id"])
    monkeypatch.undo()
    assert (stats.rows_in, stats.rows_rejected) == (442, 10)
    _same(pq.read_table(tmp_path / "out.parquet"), predictor.predict(patients.slice(10), keep=["id"]))
