"""Impute: scikit-learn SimpleImputer parity, its missing-value indicator, strings, old bundles, JSON, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.impute import SimpleImputer

from sklearn_data import PARITY, Data, datasets, transformed, via_json
from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing import Preprocessor
from torchpredict.preprocessing.missing import Impute
from torchpredict.preprocessing.steps import Step


def some_columns_missing(data: Data, complete: Data) -> Data:
    """Missing values in every other column only, so that only those get an indicator."""
    train, test = data.train.copy(), data.test.copy()
    train[:, 1::2], test[:, 1::2] = complete.train[:, 1::2], complete.test[:, 1::2]
    test[3, 1] = np.nan  # new in transform, in a column that had none in training: imputed, no indicator
    return Data(data.name, data.columns, train, test)


@pytest.mark.parametrize(
    ("strategy", "fill_value"), [("mean", None), ("median", None), ("most_frequent", None), ("constant", -1.5)]
)
@pytest.mark.parametrize("add_indicator", [False, True])
def test_impute_matches_simple_imputer(strategy: str, fill_value: float | None, add_indicator: bool) -> None:
    for data, complete in zip(datasets(missing=0.05), datasets(), strict=True):
        data = some_columns_missing(data, complete)
        step = Impute(data.columns, strategy=strategy, fill_value=fill_value, add_indicator=add_indicator)
        step.fit(data.table(data.train))
        reference = SimpleImputer(strategy=strategy, fill_value=fill_value, add_indicator=add_indicator)
        reference.fit(data.train)
        np.testing.assert_allclose(step.statistics_, reference.statistics_.astype(np.float64), **PARITY)
        flagged = [data.columns[i] for i in (reference.indicator_.features_ if add_indicator else ())]
        assert step.indicator_columns_ == tuple(flagged)
        assert len(flagged) == ((len(data.columns) + 1) // 2 if add_indicator else 0)
        names = [*data.columns, *(f"{c}_missing" for c in flagged)]  # sklearn's order: all indicators last
        for x in (data.train, data.test):
            np.testing.assert_allclose(transformed(step, data, x, names), reference.transform(x), **PARITY)
            out = step.transform(data.table(x)).column_names
            assert out == [
                n for c in data.columns for n in (c, f"{c}_missing") if n in names
            ]  # ours: each after its column


@pytest.mark.parametrize("strategy", ["most_frequent", "constant"])
@pytest.mark.parametrize("add_indicator", [False, True])
def test_impute_strings_matches_simple_imputer(strategy: str, add_indicator: bool) -> None:
    city = ["oslo", None, "lima", "oslo", "lima", None, "paris", "rome"]  # tie 'lima'/'oslo' -> the smallest
    plan = ["a", "b", "b", "c", "a", "b", "c", "a"]
    table = pa.table({"city": city, "plan": plan})
    fill = "unknown" if strategy == "constant" else None
    step = Impute(["city", "plan"], strategy=strategy, fill_value=fill, add_indicator=add_indicator).fit(table)
    reference = SimpleImputer(strategy=strategy, fill_value=fill, missing_values=None, add_indicator=add_indicator)
    expected = reference.fit_transform(np.array([city, plan], dtype=object).T)
    out = step.transform(table)
    assert out.column_names == ["city", *(["city_missing"] if add_indicator else []), "plan"]
    assert out.column("city").to_pylist() == list(expected[:, 0])
    assert out.column("plan").to_pylist() == list(expected[:, 1])
    if add_indicator:
        assert out.column("city_missing").to_pylist() == list(expected[:, 2].astype(float))


def test_in_a_preprocessor_indicators_follow_their_column_and_columns_become_nullable() -> None:
    table = pa.table({"age": [34.0, None, 51.0, np.nan], "visits": [3.0, 1.0, 0.0, 7.0], "id": list("abcd")})
    pre = Preprocessor([Impute(["age", "visits"], strategy="median", add_indicator=True)], passthrough=["id"])
    pre.fit(table)
    assert pre.feature_names_ == ("age", "age_missing", "visits")
    assert {c.name for c in pre.schema_.columns if c.nullable} == {"age", "visits"}
    x = pre.transform({"age": [None, 20.0], "visits": [None, 2.0]})["x"]
    assert x.tolist() == [[42.5, 1.0, 2.0], [20.0, 0.0, 2.0]]


def test_a_step_saved_before_add_indicator_existed_still_loads_fitted() -> None:
    old = {
        "type": "impute",
        "columns": ["a"],
        "params": {"strategy": "mean", "fill_value": None},
        "state": {"statistics_": [2.0]},
    }
    step = Step.from_dict(old)
    assert step.fitted and step.indicator_columns_ == () and step.params["add_indicator"] is False
    assert step.transform(pa.table({"a": [None, 5.0]})).column("a").to_pylist() == [2.0, 5.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Impute(["a", "s"], strategy="most_frequent", add_indicator=True),
        lambda: Impute(["a", "b"], strategy="constant", fill_value=-1, add_indicator=True),
        lambda: Impute(["a", "b"], strategy="median"),
    ],
)
def test_round_trip_fitted_and_unfitted(make) -> None:
    table = pa.table(
        {"a": [1.0, None, 4.0, np.nan], "b": pa.array([3, 1, 0, 7], pa.int64()), "s": ["x", None, "y", "x"]}
    )
    step = make()
    assert via_json(step) == step and not via_json(step).fitted
    step.fit(table)
    again = via_json(step)
    assert again == step and again.fitted and again.indicator_columns_ == step.indicator_columns_
    assert again.transform(table).equals(step.transform(table))  # every value filled: no NaN to compare


def test_indicator_name_clash_and_unfitted() -> None:
    table = pa.table({"a": [1.0, None], "a_missing": [0.0, 0.0]})
    with pytest.raises(PreprocessingError, match=r"output column\(s\) 'a_missing' already exist in the data; rename"):
        Impute(["a"], add_indicator=True).fit(table).transform(table)
    with pytest.raises(PreprocessingError, match=r"^Impute\(columns=\['a'\], add_indicator=True\) is not fitted; call"):
        Impute(["a"], add_indicator=True).transform(table)


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent"])
def test_infinite_training_values_are_refused_as_by_every_step_that_learns_from_numbers(strategy):
    """One rule for fitting (numeric.fit_values): a mean or median of inf is not a value to impute with."""
    with pytest.raises(PreprocessingError, match=r"column 'x': expected finite numbers, got -inf at row 2 \(1 such"):
        Impute(["x"], strategy=strategy).fit(pa.table({"x": [1.0, None, -np.inf, 3.0]}))
