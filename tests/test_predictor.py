from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchpredict.bundle import load, save
from torchpredict.errors import OutOfRangeWarning, SchemaError
from torchpredict.interpretation import MulticlassClassification, Regression


class TwoHeads(torch.nn.Module):
    """A shared trunk with a classification head and a regression head."""

    def __init__(self, n_in: int, as_dict: bool) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(n_in, 16), torch.nn.ReLU())
        self.classes = torch.nn.Linear(16, 3)
        self.value = torch.nn.Linear(16, 1)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor):
        h = self.trunk(x)
        if self.as_dict:
            return {"logits": self.classes(h), "value": self.value(h)}
        return self.classes(h), self.value(h)


@pytest.mark.parametrize("as_dict", [True, False])
def test_tuple_and_dict_outputs_get_one_head_each(wine, tmp_path, as_dict):
    torch.manual_seed(0)
    model = TwoHeads(wine["train"].num_columns, as_dict).eval()
    labels = wine["head"].labels
    heads = [
        MulticlassClassification(target="cultivar", labels=labels, output="logits" if as_dict else 0),
        Regression(target="score", output="value" if as_dict else 1),
    ]
    path = save(
        tmp_path / "two.tpk", model, preprocessor=wine["preprocessor"], heads=heads, examples=wine["train"]
    )
    predictions = load(path, device="cpu").predict(wine["new"])
    assert predictions.column_names[0] == "cultivar"
    assert predictions.column_names[-1] == "score"
    x = torch.from_numpy(wine["preprocessor"].transform(wine["new"])["x"])
    with torch.no_grad():
        raw = model(x)
    value = raw["value"] if as_dict else raw[1]
    assert np.array_equal(predictions.column("score").to_numpy(), value.numpy().reshape(-1))


def test_keep_copies_columns_first_and_in_order(wine, wine_bundle):
    table = wine["new"].append_column("id", pa.array(np.arange(wine["new"].num_rows)))
    predictions = load(wine_bundle, device="cpu", batch_size=7).predict(table, keep=["id"])
    assert predictions.column_names[0] == "id"
    assert predictions.column("id").to_pylist() == list(range(wine["new"].num_rows))


def test_unexpected_column_without_keep_is_a_schema_error(wine, wine_bundle):
    table = wine["new"].append_column("id", pa.array(np.arange(wine["new"].num_rows)))
    with pytest.raises(SchemaError, match="unexpected column.*'id'.*keep"):
        load(wine_bundle, device="cpu").predict(table)


def test_kept_column_may_not_overwrite_a_prediction(wine, wine_bundle):
    table = wine["new"].append_column("cultivar", pa.array(["x"] * wine["new"].num_rows))
    with pytest.raises(SchemaError, match="would overwrite prediction columns"):
        load(wine_bundle, device="cpu").predict(table, keep=["cultivar"])


def test_values_outside_the_training_range_are_counted_in_a_warning(wine, wine_bundle):
    rows = wine["new"].slice(0, 4).to_pylist()
    rows[0]["alcohol"] = 1000.0
    rows[2]["alcohol"] = -5.0
    with pytest.warns(OutOfRangeWarning, match=r"2 value\(s\) outside the training range.*'alcohol' \(2\)"):
        load(wine_bundle, device="cpu").predict(rows)


def test_in_range_rows_raise_no_warning(wine, wine_bundle):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        load(wine_bundle, device="cpu").predict(wine["train"].slice(0, 10))


def test_records_and_pandas_inputs_predict_the_same(wine, wine_bundle):
    predictor = load(wine_bundle, device="cpu")
    from_table = predictor.predict(wine["new"])
    assert predictor.predict(wine["new"].to_pylist()).equals(from_table)
    assert predictor.predict(wine["new"].to_pandas()).equals(from_table)


def test_model_runs_in_eval_mode_under_inference_mode(wine_bundle):
    predictor = load(wine_bundle, device="cpu")
    assert not predictor.model.training
    assert "wine" in repr(predictor)


def test_errors_in_a_later_batch_name_the_row_of_the_whole_input(wine, wine_bundle):
    rows = wine["new"].to_pylist()
    rows[25]["alcohol"] = None
    batches = [rows[:20], rows[20:]]
    with pytest.raises(SchemaError, match="'alcohol'.*row 25"):
        list(load(wine_bundle, device="cpu").predict_batches(batches))


def test_no_rows_in_gives_no_rows_out_with_the_same_columns(wine, wine_bundle):
    predictor = load(wine_bundle, device="cpu")
    table = wine["new"].append_column("id", pa.array(np.arange(wine["new"].num_rows)))
    empty = predictor.predict(table.slice(0, 0), keep=["id"])
    assert empty.num_rows == 0
    assert empty.column_names == predictor.predict(table.slice(0, 2), keep=["id"]).column_names


def test_raw_output_head_names_columns_from_the_output_it_sees(wine, tmp_path):
    from torchpredict.interpretation import RawOutput

    torch.manual_seed(0)
    model = torch.nn.Linear(wine["train"].num_columns, 4).eval()
    path = save(tmp_path / "raw.tpk", model, preprocessor=wine["preprocessor"], heads=RawOutput("embedding"),
                examples=wine["train"])
    predictions = load(path, device="cpu").predict(wine["new"].slice(0, 3))
    assert predictions.column_names == [f"embedding_{i}" for i in range(4)]
    x = torch.from_numpy(wine["preprocessor"].transform(wine["new"].slice(0, 3))["x"])
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.array_equal(np.column_stack([c.to_numpy() for c in predictions.columns]), expected)
