"""Backends chosen on the bundle's evidence: each backend built for the wine MLP and the digits CNN predicts what
eager predicts; one that fails verification or cannot be built is refused (explicit) or passed over (auto)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from backend_models import save_digits_cnn, train_digits_cnn
from torchpredict.bundle import load
from torchpredict.bundle.backends import choose_backend
from torchpredict.errors import BackendError, BackendWarning


@pytest.fixture(scope="module")
def digits() -> dict:
    return train_digits_cnn()


@pytest.fixture(scope="module")
def digits_bundle(digits: dict, tmp_path_factory: pytest.TempPathFactory):
    return save_digits_cnn(tmp_path_factory.mktemp("digits") / "digits.tpk", digits)


@pytest.fixture(scope="module")
def models(wine: dict, wine_bundle, digits: dict, digits_bundle) -> dict:
    """name -> (bundle, rows to predict): the MLP and the CNN."""
    return {"mlp": (wine_bundle, wine["new"]), "cnn": (digits_bundle, digits["test"])}


def _predict(bundle, rows, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drift of held-out rows
        predictor = load(bundle, device="cpu", **options)
        return predictor, predictor.predict(rows)


def _probabilities(table) -> np.ndarray:
    return np.stack([np.asarray(table.column(name)) for name in table.column_names if "_probability_" in name], 1)


@pytest.mark.parametrize("backend", ["onnxruntime", "compile"])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_each_exact_backend_predicts_what_eager_predicts(models, model, backend):
    bundle, rows = models[model]
    _, eager = _predict(bundle, rows)
    predictor, got = _predict(bundle, rows, backend=backend)
    assert predictor.backend == backend
    report = predictor.backend_report
    assert report.chosen == backend and report.trial(backend).verdict == "verified"
    assert report.trial(backend).deviation <= 1e-4
    label = eager.column_names[0]
    assert got.column(label).to_pylist() == eager.column(label).to_pylist()
    np.testing.assert_allclose(_probabilities(got), _probabilities(eager), atol=1e-5)
    assert predictor.verify().passed  # the golden rows, on this backend


def test_channels_last_lays_out_the_cnn_and_has_nothing_to_do_for_the_mlp(models):
    bundle, rows = models["cnn"]
    _, eager = _predict(bundle, rows)
    predictor, got = _predict(bundle, rows, backend="channels_last")
    assert predictor.backend == "channels_last"
    assert predictor.backend_report.trial("channels_last").verdict == "verified"
    assert got.column("digit").to_pylist() == eager.column("digit").to_pylist()
    np.testing.assert_allclose(_probabilities(got), _probabilities(eager), atol=1e-5)
    with pytest.raises(BackendError, match=r"backend channels_last is not available: the model has no 4-D "
                       r"\(convolution\) weights to lay out channels-last$"):
        load(models["mlp"][0], device="cpu", backend="channels_last")


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_int8_is_approximate_refused_by_the_default_tolerance_and_close_when_asked(models, model):
    bundle, rows = models[model]
    with pytest.raises(BackendError, match=r"backend int8 does not reproduce eager PyTorch: outputs deviate from "
                       r"eager by .* on the 8 golden rows, beyond the tolerance \(atol=1e-05, rtol=0.0001\); pass "
                       r"verify=False \(CLI --no-verify\) to use it anyway"):
        load(bundle, device="cpu", backend="int8")
    _, eager = _predict(bundle, rows)
    predictor, got = _predict(bundle, rows, backend="int8", verify_backend=False)
    assert predictor.backend == "int8"
    assert "NOT verified against eager" in predictor.backend_report.describe()
    assert "approximate" in predictor.backend_report.describe()
    label = eager.column_names[0]
    agree = np.mean(np.array(got.column(label).to_pylist()) == np.array(eager.column(label).to_pylist()))
    assert agree >= 0.9
    assert np.abs(_probabilities(got) - _probabilities(eager)).max() < 0.2
    loose, _ = _predict(bundle, rows, backend="int8", atol=1.0, rtol=0.0)  # a tolerance it meets
    assert loose.backend_report.trial("int8").verdict == "verified"


def test_a_tolerance_of_zero_fails_int8_and_auto_falls_back_to_eager_saying_why(wine_bundle):
    with pytest.raises(BackendError, match=r"backend int8 does not reproduce eager.*tolerance \(atol=0, rtol=0\)"):
        load(wine_bundle, device="cpu", backend="int8", atol=0, rtol=0)
    with pytest.warns(BackendWarning, match=r"auto runs eager: backend eager \(auto\) on cpu.*passed over: "
                      r"onnxruntime \(failed: outputs deviate from eager by .* beyond the tolerance \(atol=0, "
                      r"rtol=0\)\); int8 \(failed: .*\); compile \(not tried: compiling takes seconds"):
        predictor = load(wine_bundle, device="cpu", backend="auto", atol=0, rtol=0)
    assert predictor.backend == "eager" and predictor.backend_report.chosen == "eager"
    assert {t.backend: t.verdict for t in predictor.backend_report.trials} == {
        "eager": "verified", "onnxruntime": "failed", "int8": "failed", "channels_last": "not tried",
        "compile": "not tried"}


def test_auto_times_the_verified_backends_and_takes_the_fastest(wine_bundle):
    predictor = load(wine_bundle, device="cpu", backend="auto", batch_size=256)
    report = predictor.backend_report
    assert report.requested == "auto" and report.rows == 256
    timed = {t.backend: t.seconds for t in report.trials if t.seconds is not None}
    assert set(timed) == {"eager", "onnxruntime"}  # int8 failed verification, so it was not timed
    fastest = min(timed, key=timed.__getitem__)
    assert report.chosen in (fastest, "eager")
    if report.chosen != "eager":
        assert report.speedup() > 1.05 and f"{report.speedup():.2f}x eager on batches of 256 rows" in \
            report.describe()
    assert report.to_dict()["trials"][0]["backend"] == "eager"


def test_a_backend_that_cannot_be_built_is_refused_or_passed_over(wine_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(BackendError, match=r"backend onnxruntime is not available: ONNX Runtime is not installed: "
                       r"pip install 'torchpredict\[onnx\]'$"):
        load(wine_bundle, device="cpu", backend="onnxruntime")
    with pytest.warns(BackendWarning, match=r"onnxruntime \(unavailable: ONNX Runtime is not installed"):
        predictor = load(wine_bundle, device="cpu", backend="auto")
    assert predictor.backend == "eager"


def test_bad_requests_are_refused_before_anything_is_built(wine_bundle):
    predictor = load(wine_bundle, device="cpu")
    with pytest.raises(BackendError, match=r"backend must be one of auto, eager, onnxruntime, compile, int8, "
                       r"channels_last, got 'tensorrt'"):
        choose_backend(predictor, "tensorrt")
    with pytest.raises(BackendError, match=r"backend 'auto' chooses among verified backends only"):
        choose_backend(predictor, "auto", verify=False)
    assert choose_backend(predictor, None) is predictor  # nothing stored: eager, untouched
    assert choose_backend(predictor, "eager").backend_report.describe() == "backend eager on cpu"


def test_without_golden_rows_nothing_can_be_verified(wine_bundle):
    from dataclasses import replace

    predictor = load(wine_bundle, device="cpu")
    predictor.golden = replace(predictor.golden, inputs=predictor.golden.inputs.slice(0, 0))
    with pytest.raises(BackendError, match=r"backend onnxruntime is not available: the bundle has no golden rows to "
                       r"verify it against"):
        choose_backend(predictor, "onnxruntime")


def test_a_tuple_output_model_runs_on_onnxruntime(tmp_path):
    """Two heads reading a tuple: the ONNX graph's outputs are put back in the model's structure."""
    import pyarrow as pa
    import torch

    from models_for_tests import TupleOutput
    from torchpredict.bundle import save
    from torchpredict.heads.classification import MulticlassClassification
    from torchpredict.heads.regression import RawOutput
    from torchpredict.preprocessing import Preprocessor, Standardize

    rng = np.random.default_rng(0)
    table = pa.table({f"f{i}": rng.normal(size=64).astype(np.float32) for i in range(4)})
    preprocessor = Preprocessor([Standardize(table.column_names)]).fit(table)
    torch.manual_seed(0)
    heads = [MulticlassClassification(target="kind", labels=["a", "b", "c"], output=0), RawOutput("score", output=1)]
    path = save(tmp_path / "tuple.tpk", TupleOutput(), preprocessor=preprocessor, heads=heads, examples=table)
    _, eager = _predict(path, table)
    predictor, got = _predict(path, table, backend="onnxruntime")
    assert predictor.backend == "onnxruntime"
    assert got.column("kind").to_pylist() == eager.column("kind").to_pylist()
    np.testing.assert_allclose(np.asarray(got.column("score")), np.asarray(eager.column("score")), atol=1e-5)


@pytest.fixture(scope="module")
def sorter(tmp_path_factory: pytest.TempPathFactory):
    """A tiny seq2seq model sorting digit strings (bench/latency.py's), and a few of its inputs."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    from latency import text_bundle

    folder = tmp_path_factory.mktemp("text")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, table = text_bundle(folder)
    return folder / "text.tpk", table.slice(0, 8)


def test_a_decoding_loop_runs_on_compile_and_onnxruntime_declines_it_saying_why(sorter):
    bundle, rows = sorter
    with pytest.raises(BackendError, match=r"backend onnxruntime is not available: declined for a model called with "
                       r"inputs whose sizes vary beyond the batch \(a decoding loop's prefix\)"):
        load(bundle, device="cpu", backend="onnxruntime")
    _, eager = _predict(bundle, rows)
    predictor, got = _predict(bundle, rows, backend="compile")
    assert predictor.backend == "compile"
    assert got.column("sorted").to_pylist() == eager.column("sorted").to_pylist()
    np.testing.assert_allclose(np.asarray(got.column("sorted_score")), np.asarray(eager.column("sorted_score")),
                               atol=1e-4)
