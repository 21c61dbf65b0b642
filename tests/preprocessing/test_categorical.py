"""Categorical steps: scikit-learn's OneHotEncoder / OrdinalEncoder are the oracle, on real data with unknown
categories and missing values, for every option we support; then our own extensions, JSON and errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_diabetes
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.categorical import IndexEncode, OneHot
from torchpredict.preprocessing.steps import Step

COLUMNS = ["age", "sex", "s4", "decade"]


@pytest.fixture(scope="module")
def diabetes() -> tuple[pa.Table, pa.Table]:
    """Diabetes (raw units) as categories: age (int), sex (string), s4 (float, skewed, with rare values) and
    decade (string). Missing values in training: age null, sex null, s4 NaN; decade has none in training, so
    its nulls in the test rows are unknown. The test rows also hold ages and s4 values training never saw."""
    raw = load_diabetes(scaled=False, as_frame=True).frame
    rows = np.arange(len(raw))
    age = raw["age"].astype(int).to_numpy()
    table = pa.table({
        "age": pa.array(age, pa.int64(), mask=rows % 17 == 3),
        "sex": pa.array(np.where(raw["sex"] == 1, "female", "male"), pa.string(), mask=rows % 23 == 5),
        "s4": np.where(rows % 13 == 7, np.nan, raw["s4"].to_numpy()),
        "decade": pa.array([f"{a // 10}0s" for a in age], pa.string(), mask=(rows >= 300) & (rows % 11 == 0)),
    })
    return table.slice(0, 300), table.slice(300)


def frame(table: pa.Table) -> pd.DataFrame:
    """What scikit-learn gets: object columns for strings (NaN for missing), float64 (NaN) for numbers."""
    df = table.to_pandas()
    for name in ("sex", "decade"):
        df[name] = df[name].astype(object).where(df[name].notna(), np.nan)
    df["age"] = df["age"].astype(np.float64)
    return df


def ours(value: object) -> str | None:
    """A scikit-learn category in our string form: 19.0 -> '19', 3.49 -> '3.49', nan -> None."""
    if isinstance(value, float):
        return None if np.isnan(value) else pa.scalar(value).cast(pa.string()).as_py()
    return value  # type: ignore[return-value]


def combiner(feature: str, category: object) -> str:
    return f"{feature}={'infrequent' if category == 'infrequent_sklearn' else ours(category) or 'null'}"


def matrix(table: pa.Table, rows: int) -> np.ndarray:
    """The table as a [rows, columns] array (dropping every column leaves a table without rows)."""
    return np.column_stack([c.to_numpy() for c in table.columns] or [np.empty((rows, 0))])


def onehot_both(train: pa.Table, **params: object) -> tuple[OneHot, OneHotEncoder]:
    step = OneHot(COLUMNS, **params).fit(train)
    encoder = OneHotEncoder(sparse_output=False, feature_name_combiner=combiner, **params).fit(frame(train))
    return step, encoder


def assert_same_onehot(step: OneHot, encoder: OneHotEncoder, data: pa.Table) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scikit-learn warns about unknowns under drop
        expected = encoder.transform(frame(data))
    out = step.transform(data)
    assert out.column_names == list(encoder.get_feature_names_out())
    assert np.array_equal(matrix(out, data.num_rows), expected)
    assert step.categories_ == tuple(tuple(ours(c) for c in cats) for cats in encoder.categories_)
    infrequent = getattr(encoder, "infrequent_categories_", [None] * len(COLUMNS))
    assert step.infrequent_categories_ == tuple(tuple(ours(c) for c in ([] if i is None else i)) for i in infrequent)


# -- scikit-learn parity -------------------------------------------------------------------------------


def test_the_data_holds_unknown_categories_and_missing_values(diabetes: tuple[pa.Table, pa.Table]) -> None:
    train, test = diabetes
    step = OneHot(COLUMNS).fit(train)
    unknown = [set(test.column(n).drop_null().cast(pa.string()).to_pylist()) - set(c) for n, c in
               zip(COLUMNS, step.categories_, strict=True)]
    assert unknown[0] and unknown[2]  # ages and s4 values not seen in training
    assert step.categories_[0][-1] is None and step.categories_[2][-1] is None and None not in step.categories_[3]
    assert test.column("decade").null_count > 0


GROUPING = [(None, None), (5, None), (0.04, None), (None, 6), (3, 4), (0.1, 1)]


@pytest.mark.parametrize("drop", [None, "first", "if_binary"])
@pytest.mark.parametrize(("min_frequency", "max_categories"), GROUPING)
@pytest.mark.parametrize("handle_unknown", ["error", "ignore", "infrequent_if_exist"])
def test_onehot_matches_scikit_learn(diabetes: tuple[pa.Table, pa.Table], handle_unknown: str, drop: str | None,
                                     min_frequency: float | None, max_categories: int | None) -> None:
    train, test = diabetes
    step, encoder = onehot_both(train, handle_unknown=handle_unknown, drop=drop, min_frequency=min_frequency,
                                max_categories=max_categories)
    assert_same_onehot(step, encoder, train)
    if handle_unknown != "error":
        assert_same_onehot(step, encoder, test)


def test_onehot_drop_per_column_matches_scikit_learn(diabetes: tuple[pa.Table, pa.Table]) -> None:
    train, test = diabetes
    step, encoder = onehot_both(train, drop=[50, "male", 4.0, "30s"], handle_unknown="ignore", min_frequency=3)
    assert_same_onehot(step, encoder, test)
    assert "age=50" not in step.transform(test).column_names
    with pytest.raises(ValueError, match="because it is infrequent"):
        OneHotEncoder(drop=[19, "male", 4.0, "30s"], min_frequency=3).fit(frame(train))
    with pytest.raises(PreprocessingError, match=r"cannot drop category '19' of column 'age': it is infrequent "
                                                 r"\(grouped into 'age=infrequent'\)"):
        OneHot(COLUMNS, drop=[19, "male", 4.0, "30s"], min_frequency=3).fit(train)


def test_onehot_given_categories_match_scikit_learn(diabetes: tuple[pa.Table, pa.Table]) -> None:
    train, test = diabetes
    categories = [[30, 50, 60, 99], ["male"], [3.0, 4.0, 4.5, np.nan], ["10s", "50s", "60s"]]
    for options in ({"handle_unknown": "ignore"}, {"handle_unknown": "infrequent_if_exist", "min_frequency": 20}):
        step, encoder = onehot_both(train, categories=categories, **options)
        assert_same_onehot(step, encoder, test)
    assert step.categories_[0] == ("30", "50", "60", "99") and step.categories_[2] == ("3", "4", "4.5", None)


def test_onehot_given_categories_refuse_unknown_training_values_like_scikit_learn(
    diabetes: tuple[pa.Table, pa.Table],
) -> None:
    train, _ = diabetes
    with pytest.raises(ValueError, match="Found unknown categories"):
        OneHotEncoder(categories=[["female", "male"]]).fit(frame(train)[["sex"]])
    with pytest.raises(PreprocessingError, match=r"column 'sex': unknown category null at row 5 during fit "
                                                 r"\(\d+ row\(s\) unknown\); known categories: 'female', 'male'; "
                                                 r"add it to categories or change handle_unknown"):
        OneHot(["sex"], categories=[["female", "male"]]).fit(train)


@pytest.mark.parametrize(("min_frequency", "max_categories"), GROUPING)
@pytest.mark.parametrize(("unknown_value", "encoded_missing_value"), [(-1, -1), (-1, -2), (99, 98), (-3, 120)])
def test_index_encode_matches_ordinal_encoder(diabetes: tuple[pa.Table, pa.Table], unknown_value: int,
                                              encoded_missing_value: int, min_frequency: float | None,
                                              max_categories: int | None) -> None:
    train, test = diabetes
    params = {"unknown_value": unknown_value, "encoded_missing_value": encoded_missing_value,
              "min_frequency": min_frequency, "max_categories": max_categories}
    step = IndexEncode(COLUMNS, handle_unknown="use_encoded_value", **params).fit(train)
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", dtype=np.int64, **params).fit(frame(train))
    for data in (train, test):
        out = step.transform(data)
        assert out.column_names == COLUMNS and all(c.type == pa.int64() for c in out.columns)
        assert np.array_equal(matrix(out, data.num_rows), encoder.transform(frame(data)))
    assert step.categories_ == tuple(tuple(ours(c) for c in cats) for cats in encoder.categories_)
    infrequent = getattr(encoder, "infrequent_categories_", [None] * len(COLUMNS))
    assert step.infrequent_categories_ == tuple(tuple(ours(c) for c in ([] if i is None else i)) for i in infrequent)
    codes = matrix(step.transform(test), test.num_rows)
    assert all(codes.max(axis=0) < step.cardinality_)


def test_index_encode_error_matches_ordinal_encoder(diabetes: tuple[pa.Table, pa.Table]) -> None:
    train, test = diabetes
    step = IndexEncode(COLUMNS, encoded_missing_value=-1, max_categories=5).fit(train)
    encoder = OrdinalEncoder(encoded_missing_value=-1, max_categories=5, dtype=np.int64).fit(frame(train))
    out = step.transform(train)
    assert np.array_equal(matrix(out, train.num_rows), encoder.transform(frame(train)))
    assert step.cardinality_ == (5, 2, 5, 5)
    with pytest.raises(ValueError, match="Found unknown categories"):
        encoder.transform(frame(test))
    with pytest.raises(PreprocessingError, match=r"column 'age': unknown category \d+ at row \d+ .*; use "
                                                 r"IndexEncode\(\.\.\., handle_unknown='reserved'\) to encode"):
        step.transform(test)


def test_index_encode_reserved_is_ordinal_encoder_shifted_by_one(diabetes: tuple[pa.Table, pa.Table]) -> None:
    train, test = diabetes
    step = IndexEncode(COLUMNS, handle_unknown="reserved", min_frequency=4).fit(train)
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
                             min_frequency=4, dtype=np.int64).fit(frame(train))
    codes = matrix(step.transform(test), test.num_rows)
    assert np.array_equal(codes, encoder.transform(frame(test)) + 1)
    assert codes.min() == 0 and all(codes.max(axis=0) < step.cardinality_)
    n_known = [len(c) - (ours(c[-1]) is None) for c in encoder.categories_]
    n_infrequent = [0 if i is None else len(i) for i in encoder.infrequent_categories_]
    expected = [1 + k - i + (i > 0) for k, i in zip(n_known, n_infrequent, strict=True)]  # 0 + frequent + bucket
    assert step.cardinality_ == tuple(expected)


categories_data = st.lists(st.one_of(st.none(), st.sampled_from("abcdefg")), min_size=1, max_size=60).filter(
    lambda values: any(v is not None for v in values)
)


@settings(max_examples=60, deadline=None)
@given(
    values=categories_data,
    unseen=st.lists(st.one_of(st.none(), st.sampled_from("abcdefghij")), min_size=1, max_size=10),
    min_frequency=st.one_of(st.none(), st.integers(1, 8), st.floats(0.01, 0.99)),
    max_categories=st.one_of(st.none(), st.integers(1, 8)),
    drop=st.sampled_from([None, "first", "if_binary"]),
)
def test_any_grouping_matches_scikit_learn(values: list, unseen: list, min_frequency: float | None,
                                           max_categories: int | None, drop: str | None) -> None:
    train, test = pa.table({"c": pa.array(values, pa.string())}), pa.table({"c": pa.array(unseen, pa.string())})
    fit_x, x = (np.array([np.nan if v is None else v for v in vs], dtype=object)[:, None] for vs in (values, unseen))
    options = {"min_frequency": min_frequency, "max_categories": max_categories}
    step = OneHot(["c"], handle_unknown="infrequent_if_exist", drop=drop, **options).fit(train)
    encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", drop=drop, sparse_output=False, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = encoder.fit(fit_x).transform(x)
    assert np.array_equal(matrix(step.transform(test), len(unseen)), expected)
    index = IndexEncode(["c"], handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2,
                        **options).fit(train)
    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2,
                             dtype=np.int64, **options).fit(fit_x)
    assert index.transform(test).column("c").to_pylist() == ordinal.transform(x)[:, 0].tolist()


# -- our own behaviour ---------------------------------------------------------------------------------


def test_onehot_sorted_string_categories_named_col_eq_cat_in_place() -> None:
    table = pa.table({"n": [1.0, 2.0, 3.0], "city": ["oslo", "lima", "paris"], "z": [0.0, 0.0, 0.0]})
    step = OneHot(["city"]).fit(table)
    assert step.categories_ == (("lima", "oslo", "paris"),)
    out = step.transform(table)
    assert out.column_names == ["n", "city=lima", "city=oslo", "city=paris", "z"]
    assert np.array_equal(np.column_stack([out.column(i) for i in (1, 2, 3)]), np.eye(3)[[1, 0, 2]])


def test_numbers_are_sorted_numerically_and_keyed_on_their_string_form() -> None:
    table = pa.table({"plan": pa.array([10, 2, 1, None], pa.int32()), "rate": [0.5, -0.0, 0.0, float("nan")],
                      "flag": [True, False, True, None]})
    step = OneHot(["plan", "rate", "flag"]).fit(table)
    assert step.categories_ == (("1", "2", "10", None), ("0", "0.5", None), ("false", "true", None))
    assert step.transform(table).column_names[:4] == ["plan=1", "plan=2", "plan=10", "plan=null"]
    as_floats = pa.table({"plan": [2.0, 10.0], "rate": [0.0, 0.5], "flag": [False, True]})
    assert np.array_equal(np.column_stack(step.transform(as_floats).columns)[:, :4], [[0, 1, 0, 0], [0, 0, 1, 0]])
    given = OneHot(["plan", "rate"], categories=[[1.0, 10, np.int64(2)], [np.float32(0.5), -0.0]])
    assert given.params["categories"] == (("1", "10", "2"), ("0.5", "0"))


def test_given_categories_keep_their_order_and_may_name_the_missing_category() -> None:
    table = pa.table({"c": ["b", "a", None]})
    for categories in ([["b", "a", "c", None]], {"c": ["b", "a", "c", None]}):
        step = OneHot(["c"], categories=categories).fit(table)
        assert step.transform(table).column_names == ["c=b", "c=a", "c=c", "c=null"]


def test_ignore_encodes_unknown_and_unseen_missing_values_as_all_zeros() -> None:
    step = OneHot(["c"], handle_unknown="ignore").fit(pa.table({"c": ["a", "b"]}))
    out = step.transform(pa.table({"c": ["b", "zzz", None]}))
    assert np.array_equal(np.column_stack(out.columns), [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])


def test_index_encode_in_place_int64_codes_and_cardinality() -> None:
    table = pa.table({"n": [1.0, 2.0, 3.0, 4.0], "city": ["oslo", "lima", "oslo", None]})
    step = IndexEncode(["city"], handle_unknown="reserved").fit(table)
    out = step.transform(pa.table({"n": [0.0] * 4, "city": ["lima", "oslo", "rome", None]}))
    assert out.column_names == ["n", "city"] and out.column("city").type == pa.int64()
    assert out.column("city").to_pylist() == [1, 2, 0, 0]
    assert step.categories_ == (("lima", "oslo", None),) and step.cardinality_ == (3,)
    shifted = IndexEncode(["city"], handle_unknown="use_encoded_value", unknown_value=2, encoded_missing_value=3)
    assert shifted.fit(table).cardinality_ == (4,)  # an embedding row each for unknown and missing values


def test_a_row_alone_gives_the_codes_it_gets_in_a_batch(diabetes: tuple[pa.Table, pa.Table]) -> None:
    train, test = diabetes
    for step in (OneHot(COLUMNS, handle_unknown="infrequent_if_exist", min_frequency=5, drop="if_binary"),
                 IndexEncode(COLUMNS, handle_unknown="reserved", max_categories=8)):
        batch = step.fit(train).transform(test)
        for i in range(0, test.num_rows, 7):
            assert step.transform(test.slice(i, 1)).to_pandas().equals(batch.slice(i, 1).to_pandas())


def test_a_bundle_written_before_grouping_existed_still_encodes() -> None:
    old = {"type": "onehot", "columns": ["c"], "params": {"handle_unknown": "ignore", "categories": None},
           "state": {"categories_": [["a", "b"]]}}
    step = Step.from_dict(old)
    assert step.fitted and step.infrequent_categories_ is None
    assert np.array_equal(np.column_stack(step.transform(pa.table({"c": ["b", "x"]})).columns), [[0, 1], [0, 0]])
    assert Step.from_dict(json.loads(json.dumps(step.to_dict()))) == step


# -- JSON round trip -----------------------------------------------------------------------------------


def test_steps_round_trip_fitted_and_unfitted(diabetes: tuple[pa.Table, pa.Table]) -> None:
    train, test = diabetes
    steps = [
        OneHot(COLUMNS, handle_unknown="infrequent_if_exist", min_frequency=0.02, max_categories=7),
        OneHot(COLUMNS, drop={"sex": "female", "decade": "50s"}, handle_unknown="ignore"),
        OneHot(["sex"], categories={"sex": ["male", "female", None]}, drop="first"),
        IndexEncode(COLUMNS, handle_unknown="reserved", min_frequency=3),
        IndexEncode(COLUMNS, handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2,
                    categories=[[20, 30], ["male"], [3.0, np.nan], ["50s"]]),
    ]
    for step in steps:
        again = Step.from_dict(json.loads(json.dumps(step.to_dict(), allow_nan=False)))
        assert again == step and not again.fitted
        step.fit(train)
        again = Step.from_dict(json.loads(json.dumps(step.to_dict(), allow_nan=False)))
        assert again == step and again.fitted and again != type(step)(step.columns)
        assert step.transform(test).to_pandas().equals(again.transform(test).to_pandas())  # NaN == NaN


# -- errors --------------------------------------------------------------------------------------------


def test_unfitted_steps_refuse_to_transform() -> None:
    with pytest.raises(PreprocessingError, match=r"^OneHot\(columns=\['c'\], min_frequency=2\) is not fitted; "):
        OneHot("c", min_frequency=2).transform(pa.table({"c": ["a"]}))
    with pytest.raises(PreprocessingError, match=r"^IndexEncode\(columns=\['c'\]\) is not fitted; call fit"):
        IndexEncode("c").transform(pa.table({"c": ["a"]}))


def test_unknown_category_names_column_value_row_and_known_categories() -> None:
    step = OneHot(["plan"]).fit(pa.table({"plan": [1, 2]}))
    with pytest.raises(PreprocessingError, match=r"^column 'plan': unknown category 7 at row 1 \(1 row\(s\) unknown\)"
                                                 r"; known categories: '1', '2'; use OneHot\(\.\.\., handle_unknown="):
        step.transform(pa.table({"plan": [2, 7]}))
    with pytest.raises(PreprocessingError, match=r"column 'plan': unknown category null at row 0"):
        step.transform(pa.table({"plan": pa.array([None, 1], pa.int64())}))
    many = IndexEncode(["n"]).fit(pa.table({"n": list(range(30))}))
    with pytest.raises(PreprocessingError, match=r"known categories: '0', '1', .*'19', …; use IndexEncode"):
        many.transform(pa.table({"n": [99]}))


def test_index_encode_codes_that_collide_or_missing_values_without_a_code() -> None:
    table = pa.table({"c": ["a", "b", None]})
    with pytest.raises(PreprocessingError, match=r"unknown_value=1 is already the code of a category of column 'c' "
                                                 r"\(codes 0\.\.1\); use a negative value or one >= 2"):
        IndexEncode(["c"], handle_unknown="use_encoded_value", unknown_value=1, encoded_missing_value=-1).fit(table)
    with pytest.raises(PreprocessingError, match=r"encoded_missing_value=0 is already the code"):
        IndexEncode(["c"], encoded_missing_value=0).fit(table)
    with pytest.raises(PreprocessingError, match=r"column 'c' has missing values in the training data .*; pass "
                                                 r"encoded_missing_value=<int> \(e\.g\. -1, or 2 for an embedding"):
        IndexEncode(["c"]).fit(table)
    assert IndexEncode(["c"], encoded_missing_value=0).fit(table.slice(0, 2)).cardinality_ == (2,)  # none seen


def test_output_names_that_would_collide() -> None:
    with pytest.raises(PreprocessingError, match=r"column 'c' would give several columns named 'c=null'"):
        OneHot(["c"]).fit(pa.table({"c": ["null", None]}))
    with pytest.raises(PreprocessingError, match=r"several columns named 'c=infrequent'"):
        OneHot(["c"], min_frequency=2).fit(pa.table({"c": ["infrequent", "infrequent", "a"]}))


def test_what_cannot_be_encoded() -> None:
    with pytest.raises(PreprocessingError, match=r"column 's' has no non-missing values to fit on"):
        OneHot(["s"]).fit(pa.table({"s": pa.array([None, None], pa.string())}))
    with pytest.raises(PreprocessingError, match=r"column 'v' holds list<item: int64> values; categories are "):
        IndexEncode(["v"]).fit(pa.table({"v": [[1], [2]]}))
    with pytest.raises(PreprocessingError, match=r"cannot drop category 'x' of column 'c': not one of its "
                                                 r"categories \('a', 'b'\)"):
        OneHot(["c"], drop=["x"]).fit(pa.table({"c": ["a", "b"]}))


BAD_PARAMETERS = [
    (lambda: OneHot(["a"], handle_unknown="warn"),
     r"OneHot handle_unknown must be one of 'error', 'ignore', 'infrequent_if_exist', got 'warn'"),
    (lambda: IndexEncode(["a"], handle_unknown="ignore"),
     r"IndexEncode handle_unknown must be one of 'error', 'reserved', 'use_encoded_value', got 'ignore'"),
    (lambda: OneHot(["a", "b"], categories=[["x"]]),
     r"OneHot categories must give a non-empty list for each of the 2 columns"),
    (lambda: OneHot(["a"], categories=["xy"]), r"OneHot categories must give a non-empty list for each of the 1"),
    (lambda: OneHot(["a"], categories={"b": ["x"]}), r"OneHot categories name column\(s\) 'b' that are not in"),
    (lambda: OneHot(["a"], categories=[["x", "y", "x"]]), r"categories of column 'a' hold duplicates: 'x', 'y', 'x'"),
    (lambda: OneHot(["a"], categories=[[None, "x"]]), r"the missing-value category \(None\) must come last"),
    (lambda: OneHot(["a"], categories=[[object()]]), r"OneHot categories are strings, numbers, booleans or None"),
    (lambda: OneHot(["a"], min_frequency=0), r"OneHot min_frequency must be a count \(int >= 1\) or a fraction of "
                                             r"the rows \(float in \(0, 1\)\), got 0"),
    (lambda: OneHot(["a"], min_frequency=1.0), r"min_frequency must be .* got 1\.0"),
    (lambda: IndexEncode(["a"], min_frequency=True), r"IndexEncode min_frequency must be .* got True"),
    (lambda: OneHot(["a"], max_categories=0), r"OneHot max_categories must be an integer >= 1, got 0"),
    (lambda: OneHot(["a"], drop="last"), r"OneHot drop must be None, 'first', 'if_binary' or one category per "
                                         r"column \(1\), got 'last'"),
    (lambda: OneHot(["a", "b"], drop=["x"]), r"one category per column \(2\), got \['x'\]"),
    (lambda: OneHot(["a"], drop=[float("nan")]), r"OneHot cannot drop the missing-value category"),
    (lambda: IndexEncode(["a"], handle_unknown="use_encoded_value"),
     r"IndexEncode needs an integer unknown_value \(e\.g\. -1\) with handle_unknown='use_encoded_value' and none "
     r"otherwise, got unknown_value=None"),
    (lambda: IndexEncode(["a"], unknown_value=-1), r"got unknown_value=-1 with handle_unknown='error'"),
    (lambda: IndexEncode(["a"], handle_unknown="use_encoded_value", unknown_value=1.5),
     r"IndexEncode unknown_value must be an integer, got 1\.5"),
    (lambda: IndexEncode(["a"], handle_unknown="reserved", encoded_missing_value=-1),
     r"IndexEncode\(handle_unknown='reserved'\) encodes missing values as 0; drop encoded_missing_value=-1"),
    (lambda: IndexEncode([]), r"IndexEncode needs at least one column"),
]


@pytest.mark.parametrize(("make", "message"), BAD_PARAMETERS)
def test_bad_parameters(make: object, message: str) -> None:
    with pytest.raises(PreprocessingError, match=message):
        make()  # type: ignore[operator]

