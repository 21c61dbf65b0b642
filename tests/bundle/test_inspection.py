"""describe: what `torchpredict inspect` prints, from JSON alone, every list inside a line cut short."""

from __future__ import annotations

from torchpredict.bundle.inspection import describe
from torchpredict.bundle.manifest import Manifest


def _manifest(heads: list[dict]) -> Manifest:
    return Manifest(name="m", model_version="1", created_at="2026-01-01T00:00:00+00:00",
                    producer={"torchpredict": "0.2.0", "torch": "2.13.0", "python": "3.11"},
                    model={"format": "export", "file": "model.pt2"}, heads=heads,
                    examples={"rows": 8}, files={})


def test_steps_show_their_columns_and_learned_state_in_short_form() -> None:
    vocabulary = [f"token{i}" for i in range(50_000)]
    steps = [
        {"type": "standardize", "columns": ["a", "b"], "params": {"with_mean": True},
         "state": {"mean_": [1.23456, 2.0], "scale_": [0.5, 1.0]}},
        {"type": "clip", "columns": ["a"], "params": {"lower": 0.0, "upper": None}, "state": {}},
        {"type": "onehot", "columns": [f"c{i}" for i in range(10_000)], "params": {},
         "state": {"categories_": [["x", "y"]] * 10_000}},
        {"type": "text_encode", "columns": ["t"], "params": {}, "state": {"vocabulary_": vocabulary}},
    ]
    text = describe(_manifest([]), {"columns": []}, {"steps": steps})
    assert text.splitlines()[4:9] == [
        "  preprocessing:",
        "    standardize column(s) 'a', 'b': mean_ [1.235, 2], scale_ [0.5, 1]",
        "    clip column(s) 'a': lower 0",
        "    onehot 10,000 columns: 'c0', 'c1', 'c2', 'c3', 'c4', … 'c9999': categories_ [['x', 'y'], ['x', 'y'], "
        "['x', 'y'], … 10,000 values]",
        "    text_encode column(s) 't': vocabulary_ ['token0', 'token1', 'token2', … 50,000 values]",
    ]
    assert "preprocessing: none" in describe(_manifest([]), {"columns": []}, {"steps": []})


def test_heads_show_their_labels_and_the_target_scaling() -> None:
    heads = [
        {"type": "regression", "params": {"target": "price", "scale": True}, "state": {"mean_": [250000.0],
                                                                                     "std_": [80500.0]}},
        {"type": "regression", "params": {"target": ["a", "b"], "scale": False}, "state": {}},
        {"type": "multiclass", "params": {"target": "size", "labels": ["low", "mid", "high"]}, "state": {}},
        {"type": "multiclass", "params": {"target": "k", "labels": None},
         "state": {"labels_": [f"k{i}" for i in range(1000)]}},
    ]
    text = describe(_manifest(heads), {"columns": []}, {"steps": []})
    assert text.splitlines()[-6:-1] == [
        "  outputs:",
        "    regression: target 'price', scaled: mean 2.5e+05, std 8.05e+04 (predictions are un-scaled)",
        "    regression: target ['a', 'b'], not scaled",
        "    multiclass: target 'size', labels ['low', 'mid', 'high']",
        "    multiclass: target 'k', labels ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7', 'k8', 'k9', 'k10', 'k11', "
        "'k12', 'k13', 'k14', 'k15', 'k16', 'k17', 'k18', 'k19', … 1,000 values]",
    ]
