"""Bundles on disk: saving.py writes one, loading.py reads one into a Predictor (backends.py choosing what runs
its model), optimizing.py stores an ONNX graph and that choice in one, manifest.py is the manifest and the file
checks, inspection.py describes one without loading its model.

`from torchpredict.bundle import load, save` imports them on first use, so that reading a manifest
(`torchpredict inspect`) never imports torch.
"""

from torchpredict.lazy import exports

__all__ = ["load", "save"]
__getattr__ = exports(__name__, {"load": "torchpredict.bundle.loading", "save": "torchpredict.bundle.saving"})
