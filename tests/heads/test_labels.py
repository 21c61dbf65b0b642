"""Class labels are checked (ints or strings, distinct, none missing) and unknown ones named with their row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchpredict.errors import PreprocessingError
from torchpredict.heads.classification import BinaryClassification, MulticlassClassification, MultilabelClassification


def test_classification_unknown_label_names_label_and_row():
    head = MulticlassClassification("species", labels=["cat", "cow"])
    with pytest.raises(PreprocessingError, match=r"unknown label 'dog' at row 2; known labels: \['cat'"):
        head.encode_target(["cat", "cow", "dog"])
    with pytest.raises(PreprocessingError, match=r"unknown label 3 at row 0"):
        head.fit([3, 1])
    with pytest.raises(PreprocessingError, match=r"unknown label 'dog' at row 1"):
        BinaryClassification(labels=["cat", "cow"]).fit(["cat", "dog"])


def test_label_values_are_checked():
    assert MulticlassClassification().fit(np.array([1.0, 0.0, 2.0])).classes == (0, 1, 2)
    with pytest.raises(PreprocessingError, match=r"y must hold ints or strings, got 0.5 \(float\) at row 1"):
        MulticlassClassification().fit([1.0, 0.5])
    with pytest.raises(PreprocessingError, match=r"y has 1 missing label\(s\) \(first at row 2\)"):
        MulticlassClassification().fit(pa.array(["a", "b", None]))
    with pytest.raises(PreprocessingError, match=r"labels must be all ints or all strings, got \[1, 'a'\]"):
        MulticlassClassification(labels=[1, "a"])
    with pytest.raises(PreprocessingError, match=r"labels must be distinct, got 'a' twice"):
        MulticlassClassification(labels=["a", "b", "a"])
    with pytest.raises(PreprocessingError, match=r"labels must not be empty"):
        MultilabelClassification(labels=[])
    with pytest.raises(PreprocessingError, match=r"labels must be a sequence of ints or strings, got 'abc'"):
        MultilabelClassification(labels="abc")
