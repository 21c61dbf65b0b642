from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import training_time_predictions
from torchpredict.bundle import load, loading, save
from torchpredict.bundle.manifest import read_manifest, relative_files
from torchpredict.errors import BundleError
from torchpredict.io import archive


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / bundle.name
    shutil.copytree(bundle, target)
    return target


def _rewrite_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_regression_predictions_equal_training_time_float32_values(diabetes, diabetes_bundle):
    predicted = load(diabetes_bundle, device="cpu").predict(diabetes["test"])
    expected = training_time_predictions(diabetes, diabetes["test"])
    assert predicted.column_names == ["progression"]
    assert np.array_equal(predicted.column("progression").to_numpy(), expected["progression"].to_numpy())
    assert predicted.column("progression").type == pa.float32()


def test_regression_target_is_unscaled(diabetes, diabetes_bundle):
    predicted = load(diabetes_bundle, device="cpu").predict(diabetes["test"]).column("progression").to_numpy()
    # un-scaled predictions live on the target's scale (25..346), not around 0 with std 1
    assert 50 < predicted.mean() < 250
    assert np.corrcoef(predicted, diabetes["test_target"])[0, 1] > 0.5


def test_multiclass_predictions_equal_training_time_values(wine, wine_bundle):
    predicted = load(wine_bundle, device="cpu").predict(wine["new"])
    expected = training_time_predictions(wine, wine["new"])
    assert predicted.column_names == list(expected)
    for name, column in expected.items():
        assert predicted.column(name).to_pylist() == column.to_pylist()
    accuracy = np.mean(np.array(predicted.column("cultivar").to_pylist()) == np.array(wine["new_labels"]))
    assert accuracy > 0.9


def test_single_row_equals_the_same_row_inside_a_batch(wine, wine_bundle):
    predictor = load(wine_bundle, device="cpu")
    batch = predictor.predict(wine["new"])
    for row in (0, 7, 19):
        alone = predictor.predict(wine["new"].slice(row, 1))
        assert alone.to_pylist()[0]["cultivar"] == batch.to_pylist()[row]["cultivar"]
        assert alone.column("cultivar_probability")[0].as_py() == pytest.approx(
            batch.column("cultivar_probability")[row].as_py(), abs=1e-6
        )


def test_batch_size_does_not_change_predictions(diabetes, diabetes_bundle):
    whole = load(diabetes_bundle, device="cpu", batch_size=1024).predict(diabetes["test"])
    small = load(diabetes_bundle, device="cpu", batch_size=5).predict(diabetes["test"])
    assert whole.num_rows == small.num_rows == diabetes["test"].num_rows
    np.testing.assert_allclose(whole.column(0).to_numpy(), small.column(0).to_numpy(), rtol=1e-6)


def test_zip_bundle_loads_and_predicts_the_same(diabetes, diabetes_bundle, tmp_path):
    zipped = save(
        tmp_path / "diabetes.zip",
        diabetes["model"],
        preprocessor=diabetes["preprocessor"],
        heads=diabetes["head"],
        examples=diabetes["train"],
    )
    assert zipfile.is_zipfile(zipped)
    from_zip = load(zipped, device="cpu").predict(diabetes["test"])
    from_dir = load(diabetes_bundle, device="cpu").predict(diabetes["test"])
    assert from_zip.equals(from_dir)


def test_manifest_matches_its_json_schema(diabetes_bundle):
    schema = json.loads((Path(__file__).parents[2] / "src/torchpredict/bundle/manifest.schema.json").read_text())
    manifest = json.loads((diabetes_bundle / "manifest.json").read_text())
    jsonschema.validate(manifest, schema)
    assert set(manifest["files"]) >= {
        "schema.json",
        "preprocessing.json",
        "examples/inputs.parquet",
        "examples/outputs.safetensors",
        manifest["model"]["file"],
        "examples/predictions.parquet",
    }
    assert manifest["model"]["format"] == "export"
    assert manifest["examples"]["predictions"] == "examples/predictions.parquet"
    assert set(manifest["settings_sha256"]) == set(manifest) - {"files", "settings_sha256"}


def test_the_json_schema_in_the_docs_is_the_shipped_one():
    root = Path(__file__).parents[2]
    text = (root / "docs/bundle-format.md").read_text().split("## The manifest's JSON Schema", 1)[1]
    documented = text.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(documented) == json.loads((root / "src/torchpredict/bundle/manifest.schema.json").read_text())


def test_verify_passes_on_a_fresh_bundle(wine_bundle):
    report = load(wine_bundle, device="cpu", verify=True).verify()
    assert report.passed
    assert report.rows == 8
    assert max(report.max_abs_diff.values()) <= report.atol
    assert report.predictions_checked and report.prediction_mismatch is None and report.notes == ()
    assert report.describe().endswith("; predictions reproduce")


def test_the_recorded_predictions_are_what_the_bundle_predicts_for_the_golden_rows(wine, wine_bundle):
    predictor = load(wine_bundle, device="cpu")
    assert predictor.golden.predictions.equals(predictor.predict(wine["train"].slice(0, 8)))


@pytest.mark.parametrize("storage", ["export", "weights"])
def test_every_file_of_a_saved_bundle_has_the_mode_of_a_normal_file(diabetes, tmp_path, storage):
    """safetensors writes 0o600; a bundle's files all get what open() gives under the umask (here 0o640)."""
    from models_for_tests import make_mlp

    torch.manual_seed(0)
    kwargs = {"in_features": 10, "hidden": 4, "out_features": 1}
    previous = os.umask(0o027)
    try:
        (tmp_path / "normal.txt").write_text("x")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a weights bundle says what loading it will trust
            path = save(tmp_path / "m.tpk", make_mlp(**kwargs), preprocessor=diabetes["preprocessor"],
                        heads=diabetes["head"], examples=diabetes["train"], storage=storage,
                        factory="models_for_tests:make_mlp", factory_kwargs=kwargs)
    finally:
        os.umask(previous)
    normal = (tmp_path / "normal.txt").stat().st_mode & 0o777
    modes = {rel: oct((path / rel).stat().st_mode & 0o777) for rel in relative_files(path)}
    assert normal == 0o640
    assert modes == dict.fromkeys(modes, oct(normal)), modes
    model_file = "weights.safetensors" if storage == "weights" else "model.pt2"
    assert {"examples/outputs.safetensors", model_file} <= set(modes)


def test_saving_over_an_existing_bundle_needs_overwrite(wine, wine_bundle):
    with pytest.raises(BundleError, match="already exists; pass overwrite=True"):
        save(
            wine_bundle,
            wine["model"],
            preprocessor=wine["preprocessor"],
            heads=wine["head"],
            examples=wine["train"],
        )


def test_save_refuses_a_head_that_does_not_fit_the_model(wine, tmp_path):
    from torchpredict.errors import ModelLoadError
    from torchpredict.heads.classification import MulticlassClassification

    wrong = MulticlassClassification(target="cultivar", labels=["a", "b", "c", "d"])
    with pytest.raises(ModelLoadError, match="cultivar"):
        save(
            tmp_path / "bad.tpk",
            wine["model"],
            preprocessor=wine["preprocessor"],
            heads=wrong,
            examples=wine["train"],
        )
    assert not (tmp_path / "bad.tpk").exists()


def test_corrupted_file_is_a_bundle_error_naming_it(wine_bundle, tmp_path):
    bundle = _copy(wine_bundle, tmp_path)
    model_file = read_manifest(bundle).model["file"]
    with open(bundle / model_file, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00garbage\x00")
    with pytest.raises(BundleError, match=f"file '{model_file}' sha256 mismatch"):
        load(bundle, device="cpu")


def test_wrong_sha256_in_manifest_is_a_bundle_error(wine_bundle, tmp_path):
    bundle = _copy(wine_bundle, tmp_path)
    _rewrite_manifest(bundle, lambda m: m["files"].update({"schema.json": "0" * 64}))
    with pytest.raises(BundleError, match=r"file 'schema.json' sha256 mismatch \(expected 00000000…"):
        load(bundle, device="cpu")


def test_missing_file_is_a_bundle_error(wine_bundle, tmp_path):
    bundle = _copy(wine_bundle, tmp_path)
    (bundle / "preprocessing.json").unlink()
    with pytest.raises(BundleError, match="file 'preprocessing.json' is missing"):
        load(bundle, device="cpu")


def test_newer_format_version_is_refused_with_the_version_to_upgrade_to(wine_bundle, tmp_path):
    bundle = _copy(wine_bundle, tmp_path)
    _rewrite_manifest(bundle, lambda m: m.update(format_version=2, producer={"torchpredict": "9.1.0"}))
    with pytest.raises(BundleError, match=r"format version 2 is newer .* upgrade to torchpredict>=9.1.0"):
        load(bundle, device="cpu")


def test_missing_manifest_and_bad_json_are_bundle_errors(wine_bundle, tmp_path):
    bundle = _copy(wine_bundle, tmp_path)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        load(bundle, device="cpu")
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load(bundle, device="cpu")


def test_not_a_bundle_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load(tmp_path / "nope.tpk", device="cpu")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(BundleError, match="neither a bundle folder nor a .zip"):
        load(junk, device="cpu")


def test_zip_with_unsafe_paths_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(BundleError, match="refusing unsafe path"):
        load(evil, device="cpu")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_tampered_golden_outputs_fail_verification(wine_bundle, tmp_path):
    from safetensors.torch import load_file, save_file

    from torchpredict.bundle.manifest import sha256

    bundle = _copy(wine_bundle, tmp_path)
    outputs_file = bundle / "examples/outputs.safetensors"
    outputs = {name: tensor + 1.0 for name, tensor in load_file(str(outputs_file)).items()}
    save_file(outputs, str(outputs_file))
    _rewrite_manifest(
        bundle, lambda m: m["files"].update({"examples/outputs.safetensors": sha256(outputs_file)})
    )
    assert not load(bundle, device="cpu").verify().passed
    with pytest.raises(BundleError, match="golden examples do not reproduce on cpu: FAILED"):
        load(bundle, device="cpu", verify=True)


def test_model_on_another_device_is_saved_from_a_cpu_copy(diabetes, tmp_path):
    model = diabetes["model"]
    path = save(
        tmp_path / "m.tpk",
        model,
        preprocessor=diabetes["preprocessor"],
        heads=diabetes["head"],
        examples=diabetes["train"],
        storage="export",
    )
    assert all(p.device == torch.device("cpu") for p in model.parameters())
    assert load(path, device="cpu").predict(diabetes["test"]).num_rows == diabetes["test"].num_rows


def test_a_weights_bundle_says_at_save_what_loading_will_trust(diabetes, tmp_path):
    from models_for_tests import make_mlp
    from torchpredict.errors import ModelLoadError

    torch.manual_seed(0)
    kwargs = {"in_features": 10, "hidden": 4, "out_features": 1}
    with pytest.warns(UserWarning) as warned:
        path = save(tmp_path / "w.tpk", make_mlp(**kwargs), preprocessor=diabetes["preprocessor"],
                    heads=diabetes["head"], examples=diabetes["train"], storage="weights",
                    factory="models_for_tests:make_mlp", factory_kwargs=kwargs)
    assert [str(w.message) for w in warned] == [
        f"bundle '{path}' stores weights.safetensors + factory 'models_for_tests:make_mlp': loading it imports and "
        "runs that factory's module, so the loading side must pass trust_factory=['models_for_tests'] "
        "(CLI --trust-factory models_for_tests)"
    ]
    with pytest.raises(ModelLoadError, match="bundle's factory 'models_for_tests:make_mlp' is not trusted"):
        load(path, device="cpu")
    assert load(path, device="cpu", trust_factory=["models_for_tests"], verify=True).verify().passed


@pytest.fixture(scope="module")
def two_versions(wine, tmp_path_factory) -> tuple[Path, Path]:
    """The wine bundle and a next version of it (other weights, same everything else)."""
    folder = tmp_path_factory.mktemp("versions")
    first = save(folder / "v1.tpk", wine["model"], preprocessor=wine["preprocessor"], heads=wine["head"],
                 examples=wine["train"])
    model = copy.deepcopy(wine["model"])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.5)
    second = save(folder / "v2.tpk", model, preprocessor=wine["preprocessor"], heads=wine["head"],
                  examples=wine["train"], model_version="2")
    return first, second


def _replace(bundle: Path, by: Path) -> None:
    """What a deploy does: the next version's files copied over the bundle's, in place."""
    for rel in relative_files(by):
        shutil.copyfile(by / rel, bundle / rel)


def test_a_bundle_replaced_after_it_was_opened_loads_as_the_version_opened(two_versions, wine, tmp_path,
                                                                          monkeypatch):
    first, second = two_versions
    bundle = _copy(first, tmp_path)
    real_check = loading.check_hashes

    def check_then_replace(*args, **kwargs):  # the deploy lands between the hash check and the model's read
        real_check(*args, **kwargs)
        _replace(bundle, second)

    monkeypatch.setattr(loading, "check_hashes", check_then_replace)
    predictor = load(bundle, device="cpu")
    assert predictor.manifest.model_version == "1"
    expected = load(first, device="cpu").predict(wine["new"])
    assert predictor.predict(wine["new"]).equals(expected)
    assert not load(second, device="cpu").predict(wine["new"]).equals(expected)  # the versions differ


def test_a_bundle_replaced_while_it_is_opened_is_refused_never_half_read(two_versions, tmp_path, monkeypatch):
    first, second = two_versions
    bundle = _copy(first, tmp_path)
    real_copy, copied = archive.shutil.copyfile, []

    def copy_then_replace(source, target, **kwargs):  # the deploy lands after the first listed file is read
        copied.append(real_copy(source, target, **kwargs))
        if len(copied) == 1:
            _replace(bundle, second)
        return copied[-1]

    monkeypatch.setattr(archive.shutil, "copyfile", copy_then_replace)
    with pytest.raises(BundleError, match=r"sha256 mismatch .* the file was changed or corrupted"):
        load(bundle, device="cpu")
    monkeypatch.undo()
    assert load(bundle, device="cpu").manifest.model_version == "2"  # once written, the next version loads
