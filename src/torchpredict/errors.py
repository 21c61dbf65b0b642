"""One tree of errors; each subclasses a builtin so callers can catch either.

Messages say what, where (file, column, row), expected vs got, and the fix when it is obvious.
The CLI maps these to exit codes and the server to HTTP statuses, each in exactly one place.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendWarning",
    "BundleError",
    "DeviceError",
    "EngineError",
    "InputError",
    "ModelLoadError",
    "OutOfRangeWarning",
    "PackError",
    "PredictionError",
    "PreprocessingError",
    "SchemaError",
    "TorchPredictError",
]


class TorchPredictError(Exception):
    """Base of every error torchpredict raises on purpose."""


class BundleError(TorchPredictError, ValueError):
    """A bundle is missing, corrupt, tampered with, or of a format this version cannot read; or `save` was given
    arguments it cannot write one from."""


class SchemaError(TorchPredictError, ValueError):
    """Input data does not match the bundle's input schema."""


class PackError(TorchPredictError, ValueError):
    """`pack`'s check on the training rows says the bundle would be wrong (label order, target or input scaling,
    task), so it is not written."""


class PreprocessingError(TorchPredictError, ValueError):
    """A preprocessing step cannot be fitted or applied (unfitted, unknown category, bad parameter)."""


class PredictionError(TorchPredictError, ValueError):
    """The model's output for a row cannot be read as a prediction (a NaN or infinite score)."""


class ModelLoadError(TorchPredictError, RuntimeError):
    """A model or checkpoint cannot be built, imported or run."""


class BackendError(TorchPredictError, RuntimeError):
    """An accelerated backend was asked for that cannot be built here, or whose outputs do not reproduce eager
    PyTorch's on the bundle's golden rows."""


class DeviceError(TorchPredictError, RuntimeError):
    """A requested device is malformed or not available on this machine."""


class EngineError(TorchPredictError, RuntimeError):
    """A distributed engine cannot run the job: Ray is not installed, the cluster cannot be reached, the actors
    asked for do not fit its resources, or the job lost rows."""


class InputError(TorchPredictError, ValueError):
    """An input or output file cannot be read or written (missing, unknown format, malformed)."""


class OutOfRangeWarning(UserWarning):
    """Input values fell outside what the model saw in training (predictions there are extrapolations)."""


class BackendWarning(UserWarning):
    """A backend was passed over for eager PyTorch (it failed to build or to verify), with why."""
