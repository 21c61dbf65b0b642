"""A bundle written by an earlier torchpredict pins format version 1: it must keep loading unchanged. Its golden
outputs read the same whoever wrote them (safetensors.torch before the heads read numpy, safetensors.numpy now),
and are recorded and compared the same from tensors and from numpy arrays."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from torchpredict.bundle import load
from torchpredict.bundle.manifest import read_manifest
from torchpredict.errors import BundleError
from torchpredict.golden import OUTPUTS_FILE, GoldenExamples
from torchpredict.io.readers import read_table

GOLDEN = Path(__file__).parent / "data" / "wine-v1"
MANIFEST_SCHEMA = Path(__file__).parents[1] / "src" / "torchpredict" / "bundle" / "manifest.schema.json"


def test_the_v1_bundle_still_loads_verifies_and_predicts_the_same():
    predictor = load(GOLDEN / "wine.tpk", device="cpu", verify=True)
    predictions = predictor.predict(read_table(GOLDEN / "new_wines.csv"), keep=["id"])
    expected = read_table(GOLDEN / "predictions.csv")
    assert predictions.column_names == expected.column_names
    assert predictions.column("cultivar").to_pylist() == expected.column("cultivar").to_pylist()
    for name in expected.column_names[2:]:
        np.testing.assert_allclose(predictions.column(name).to_numpy(), expected.column(name).to_numpy(), atol=1e-6)


def test_the_v1_bundle_verifies_raw_outputs_only_and_says_its_settings_are_not_hash_checked():
    """Written before settings_sha256 and examples/predictions.parquet: loaded as it is, verify says so."""
    predictor = load(GOLDEN / "wine.tpk", device="cpu")
    assert not predictor.manifest.settings_hashed
    assert predictor.golden.predictions is None
    report = predictor.verify()
    assert report.passed and not report.predictions_checked
    assert re.fullmatch(
        r"ok: 8 golden rows, largest deviation \S+ \(tolerance atol=1e-05, rtol=0\.0001\); no predictions recorded "
        r"\(bundle written before torchpredict 0\.2\): raw outputs compared only; settings not hash-checked \(written "
        r"by torchpredict 0\.1\.0, before settings_sha256\): save it again from its model to protect them",
        report.describe())
    assert "settings_sha256" not in predictor.manifest.to_dict()  # inspect --json shows the manifest as it is


def test_the_v1_manifest_matches_the_published_json_schema():
    manifest = json.loads((GOLDEN / "wine.tpk" / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(MANIFEST_SCHEMA.read_text()))
    assert read_manifest(GOLDEN / "wine.tpk").format_version == 1


def _raw() -> tuple:
    """A model output of every nesting a golden file flattens: a tuple holding a tensor and a dict."""
    logits = torch.tensor([[0.5, -1.25], [float("nan"), float("inf")]])
    return logits, {"ids": torch.tensor([[4, 2], [5, 0]]), "mask": torch.tensor([True, False])}


def _as_arrays(raw: tuple) -> tuple:
    return raw[0].numpy(), {key: value.numpy() for key, value in raw[1].items()}


def _written(golden: GoldenExamples, directory: Path) -> GoldenExamples:
    return GoldenExamples.read(directory, golden.write(directory))


def test_golden_outputs_recorded_from_tensors_or_arrays_are_the_same_file(tmp_path: Path):
    inputs = pa.table({"x": [1.0, 2.0]})
    for form, raw in (("tensors", _raw()), ("arrays", _as_arrays(_raw()))):
        golden = _written(GoldenExamples.record(inputs, raw, {"y": pa.array([0, 1])}), tmp_path / form)
        assert {name: array.dtype for name, array in golden.outputs.items()} == {
            "output.0": np.float32, "output.1.ids": np.int64, "output.1.mask": np.bool_}
        np.testing.assert_array_equal(golden.outputs["output.0"], [[0.5, -1.25], [np.nan, np.inf]])
        for fresh in (_raw(), _as_arrays(_raw())):
            assert golden.compare(fresh).passed
    assert (tmp_path / "tensors" / OUTPUTS_FILE).read_bytes() == (tmp_path / "arrays" / OUTPUTS_FILE).read_bytes()


def test_golden_outputs_written_by_safetensors_torch_read_the_same_bfloat16_included(tmp_path: Path):
    """Before the heads read numpy, golden outputs were written from the tensors themselves: a bfloat16 model's
    in bfloat16, which numpy lacks; they read as the float32 of the same values."""
    recorded = {"output.0": torch.tensor([[0.5, -1.25], [3.140625, float("nan")]], dtype=torch.bfloat16),
                "output.1": torch.tensor([[4, 2], [5, 0]])}
    golden = _written(GoldenExamples.record(pa.table({"x": [1.0, 2.0]}), tuple(recorded.values())), tmp_path)
    save_file({name: value.contiguous() for name, value in recorded.items()}, str(tmp_path / OUTPUTS_FILE))
    before = GoldenExamples.read(tmp_path, {"inputs": "examples/inputs.parquet", "outputs": OUTPUTS_FILE,
                                            "atol": golden.atol, "rtol": golden.rtol})
    assert before.outputs["output.0"].dtype == np.float32
    np.testing.assert_array_equal(before.outputs["output.0"], recorded["output.0"].float().numpy())
    np.testing.assert_array_equal(before.outputs["output.1"], recorded["output.1"].numpy())
    assert before.compare(tuple(recorded.values())).passed
    assert not before.compare((recorded["output.0"] + 1, recorded["output.1"])).passed


def test_golden_outputs_of_a_dtype_numpy_lacks_are_a_bundle_error(tmp_path: Path):
    golden = _written(GoldenExamples.record(pa.table({"x": [1.0]}), torch.zeros(1)), tmp_path)
    save_file({"output": torch.zeros(1, dtype=torch.float8_e4m3fn)}, str(tmp_path / OUTPUTS_FILE))
    entry = {"inputs": "examples/inputs.parquet", "outputs": OUTPUTS_FILE, "atol": golden.atol, "rtol": golden.rtol}
    with pytest.raises(BundleError, match=r"golden examples: file 'examples/outputs\.safetensors': output "
                                          r"'output' has dtype F8_E4M3, which torchpredict does not read \(expected "
                                          r"one of BF16, F64, F32, .*\)"):
        GoldenExamples.read(tmp_path, entry)


FRESH = {  # fresh float32 outputs against the recorded [1.0, nan, inf, -2.0] (atol 1e-5, rtol 1e-4)
    "equal": [1.0, float("nan"), float("inf"), -2.0],
    "within the tolerance": [1.0 + 1e-5 + 0.5e-4, float("nan"), float("inf"), -2.0 - 1e-5],
    "beyond it": [1.0 + 1e-5 + 1.5e-4, float("nan"), float("inf"), -2.0],
    "a number for NaN": [1.0, 0.0, float("inf"), -2.0],
    "-inf for inf": [1.0, float("nan"), -float("inf"), -2.0],
}


@pytest.mark.parametrize("case", list(FRESH))
def test_golden_outputs_agree_as_torch_allclose_says(case: str):
    recorded = torch.tensor([1.0, float("nan"), float("inf"), -2.0])
    golden = GoldenExamples.record(pa.table({"x": [1.0] * 4}), {"logits": recorded, "ids": torch.arange(4)})
    fresh = torch.tensor(FRESH[case])
    expected = torch.allclose(fresh, recorded, atol=golden.atol, rtol=golden.rtol, equal_nan=True)
    assert golden.compare({"logits": fresh, "ids": torch.arange(4)}).passed is expected
    assert golden.compare({"logits": fresh.numpy(), "ids": np.arange(4)}).passed is expected
    assert golden.compare({"logits": recorded, "ids": torch.tensor([0, 1, 2, 4])}).passed is False  # ints: exactly
