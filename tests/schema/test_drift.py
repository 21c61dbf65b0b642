"""Drift: counts against the training statistics on real data, merging, the summary line and the JSON report."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_diabetes, load_wine

from torchpredict.schema.drift import TOP_UNSEEN, ColumnDrift, DriftReport
from torchpredict.schema.schema import Schema


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).data


@pytest.fixture(scope="module")
def wines() -> pd.DataFrame:
    """Wine measurements with the cultivar as a string column."""
    wine = load_wine(as_frame=True)
    return wine.data.assign(cultivar=[str(wine.target_names[i]) for i in wine.target])


def test_out_of_range_counts_rows_outside_the_training_min_max(diabetes: pd.DataFrame) -> None:
    train, new = diabetes.iloc[:300], diabetes.iloc[300:]
    report = Schema.from_table(train, features=list(diabetes.columns)).validate(new).drift
    expected = {name: int(((new[name] < train[name].min()) | (new[name] > train[name].max())).sum())
                for name in diabetes.columns}
    assert sum(expected.values()) > 0
    assert report.rows == len(new)
    assert {name: c.out_of_range for name, c in report.columns.items()} == expected
    assert all(c.rows == len(new) and not c.unseen_categories and not c.unexpected_nulls
               for c in report.columns.values())
    assert report.drifted == sorted((n for n in expected if expected[n]), key=lambda n: -expected[n])
    assert {name: report.columns[name].drifted_rows for name in report.drifted} == {
        name: count for name, count in expected.items() if count}


def test_unseen_categories_are_counted_with_their_most_frequent_values(wines: pd.DataFrame) -> None:
    train = wines[wines.cultivar != "class_2"]
    schema = Schema.from_table(train, features=["cultivar", "alcohol"])
    new = wines[["cultivar", "alcohol"]].assign(cultivar=wines.cultivar.where(wines.index % 10 != 0, "class_9"))
    city = schema.validate(new).drift.columns["cultivar"]
    n_new = int((new.cultivar == "class_2").sum())
    assert city.unseen_categories == n_new + int((new.cultivar == "class_9").sum())
    assert city.unseen_values == {"class_2": n_new, "class_9": int((new.cultivar == "class_9").sum())}
    assert list(city.unseen_values) == ["class_2", "class_9"]  # most frequent first


def test_unexpected_nulls_count_only_columns_without_nulls_in_training(diabetes: pd.DataFrame) -> None:
    train = diabetes.assign(s1=diabetes.s1.where(diabetes.index % 4 != 0))  # s1 had missing values
    schema = Schema.from_table(train, features=["bmi", "s1", "s2"], nullable=["bmi", "s1"])
    new = diabetes[["bmi", "s1", "s2"]].assign(bmi=diabetes.bmi.where(diabetes.index % 5 != 0),
                                                s1=diabetes.s1.where(diabetes.index % 3 != 0))
    report = schema.validate(new).drift
    assert report.columns["bmi"].unexpected_nulls == int((diabetes.index % 5 == 0).sum())  # NaN counts as null
    assert report.columns["s1"].unexpected_nulls == 0
    assert report.columns["s2"].unexpected_nulls == 0


def test_batches_merged_equal_the_whole_run(diabetes: pd.DataFrame, wines: pd.DataFrame) -> None:
    for train, new, features in (
        (diabetes.iloc[:250], diabetes.iloc[250:], list(diabetes.columns)),
        (wines[wines.cultivar != "class_1"], wines, ["cultivar", "hue", "proline"]),
    ):
        schema = Schema.from_table(train, features=features)
        table = pa.Table.from_pandas(new[features], preserve_index=False)
        cuts = [0, 1, 17, 40, 41, 100, table.num_rows]
        parts = [schema.validate(table.slice(a, b - a)).drift for a, b in pairwise(cuts)]
        whole = schema.validate(table).drift
        assert whole
        assert DriftReport.merge(parts) == whole
        folded = DriftReport()
        assert all(folded.add(part) is folded for part in parts)
        assert folded == whole


def test_unseen_values_are_bounded_while_totals_stay_exact() -> None:
    schema = Schema.from_table({"code": ["a", "b"]}, features=["code"])
    values = [f"new{i:02d}" for i in range(50) for _ in range(i + 1)]  # new49 most frequent
    drift = schema.validate({"code": values}).drift.columns["code"]
    assert drift.unseen_categories == len(values)
    assert len(drift.unseen_values) == TOP_UNSEEN
    assert list(drift.unseen_values)[:3] == ["new49", "new48", "new47"]
    assert drift.unseen_values["new49"] == 50


def test_tensor_columns_count_rows_not_values() -> None:
    schema = Schema.from_table({"v": np.array([[0.0, 1.0], [2.0, 3.0]])}, features=["v"])
    drift = schema.validate({"v": np.array([[9.0, 9.0], [1.0, 2.0], [-1.0, 0.5]])}).drift.columns["v"]
    assert (drift.rows, drift.out_of_range) == (3, 2)


def test_drift_counts_only_the_rows_that_passed_validation() -> None:
    schema = Schema.from_table({"x": [0.0, 1.0], "n": [1, 2]}, features=["x", "n"])
    validated = schema.validate({"x": [5.0, 7.0, 0.5], "n": [1, 2.5, 9]}, on_error="reject")
    assert validated.rejected.column("row").to_pylist() == [1]
    assert validated.drift.rows == 2
    assert {name: c.out_of_range for name, c in validated.drift.columns.items()} == {"x": 1, "n": 1}


def test_summary_is_one_line_naming_the_most_drifted_columns_first() -> None:
    report = DriftReport(1000, {
        "age": ColumnDrift(1000, out_of_range=12),
        "id": ColumnDrift(1000),
        "city": ColumnDrift(1000, unseen_categories=4, unseen_values={"Oslo": 3, "Rome": 1}),
        "bmi": ColumnDrift(1000, out_of_range=1, unexpected_nulls=30),
    })
    assert report.summary() == (
        "3 columns drifted in 1,000 rows: 'bmi' 1 out of range and 30 unexpected nulls, 'age' 12 out of range, "
        "'city' 4 unseen categories ('Oslo' 3, 'Rome' 1)"
    )
    assert report and report.drifted == ["bmi", "age", "city"]
    assert not DriftReport(5, {"age": ColumnDrift(5)}) and DriftReport().summary() == ""


def test_summary_stays_short() -> None:
    many = {f"c{i}": ColumnDrift(10, out_of_range=10 - i) for i in range(8)}
    many["s"] = ColumnDrift(10, unseen_categories=9, unseen_values={"x" * 60: 5, "b": 2, "c": 1, "d": 1})
    summary = DriftReport(10, many).summary()
    assert summary.startswith("9 columns drifted in 10 rows: 'c0' 10 out of range, 'c1' 9 out of range, 's' 9 unseen")
    assert f"'{'x' * 39}…' 5, 'b' 2, 'c' 1, ...)" in summary
    assert summary.endswith("'c3' 7 out of range, 4 more")
    one = DriftReport(3, {"city": ColumnDrift(3, unseen_categories=1, unseen_values={"Oslo": 1})})
    assert one.summary() == "1 column drifted in 3 rows: 'city' 1 unseen category ('Oslo' 1)"


def test_to_dict_is_json_and_round_trips(wines: pd.DataFrame) -> None:
    schema = Schema.from_table(wines[wines.cultivar != "class_2"], features=["cultivar", "hue"])
    report = schema.validate(wines[["cultivar", "hue"]]).drift
    text = json.dumps(report.to_dict(), allow_nan=False)
    d = json.loads(text)
    assert d["rows"] == len(wines) and d["drifted"] == report.drifted
    assert d["columns"]["cultivar"]["unseen_values"] == {"class_2": int((wines.cultivar == "class_2").sum())}
    assert DriftReport.from_dict(d) == report
    d["columns"]["hue"]["future_metric"] = 0.5
    d["psi"] = {}
    assert DriftReport.from_dict(d) == report
