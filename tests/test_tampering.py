"""Every setting that changes a prediction is protected: an edit after saving fails `load` or `verify`.

A real bundle is saved in the test session (tests/conftest.py), copied, and one setting edited. An edit of
manifest.json that leaves its settings_sha256 as saved fails load, naming the field; one whose hashes were
recomputed (an attacker's, or a bundle without settings_sha256) fails verify, naming the prediction column
it changes, because verify recomputes the recorded predictions with the loaded heads.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hostile import copy_bundle, edit_json, one_line, rehash, run_cli
from torchpredict.bundle import load, save
from torchpredict.bundle.manifest import MANIFEST_FILE, read_manifest
from torchpredict.errors import BundleError
from torchpredict.heads.classification import BinaryClassification

Edit = Callable[[dict], Any]
CHANGED = r"manifest\.json field '{}' was changed after saving \(sha256 mismatch: expected [0-9a-f]{{8}}…, got " \
          r"[0-9a-f]{{8}}…\); a bundle's settings are part of it: save it again from its model to change them$"


def _head(change: Callable[[dict], Any]) -> Edit:
    return lambda manifest: change(manifest["heads"][0])


def _shift_mean(head: dict) -> None:
    head["state"]["mean_"][0] += 100.0


def _double_std(head: dict) -> None:
    head["state"]["std_"][0] *= 2.0


def _unscaled(head: dict) -> None:
    head["params"]["scale"] = False


def _reversed_labels(head: dict) -> None:
    head["params"]["labels"].reverse()


def _raised_threshold(head: dict) -> None:
    head["params"]["threshold"] = 0.9


@pytest.fixture(scope="module")
def binary_bundle(diabetes: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A binary head whose model scores every row 1.0 (P = 0.73): every label flips at threshold 0.9."""
    model = torch.nn.Linear(10, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(1.0)
    return save(tmp_path_factory.mktemp("binary") / "binary.tpk", model, preprocessor=diabetes["preprocessor"],
                heads=BinaryClassification("high", labels=["low", "high"]), examples=diabetes["train"])


@pytest.fixture
def bundles(wine_bundle: Path, diabetes_bundle: Path, binary_bundle: Path) -> dict[str, Path]:
    return {"wine": wine_bundle, "diabetes": diabetes_bundle, "binary": binary_bundle}


# (bundle, edit of manifest.json, the field load names, the prediction column verify names)
SETTINGS = {
    "target mean": ("diabetes", _head(_shift_mean), "heads", "progression"),
    "target std": ("diabetes", _head(_double_std), "heads", "progression"),
    "scale flag": ("diabetes", _head(_unscaled), "heads", "progression"),
    "label order": ("wine", _head(_reversed_labels), "heads", "cultivar"),
    "binary threshold": ("binary", _head(_raised_threshold), "heads", "high"),
}
LOAD_ONLY = {  # settings_sha256 covers every field but files: how predictions are checked, the model entry, ...
    "tolerance": ("wine", lambda m: m["examples"].update(atol=1.0), "examples"),
    "model entry": ("wine", lambda m: m["model"]["inputs"][0].update(name="features"), "model"),
    "bundle name": ("wine", lambda m: m.update(name="other"), "name"),
}


def _tampered(bundles: dict[str, Path], tmp_path: Path, which: str, edit: Edit, *, reseal: bool) -> Path:
    bundle = copy_bundle(bundles[which], tmp_path / f"{which}.tpk")
    edit_json(bundle, MANIFEST_FILE, edit, reseal=reseal)
    return bundle


@pytest.mark.parametrize("case", [*SETTINGS, *LOAD_ONLY])
def test_an_edited_setting_fails_load_naming_manifest_json_and_the_field(bundles, tmp_path, case):
    which, edit, field, *_ = {**SETTINGS, **LOAD_ONLY}[case]
    bundle = _tampered(bundles, tmp_path, which, edit, reseal=False)
    with pytest.raises(BundleError, match=rf"^bundle '{re.escape(str(bundle))}': {CHANGED.format(field)}"):
        load(bundle, device="cpu")
    with pytest.raises(BundleError, match=CHANGED.format(field)):
        read_manifest(bundle)  # what `inspect` reads
    assert load(bundles[which], device="cpu", verify=True).verify().passed  # control: the saved bundle is fine


@pytest.mark.parametrize("case", list(SETTINGS))
def test_an_edited_setting_with_recomputed_hashes_fails_verify_naming_the_column(bundles, tmp_path, case):
    """An attacker recomputes settings_sha256 (load passes: hashes prove integrity, not intent); verify
    recomputes the recorded predictions with the bundle's heads and names the column that changed."""
    which, edit, _, column = SETTINGS[case]
    bundle = _tampered(bundles, tmp_path, which, edit, reseal=True)
    report = load(bundle, device="cpu").verify()
    assert not report.passed
    assert report.max_abs_diff == load(bundles[which], device="cpu").verify().max_abs_diff  # raw outputs agree
    assert re.fullmatch(rf"prediction column '{column}' differs from the recorded one at row \d+ \(expected .+, got "
                        r".+\); a setting it depends on was changed", report.prediction_mismatch)
    assert report.describe().startswith("FAILED: 8 golden rows, largest deviation 0 ")
    with pytest.raises(BundleError, match=rf"golden examples do not reproduce on cpu: FAILED: .*prediction column "
                                          rf"'{column}' differs"):
        load(bundle, device="cpu", verify=True)


def test_a_bundle_stripped_of_its_settings_hash_loads_unchecked_and_verify_catches_the_edit(diabetes_bundle, tmp_path):
    """Without settings_sha256 a bundle reads as one written before it (format v1 stays loadable); verify
    still compares the recorded predictions, and says the settings were not hash-checked."""
    bundle = copy_bundle(diabetes_bundle, tmp_path / "stripped.tpk")
    edit_json(bundle, MANIFEST_FILE, _head(_shift_mean))
    edit_json(bundle, MANIFEST_FILE, lambda m: m.pop("settings_sha256") and None)
    predictor = load(bundle, device="cpu")
    assert not predictor.manifest.settings_hashed
    expected = load(diabetes_bundle, device="cpu").golden.predictions.column("progression").to_pylist()
    report = predictor.verify()
    assert not report.passed
    got = re.fullmatch(rf"prediction column 'progression' differs from the recorded one at row 0 \(expected "
                       rf"{re.escape(repr(expected[0]))}, got (.+)\); a setting it depends on was changed",
                       report.prediction_mismatch)
    assert got is not None, report.prediction_mismatch
    assert float(got.group(1)) == pytest.approx(expected[0] + 100.0, abs=1e-3)
    assert report.notes[-1].startswith("settings not hash-checked (written by torchpredict ")


def test_an_added_or_removed_manifest_field_fails_load(wine_bundle, tmp_path):
    added = copy_bundle(wine_bundle, tmp_path / "added.tpk")
    edit_json(added, MANIFEST_FILE, lambda m: m.update(threshold=0.9), reseal=False)
    with pytest.raises(BundleError, match=r"manifest\.json field 'threshold' was added after saving "
                                          r"\(settings_sha256 does not list it\); a bundle's settings are part"):
        load(added, device="cpu")
    removed = copy_bundle(wine_bundle, tmp_path / "removed.tpk")
    edit_json(removed, MANIFEST_FILE, lambda m: m.pop("model_version") and None, reseal=False)
    with pytest.raises(BundleError, match=r"manifest\.json field 'model_version' was removed after saving "
                                          r"\(settings_sha256 lists it\)"):
        load(removed, device="cpu")


@pytest.mark.parametrize(("value", "message"), [
    ([], r"field 'settings_sha256' must be an object of field -> sha256, got an empty list"),
    ({"heads": "abc"}, r"field 'settings_sha256\.heads' must be a sha256 \(64 lowercase hex digits\), got 'abc'"),
])
def test_a_malformed_settings_hash_is_a_bundle_error_naming_it(wine_bundle, tmp_path, value, message):
    bundle = copy_bundle(wine_bundle, tmp_path / "bad.tpk")
    edit_json(bundle, MANIFEST_FILE, lambda m: m.update(settings_sha256=value), reseal=False)
    with pytest.raises(BundleError, match=rf"manifest\.json {message}$"):
        load(bundle, device="cpu")


def _standardize_mean(data: dict) -> None:
    data["steps"][0]["state"]["mean_"][0] += 1.0


def test_an_edited_preprocessing_parameter_fails_load_and_with_recomputed_hashes_verify(wine_bundle, tmp_path):
    bundle = copy_bundle(wine_bundle, tmp_path / "pre.tpk")
    path = bundle / "preprocessing.json"
    data = json.loads(path.read_text())
    _standardize_mean(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"file 'preprocessing\.json' sha256 mismatch \(expected [0-9a-f]{8}…, "
                                          r"got [0-9a-f]{8}…\); the file was changed or corrupted$"):
        load(bundle, device="cpu")
    rehash(bundle)  # an attacker's edit: files lists the new sha256
    report = load(bundle, device="cpu").verify()
    assert not report.passed
    assert max(report.max_abs_diff.values()) > report.atol
    assert report.prediction_mismatch is None  # the heads still read the recorded outputs as recorded


def test_the_settings_hash_is_the_documented_canonical_json(diabetes_bundle):
    """Another reader can check settings_sha256 from docs/bundle-format.md alone."""
    manifest = json.loads((diabetes_bundle / MANIFEST_FILE).read_text())
    recorded = manifest.pop("settings_sha256")
    del manifest["files"]
    assert set(recorded) == set(manifest)
    for key, value in manifest.items():
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert recorded[key] == hashlib.sha256(text.encode("ascii")).hexdigest(), key


def test_the_cli_verify_exits_2_with_one_line_for_an_edited_setting(bundles, tmp_path):
    sealed = _tampered(bundles, tmp_path, "diabetes", _head(_shift_mean), reseal=False)
    result = run_cli("verify", sealed, "--device", "cpu")
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(rf"error: bundle '{re.escape(str(sealed))}': {CHANGED.format('heads')}", one_line(result))
    (tmp_path / "again").mkdir()
    resealed = _tampered(bundles, tmp_path / "again", "wine", _head(_reversed_labels), reseal=True)
    result = run_cli("verify", resealed, "--device", "cpu")
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(rf"error: bundle '{re.escape(str(resealed))}' on cpu: FAILED: 8 golden rows, largest deviation "
                        r"0 .*; prediction column 'cultivar' differs from the recorded one at row \d+ \(expected "
                        r"'class_\d', got 'class_\d'\); a setting it depends on was changed", one_line(result))
    assert result.stdout == b""


def test_a_schema_json_that_differs_from_the_schema_predicting_uses_fails_load(tmp_path):
    """schema.json is the copy `inspect` shows; an edit of it resealed (found by tests/fuzz) loaded while inspect
    showed inputs the model does not take."""
    bundle = copy_bundle(Path(__file__).parent / "data" / "wine-v1" / "wine.tpk", tmp_path / "wine.tpk")
    edit_json(bundle, "schema.json", lambda schema: schema["columns"].pop(0) and None)
    with pytest.raises(BundleError, match=r"schema.json differs from the schema preprocessing.json holds, which is "
                                          r"the one predicting uses: the bundle was edited after it was saved"):
        load(bundle, device="cpu")
