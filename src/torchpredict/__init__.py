"""torchpredict: predict with a trained PyTorch model, correctly by construction.

Importing the package does no work: the public names below are imported on first use, so
`import torchpredict` stays fast and never probes hardware.
"""

from __future__ import annotations

from torchpredict.lazy import exports
from torchpredict.version import __version__

_EXPORTS = {
    "save": "torchpredict.bundle",
    "load": "torchpredict.bundle",
    "read_manifest": "torchpredict.bundle.manifest",
    "pack": "torchpredict.packing.packer",
    "optimize": "torchpredict.bundle.optimizing",
    "serve": "torchpredict.server.run",
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
    "DriftReport": "torchpredict.schema.drift",
    "TextEncode": "torchpredict.preprocessing.text",
    "Seq2Seq": "torchpredict.heads.sequences",
    "TokenClassification": "torchpredict.heads.sequences",
    "RunStats": "torchpredict.predictor",
    "Schema": "torchpredict.schema.schema",
    "Regression": "torchpredict.heads.regression",
    "BinaryClassification": "torchpredict.heads.classification",
    "MulticlassClassification": "torchpredict.heads.classification",
    "MultilabelClassification": "torchpredict.heads.classification",
    "RawOutput": "torchpredict.heads.regression",
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
    "BackendError": "torchpredict.errors",
    "BackendWarning": "torchpredict.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


__getattr__ = exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
