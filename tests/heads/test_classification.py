"""Classification heads read real trained models' outputs correctly: labels, probabilities, top-k, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from torch import nn

from linear_models import logits_of, standardized, train_linear
from torchpredict.errors import ModelLoadError, PreprocessingError
from torchpredict.heads.classification import BinaryClassification, MulticlassClassification, MultilabelClassification
from torchpredict.heads.registry import head_from_dict
from torchpredict.inference.batch import ModelBatch


@pytest.fixture(scope="module")
def wine():
    data = load_wine()
    names = np.array(["barolo", "grignolino", "barbera"], dtype=object)[data.target]
    head = MulticlassClassification("cultivar", top_k=2).fit(names)
    x = standardized(data.data)
    model = train_linear(x, torch.from_numpy(head.encode_target(names)), 3, nn.CrossEntropyLoss())
    return head, names, logits_of(model, x)


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer()
    labels = np.array(["malignant", "benign"], dtype=object)[data.target]
    head = BinaryClassification("diagnosis", labels=("malignant", "benign")).fit(labels)
    x = standardized(data.data)
    model = train_linear(x, torch.from_numpy(head.encode_target(labels))[:, None], 1, nn.BCEWithLogitsLoss())
    return head, labels, logits_of(model, x)


@pytest.fixture(scope="module")
def tags():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    on = np.stack([x[:, 0] > 0, x[:, 1] + x[:, 2] > 0, x[:, 3] < -0.5], axis=1)
    head = MultilabelClassification("tag", labels=["red", "green", "blue"])
    model = train_linear(torch.from_numpy(x), torch.from_numpy(head.encode_target(on)), 3, nn.BCEWithLogitsLoss())
    return head, on, logits_of(model, torch.from_numpy(x))


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_multiclass_labels_and_probabilities_are_torch_argmax_and_gather_for_every_dtype(dtype: torch.dtype):
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(-2, 3, (64, 4), generator=generator).to(torch.float64) / 2  # many ties
    scores[5, 1], scores[6, 0], scores[7, 2], scores[8] = float("nan"), float("inf"), float("-inf"), float("nan")
    scores[9, :2] = float("inf")
    scores = scores.to(dtype)
    head = MulticlassClassification(labels=["a", "b", "c", "d"])
    columns = head.interpret(scores)
    best = torch.argmax(scores.to(torch.float64), dim=1)
    probabilities = torch.softmax(scores.float(), dim=1)
    finite = torch.isfinite(scores.float()).all(dim=1)
    labels = [("abcd"[int(i)] if ok else None) for i, ok in zip(best, finite, strict=True)]
    assert columns["prediction"].to_pylist() == labels
    expected = probabilities.gather(1, best[:, None])[:, 0].numpy()
    np.testing.assert_array_equal(columns["prediction_probability"].to_numpy(zero_copy_only=False), expected)


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


# --- labels and parameters ---------------------------------------------------------------------------


def test_round_trip_keeps_label_types(wine):
    ints = head_from_dict(json.loads(json.dumps(MulticlassClassification().fit([2, 1, 2]).to_dict())))
    assert ints.classes == (1, 2) and all(type(label) is int for label in ints.classes)
    head, _, logits = wine
    again = head_from_dict(json.loads(json.dumps(head.to_dict())))
    assert again.classes == head.classes
    assert again.interpret(logits) == head.interpret(logits)


def test_from_logits_is_checked():
    with pytest.raises(PreprocessingError, match=r"from_logits must be True or False, got 1"):
        BinaryClassification(from_logits=1)


@pytest.mark.parametrize("head, scores", [
    (BinaryClassification("y"), [0.3, float("nan"), -1.0]),
    (MulticlassClassification("y", labels=["a", "b"], top_k=2), [[0.1, 0.2], [float("inf"), 0.0], [1.0, 0.0]]),
    (MultilabelClassification("y", labels=["a", "b"]), [[0.1, 0.2], [0.0, float("-inf")], [1.0, 0.0]]),
])
def test_a_non_finite_score_never_becomes_a_label(head, scores):
    raw = torch.tensor(scores)
    columns = head.interpret(raw)
    labels = [name for name in head.column_names() if "probability" not in name]
    for name in labels:
        assert columns[name][1].as_py() is None, name
        assert columns[name][0].as_py() is not None and columns[name][2].as_py() is not None
    reasons = head.refused(ModelBatch(raw, {})).to_pylist()
    assert reasons[0] is None and reasons[2] is None
    bad = {"binary": "nan", "multiclass": "inf", "multilabel": "-inf"}[head.type]
    assert reasons[1] == f"model output for head 'y' is not finite ({bad}) for this row"
    assert head.refused(ModelBatch(raw[[0, 2]], {})) is None
