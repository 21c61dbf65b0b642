"""`torchpredict pack`: a bundle from a training checkpoint and its training table. packer.py builds it,
tasks.py infers the task from the target, check.py checks the packed bundle against the training rows."""

from torchpredict.lazy import exports

__all__ = ["Fit", "Packed", "pack"]
__getattr__ = exports(__name__, {"pack": "torchpredict.packing.packer", "Packed": "torchpredict.packing.packer",
                                 "Fit": "torchpredict.packing.check"})
