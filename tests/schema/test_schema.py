"""Schema: training statistics, JSON round trip, and every validation error with its message."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_diabetes, load_wine

from torchpredict.errors import PreprocessingError, SchemaError
from torchpredict.schema.schema import MAX_CATEGORIES, Column, ColumnStats, Schema

UNEXPECTED_HINT = "pass keep=[...] (CLI --keep) to copy them to the output, or drop them"


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return load_wine(as_frame=True).data


def mixed() -> pa.Table:
    """A hand-made table: numeric and categorical features with nulls, plus an id to pass through."""
    return pa.table(
        {
            "age": pa.array([34.0, None, 51.0, 29.0, 46.0], pa.float32()),
            "visits": pa.array([3, 1, 0, 7, 2], pa.int64()),
            "city": ["paris", "oslo", None, "lima", "oslo"],
            "member": [True, False, True, True, False],
            "id": ["a", "b", "c", "d", "e"],
        }
    )


def mixed_schema() -> Schema:
    features = ["age", "visits", "city", "member"]
    return Schema.from_table(mixed(), features=features, passthrough=["id"], nullable={"age", "city"})


def round_trip(schema: Schema) -> Schema:
    return Schema.from_dict(json.loads(json.dumps(schema.to_dict(), allow_nan=False)))


# -- statistics and round trip ---------------------------------------------------------------------


def test_statistics_are_the_training_data_s(diabetes: pd.DataFrame) -> None:
    schema = Schema.from_table(diabetes, features=list(diabetes.columns))
    assert schema.names == tuple(diabetes.columns)
    for col in schema.features:
        x = diabetes[col.name].to_numpy()
        assert (col.dtype, col.shape, col.nullable, col.role) == ("float64", (), False, "feature")
        assert col.stats == ColumnStats(
            x.min(), x.max(), pytest.approx(x.mean()), pytest.approx(x.std()), 0.0
        )


def test_mixed_table_records_dtypes_nulls_and_sorted_categories() -> None:
    schema = mixed_schema()
    by_name = {c.name: c for c in schema.columns}
    assert [c.name for c in schema.features] == ["age", "visits", "city", "member"]
    assert [c.name for c in schema.passthrough] == ["id"]
    assert {n: c.dtype for n, c in by_name.items()} == {
        "age": "float32",
        "visits": "int64",
        "city": "string",
        "member": "bool",
        "id": "string",
    }
    assert by_name["age"].nullable and by_name["age"].stats.missing_rate == pytest.approx(0.2)
    assert by_name["city"].stats.categories == ("lima", "oslo", "paris")
    assert by_name["visits"].stats == ColumnStats(0.0, 7.0, 2.6, pytest.approx(np.std([3, 1, 0, 7, 2])), 0.0)
    assert by_name["id"].role == "passthrough" and by_name["id"].stats is None


def test_json_round_trip(diabetes: pd.DataFrame) -> None:
    for schema in (mixed_schema(), Schema.from_table(diabetes, features=["age", "bmi"])):
        assert round_trip(schema) == schema
    bare = Schema((Column("x", "float32", shape=(3,)), Column("id", "int64", role="passthrough")))
    assert round_trip(bare) == bare


def test_too_many_categories_are_not_recorded_nor_checked() -> None:
    many = [f"c{i}" for i in range(MAX_CATEGORIES + 1)]
    schema = Schema.from_table({"c": many}, features=["c"])
    assert schema.columns[0].stats.categories is None
    assert schema.columns[0].stats.category_counts is None
    assert not schema.validate({"c": ["new"]}).drift  # no categories recorded: no unseen ones counted


def test_category_counts_are_the_training_rows_of_each_category() -> None:
    wine = load_wine(as_frame=True)
    cultivar = [str(wine.target_names[i]) for i in wine.target]
    data = {"cultivar": cultivar, "alcohol": wine.data["alcohol"]}
    schema = Schema.from_table(data, features=["cultivar", "alcohol"])
    stats = schema.columns[0].stats
    names, counts = np.unique(cultivar, return_counts=True)
    assert stats.categories == tuple(names)
    assert stats.category_counts == tuple(counts.tolist())
    assert stats.category_frequencies == dict(zip(names.tolist(), counts.tolist(), strict=True))
    assert schema.columns[1].stats.category_counts is None and schema.columns[1].stats.category_frequencies == {}
    assert mixed_schema().columns[2].stats.category_counts == (1, 2, 1)  # lima, oslo, paris; the null is not one
    assert round_trip(schema) == schema


def test_category_counts_must_pair_up_with_the_categories() -> None:
    with pytest.raises(SchemaError, match=r"2 category count\(s\) for 3 categories; they must pair up one to one"):
        ColumnStats(categories=("a", "b", "c"), category_counts=(1, 2))
    with pytest.raises(SchemaError, match=r"1 category count\(s\) for no categories"):
        ColumnStats.from_dict({"category_counts": [1]})


def test_from_dict_ignores_keys_a_newer_version_adds() -> None:
    schema = mixed_schema()
    d = json.loads(json.dumps(schema.to_dict()))
    d["future"] = {"anything": 1}
    for column in d["columns"]:
        column["tokenizer"] = "bpe"
        if column["stats"] is not None:
            column["stats"]["quantiles"] = [0.1, 0.5]
    assert Schema.from_dict(d) == schema


def test_a_schema_written_before_category_counts_still_reads() -> None:
    d = mixed_schema().to_dict()
    for column in d["columns"]:
        if column["stats"] is not None:
            del column["stats"]["category_counts"]
    city = Schema.from_dict(d).columns[2]
    assert city.stats.categories == ("lima", "oslo", "paris") and city.stats.category_counts is None


# -- validation: the happy path --------------------------------------------------------------------


def test_validate_orders_casts_and_keeps(wine: pd.DataFrame) -> None:
    data = wine.assign(id=np.arange(len(wine)), note="n")
    schema = Schema.from_table(data, features=["alcohol", "proline", "hue"], passthrough=["id"])
    shuffled = data[["note", "hue", "id", "proline", "alcohol"]]
    validated = schema.validate(shuffled, keep=["note"])
    assert validated.table.column_names == ["alcohol", "proline", "hue", "id", "note"]
    assert validated.table.column("proline").to_numpy().tolist() == wine["proline"].tolist()
    assert not validated.drift


def test_lossless_coercions_int_to_float_and_float64_to_float32() -> None:
    schema = mixed_schema()
    data = {"age": [30, 40], "visits": [1.0, 2.0], "city": ["oslo", "lima"], "member": [True, False]}
    table = schema.validate(data).table
    assert table.schema.field("age").type == pa.float32()
    assert table.schema.field("visits").type == pa.int64()
    assert table.column("visits").to_pylist() == [1, 2]
    assert schema.validate({**data, "age": np.array([30.5, 40.25])}).table.column("age").to_pylist() == [
        30.5,
        40.25,
    ]


def test_out_of_range_counts_values_outside_training_min_max_and_unseen_categories() -> None:
    data = {
        "age": [10.0, 40.0, 99.0],
        "visits": [3, 8, 0],
        "city": ["oslo", "rome", None],
        "member": [True] * 3,
    }
    drift = mixed_schema().validate(data).drift.columns
    assert {name: c.out_of_range + c.unseen_categories for name, c in drift.items() if c} == {
        "age": 2, "visits": 1, "city": 1}


def test_nullable_columns_accept_nulls_and_passthrough_is_never_checked() -> None:
    data = {"age": [None], "visits": [1], "city": [None], "member": [True], "id": [12345]}
    table = mixed_schema().validate(data).table
    assert table.column("age").null_count == 1
    assert table.column("id").to_pylist() == [12345]


def test_categorical_pandas_columns_are_read_as_strings() -> None:
    frame = pd.DataFrame({"city": pd.Categorical(["oslo", "lima"]), "visits": [1, 2]})
    schema = Schema.from_table(frame, features=["city", "visits"])
    assert schema.columns[0].dtype == "string"
    assert schema.validate(frame).table.column("city").type == pa.string()


def test_tensor_columns_record_and_check_their_per_row_shape() -> None:
    schema = Schema.from_table({"img": np.arange(12.0).reshape(2, 2, 3)}, features=["img"])
    assert (schema.columns[0].dtype, schema.columns[0].shape) == ("float64", (2, 3))
    table = schema.validate({"img": [[[1, 2, 3], [4, 5, 6]]]}).table
    assert table.column("img").type == pa.list_(pa.list_(pa.float64(), 3), 2)
    assert round_trip(schema) == schema
    with pytest.raises(
        SchemaError, match=r"column 'img': expected per-row shape \(2, 3\), got a list of 2 at row 1"
    ):
        schema.validate({"img": [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5]]]})
    with pytest.raises(SchemaError, match=r"column 'img': expected per-row shape \(2, 3\), got float64"):
        schema.validate({"img": [1.0]})
    with pytest.raises(SchemaError, match=r"column 'img': 1 row\(s\) with missing values .* first at row 1"):
        schema.validate({"img": [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3], None]]})


# -- validation errors -----------------------------------------------------------------------------


def test_missing_columns_are_all_listed() -> None:
    with pytest.raises(SchemaError, match=r"^missing column\(s\) 'age', 'member'$"):
        mixed_schema().validate({"visits": [1], "city": ["oslo"]})


def test_unexpected_columns_are_named_with_the_fix() -> None:
    data = {"age": [1.0], "visits": [1], "city": ["oslo"], "member": [True], "foo": [1], "bar": [2]}
    with pytest.raises(SchemaError) as info:
        mixed_schema().validate(data)
    assert str(info.value) == f"unexpected column(s) 'foo', 'bar'; {UNEXPECTED_HINT}"
    assert mixed_schema().validate(data, keep=["foo", "bar"]).table.column_names[-2:] == ["foo", "bar"]


def test_ten_thousand_unexpected_columns_are_counted_and_shown_by_their_first_and_last() -> None:
    data = {"age": [1.0], "visits": [1], "city": ["oslo"], "member": [True]} | {f"x{i}": [1] for i in range(10_000)}
    with pytest.raises(SchemaError) as info:
        mixed_schema().validate(data)
    assert str(info.value) == f"10,000 unexpected columns: 'x0', 'x1', 'x2', 'x3', 'x4', … 'x9999'; {UNEXPECTED_HINT}"


def test_a_huge_value_or_column_name_is_echoed_cut_with_its_length() -> None:
    huge = "a" * 5_000_000
    with pytest.raises(SchemaError) as info:
        mixed_schema().validate({"age": [huge], "visits": [1], "city": ["oslo"], "member": [True]})
    assert str(info.value) == f"column 'age': expected float32, got '{'a' * 50}…' (5,000,000 chars) (string) at row 0"
    with pytest.raises(SchemaError) as info:
        mixed_schema().validate({"age": [1.0], "visits": [1], "city": ["oslo"], "member": [True], huge: [1]})
    assert str(info.value) == f"unexpected column(s) '{'a' * 50}…' (5,000,000 chars); {UNEXPECTED_HINT}"


def test_missing_and_unexpected_are_reported_separately_in_one_error() -> None:
    with pytest.raises(
        SchemaError, match=r"^missing column\(s\) 'age', 'member'; unexpected column\(s\) 'foo'"
    ):
        mixed_schema().validate({"visits": [1], "city": ["oslo"], "foo": [1]})


def test_a_column_in_another_case_or_misspelt_gets_a_did_you_mean() -> None:
    with pytest.raises(SchemaError) as info:
        mixed_schema().validate({"AGE": [1.0], "visits": [1], "city": ["oslo"], "member": [True]})
    assert str(info.value) == ("missing column(s) 'age'; unexpected column(s) 'AGE' (did you mean 'age'?); "
                               f"{UNEXPECTED_HINT}")
    with pytest.raises(SchemaError) as info:
        mixed_schema().validate({"age": [1.0], "vists": [1], "City": ["oslo"], "member": [True], "note": ["x"]})
    assert str(info.value) == ("missing column(s) 'visits', 'city'; unexpected column(s) 'vists', 'City', 'note' "
                               f"(did you mean 'visits' for 'vists', 'city' for 'City'?); {UNEXPECTED_HINT}")


def test_did_you_mean_hints_are_capped_and_bounded_for_huge_inputs() -> None:
    names = [f"feature_{i}" for i in range(2000)]
    schema = Schema.from_table({n: [1.0] for n in names}, features=names)
    with pytest.raises(SchemaError) as info:
        schema.validate({n.upper(): [1.0] for n in names} | {"x" * 5_000_000: [1.0]})
    message = str(info.value)
    assert message.startswith("2,000 missing columns: 'feature_0', 'feature_1', 'feature_2', 'feature_3', ")
    assert ("(did you mean 'feature_0' for 'FEATURE_0', 'feature_1' for 'FEATURE_1', 'feature_2' for 'FEATURE_2', "
            "'feature_3' for 'FEATURE_3', 'feature_4' for 'FEATURE_4', … 1,995 more?)") in message
    assert len(message) < 1000


def test_keep_names_a_column_that_is_not_there() -> None:
    data = {"age": [1.0], "visits": [1], "city": ["oslo"], "member": [True]}
    with pytest.raises(SchemaError, match=r"keep column\(s\) 'note' not in the input"):
        mixed_schema().validate(data, keep=["note"])


def test_duplicate_columns() -> None:
    table = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["age", "age"])
    with pytest.raises(SchemaError, match=r"duplicate column\(s\) 'age'"):
        mixed_schema().validate(table)


# The same mixed column ('forty' among numbers) as records, a dict of columns and a pandas frame.
MIXED_AGE_INPUTS = pytest.mark.parametrize(
    "data",
    [
        [{"age": 31}, {"age": 40.5}, {"age": None}, {"age": "forty"}],
        {"age": [31, 40.5, None, "forty"]},
        pd.DataFrame({"age": pd.Series([31, 40.5, None, "forty"], dtype=object)}),
    ],
    ids=["records", "dict", "pandas"],
)


@MIXED_AGE_INPUTS
def test_wrong_dtype_names_column_value_and_row(data: object) -> None:
    schema = Schema((Column("age", "float32", nullable=True),))
    with pytest.raises(
        SchemaError, match=r"^column 'age': expected float32, got 'forty' \(string\) at row 3$"
    ):
        schema.validate(data)


def test_string_numbers_are_not_coerced() -> None:
    with pytest.raises(SchemaError, match=r"^column 'age': expected float32, got '3.5' \(string\) at row 0$"):
        mixed_schema().validate({"age": ["3.5"], "visits": [1], "city": ["oslo"], "member": [True]})


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("visits", [1.0, 2.0, 3.5], r"column 'visits': expected int64, got 3.5 \(float64\) at row 2"),
        ("age", [1.0, 1e300], r"column 'age': expected float32, got 1e\+300 \(float64\) at row 1"),
        ("member", [1, 0], r"column 'member': expected bool, got 1 \(int64\) at row 0"),
        ("city", [7, 8], r"column 'city': expected string, got 7 \(int64\) at row 0"),
        ("age", [True], r"column 'age': expected float32, got True \(bool\) at row 0"),
    ],
)
def test_lossy_or_wrong_kind_values_are_refused(column: str, values: list, message: str) -> None:
    data = {"age": [1.0], "visits": [1], "city": ["oslo"], "member": [True]}
    data = {k: v * len(values) for k, v in data.items()} | {column: values}
    with pytest.raises(SchemaError, match=message):
        mixed_schema().validate(data)


def test_integer_overflow_is_refused() -> None:
    schema = Schema.from_table({"n": pa.array([1, 2], pa.int32())}, features=["n"])
    with pytest.raises(
        SchemaError, match=r"column 'n': expected int32, got 1099511627776 \(int64\) at row 1"
    ):
        schema.validate({"n": [5, 2**40]})


def test_nulls_in_a_non_nullable_column_name_column_first_row_and_count() -> None:
    data = {"age": [1.0] * 4, "visits": [1, None, 3, None], "city": ["oslo"] * 4, "member": [True] * 4}
    with pytest.raises(
        SchemaError, match=r"column 'visits': 2 row\(s\) with missing values .*first at row 1"
    ):
        mixed_schema().validate(data)


def test_nan_counts_as_missing() -> None:
    schema = Schema.from_table({"x": [1.0, 2.0]}, features=["x"])
    with pytest.raises(
        SchemaError, match=r"column 'x': 1 row\(s\) .* first at row 2; the column is not nullable"
    ):
        schema.validate({"x": np.array([1.0, 2.0, np.nan])})


# -- schema from training data: errors -------------------------------------------------------------


def test_infinite_values_are_bad_rows_like_nulls_with_the_same_reason_raised_or_rejected() -> None:
    schema = Schema.from_table({"x": [1.0, 2.0], "n": [1, 2], "v": [[1.0, 2.0], [3.0, 4.0]]},
                               features=["x", "n", "v"], nullable=["x"])
    data = {"x": [1.0, 2.0, 3.0, np.inf], "n": [1, 2, 3, 4], "v": [[1.0, 2.0], [1.0, -np.inf], [1.0, 2.0], [1.0, 2.0]]}
    with pytest.raises(SchemaError, match=r"^column 'x': expected a finite number, got inf at row 3$"):
        schema.validate(data)
    out = schema.validate(data, on_error="reject")
    assert out.table.column("x").to_pylist() == [1.0, 3.0]
    assert out.rejected.select(["row", "reason"]).to_pylist() == [
        {"row": 1, "reason": "column 'v': expected a finite number, got -inf"},
        {"row": 3, "reason": "column 'x': expected a finite number, got inf"},
    ]
    with pytest.raises(SchemaError, match=r"^column 'n': expected int64, got inf \(float64\) at row 0$"):
        schema.validate({"x": [1.0], "n": [np.inf], "v": [[1.0, 2.0]]})


def test_a_column_whose_training_data_held_inf_accepts_it_and_fitting_is_unchanged() -> None:
    from torchpredict.preprocessing import Preprocessor, Standardize

    training = {"x": [1.0, np.inf], "y": [1.0, 2.0]}
    schema = round_trip(Schema.from_table(training, features=["x", "y"]))
    assert [(c.name, c.infinite) for c in schema.columns] == [("x", True), ("y", False)]
    assert schema.validate({"x": [-np.inf], "y": [1.0]}).table.column("x").to_pylist() == [-np.inf]
    assert Preprocessor([]).fit(training).schema_.features[0].infinite
    step_error = (r"^Standardize\(columns=\['x'\]\): column 'x': expected finite numbers, got inf at row 1 \(1 such "
                  r"row\(s\)\); replace infinite values before fitting$")
    with pytest.raises(PreprocessingError, match=step_error):
        Preprocessor([Standardize(["x"])]).fit(training)  # the step's own error, as before: not the schema's


def test_from_table_errors() -> None:
    with pytest.raises(SchemaError, match=r"missing column\(s\) 'nope' in the training data"):
        Schema.from_table(mixed(), features=["age", "nope"])
    with pytest.raises(SchemaError, match=r"column\(s\) 'id' cannot be both features and passthrough"):
        Schema.from_table(mixed(), features=["id"], passthrough=["id"])
    with pytest.raises(SchemaError, match=r"column 'age': 1 row\(s\) .* first at row 1 in the training data"):
        Schema.from_table(mixed(), features=["age"])
    when = pa.array([0, 1], pa.timestamp("s"))
    with pytest.raises(
        SchemaError, match=r"column 'when': type timestamp\[s\] is not supported for features"
    ):
        Schema.from_table({"when": when}, features=["when"])
    with pytest.raises(SchemaError, match=r"column 'seq': cannot infer a fixed per-row shape .*\[1, 2\]"):
        Schema.from_table({"seq": [[1.0], [1.0, 2.0]]}, features=["seq"])


# -- on_error="reject": failing rows set aside with their reasons ----------------------------------


def test_reject_sets_failing_rows_aside_with_the_raised_wording() -> None:
    data = {
        "age": [10.0, 1e300, 99.0, 30.0, None, 20.0],
        "visits": [3, 8, 3.5, None, 2, 1],
        "city": ["oslo", "rome", None, "lima", "oslo", "paris"],
        "member": [True, True, False, True, True, None],
        "id": ["a", "b", "c", "d", "e", "f"],
    }
    validated = mixed_schema().validate(data, on_error="reject")
    assert validated.table.column("id").to_pylist() == ["a", "e"]
    assert validated.table.column_names == ["age", "visits", "city", "member", "id"]
    assert validated.rejected.schema.names == ["row", "reason", "age", "visits", "city", "member", "id"]
    assert validated.rejected.to_pylist() == [
        {"row": 1, "reason": "column 'age': expected float32, got 1e+300 (float64)",
         "age": "1e+300", "visits": "8", "city": "rome", "member": "true", "id": "b"},
        {"row": 2, "reason": "column 'visits': expected int64, got 3.5 (float64)",
         "age": "99", "visits": "3.5", "city": None, "member": "false", "id": "c"},
        {"row": 3, "reason": "column 'visits': missing value (null or NaN); the column is not nullable",
         "age": "30", "visits": None, "city": "lima", "member": "true", "id": "d"},
        {"row": 5, "reason": "column 'member': missing value (null or NaN); the column is not nullable",
         "age": "20", "visits": "1", "city": "paris", "member": None, "id": "f"},
    ]
    assert validated.rows_in == 6


def test_a_reason_is_the_error_raise_mode_gives_for_that_row(diabetes: pd.DataFrame) -> None:
    schema = Schema.from_table(diabetes, features=["age", "bmi", "s1"])
    bad_cells = {4: ("age", "old"), 9: ("bmi", None), 17: ("s1", [1.0])}

    def frame(*rows: int) -> pd.DataFrame:
        data = diabetes[["age", "bmi", "s1"]].head(30).astype(object)
        for row in rows:
            data.at[row, bad_cells[row][0]] = bad_cells[row][1]
        return data

    rejected = schema.validate(frame(*bad_cells), on_error="reject").rejected
    assert rejected.column("row").to_pylist() == [4, 9, 17]
    reasons = rejected.column("reason").to_pylist()
    assert reasons == [
        "column 'age': expected float64, got 'old' (string)",
        "column 'bmi': missing value (null or NaN); the column is not nullable",
        "column 's1': expected float64, got [1.0] (list)",
    ]
    raised = {}
    for row in bad_cells:
        with pytest.raises(SchemaError) as info:
            schema.validate(frame(row))
        raised[row] = str(info.value)
    assert raised == {
        4: f"{reasons[0]} at row 4",
        9: "column 'bmi': 1 row(s) with missing values (null or NaN), first at row 9; the column is not nullable",
        17: f"{reasons[2]} at row 17",
    }


@MIXED_AGE_INPUTS
def test_a_value_arrow_cannot_read_rejects_its_row_only(data: object) -> None:
    validated = Schema((Column("age", "float32", nullable=True),)).validate(data, on_error="reject", first_row=100)
    assert validated.table.column("age").to_pylist() == [31.0, 40.5, None]
    assert validated.rejected.to_pylist() == [
        {"row": 103, "reason": "column 'age': expected float32, got 'forty' (string)", "age": "forty"}
    ]


def test_a_kept_column_of_mixed_values_rejects_its_odd_rows_with_the_raised_wording() -> None:
    schema = Schema.from_table({"x": [1.0, 2.0]}, features=["x"])
    rows = [{"x": 1.0, "note": 1}, {"x": 2.0, "note": "b"}, {"x": 1.5, "note": 3}]
    message = r"^column 'note': mixed value types: int64 values, then 'b' \(string\) at row 1$"
    with pytest.raises(SchemaError, match=message):
        schema.validate(rows, keep=["note"])
    validated = schema.validate(rows, keep=["note"], on_error="reject")
    assert validated.table.to_pylist() == [{"x": 1.0, "note": 1}, {"x": 1.5, "note": 3}]
    assert validated.rejected.column("reason").to_pylist() == [
        "column 'note': mixed value types: int64 values, then 'b' (string)"
    ]


def test_a_row_failing_several_checks_is_rejected_once_with_the_first_reason() -> None:
    data = {"age": ["x", 1.0], "visits": [None, 1], "city": [7, 8], "member": [True, True]}
    rejected = mixed_schema().validate(data, on_error="reject").rejected
    assert rejected.column("row").to_pylist() == [0, 1]
    assert rejected.column("reason").to_pylist() == [
        "column 'age': expected float32, got 'x' (string)",
        "column 'city': expected string, got 8 (int64)",
    ]


def test_rejected_values_are_text_json_for_non_strings() -> None:
    schema = Schema.from_table({"x": [1.0, 2.0], "v": [[1, 2], [3, 4]], "ok": [True, False]}, features=["x", "v", "ok"])
    data = {"x": [np.nan, np.inf, 0.5], "v": [[1, 2], [3, 4], [5, 6, 7]], "ok": [True, None, None]}
    rejected = schema.validate(data, on_error="reject").rejected
    assert rejected.drop(["reason"]).to_pylist() == [
        {"row": 0, "x": "NaN", "v": "[1, 2]", "ok": "true"},
        {"row": 1, "x": "Infinity", "v": "[3, 4]", "ok": None},
        {"row": 2, "x": "0.5", "v": "[5, 6, 7]", "ok": None},
    ]
    assert json.loads(rejected.column("v")[2].as_py()) == [5, 6, 7]


def test_tensor_rows_of_the_wrong_shape_are_rejected_and_the_rest_cast() -> None:
    schema = Schema.from_table({"img": np.arange(12.0).reshape(2, 2, 3)}, features=["img"])
    rows = [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5]], [[1, 2, 3], None], [[1, 2, 3], [4, 5, "x"]], [[0] * 3] * 2]
    validated = schema.validate({"img": rows}, on_error="reject")
    assert validated.table.column("img").type == pa.list_(pa.list_(pa.float64(), 3), 2)
    assert validated.table.column("img").to_pylist() == [[[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [0, 0, 0]]]
    assert validated.rejected.column("reason").to_pylist() == [
        "column 'img': expected per-row shape (2, 3), got a list of 2",
        "column 'img': missing value (null or NaN); the column is not nullable",
        "column 'img': expected float64, got 'x' (string)",
    ]
    assert validated.rejected.column("img")[2].as_py() == '[[1, 2, 3], [4, 5, "x"]]'


def test_whole_column_problems_still_raise_when_rejecting() -> None:
    schema = mixed_schema()
    with pytest.raises(SchemaError, match=r"^missing column\(s\) 'age', 'member'$"):
        schema.validate({"visits": [1], "city": ["oslo"]}, on_error="reject")
    with pytest.raises(SchemaError, match=r"unexpected column\(s\) 'foo'"):
        schema.validate({"age": [1.0], "visits": [1], "city": ["a"], "member": [True], "foo": [1]}, on_error="reject")
    with pytest.raises(SchemaError, match=r"duplicate column\(s\) 'age'"):
        schema.validate(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["age", "age"]),
                        on_error="reject")
    img = Schema.from_table({"img": np.zeros((2, 3))}, features=["img"])
    with pytest.raises(SchemaError, match=r"column 'img': expected per-row shape \(3,\), got float64"):
        img.validate({"img": [1.0]}, on_error="reject")


def test_no_failing_row_no_rejected_table_and_on_error_is_checked() -> None:
    data = {"age": [1.0], "visits": [1], "city": ["oslo"], "member": [True]}
    assert mixed_schema().validate(data, on_error="reject").rejected is None
    assert mixed_schema().validate(data).rejected is None
    with pytest.raises(ValueError, match=r"on_error must be 'raise' or 'reject', got 'skip'"):
        mixed_schema().validate(data, on_error="skip")


def test_input_columns_named_row_or_reason_keep_their_names() -> None:
    schema = Schema.from_table({"row": [1.0, 2.0], "reason": ["a", "b"], "_row": [0, 1]}, features=["row", "reason"],
                               passthrough=["_row"])
    rejected = schema.validate({"row": [None], "reason": ["a"], "_row": [5]}, on_error="reject").rejected
    assert rejected.column_names == ["__row", "_reason", "row", "reason", "_row"]
    assert rejected.to_pylist()[0]["__row"] == 0


def test_rejecting_is_vectorised_over_many_rows(diabetes: pd.DataFrame) -> None:
    schema = Schema.from_table(diabetes, features=list(diabetes.columns))
    big = pd.concat([diabetes] * 500, ignore_index=True)  # 221,000 rows
    bad = np.arange(len(big)) % 3 == 0
    big.loc[bad, "bmi"] = np.nan
    validated = schema.validate(big, on_error="reject", first_row=7)
    assert validated.rejected.num_rows == bad.sum()
    assert validated.rejected.column("row").to_numpy().tolist() == (np.flatnonzero(bad) + 7).tolist()
    assert np.array_equal(validated.table.column("s5").to_numpy(), big.loc[~bad, "s5"].to_numpy())


def test_a_row_check_runs_on_typed_rows_and_its_rows_join_the_rejected_by_input_row() -> None:
    seen = []

    def no_lima(table: pa.Table, report) -> None:
        seen.append(table.column("visits").type)
        rows = np.flatnonzero(np.array(table.column("city").to_pylist()) == "lima")
        report(rows, lambda some: [f"lima at typed row {int(r)}" for r in some], lambda row: f"lima at row {row}")

    data = {"age": ["x", 1.0, 2.0, 3.0], "visits": [1, 2, 3, 4], "city": ["oslo", "lima", "oslo", "lima"],
            "member": [True] * 4}
    validated = mixed_schema().validate(data, on_error="reject", row_check=no_lima)
    assert seen == [pa.int64()]  # after the cast, on the 3 rows that passed the schema's own checks
    assert validated.rejected.column("row").to_pylist() == [0, 1, 3]
    assert validated.rejected.column("reason").to_pylist() == [
        "column 'age': expected float32, got 'x' (string)", "lima at typed row 0", "lima at typed row 2"]
    assert validated.table.column("city").to_pylist() == ["oslo"]

    with pytest.raises(SchemaError, match="^lima at row 101$"):  # raising names the input row (first_row + row)
        mixed_schema().validate({**data, "age": [0.0, 1.0, 2.0, 3.0]}, first_row=100, row_check=no_lima)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(dtype="float128"), r"^column 0 \('a'\): 'dtype' must be one of float32, float64, "),
    (lambda c: c.update(shape="3"), r"^column 0 \('a'\): 'shape' must be a list of sizes >= 1, got '3'$"),
    (lambda c: c.update(name=7), r"^column 0: 'name' must be a non-empty string, got 7$"),
    (lambda c: c["stats"].update(mean=float("nan")), r"'stats\.mean' must be a finite number or null, got nan$"),
    (lambda c: c["stats"].update(missing_rate=2), r"'stats\.missing_rate' must be a number in \[0, 1\], got 2$"),
    (lambda c: c.update(infinite="yes"), r"^column 0 \('a'\): 'infinite' must be true or false, got 'yes'$"),
])
def test_a_schema_read_from_json_refuses_fields_of_the_wrong_type(change, message):
    d = Schema.from_table({"a": [1.0, 2.0]}, features=["a"]).to_dict()
    assert Schema.from_dict(d).to_dict() == d
    change(d["columns"][0])
    with pytest.raises(SchemaError, match=message):
        Schema.from_dict(d)
    with pytest.raises(SchemaError, match=r"appear more than once"):
        Schema.from_dict({"columns": [Schema.from_table({"a": [1.0]}, features=["a"]).to_dict()["columns"][0]] * 2})


def test_a_value_that_says_row_5_is_quoted_as_it_is_and_only_the_row_is_the_input_row() -> None:
    """The offset goes to where the message is made: the text of a value is never rewritten."""
    schema = Schema((Column("age", "float64"), Column("city", "string")))
    with pytest.raises(SchemaError) as raised:
        schema.validate({"age": [1.0, "row 5"], "city": ["a", "b"]}, first_row=100)
    assert str(raised.value) == "column 'age': expected float64, got 'row 5' (string) at row 101"
    with pytest.raises(SchemaError) as raised:
        schema.validate(pa.table({"age": [1.0, None], "city": ["row 5", "row 5"]}), first_row=100)
    assert str(raised.value).startswith("column 'age': 1 row(s) with missing values (null or NaN), first at row 101")


def test_an_integer_past_64_bits_is_a_bad_row_not_a_crash(diabetes: pd.DataFrame) -> None:
    schema = Schema.from_table(diabetes, features=["age", "bmi"])
    rows = [{"age": 0.01, "bmi": 0.02}, {"age": 2**70, "bmi": 0.02}]
    reason = "column 'age': expected float64, got 1180591620717411303424 (an integer past 64 bits)"
    with pytest.raises(SchemaError, match=rf"^{re.escape(reason)} at row 1$"):
        schema.validate(rows)
    rejected = schema.validate(rows, on_error="reject").rejected
    assert rejected.column("row").to_pylist() == [1] and rejected.column("reason").to_pylist() == [reason]
