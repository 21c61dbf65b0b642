"""Regression and raw-output heads read trained models' outputs; every head round-trips through JSON."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.datasets import load_diabetes
from torch import nn

from linear_models import logits_of, standardized, train_linear
from torchpredict.errors import BundleError, ModelLoadError, PreprocessingError
from torchpredict.heads.base import Head
from torchpredict.heads.classification import BinaryClassification, MulticlassClassification, MultilabelClassification
from torchpredict.heads.registry import head_from_dict
from torchpredict.heads.regression import RawOutput, Regression


@pytest.fixture(scope="module")
def diabetes():
    data = load_diabetes()
    head = Regression("progression", scale=True).fit(data.target)
    x = standardized(data.data)
    model = train_linear(x, torch.from_numpy(head.encode_target(data.target))[:, None], 1, nn.MSELoss())
    return head, data.target, logits_of(model, x)


# --- regression -------------------------------------------------------------------------------------------


def test_regression_scaling_round_trips_in_float32(diabetes):
    head, y, _ = diabetes
    encoded = head.encode_target(y)
    assert encoded.dtype == np.float32 and encoded.shape == y.shape
    assert abs(encoded.mean()) < 1e-6 and abs(encoded.std() - 1) < 1e-5
    back = head.interpret(torch.from_numpy(encoded))["progression"]
    assert back.type == pa.float32()
    np.testing.assert_allclose(back.to_numpy(), y, rtol=1e-6)


def test_regression_unscales_model_output_in_float64(diabetes):
    head, y, logits = diabetes
    out = head.interpret(logits)
    assert list(out) == head.column_names() == ["progression"]
    expected = (logits[:, 0].double() * head.std_[0] + head.mean_[0]).float().numpy()
    np.testing.assert_array_equal(out["progression"].to_numpy(), expected)
    assert out["progression"].equals(head.interpret(logits[:, 0])["progression"])
    r2 = 1 - ((out["progression"].to_numpy() - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert r2 > 0.4


def test_unscaled_regression_keeps_float32_predictions_exact():
    raw = torch.randn(7, dtype=torch.float32)
    out = Regression().interpret(raw)["prediction"]
    np.testing.assert_array_equal(out.to_numpy(), raw.numpy())


def test_multi_target_regression_reads_columns_from_a_table():
    y = pa.table({"a": [1.0, 2.0, 3.0], "b": [10.0, 10.0, 40.0], "other": ["x", "y", "z"]})
    head = Regression(["a", "b"], scale=True).fit(y)
    assert head.mean_ == (2.0, 20.0) and head.std_[1] == pytest.approx(np.std([10.0, 10.0, 40.0]))
    encoded = head.encode_target({"a": [2.0], "b": [20.0]})
    assert encoded.shape == (1, 2) and encoded.tolist() == [[0.0, 0.0]]
    out = head.interpret(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert list(out) == head.column_names() == ["a", "b"]
    assert out["b"].to_pylist() == pytest.approx([20.0 + np.std([10.0, 10.0, 40.0]), 20.0])
    with pytest.raises(ModelLoadError, match=r"head 'a, b' \(Regression\) expects output shape \[n, 2\]"):
        head.interpret(torch.zeros(2))
    with pytest.raises(PreprocessingError, match=r"y has no column 'b'; got columns \['a'\]"):
        head.fit({"a": [1.0]})


def test_regression_errors():
    with pytest.raises(PreprocessingError, match=r"Regression\(target='y'\) is not fitted; call fit\(y\)"):
        Regression("y", scale=True).interpret(torch.zeros(3))
    with pytest.raises(
        PreprocessingError,
        match=r"y has 1 row\(s\) with missing or non-finite values "
        r"\(first at row 1\)",
    ):
        Regression("y", scale=True).fit([1.0, np.nan, 2.0])
    with pytest.raises(PreprocessingError, match=r"y must have shape \[n\], got \[2, 3\]"):
        Regression("y").fit(np.zeros((2, 3)))
    with pytest.raises(ModelLoadError, match=r"expects output shape \[n\] or \[n, 1\], got \[4, 2\]"):
        Regression("y").interpret(torch.zeros(4, 2))
    with pytest.raises(PreprocessingError, match=r"target names must be distinct, got \['a', 'a'\]"):
        Regression(["a", "a"])
    with pytest.raises(PreprocessingError, match=r"target must be a non-empty str, got ''"):
        Regression("")


# --- raw --------------------------------------------------------------------------------------------------


def test_raw_output_columns():
    vector = RawOutput().interpret(torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert list(vector) == ["output"] and vector["output"].type == pa.float32()
    head = RawOutput("emb").fit(np.zeros((4, 3)))
    matrix = head.interpret(torch.arange(6.0).reshape(2, 3))
    assert list(matrix) == head.column_names() == ["emb_0", "emb_1", "emb_2"]
    assert matrix["emb_1"].to_pylist() == [1.0, 4.0]
    assert RawOutput(shape=()).column_names() == ["output"]


def test_raw_output_errors():
    with pytest.raises(
        PreprocessingError,
        match=r"RawOutput\(target='output'\) does not know its output "
        r"shape; pass shape=\(k,\)",
    ):
        RawOutput().column_names()
    with pytest.raises(
        ModelLoadError,
        match=r"head 'output' \(RawOutput\) expects output shape \[n, 3\], "
        r"got \[2, 4\]",
    ):
        RawOutput(shape=[3]).interpret(torch.zeros(2, 4))
    with pytest.raises(ModelLoadError, match=r"expects output shape \[n\] or \[n, k\], got \[2, 3, 4\]"):
        RawOutput().interpret(torch.zeros(2, 3, 4))
    with pytest.raises(PreprocessingError, match=r"shape must be \(\) or \(k,\) with k >= 1, got \[3, 4\]"):
        RawOutput(shape=[3, 4])


# --- serialisation ----------------------------------------------------------------------------------------


def _heads() -> list[Head]:
    return [
        Regression(),
        Regression(["a", "b"], scale=True, output=1),
        Regression("y", scale=True).fit([0.1, 0.2, 0.7]),
        BinaryClassification(),
        BinaryClassification("c", labels=[3, 7], threshold=0.25, from_logits=False, output="p"),
        BinaryClassification().fit(["no", "yes"]),
        MulticlassClassification(),
        MulticlassClassification(labels=["x", "y"], top_k=2, probabilities=False),
        MulticlassClassification(top_k=1).fit([5, 2, 9]),
        MultilabelClassification(labels=["a", "b"], threshold=[0.2, 0.7]),
        MultilabelClassification(labels=[1, 2]).fit([[1], [2]]),
        RawOutput(),
        RawOutput("e", shape=[4], output=0),
        RawOutput().fit(np.zeros((3, 2))),
    ]


@pytest.mark.parametrize("head", _heads(), ids=repr)
def test_json_round_trip(head):
    text = json.dumps(head.to_dict())
    again = head_from_dict(json.loads(text))
    assert again == head and type(again) is type(head)
    assert type(head).from_dict(json.loads(text)) == head
    assert again.to_dict() == head.to_dict()


def test_equality_covers_fitted_state():
    assert Regression(scale=True) != Regression(scale=True).fit([1.0, 2.0])
    assert MulticlassClassification().fit(["a", "b"]) != MulticlassClassification().fit(["a", "c"])
    assert BinaryClassification() != MulticlassClassification()


def test_from_dict_errors():
    with pytest.raises(BundleError, match=r"unknown output head type 'ctc'; known types: \['binary', "):
        head_from_dict({"type": "ctc", "params": {}})
    with pytest.raises(BundleError, match=r"output head: expected type 'raw', got 'binary'"):
        RawOutput.from_dict(BinaryClassification().to_dict())
    with pytest.raises(BundleError, match=r"output head 'raw': .*unexpected keyword argument 'width'"):
        head_from_dict({"type": "raw", "params": {"width": 3}})


@pytest.mark.parametrize("state, message", [
    ({"mean_": [float("nan")], "std_": [1.0]},
     r"state 'mean_' must hold 1 finite numbers, got nan at position 0 \('y'\)"),
    ({"mean_": [0.0], "std_": [0.0]}, r"state 'std_' must hold 1 finite numbers > 0, got 0\.0 at position 0 \('y'\)"),
    ({"mean_": [0.0, 1.0], "std_": [1.0]}, r"state 'mean_' must hold 1 finite numbers, got a list of 2"),
    ({"mean_": "abc", "std_": [1.0]}, r"state 'mean_' must hold 1 finite numbers, got 'abc'"),
])
def test_a_regression_head_refuses_scales_it_cannot_multiply_back_by(state, message):
    d = Regression("y", scale=True).fit([1.0, 2.0, 4.0]).to_dict()
    assert head_from_dict(d).mean_ is not None
    with pytest.raises(PreprocessingError, match=message):
        head_from_dict(d | {"state": state})


def test_head_params_and_state_must_be_objects():
    with pytest.raises(BundleError, match=r"output head 'regression': 'params' must be an object, got a list of 1"):
        head_from_dict({"type": "regression", "params": ["y"]})
    with pytest.raises(BundleError, match=r"output head 'raw': 'state' must be an object, got 'x'"):
        head_from_dict({"type": "raw", "params": {}, "state": "x"})
