"""select_output picks a head's tensor out of every shape of model output, and says what came back."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch

from torchpredict.errors import ModelLoadError, PreprocessingError
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.heads.outputs import select_output
from torchpredict.heads.regression import RawOutput


def test_select_output_from_tensor_tuple_list_dict_and_namedtuple():
    a, b = torch.zeros(2, 3), torch.ones(2)
    assert select_output(a, None) is a
    assert select_output((a, b), 1) is b
    assert select_output([a], None) is a
    assert select_output({"logits": a, "aux": b}, "logits") is a
    assert select_output({"only": b}, None) is b
    assert select_output(namedtuple("Out", "logits aux")(a, b), "aux") is b
    ones = np.ones(3, dtype=np.float32)  # a numpy output (ONNX Runtime's) is read as it is
    assert select_output(ones, None) is ones
    assert MulticlassClassification(output="logits").select({"logits": a}) is a


def test_select_output_errors_name_head_and_what_came_back():
    a = torch.zeros(2)
    with pytest.raises(
        ModelLoadError,
        match=r"^head 'species' reads output 'logits' but the model returned "
        r"keys \['a', 'b'\]$",
    ):
        select_output({"a": a, "b": a}, "logits", head="species")
    with pytest.raises(ModelLoadError, match=r"head 'y' reads output 2 but the model returned a tuple of 2 "):
        select_output((a, a), 2, head="y")
    with pytest.raises(
        ModelLoadError,
        match=r"reads the model's only output but the model returned a tuple "
        r"of 2 output\(s\); set output=0\.\.1 to pick one",
    ):
        select_output((a, a), None, head="y")
    with pytest.raises(
        ModelLoadError,
        match=r"reads the model's only output but the model returned keys "
        r"\['a', 'b'\]; set output='<key>'",
    ):
        select_output({"a": a, "b": a}, None, head="y")
    with pytest.raises(ModelLoadError, match=r"reads output 'a' but the model returned a single tensor"):
        select_output(a, "a", head="y")
    with pytest.raises(
        ModelLoadError,
        match=r"reads output 0 but the model returned a single tensor; "
        r"use output=None",
    ):
        select_output(a, 0, head="y")
    with pytest.raises(ModelLoadError, match=r"reads output 'a', which is a list, not a tensor"):
        select_output({"a": [1, 2]}, "a", head="y")
    with pytest.raises(PreprocessingError, match=r"output must be None, a tuple index >= 0 or a dict key"):
        RawOutput(output=-1)
