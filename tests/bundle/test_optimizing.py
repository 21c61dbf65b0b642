"""`optimize` stores a verified ONNX graph and the backend chosen on this device; later loads run that choice."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from torchpredict import optimize
from torchpredict.bundle import load
from torchpredict.bundle.manifest import read_manifest
from torchpredict.errors import BackendWarning, BundleError

OLD_BUNDLE = Path(__file__).parents[1] / "data" / "wine-v1" / "wine.tpk"


@pytest.fixture(scope="module")
def optimized(wine_bundle, tmp_path_factory: pytest.TempPathFactory):
    """The wine bundle optimized into a new folder (the original left as it was)."""
    target = tmp_path_factory.mktemp("optimized") / "wine.tpk"
    return optimize(wine_bundle, target, rows=256)


def test_optimize_writes_a_verified_onnx_graph_and_the_choice(optimized, wine_bundle):
    manifest = read_manifest(optimized.path)
    assert optimized.onnx_stored and (optimized.path / "model.onnx").is_file()
    assert manifest.backends["onnx"] == {"file": "model.onnx"}
    assert "model.onnx" in manifest.files
    choice = manifest.backends["choices"]["cpu"]
    assert choice["backend"] == optimized.report.chosen and choice["rows"] == 256
    assert choice["measured_by"].startswith("torchpredict ")
    assert "backends" in manifest.settings_sha256  # hash-checked like every setting
    lines = optimized.describe()
    assert lines[0] == f"optimized bundle '{optimized.path}': stored model.onnx (verified on the golden rows)"
    assert lines[1].startswith(f"backend {optimized.report.chosen} (auto) on cpu")
    assert read_manifest(wine_bundle).backends is None  # the source is untouched
    assert not (Path(wine_bundle) / "model.onnx").exists()


def test_a_load_runs_the_stored_choice_verified_again(optimized):
    predictor = load(optimized.path, device="cpu")
    chosen = optimized.report.chosen
    assert predictor.backend == chosen
    if chosen != "eager":
        assert predictor.backend_report.stored
        assert predictor.backend_report.describe().startswith(f"backend {chosen} (stored by torchpredict optimize)")
    assert predictor.verify().passed
    onnx = load(optimized.path, device="cpu", backend="onnxruntime")  # the stored graph, not a new export
    assert onnx.model.graph == (optimized.path / "model.onnx").read_bytes()


def test_a_stored_choice_that_no_longer_verifies_leaves_eager_with_a_warning(optimized, tmp_path):
    copy = tmp_path / "wine.tpk"
    shutil.copytree(optimized.path, copy)
    manifest = read_manifest(copy)
    if manifest.backends["choices"]["cpu"]["backend"] != "onnxruntime":
        pytest.skip("onnxruntime was not the fastest here; the stored choice is eager")
    with pytest.warns(BackendWarning, match=r"the bundle's stored backend onnxruntime is not used \(backend "
                      r"onnxruntime does not reproduce eager PyTorch: outputs deviate from eager by .* \(atol=0, "
                      r"rtol=0\).*\); running eager"):
        predictor = load(copy, device="cpu", atol=0, rtol=0)
    assert predictor.backend == "eager"


def test_a_changed_onnx_graph_is_refused_by_its_hash(optimized, tmp_path):
    copy = tmp_path / "wine.tpk"
    shutil.copytree(optimized.path, copy)
    graph = copy / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match=r"file 'model.onnx' sha256 mismatch"):
        load(copy, device="cpu")


def test_a_changed_choice_is_refused_by_the_settings_hash(optimized, tmp_path):
    copy = tmp_path / "wine.tpk"
    shutil.copytree(optimized.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["backends"]["choices"]["cpu"]["backend"] = "int8"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest.json field 'backends' was changed after saving"):
        load(copy, device="cpu")


def test_in_place_rewrites_the_folder_and_a_zip(wine_bundle, tmp_path):
    folder = tmp_path / "wine.tpk"
    shutil.copytree(wine_bundle, folder)
    done = optimize(folder, in_place=True, rows=64, backends=["onnxruntime"])
    assert done.path == folder and (folder / "model.onnx").is_file()
    assert not (tmp_path / "wine.tpk.old-optimize").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wine.tpk"]  # no staging left behind
    assert load(folder, device="cpu").verify().passed
    zipped = tmp_path / "wine.zip"
    shutil.make_archive(str(zipped.with_suffix("")), "zip", wine_bundle)
    optimize(zipped, in_place=True, rows=64, backends=["onnxruntime"])
    assert read_manifest(zipped).backends["onnx"] == {"file": "model.onnx"}
    assert load(zipped, device="cpu").verify().passed


def test_where_it_goes_must_be_said_and_nothing_is_overwritten_unasked(wine_bundle, optimized, tmp_path):
    with pytest.raises(BundleError, match=r"say where the optimized bundle goes: an output path \(CLI -o OUT\), or "
                       r"in_place=True"):
        optimize(wine_bundle)
    with pytest.raises(BundleError, match=r"say where"):
        optimize(wine_bundle, tmp_path / "x.tpk", in_place=True)
    with pytest.raises(BundleError, match=r"already exists; pass overwrite=True \(CLI --overwrite\)"):
        optimize(wine_bundle, optimized.path)
    with pytest.raises(BundleError, match=r"is the bundle itself: pass in_place=True"):
        optimize(wine_bundle, wine_bundle)
    with pytest.raises(BundleError, match=r"folder '.*missing' does not exist"):
        optimize(wine_bundle, tmp_path / "missing" / "x.tpk")


def test_a_bundle_without_settings_hashes_is_not_optimized(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BundleError, match=r"written before torchpredict 0.2 .* save it again from its model before "
                           r"optimizing it"):
            optimize(OLD_BUNDLE, tmp_path / "old.tpk")
    assert not (tmp_path / "old.tpk").exists()


def test_without_onnxruntime_no_graph_is_stored_and_why_is_said(wine_bundle, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackendWarning)
        done = optimize(wine_bundle, tmp_path / "wine.tpk", rows=64, backends=["onnxruntime"])
    assert not done.onnx_stored and not (done.path / "model.onnx").exists()
    assert done.describe()[0].endswith("no model.onnx stored: backend onnxruntime is not available: ONNX Runtime is "
                                       "not installed: pip install 'torchpredict[onnx]'")
    assert set(read_manifest(done.path).backends) == {"choices"}
    assert done.report.chosen == "eager"


NO_TORCH = """
import sys
class NoTorch:  # torch not installed, as in a torch-free container
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'")
sys.meta_path.insert(0, NoTorch())
"""

PREDICT = """
import json, sys
import pyarrow.parquet as pq
import torchpredict
predictor = torchpredict.load(sys.argv[1], device=sys.argv[2])
table = predictor.predict(pq.read_table(sys.argv[3]))
print(json.dumps({"torch": "torch" in sys.modules, "backend": predictor.backend, "device": str(predictor.device),
                  "report": predictor.backend_report.describe(), "labels": table.column("cultivar").to_pylist(),
                  "verified": predictor.verify().passed}))
"""


def _predict_in_a_process(bundle, device, rows, tmp_path, *, without_torch=False):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    source = tmp_path / "rows.parquet"
    pq.write_table(rows, source)
    code = (NO_TORCH if without_torch else "") + PREDICT
    return subprocess.run([sys.executable, "-c", code, str(bundle), device, str(source)], capture_output=True,
                          text=True, timeout=120)


def test_an_optimized_bundle_predicts_on_the_cpu_without_importing_torch(optimized, wine, tmp_path):
    if optimized.report.chosen != "onnxruntime":
        pytest.skip("onnxruntime was not the fastest here; the stored choice is eager")
    result = _predict_in_a_process(optimized.path, "cpu", wine["new"], tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["torch"] is False and found["backend"] == "onnxruntime" and found["device"] == "cpu"
    assert found["report"].startswith("backend onnxruntime (stored by torchpredict optimize) on cpu, verified on 8 "
                                      "golden rows")
    assert found["verified"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = load(optimized.path, device="cpu", backend="eager").predict(wine["new"])
    assert found["labels"] == eager.column("cultivar").to_pylist()


def test_where_torch_is_not_installed_the_stored_graph_runs_and_anything_else_says_it_needs_torch(
        optimized, wine_bundle, wine, tmp_path):
    if optimized.report.chosen != "onnxruntime":
        pytest.skip("onnxruntime was not the fastest here; the stored choice is eager")
    result = _predict_in_a_process(optimized.path, "auto", wine["new"], tmp_path, without_torch=True)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["torch"] is False and found["device"] == "cpu" and found["verified"]
    refused = _predict_in_a_process(wine_bundle, "cpu", wine["new"], tmp_path, without_torch=True)
    assert refused.returncode == 1
    assert (f"ModelLoadError: bundle '{wine_bundle}' needs PyTorch here (its model runs on PyTorch (torchpredict "
            "optimize stores an ONNX graph that can run it without)): pip install torch") in refused.stderr
