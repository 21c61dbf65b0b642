"""Hostile bundle contents: every field is checked on load, and a NaN score never becomes a label.

Each case tampers with a copy of the committed wine bundle as an attacker would, recomputes its sha256 list
(so that only the checks under test stand in the way), and must give a BundleError naming the file and the
field, through the Python API and through the CLI (exit 2, one line).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow as pa
import pytest

from hostile import copy_bundle, edit_json, one_line, rehash, run_cli
from torchpredict.bundle import load
from torchpredict.errors import BundleError, PredictionError, PreprocessingError
from torchpredict.io.readers import read_table
from torchpredict.preprocessing import (
    Bucketize,
    Impute,
    IndexEncode,
    MinMax,
    OneHot,
    Power,
    Preprocessor,
    Standardize,
    TextEncode,
)
from torchpredict.preprocessing.steps import Step

GOLDEN = Path(__file__).parent / "data" / "wine-v1"
NEW_WINES = GOLDEN / "new_wines.csv"
MARKER = "tp-hostile-marker"


def _step_state(change: Callable[[dict], Any]) -> Callable[[dict], None]:
    """An edit of preprocessing.json's first (standardize) step's state."""
    return lambda data: change(data["steps"][0]["state"])


def _nested(bundle: Path) -> None:
    """preprocessing.json with a value nested 1,000 lists deep (a RecursionError for a naive reader)."""
    path = bundle / "preprocessing.json"
    text = path.read_text()
    path.write_text(text.rstrip()[:-1] + ', "deep": ' + "[" * 1000 + "]" * 1000 + "}")
    rehash(bundle)


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {MARKER}",))


def _pickled_outputs(bundle: Path) -> None:
    (bundle / "examples" / "outputs.safetensors").write_bytes(pickle.dumps({"logits": _RunsCode()}))
    rehash(bundle)


def _garbage_inputs(bundle: Path) -> None:
    (bundle / "examples" / "inputs.parquet").write_bytes(b"PAR1" + b"\x00" * 64)
    rehash(bundle)


def _golden_outside(bundle: Path) -> None:
    outside = bundle.parent / "outside.parquet"
    shutil.copy(bundle / "examples" / "inputs.parquet", outside)
    edit_json(bundle, "manifest.json", lambda m: m["examples"].update(inputs=str(outside)))


def _golden_up(bundle: Path) -> None:
    shutil.copy(bundle / "examples" / "outputs.safetensors", bundle.parent / "outputs.safetensors")
    edit_json(bundle, "manifest.json", lambda m: m["examples"].update(outputs="../outputs.safetensors"))


def _golden_unlisted(bundle: Path) -> None:
    shutil.copy(bundle / "examples" / "inputs.parquet", bundle / "examples" / "other.parquet")
    edit_json(bundle, "manifest.json", lambda m: m["examples"].update(inputs="examples/other.parquet"))


def _json_edit(rel: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    """Tamper with a JSON file of the bundle in place (whatever change returns is ignored)."""

    def in_place(data: Any) -> None:
        change(data)

    return lambda bundle: edit_json(bundle, rel, in_place)


STEP = r"preprocessing\.json step 1 \(standardize\): "
FIELD = r"manifest\.json field "
CASES = {
    "nan mean": (_json_edit("preprocessing.json", _step_state(lambda s: s["mean_"].__setitem__(0, float("nan")))),
                 STEP + r"state 'mean_' must hold 13 finite numbers, got nan at position 0 \(column 'alcohol'\)"),
    "zero scale": (_json_edit("preprocessing.json", _step_state(lambda s: s["scale_"].__setitem__(4, 0.0))),
                   STEP + r"state 'scale_' must hold 13 finite numbers > 0, got 0\.0 at position 4 "
                          r"\(column 'magnesium'\)"),
    "negative scale": (_json_edit("preprocessing.json", _step_state(lambda s: s["scale_"].__setitem__(0, -1.0))),
                       STEP + r"state 'scale_' must hold 13 finite numbers > 0, got -1\.0 at position 0"),
    "inf mean": (_json_edit("preprocessing.json", _step_state(lambda s: s["mean_"].__setitem__(12, float("inf")))),
                 STEP + r"state 'mean_' must hold 13 finite numbers, got inf at position 12 \(column 'proline'\)"),
    "wrong length": (_json_edit("preprocessing.json", _step_state(lambda s: s.update(mean_=s["mean_"][:12]))),
                     STEP + r"state 'mean_' must hold 13 finite numbers, got a list of 12"),
    "mean a string": (_json_edit("preprocessing.json", _step_state(lambda s: s.update(mean_="abc"))),
                      STEP + r"state 'mean_' must hold 13 finite numbers, got 'abc'"),
    "state lacks scale": (_json_edit("preprocessing.json", _step_state(lambda s: s.pop("scale_"))),
                          STEP + r"state lacks 'scale_'"),
    "columns a string": (_json_edit("preprocessing.json", lambda d: d["steps"][0].update(columns="alcohol")),
                         STEP + r"'columns' must be a non-empty list of column names, got 'alcohol'"),
    "unknown param": (_json_edit("preprocessing.json", lambda d: d["steps"][0]["params"].update(shift=1)),
                      STEP + r"params: .*unexpected keyword argument 'shift'"),
    "schema dtype": (_json_edit("preprocessing.json",
                                lambda d: d["state"]["schema"]["columns"][0].update(dtype="float128")),
                     r"preprocessing\.json state\.schema: column 0 \('alcohol'\): 'dtype' must be one of float32, "),
    "nested 1000 deep": (_nested, r".*preprocessing\.json"),  # whichever check catches it first
    "files a list": (_json_edit("manifest.json", lambda m: m.update(files=list(m["files"]))),
                     FIELD + r"'files' must be an object of path -> sha256, got a list"),
    "model a string": (_json_edit("manifest.json", lambda m: m.update(model="model.pt2")),
                       FIELD + r"'model' must be an object, got 'model\.pt2'"),
    "inputs missing": (_json_edit("manifest.json", lambda m: m["model"].pop("inputs")),
                       FIELD + r"'model\.inputs' must be a list of the model's inputs, got nothing"),
    "input shape a string": (_json_edit("manifest.json", lambda m: m["model"]["inputs"][0].update(shape="13")),
                             FIELD + r"'model\.inputs\[0\]\.shape' must be a list of sizes \(integers or null\), "
                                     r"got '13'"),
    "heads empty": (_json_edit("manifest.json", lambda m: m.update(heads=[])),
                    FIELD + r"'heads' must be a non-empty list of output heads, got an empty list"),
    "head labels a string": (_json_edit("manifest.json", lambda m: m["heads"][0]["params"].update(labels="abc")),
                             r"manifest\.json heads\[0\] \(multiclass\): labels must be a sequence of ints or "
                             r"strings, got 'abc'"),
    "nan tolerance": (_json_edit("manifest.json", lambda m: m["examples"].update(atol=float("nan"))),
                      FIELD + r"'examples\.atol' must be a finite number >= 0, got nan"),
    "pickle outputs": (_pickled_outputs,
                       r"golden examples: file 'examples/outputs\.safetensors' is not a safetensors file"),
    "garbage inputs": (_garbage_inputs, r"golden examples: file 'examples/inputs\.parquet' is not a Parquet file"),
    "golden absolute": (_golden_outside, FIELD + r"'examples\.inputs' must be a relative path inside the bundle, "
                                                 r"got '/"),
    "golden dot-dot": (_golden_up, FIELD + r"'examples\.outputs' must be a relative path inside the bundle, "
                                           r"got '\.\./outputs\.safetensors'"),
    "golden unlisted": (_golden_unlisted, FIELD + r"'examples\.inputs' must be a file listed in 'files' \(so that "
                                                  r"its sha256 is checked\), got 'examples/other\.parquet'"),
}


@pytest.fixture
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the wine bundle with one case's tampering, hashes recomputed; and the message it must give."""
    tamper, message = CASES[request.param]
    bundle = copy_bundle(GOLDEN / "wine.tpk", tmp_path / "wine.tpk")
    tamper(bundle)
    return bundle, message


@pytest.mark.parametrize("hostile", list(CASES), indirect=True)
def test_a_malformed_bundle_is_a_bundle_error_naming_file_and_field(hostile, tmp_path, monkeypatch):
    bundle, message = hostile
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError, match=rf"^bundle '{bundle}': {message}"):
        load(bundle, device="cpu")
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("hostile", list(CASES), indirect=True)
def test_the_cli_exits_2_with_one_line_for_a_malformed_bundle(hostile, tmp_path):
    bundle, message = hostile
    result = run_cli("predict", bundle, NEW_WINES, "-o", tmp_path / "out.csv", "--keep", "id", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert re.match(rf"error: bundle '{bundle}': {message}", one_line(result))
    assert not (tmp_path / "out.csv").exists()
    assert not (tmp_path / MARKER).exists()


# "golden unlisted" spans two fields and NaN is not JSON (Python writes it anyway): the schema cannot say either
SCHEMA_CASES = ["files a list", "model a string", "inputs missing", "input shape a string", "heads empty",
                "golden absolute", "golden dot-dot"]


@pytest.mark.parametrize("hostile", SCHEMA_CASES, indirect=True)
def test_the_json_schema_refuses_the_manifests_load_refuses(hostile):
    bundle, _ = hostile
    schema_file = Path(__file__).parents[1] / "src" / "torchpredict" / "bundle" / "manifest.schema.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validate(json.loads((GOLDEN / "wine.tpk" / "manifest.json").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads((bundle / "manifest.json").read_text()), schema)


def test_the_committed_bundle_passes_every_check():
    predictor = load(GOLDEN / "wine.tpk", device="cpu", verify=True)
    assert predictor.predict(read_table(NEW_WINES), keep=["id"]).num_rows == read_table(NEW_WINES).num_rows


# -- a NaN or inf score never becomes a label ----------------------------------------------------------


def _wines_with_overflow(folder: Path, rows: tuple[int, ...] = (2, 5)) -> tuple[Path, int]:
    """new_wines.csv with a proline of 1e300 in some rows: a valid float64 that standardizes past float32, so
    that the real wine model's scores for those rows are NaN."""
    table = read_table(NEW_WINES)
    proline = table.column("proline").to_pylist()
    for row in rows:
        proline[row] = 1e300
    table = table.set_column(table.column_names.index("proline"), "proline", pa.array(proline, pa.float64()))
    path = folder / "wines.csv"
    pa.csv.write_csv(table, path)
    return path, table.num_rows


def test_the_overflowing_rows_really_give_nan_scores():
    predictor = load(GOLDEN / "wine.tpk", device="cpu")
    table = read_table(NEW_WINES).drop(["id"]).slice(0, 3).to_pylist()
    table[1]["proline"] = 1e300
    inputs = predictor.preprocess(predictor.schema.validate(table).table)
    batch = next(iter(predictor.infer(inputs)))
    assert np.isinf(inputs["x"][1]).any()
    assert not np.isfinite(batch.raw.numpy()[1]).all() and np.isfinite(batch.raw.numpy()[[0, 2]]).all()
    assert predictor.interpret(batch)["cultivar"].to_pylist()[1] is None  # no label, even read directly


def test_predict_raises_naming_the_row_whose_score_is_not_finite(tmp_path):
    predictor = load(GOLDEN / "wine.tpk", device="cpu")
    path, _ = _wines_with_overflow(tmp_path)
    with pytest.raises(PredictionError, match=r"^row 2: model output for head 'cultivar' is not finite \(nan\) for "
                                              r"this row \(2 such row\(s\) in this batch\); pass rejects="):
        predictor.predict(read_table(path), keep=["id"])


def test_predict_rejects_rows_whose_score_is_not_finite_and_predicts_the_others(tmp_path):
    predictor = load(GOLDEN / "wine.tpk", device="cpu")
    path, n = _wines_with_overflow(tmp_path)
    rejected = []
    with pytest.warns(Warning):  # proline drifted
        out = predictor.predict(read_table(path), keep=["id"], rejects=rejected.append)
    refused = pa.concat_tables(rejected)
    assert refused.column("row").to_pylist() == [2, 5]
    assert set(refused.column("reason").to_pylist()) == {"model output for head 'cultivar' is not finite (nan) "
                                                        "for this row"}
    assert refused.column("proline").to_pylist() == ["1e+300", "1e+300"]
    assert out.num_rows + refused.num_rows == n
    assert None not in out.column("cultivar").to_pylist()
    expected = predictor.predict(read_table(NEW_WINES), keep=["id"])
    kept = [i for i in range(n) if i not in (2, 5)]
    assert out.column("id").to_pylist() == expected.column("id").take(kept).to_pylist()
    assert out.column("cultivar").to_pylist() == expected.column("cultivar").take(kept).to_pylist()


def test_the_cli_rejects_rows_whose_score_is_not_finite_and_counts_every_row(tmp_path):
    path, n = _wines_with_overflow(tmp_path)
    out, rejects, report = tmp_path / "out.csv", tmp_path / "rejects.csv", tmp_path / "report.json"
    result = run_cli("predict", GOLDEN / "wine.tpk", path, "-o", out, "--keep", "id", "--rejects", rejects,
                     "--report", report, "--batch-size", "4", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    refused = read_table(rejects)
    assert refused.column("row").to_pylist() == [2, 5]
    assert refused.column("reason").to_pylist()[0] == ("model output for head 'cultivar' is not finite (nan) for "
                                                       "this row")
    counts = json.loads(report.read_text())
    assert counts["rows_in"] == n == counts["rows_predicted"] + counts["rows_rejected"]
    assert counts["rows_rejected"] == 2
    predicted = read_table(out)
    assert predicted.num_rows == n - 2 and predicted.column("cultivar").null_count == 0


def test_the_cli_fails_with_one_line_naming_the_row_without_rejects(tmp_path):
    path, _ = _wines_with_overflow(tmp_path, rows=(7,))
    result = run_cli("predict", GOLDEN / "wine.tpk", path, "-o", tmp_path / "out.csv", "--keep", "id", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == (f"error: file '{path}': row 7: model output for head 'cultivar' is not finite (nan) "
                                "for this row (1 such row(s) in this batch); pass rejects=... (CLI --rejects FILE) "
                                "to set such rows aside")
    assert not (tmp_path / "out.csv").exists()


# -- every step type checks its learned state -----------------------------------------------------------


def _fitted(step: Step, data: dict) -> dict:
    return step.fit(pa.table(data)).to_dict()


STATES = {
    "minmax inf": (MinMax(["a"]), {"a": [1.0, 2.0]}, ("data_max_", [float("inf")]),
                   r"state 'data_max_' must hold 1 finite numbers, got inf at position 0 \(column 'a'\)"),
    "power nan lambda": (Power(["a"]), {"a": [1.0, 2.0, 5.0]}, ("lambdas_", [float("nan")]),
                         r"state 'lambdas_' must hold 1 finite numbers, got nan at position 0"),
    "impute nan": (Impute(["a"]), {"a": [1.0, None]}, ("statistics_", [float("nan")]),
                   r"state 'statistics_' must hold 1 finite numbers or strings, got nan at position 0"),
    "impute indicator": (Impute(["a"], add_indicator=True), {"a": [1.0, None]}, ("indicator_columns_", ["b"]),
                         r"state 'indicator_columns_' must hold a list of some of the step's columns, got a list of 1"),
    "bucketize decreasing": (Bucketize(["a"], n_bins=2), {"a": [0.0, 1.0, 2.0, 3.0]},
                             ("bin_edges_", [[0.0, 2.0, 1.0]]),
                             r"state 'bin_edges_' must hold 1 lists of >= 2 finite, non-decreasing edges, got a list "
                             r"of 3 at position 0"),
    "onehot duplicates": (OneHot(["c"]), {"c": ["x", "y"]}, ("categories_", [["x", "x"]]),
                          r"state 'categories_' must hold 1 non-empty lists of distinct categories"),
    "onehot numbers": (OneHot(["c"]), {"c": ["x", "y"]}, ("categories_", [[1, 2]]),
                       r"state 'categories_' must hold 1 non-empty lists of distinct categories"),
    "onehot rare unknown": (OneHot(["c"], min_frequency=2), {"c": ["x", "y", "y"]},
                            ("infrequent_categories_", [["z"]]),
                            r"state 'infrequent_categories_' must hold 1 lists of some of the column's categories"),
    "indexencode cardinality": (IndexEncode(["c"], handle_unknown="reserved"), {"c": ["x"]}, ("cardinality_", [0]),
                                r"state 'cardinality_' must hold 1 integers >= 1, got 0 at position 0"),
    "text specials": (TextEncode(["s"], max_length=4), {"s": ["ab"]}, ("vocabularies_", [["a", "b"]]),
                      r"state 'vocabularies_' must hold 1 vocabularies"),
}


@pytest.mark.parametrize("case", list(STATES))
def test_each_step_type_refuses_learned_state_its_arithmetic_cannot_use(case):
    step, data, (name, value), message = STATES[case]
    d = _fitted(step, data)
    Step.from_dict(d)  # as saved, it loads
    d["state"][name] = value
    with pytest.raises(PreprocessingError, match=message):
        Step.from_dict(d)


def test_a_preprocessor_names_the_step_at_fault():
    pre = Preprocessor([Standardize(["a"]), MinMax(["a"])]).fit({"a": [1.0, 3.0]})
    d = pre.to_dict()
    assert Preprocessor.from_dict(d) == pre
    d["steps"][1]["state"]["data_min_"] = ["low"]
    with pytest.raises(PreprocessingError, match=r"^step 2 \(minmax\): state 'data_min_' must hold 1 finite "
                                                 r"numbers, got 'low' at position 0 \(column 'a'\)$"):
        Preprocessor.from_dict(d)


def test_a_preprocessor_refuses_inputs_naming_unknown_columns():
    d = Preprocessor([Standardize(["a"])]).fit({"a": [1.0, 3.0]}).to_dict()
    d["state"]["inputs"] = {"x": {"columns": ["a", "b"], "dtype": "float32"}}
    with pytest.raises(PreprocessingError, match=r"'state\.inputs\.x\.columns' names 'b', not among "
                                                 r"state\.feature_names"):
        Preprocessor.from_dict(d)
    d["state"]["inputs"] = {"x": {"columns": ["a"], "dtype": "float16"}}
    with pytest.raises(PreprocessingError, match=r"'state\.inputs\.x' must be an object with columns and dtype "
                                                 r"'float32' or 'int64'"):
        Preprocessor.from_dict(d)
