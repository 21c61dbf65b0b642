"""Output heads read real trained models' outputs correctly, round-trip through JSON, and fail clearly."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from torch import nn

from torchpredict.errors import BundleError, ModelLoadError, PreprocessingError
from torchpredict.interpretation import (
    BinaryClassification,
    Head,
    MulticlassClassification,
    MultilabelClassification,
    RawOutput,
    Regression,
    head_from_dict,
)


def _standardized(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32))


def _train(x: torch.Tensor, target: torch.Tensor, width: int, loss: nn.Module, steps: int = 300) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], width)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(model(x), target).backward()
        optimizer.step()
    return model.eval()


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


@pytest.fixture(scope="module")
def wine():
    data = load_wine()
    names = np.array(["barolo", "grignolino", "barbera"], dtype=object)[data.target]
    head = MulticlassClassification("cultivar", top_k=2).fit(names)
    x = _standardized(data.data)
    model = _train(x, torch.from_numpy(head.encode_target(names)), 3, nn.CrossEntropyLoss())
    return head, names, _logits(model, x)


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer()
    labels = np.array(["malignant", "benign"], dtype=object)[data.target]
    head = BinaryClassification("diagnosis", labels=("malignant", "benign")).fit(labels)
    x = _standardized(data.data)
    model = _train(x, torch.from_numpy(head.encode_target(labels))[:, None], 1, nn.BCEWithLogitsLoss())
    return head, labels, _logits(model, x)


@pytest.fixture(scope="module")
def diabetes():
    data = load_diabetes()
    head = Regression("progression", scale=True).fit(data.target)
    x = _standardized(data.data)
    model = _train(x, torch.from_numpy(head.encode_target(data.target))[:, None], 1, nn.MSELoss())
    return head, data.target, _logits(model, x)


@pytest.fixture(scope="module")
def tags():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    on = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0, x[:, 3] < -0.5], axis=1)
    head = MultilabelClassification("tag", labels=["red", "green", "blue"])
    model = _train(torch.from_numpy(x), torch.from_numpy(head.encode_target(on)), 3, nn.BCEWithLogitsLoss())
    return head, on, _logits(model, torch.from_numpy(x))


# --- multiclass -------------------------------------------------------------------------------------------


def test_multiclass_learns_sorted_labels_and_encodes_indices(wine):
    head, names, _ = wine
    assert head.classes == ("barbera", "barolo", "grignolino")
    assert head.encode_target(["barolo", "barbera"]).tolist() == [1, 0]
    assert head.encode_target(names).dtype == np.int64


def test_multiclass_columns_probabilities_label_and_top_k(wine):
    head, names, logits = wine
    out = head.interpret(logits)
    assert (
        list(out)
        == head.column_names()
        == [
            "cultivar",
            "cultivar_probability",
            "cultivar_probability_barbera",
            "cultivar_probability_barolo",
            "cultivar_probability_grignolino",
            "cultivar_top1",
            "cultivar_top1_probability",
            "cultivar_top2",
            "cultivar_top2_probability",
        ]
    )
    assert all(len(column) == len(names) for column in out.values())
    probs = np.stack([out[f"cultivar_probability_{label}"].to_numpy() for label in head.classes], axis=1)
    assert out["cultivar_probability"].type == pa.float32()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs, torch.softmax(logits, dim=1).numpy(), rtol=1e-6)
    expected = np.array(head.classes, dtype=object)[logits.argmax(dim=1).numpy()]
    assert out["cultivar"].type == pa.string()
    assert out["cultivar"].to_pylist() == expected.tolist()
    np.testing.assert_array_equal(out["cultivar_probability"].to_numpy(), probs.max(axis=1))
    assert out["cultivar_top1"].equals(out["cultivar"])
    assert (out["cultivar_top1_probability"].to_numpy() >= out["cultivar_top2_probability"].to_numpy()).all()
    assert not np.any(
        out["cultivar_top1"].to_numpy(zero_copy_only=False)
        == out["cultivar_top2"].to_numpy(zero_copy_only=False)
    )
    assert (out["cultivar"].to_numpy(zero_copy_only=False) == names).mean() > 0.95


def test_multiclass_batched_equals_one_row_at_a_time(wine):
    head, _, logits = wine
    batched = head.interpret(logits[:20])
    for i in range(20):
        single = head.interpret(logits[i : i + 1])
        assert {name: column[0].as_py() for name, column in single.items()} == {
            name: column[i].as_py() for name, column in batched.items()
        }


def test_multiclass_int_labels_stay_ints_and_ties_pick_the_first_label():
    head = MulticlassClassification(labels=[10, 20, 30], top_k=3, probabilities=False)
    out = head.interpret(torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]]))
    assert out["prediction"].type == pa.int64()
    assert out["prediction"].to_pylist() == [10, 20]
    assert out["prediction_top1"].to_pylist() == [10, 20]
    assert out["prediction_top2"].to_pylist() == [20, 30]
    assert out["prediction_top3"].to_pylist() == [30, 10]
    assert list(out) == head.column_names()


def test_multiclass_from_probabilities_passes_them_through():
    head = MulticlassClassification(labels=["a", "b"], from_logits=False)
    out = head.interpret(torch.tensor([[0.3, 0.7], [0.9, 0.1]], dtype=torch.float64))
    assert out["prediction"].to_pylist() == ["b", "a"]
    np.testing.assert_allclose(out["prediction_probability"].to_numpy(), [0.7, 0.9], rtol=1e-6)


def test_multiclass_empty_batch_gives_empty_typed_columns():
    out = MulticlassClassification(labels=["a", "b"], top_k=1).interpret(torch.zeros(0, 2))
    assert [len(column) for column in out.values()] == [0] * 6
    assert out["prediction"].type == pa.string()


def test_multiclass_without_labels_is_an_error():
    head = MulticlassClassification("species")
    pattern = (
        r"^MulticlassClassification\(target='species'\) has no labels; "
        r"pass labels=\[\.\.\.\] or call fit\(y\)$"
    )
    with pytest.raises(PreprocessingError, match=pattern):
        head.interpret(torch.zeros(2, 3))
    with pytest.raises(PreprocessingError, match=pattern):
        head.column_names()
    with pytest.raises(PreprocessingError, match=pattern):
        head.encode_target(["a"])


def test_multiclass_top_k_is_checked():
    with pytest.raises(PreprocessingError, match=r"top_k must be >= 0, got -1"):
        MulticlassClassification(top_k=-1)
    with pytest.raises(PreprocessingError, match=r"top_k must be <= the number of labels \(2\), got 3"):
        MulticlassClassification(labels=["a", "b"], top_k=3)
    with pytest.raises(PreprocessingError, match=r"top_k must be <= the number of labels \(2\), got 5"):
        MulticlassClassification(top_k=5).fit(["a", "b", "a"])


def test_multiclass_output_width_must_match_labels():
    head = MulticlassClassification("species", labels=["a", "b", "c"])
    pattern = r"head 'species' \(MulticlassClassification\) expects output shape \[n, 3\] .*got \[5, 4\]"
    with pytest.raises(ModelLoadError, match=pattern):
        head.interpret(torch.zeros(5, 4))


# --- binary -----------------------------------------------------------------------------------------------


def test_binary_reads_one_logit_per_row(cancer):
    head, labels, logits = cancer
    out = head.interpret(logits)
    assert list(out) == head.column_names() == ["diagnosis", "diagnosis_probability"]
    probability = out["diagnosis_probability"].to_numpy()
    np.testing.assert_allclose(probability, torch.sigmoid(logits[:, 0]).numpy(), rtol=1e-6)
    expected = np.where(probability > 0.5, "benign", "malignant")
    assert out["diagnosis"].to_pylist() == expected.tolist()
    assert (out["diagnosis"].to_numpy(zero_copy_only=False) == labels).mean() > 0.95
    assert head.interpret(logits[:, 0])["diagnosis"].equals(out["diagnosis"])


def test_binary_threshold_is_strict_and_moves_the_boundary():
    probabilities = torch.tensor([0.2, 0.5, 0.500001, 0.85, 0.95])
    default = BinaryClassification(from_logits=False).interpret(probabilities)
    assert default["prediction"].type == pa.int64()
    assert default["prediction"].to_pylist() == [0, 0, 1, 1, 1]
    strict = BinaryClassification(labels=["no", "yes"], threshold=0.9, from_logits=False)
    strict = strict.interpret(probabilities)
    assert strict["prediction"].to_pylist() == ["no", "no", "no", "no", "yes"]


def test_binary_learns_labels_or_refuses_one_class():
    head = BinaryClassification().fit(np.array([True, False, True]))
    assert head.classes == (0, 1)
    assert head.encode_target([1, 0]).tolist() == [1.0, 0.0]
    assert head.encode_target([1, 0]).dtype == np.float32
    assert BinaryClassification().fit(["spam", "ham"]).classes == ("ham", "spam")
    with pytest.raises(PreprocessingError, match=r"2 labels \(negative, positive\), got 1: \['ham'\]"):
        BinaryClassification().fit(["ham", "ham"])
    with pytest.raises(PreprocessingError, match=r"needs exactly 2 labels \(negative, positive\), got 3"):
        BinaryClassification(labels=["a", "b", "c"])


def test_binary_rejects_two_column_output():
    pattern = r"head 'churn' \(BinaryClassification\) expects output shape \[n\] or \[n, 1\] .*, got \[4, 2\]"
    with pytest.raises(ModelLoadError, match=pattern):
        BinaryClassification("churn").interpret(torch.zeros(4, 2))


def test_threshold_is_checked():
    with pytest.raises(PreprocessingError, match=r"threshold must be in \(0, 1\), got 1.5"):
        BinaryClassification(threshold=1.5)
    with pytest.raises(PreprocessingError, match=r"threshold must be in \(0, 1\), got 0"):
        MultilabelClassification(labels=["a"], threshold=0)


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


# --- multilabel -------------------------------------------------------------------------------------------


def test_multilabel_flags_follow_probabilities(tags):
    head, on, logits = tags
    out = head.interpret(logits)
    assert (
        list(out)
        == head.column_names()
        == [
            "tag_red",
            "tag_green",
            "tag_blue",
            "tag_probability_red",
            "tag_probability_green",
            "tag_probability_blue",
        ]
    )
    probs = np.stack([out[f"tag_probability_{label}"].to_numpy() for label in head.labels], axis=1)
    flags = np.stack([out[f"tag_{label}"].to_numpy(zero_copy_only=False) for label in head.labels], axis=1)
    assert out["tag_red"].type == pa.bool_()
    np.testing.assert_allclose(probs, torch.sigmoid(logits).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(flags, probs > 0.5)
    assert (flags == on).mean() > 0.9


def test_multilabel_per_label_thresholds():
    head = MultilabelClassification(labels=["a", "b"], threshold=[0.3, 0.8], from_logits=False)
    out = head.interpret(torch.tensor([[0.5, 0.5], [0.2, 0.9]]))
    assert out["prediction_a"].to_pylist() == [True, False]
    assert out["prediction_b"].to_pylist() == [False, True]
    with pytest.raises(PreprocessingError, match=r"threshold must be one float or one per label \(2\), got"):
        MultilabelClassification(labels=["a", "b"], threshold=[0.1, 0.2, 0.3])


def test_multilabel_encodes_label_sets_and_matrices():
    head = MultilabelClassification("tag", labels=["a", "b", "c"])
    expected = [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert head.encode_target([["a", "c"], [], "b"]).tolist() == expected
    assert head.encode_target(np.array(expected, dtype=bool)).dtype == np.float32
    with pytest.raises(PreprocessingError, match=r"unknown label 'z' at row 1; known labels: \['a', 'b', 'c"):
        head.fit([["a"], ["b", "z"]])
    with pytest.raises(PreprocessingError, match=r"y must hold 0/1 values, got 0.5 at row 1 \(label 'b'\)"):
        head.encode_target(np.array([[0, 0, 1], [0, 0.5, 0]]))
    with pytest.raises(
        PreprocessingError,
        match=r"y must have shape \[n, 3\] \(one 0/1 column per label\), "
        r"got \[2, 2\]",
    ):
        head.encode_target(np.zeros((2, 2)))
    with pytest.raises(
        ModelLoadError,
        match=r"head 'tag' \(MultilabelClassification\) expects output shape "
        r"\[n, 3\] \(one score per label\), got \[2, 2\]",
    ):
        head.interpret(torch.zeros(2, 2))


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


def test_round_trip_keeps_label_types(wine):
    ints = head_from_dict(json.loads(json.dumps(MulticlassClassification().fit([2, 1, 2]).to_dict())))
    assert ints.classes == (1, 2) and all(type(label) is int for label in ints.classes)
    head, _, logits = wine
    again = head_from_dict(json.loads(json.dumps(head.to_dict())))
    assert again.classes == head.classes
    assert again.interpret(logits) == head.interpret(logits)


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


# --- parameters -------------------------------------------------------------------------------------------


def test_from_logits_is_checked():
    with pytest.raises(PreprocessingError, match=r"from_logits must be True or False, got 1"):
        BinaryClassification(from_logits=1)
