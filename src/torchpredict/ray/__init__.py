"""Batch prediction on Ray Data, for jobs that outgrow one machine: the same bundle, reader and stages as
`torchpredict predict`, run by a pool of actors (`torchpredict predict ... --engine ray`). Needs the ray extra
(`pip install 'torchpredict[ray]'`); importing this package does not import Ray.

>>> import torchpredict.ray                                                             # doctest: +SKIP
>>> run = torchpredict.ray.predict_files("in/*.csv", "wine.tpk", "predictions/")       # doctest: +SKIP
>>> ds = torchpredict.ray.predict("in/*.csv", "wine.tpk")   # a Dataset, to write anywhere  # doctest: +SKIP
"""

from torchpredict.lazy import exports

__all__ = ["RayRun", "Sizing", "predict", "predict_files", "size_actors"]

__getattr__ = exports(__name__, {name: "torchpredict.ray.engine" for name in __all__})
