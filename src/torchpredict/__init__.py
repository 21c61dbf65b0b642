"""torchpredict: predict with a trained PyTorch model, correctly by construction.

Importing the package does no work: the public names below are imported on first use, so
`import torchpredict` stays fast and never probes hardware.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "save": "torchpredict.bundle",
    "load": "torchpredict.bundle",
    "read_manifest": "torchpredict.manifest",
    "pack": "torchpredict.packing",
    "Predictor": "torchpredict.predictor",
    "Preprocessor": "torchpredict.preprocessing",
    "Standardize": "torchpredict.preprocessing",
    "MinMax": "torchpredict.preprocessing",
    "Impute": "torchpredict.preprocessing",
    "OneHot": "torchpredict.preprocessing",
    "IndexEncode": "torchpredict.preprocessing",
    "Robust": "torchpredict.preprocessing",
    "MaxAbs": "torchpredict.preprocessing",
    "Log1p": "torchpredict.preprocessing",
    "Clip": "torchpredict.preprocessing",
    "Power": "torchpredict.preprocessing",
    "Bucketize": "torchpredict.preprocessing",
    "Copy": "torchpredict.preprocessing",
    "from_sklearn": "torchpredict.preprocessing",
    "DriftReport": "torchpredict.drift",
    "TextEncode": "torchpredict.text",
    "Seq2Seq": "torchpredict.sequences",
    "TokenClassification": "torchpredict.sequences",
    "RunStats": "torchpredict.predictor",
    "Schema": "torchpredict.schema",
    "Regression": "torchpredict.interpretation",
    "BinaryClassification": "torchpredict.classification",
    "MulticlassClassification": "torchpredict.classification",
    "MultilabelClassification": "torchpredict.classification",
    "RawOutput": "torchpredict.interpretation",
    "resolve_device": "torchpredict.device",
    "TorchPredictError": "torchpredict.errors",
    "BundleError": "torchpredict.errors",
    "SchemaError": "torchpredict.errors",
    "PreprocessingError": "torchpredict.errors",
    "ModelLoadError": "torchpredict.errors",
    "DeviceError": "torchpredict.errors",
    "InputError": "torchpredict.errors",
    "PackError": "torchpredict.errors",
    "PredictionError": "torchpredict.errors",
    "OutOfRangeWarning": "torchpredict.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'torchpredict' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
