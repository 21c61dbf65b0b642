from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchpredict.bundle import load, save
from torchpredict.errors import OutOfRangeWarning, SchemaError
from torchpredict.heads.classification import MulticlassClassification
from torchpredict.heads.regression import Regression
from torchpredict.predictor import Predictor, RunStats


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
    with pytest.warns(OutOfRangeWarning, match=r"^1 column drifted in 4 rows: 'alcohol' 2 out of range$"):
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
    from torchpredict.heads.regression import RawOutput

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


# -- rejects and run statistics --------------------------------------------------------------------


def with_bad_rows(wine, bad: dict[int, tuple[str, object]]) -> list[dict]:
    """40 training rows (no drift of their own) with some values replaced."""
    rows = wine["train"].slice(0, 40).to_pylist()
    for row, (column, value) in bad.items():
        rows[row][column] = value
    return rows


def test_rejects_receives_the_bad_rows_and_the_others_are_predicted(wine, wine_bundle):
    rows = with_bad_rows(wine, {3: ("alcohol", "forty"), 7: ("hue", None)})
    predictor = load(wine_bundle, device="cpu")
    rejected = []
    predictions = predictor.predict(rows, rejects=rejected.append)
    good = [r for i, r in enumerate(rows) if i not in (3, 7)]
    assert predictions.equals(predictor.predict(good))
    [table] = rejected
    assert table.column("row").to_pylist() == [3, 7]
    assert table.column("reason").to_pylist() == [
        "column 'alcohol': expected float64, got 'forty' (string)",
        "column 'hue': missing value (null or NaN); the column is not nullable",
    ]
    assert table.column("alcohol")[0].as_py() == "forty"
    assert table.column_names[2:] == [c.name for c in predictor.schema.columns]


def test_streaming_with_rejects_counts_rows_across_batches(wine, wine_bundle):
    rows = with_bad_rows(wine, {5: ("alcohol", "x"), 25: ("proline", np.nan), 26: ("alcohol", 1000.0)})
    predictor = load(wine_bundle, device="cpu", batch_size=8)
    stats, rejected = RunStats(), []
    batches = list(predictor.predict_batches([rows[:20], rows[20:]], stats=stats, rejects=rejected.append))
    good = [r for i, r in enumerate(rows) if i not in (5, 25)]
    # each item batched alone, a batch holding the rows that passed among its input rows [8k, 8k + 8)
    expected = pa.concat_tables([predictor.predict(part, rejects=list) for part in (rows[:20], rows[20:])])
    assert pa.Table.from_batches(batches).equals(expected)
    assert [t.column("row").to_pylist() for t in rejected] == [[5], [25]]
    assert (stats.rows_in, stats.rows_predicted, stats.rows_rejected) == (len(rows), len(rows) - 2, 2)
    assert stats.drift == predictor.schema.validate(good).drift
    assert stats.describe() == [f"{len(rows) - 2} of {len(rows)} rows predicted", "2 rejected",
                                f"1 column drifted in {len(rows) - 2} rows: 'alcohol' 1 out of range"]


def test_run_stats_keep_the_counts_the_cli_reads(wine, wine_bundle):
    rows = with_bad_rows(wine, {0: ("alcohol", 1000.0), 2: ("alcohol", -5.0)})
    stats = RunStats()
    list(load(wine_bundle, device="cpu").predict_batches([rows], stats=stats))
    assert stats.rows_in == stats.rows_predicted == len(rows) and stats.rows_rejected == 0
    assert stats.drift.drifted == ["alcohol"] and stats.drift.columns["alcohol"].out_of_range == 2
    assert stats.describe() == [f"{len(rows)} rows predicted", stats.drift.summary()]


def test_a_batch_whose_rows_are_all_rejected_predicts_no_rows_with_the_usual_columns(wine, wine_bundle):
    predictor = load(wine_bundle, device="cpu")
    rows = with_bad_rows(wine, {i: ("alcohol", None) for i in range(4)})
    rejected = []
    empty = predictor.predict(rows[:4], rejects=rejected.append)
    assert empty.num_rows == 0 and empty.column_names == predictor.predict(rows[4:6]).column_names
    assert rejected[0].column("row").to_pylist() == [0, 1, 2, 3]
    batches = list(predictor.predict_batches([rows[:4], rows[4:]], rejects=rejected.append))
    assert [b.num_rows for b in batches] == [0, len(rows) - 4]


def test_without_rejects_a_bad_row_still_stops_the_run(wine, wine_bundle):
    rows = with_bad_rows(wine, {3: ("alcohol", "forty")})
    with pytest.raises(SchemaError, match=r"^column 'alcohol': expected float64, got 'forty' \(string\) at row 3$"):
        load(wine_bundle, device="cpu").predict(rows)


def test_predict_file_streams_a_file_into_predictions(wine, wine_bundle, tmp_path):
    from torchpredict.io.readers import read_table
    from torchpredict.io.writers import write_table

    source, output = tmp_path / "new.csv", tmp_path / "out.parquet"
    write_table(wine["new"].append_column("id", pa.array(np.arange(wine["new"].num_rows))), source)
    predictor = load(wine_bundle, device="cpu")
    stats = predictor.predict_file(source, output, keep=["id"])
    assert stats.rows_in == stats.rows_predicted == wine["new"].num_rows
    written = read_table(output)
    assert written.column("id").to_pylist() == list(range(wine["new"].num_rows))
    assert written.column("cultivar").to_pylist() == predictor.predict(wine["new"]).column("cultivar").to_pylist()


# -- the stages ----------------------------------------------------------------------------------


def test_predict_is_the_public_stages_in_order(wine, wine_bundle):
    predictor = load(wine_bundle, device="cpu", batch_size=16)
    validated = predictor.validate(wine["new"])
    inputs = predictor.preprocess(validated)
    batches = list(predictor.infer(inputs))
    assert [len(b.raw) for b in batches] == [16, 16, wine["new"].num_rows - 32]
    columns = {name: pa.concat_arrays([predictor.interpret(b)[name] for b in batches])
               for name in predictor.prediction_columns}
    assembled = predictor.assemble(validated, columns)
    assert assembled.refused is None
    assert pa.Table.from_batches([assembled.batch]).equals(predictor.predict(wine["new"]))


def test_assemble_selects_prediction_columns_in_the_order_asked(wine, wine_bundle):
    predictor = load(wine_bundle, device="cpu")
    validated = predictor.validate(wine["new"].slice(0, 3))
    [batch] = predictor.infer(predictor.preprocess(validated))
    picked = list(reversed(predictor.prediction_columns))[:2]
    assert predictor.assemble(validated, predictor.interpret(batch), select=picked).batch.schema.names == picked
    empty = predictor.assemble(predictor.validate(wine["new"].slice(0, 0)), {}, select=picked).batch
    assert empty.num_rows == 0 and empty.schema.names == picked


def test_verify_runs_the_infer_stage_and_checks_the_model_inputs(wine_bundle):
    import copy

    predictor = load(wine_bundle, device="cpu", batch_size=1)
    assert predictor.verify().passed  # one batch of all golden rows, whatever the batch size
    entry = copy.deepcopy(predictor.model_entry.to_dict())
    entry["inputs"][0]["shape"] = [99]
    broken = Predictor(model=predictor.model, preprocessor=predictor.preprocessor, heads=predictor.heads,
                       model_entry=entry, device=predictor.device, golden=predictor.golden)
    with pytest.raises(SchemaError, match=r"expected shape \[\*, 99\]"):
        broken.verify()


def test_a_rejected_row_changes_no_model_batch_but_its_own(wine, wine_bundle):
    rows = with_bad_rows(wine, {5: ("alcohol", "x")})[:10]
    predictor = load(wine_bundle, device="cpu", batch_size=4)
    sizes = []
    infer = predictor.infer
    predictor.infer = lambda inputs, **kw: (sizes.append(len(next(iter(inputs.values())))), infer(inputs, **kw))[1]
    predicted = predictor.predict(rows, rejects=list)
    assert sizes == [4, 3, 2] and predicted.num_rows == 9  # rows 0-3 | 4, 6, 7 | 8, 9 (not 0-3 | 4, 6-8 | 9)
