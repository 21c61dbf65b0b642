"""A bundle written by an earlier torchpredict pins format version 1: it must keep loading unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np

from torchpredict.bundle import load
from torchpredict.bundle.manifest import read_manifest
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
