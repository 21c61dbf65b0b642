"""A bundle written by an earlier torchpredict pins format version 1: it must keep loading unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np

from torchpredict.bundle import load
from torchpredict.manifest import read_manifest
from torchpredict.readers import read_table

GOLDEN = Path(__file__).parent / "data" / "wine-v1"
MANIFEST_SCHEMA = Path(__file__).parents[1] / "src" / "torchpredict" / "manifest.schema.json"


def test_the_v1_bundle_still_loads_verifies_and_predicts_the_same():
    predictor = load(GOLDEN / "wine.tpk", device="cpu", verify=True)
    predictions = predictor.predict(read_table(GOLDEN / "new_wines.csv"), keep=["id"])
    expected = read_table(GOLDEN / "predictions.csv")
    assert predictions.column_names == expected.column_names
    assert predictions.column("cultivar").to_pylist() == expected.column("cultivar").to_pylist()
    for name in expected.column_names[2:]:
        np.testing.assert_allclose(predictions.column(name).to_numpy(), expected.column(name).to_numpy(), atol=1e-6)


def test_the_v1_manifest_matches_the_published_json_schema():
    manifest = json.loads((GOLDEN / "wine.tpk" / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(MANIFEST_SCHEMA.read_text()))
    assert read_manifest(GOLDEN / "wine.tpk").format_version == 1
