"""The public API is curated: __all__ is guarded, and importing the package does no work."""

from __future__ import annotations

import subprocess
import sys

import torchpredict

PUBLIC = {
    "Bucketize",
    "Clip",
    "DriftReport",
    "IndexEncode",
    "Log1p",
    "MaxAbs",
    "Power",
    "Robust",
    "RunStats",
    "from_sklearn",
    "serve",
    "TextEncode",
    "Seq2Seq",
    "TokenClassification",
    "BinaryClassification",
    "BundleError",
    "Copy",
    "DeviceError",
    "Impute",
    "InputError",
    "MinMax",
    "ModelLoadError",
    "MulticlassClassification",
    "MultilabelClassification",
    "OneHot",
    "OutOfRangeWarning",
    "PackError",
    "PredictionError",
    "Predictor",
    "PreprocessingError",
    "Preprocessor",
    "RawOutput",
    "Regression",
    "Schema",
    "SchemaError",
    "Standardize",
    "TorchPredictError",
    "__version__",
    "load",
    "pack",
    "optimize",
    "BackendError",
    "BackendWarning",
    "read_manifest",
    "resolve_device",
    "save",
}


def test_all_is_the_curated_public_api():
    assert set(torchpredict.__all__) == PUBLIC
    for name in torchpredict.__all__:
        assert getattr(torchpredict, name) is not None


def test_errors_subclass_builtins():
    assert issubclass(torchpredict.BundleError, ValueError)
    assert issubclass(torchpredict.SchemaError, torchpredict.TorchPredictError)
    assert issubclass(torchpredict.ModelLoadError, RuntimeError)


def test_import_is_light():
    code = "import sys, torchpredict; heavy = {'torch', 'pyarrow', 'numpy'} & set(sys.modules); print(heavy)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "set()"
