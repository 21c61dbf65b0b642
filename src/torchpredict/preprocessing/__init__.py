"""Preprocessing, the public face: the Preprocessor, every step type, and the scikit-learn import.

The Preprocessor lives in preprocessor.py; the step types in numeric.py, power.py, binning.py, missing.py,
categorical.py, copying.py, text.py and images.py; the scikit-learn import in sklearn_import.py, the torchvision
one in torchvision_import.py. This module only gathers
them, so that `from torchpredict.preprocessing import ...` is the one path users need, and importing it
registers every step type.

>>> pre = Preprocessor([Standardize(["a"])]).fit({"a": [1.0, 3.0]})
>>> pre.transform({"a": [3.0]})["x"].tolist()
[[1.0]]
"""

from __future__ import annotations

from typing import Any

from torchpredict.preprocessing.binning import Bucketize
from torchpredict.preprocessing.categorical import IndexEncode, OneHot
from torchpredict.preprocessing.copying import Copy
from torchpredict.preprocessing.images import CenterCrop, Crop, Decode, ImageEncode, Normalize, Pad, Rescale, Resize
from torchpredict.preprocessing.missing import Impute
from torchpredict.preprocessing.numeric import Clip, Log1p, MaxAbs, MinMax, Robust, Standardize
from torchpredict.preprocessing.power import Power
from torchpredict.preprocessing.preprocessor import Preprocessor
from torchpredict.preprocessing.sklearn_import import convert
from torchpredict.preprocessing.steps import STEP_TYPES, Step, register_step
from torchpredict.preprocessing.text import TextEncode
from torchpredict.preprocessing.torchvision_import import from_torchvision

__all__ = ["STEP_TYPES", "Bucketize", "CenterCrop", "Clip", "Copy", "Crop", "Decode", "ImageEncode", "Impute",
           "IndexEncode", "Log1p", "MaxAbs", "MinMax", "Normalize", "OneHot", "Pad", "Power", "Preprocessor", "Rescale",
           "Resize", "Robust", "Standardize", "Step", "TextEncode", "from_sklearn", "from_torchvision", "register_step"]


def from_sklearn(fitted: Any, X: Any = None) -> Preprocessor:
    """Convert a fitted scikit-learn ColumnTransformer / Pipeline into an equivalent, fitted Preprocessor.

    X: the training data, optional, for the schema's statistics (see torchpredict.preprocessing.sklearn_import.convert).

    >>> pre = from_sklearn(column_transformer, X=train_frame)      # doctest: +SKIP
    """
    return convert(fitted, X)
