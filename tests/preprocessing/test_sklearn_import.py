"""scikit-learn import: scikit-learn is the oracle. For every supported transformer and option, on diabetes,
wine, breast cancer and a mixed frame with missing values and unknown categories, the converted Preprocessor
gives ct.transform(X) column for column; then the schema, refusals, JSON and a model end to end."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.datasets import load_diabetes
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PowerTransformer,
    QuantileTransformer,
    RobustScaler,
    StandardScaler,
)
from torch import nn

import torchpredict
from sklearn_data import PARITY, Data, datasets
from torchpredict.bundle import load, save
from torchpredict.errors import PreprocessingError, SchemaError
from torchpredict.heads.regression import Regression
from torchpredict.preprocessing import Preprocessor, from_sklearn
from torchpredict.preprocessing.copying import Copy
from torchpredict.preprocessing.numeric import MaxAbs
from torchpredict.preprocessing.sklearn_import import SUPPORTED, convert

NUMBERS = ["age", "bmi", "bp", "s1", "s5"]
CATEGORIES = ["sex", "decade", "level", "high_bp"]


def frames(data: Data) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.DataFrame(data.train, columns=list(data.columns)), pd.DataFrame(data.test, columns=list(data.columns))


def mixed() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Diabetes in raw units as a mixed frame: numbers with NaN, string categories with NaN (sex, decade),
    an integer category (level) and a binary one (high_bp). The test rows add unknown categories ('x',
    '90s', level 99) and a missing decade; every column keeps its training dtype."""
    raw = load_diabetes(scaled=False, as_frame=True).frame
    rng = np.random.default_rng(3)
    df = raw[NUMBERS].copy()
    for name in NUMBERS[1:]:
        df.loc[rng.random(len(df)) < 0.08, name] = np.nan
    df["sex"] = np.where(raw["sex"] == 1, "f", "m").astype(object)
    df.loc[rng.random(len(df)) < 0.05, "sex"] = np.nan
    df["decade"] = [f"{int(a) // 10}0s" for a in raw["age"]]
    df["level"] = raw["s4"].round().astype(np.int64)
    df["high_bp"] = np.where(raw["bp"] > 100, "yes", "no").astype(object)
    train, test = df.iloc[:330].reset_index(drop=True), df.iloc[330:].reset_index(drop=True)
    test.loc[[0, 5], "sex"] = "x"
    test.loc[[1, 6], "decade"] = "90s"
    test.loc[[2, 7], "decade"] = np.nan
    test.loc[[3], "level"] = 99
    return train, test


def sklearn_output(fitted: Any, X: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unknown categories (handle_unknown='warn', drop)
        out = fitted.transform(X)
    return out.toarray() if sparse.issparse(out) else np.asarray(out, dtype=np.float64)


def assert_parity(fitted: Any, *frames: Any) -> Preprocessor:
    """Convert `fitted`, check that it survives JSON, and check it against scikit-learn on every frame."""
    pre = from_sklearn(fitted)
    assert Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict(), allow_nan=False))) == pre
    for X in frames:
        expected = sklearn_output(fitted, X)
        got = pre.transform(X)["x"]
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, **PARITY)
    return pre


def column_transformer(transformer: Any, columns: list[str], **options: Any) -> ColumnTransformer:
    """`transformer` on every other column, the rest passed through: scikit-learn's output order (branch
    first, then the remainder) differs from the table's, so routing is checked too."""
    return ColumnTransformer([("t", transformer, columns[::2])], remainder="passthrough", **options)


NUMERIC: dict[str, Callable[[], Any]] = {
    "standard": StandardScaler,
    "standard-no-mean": lambda: StandardScaler(with_mean=False),
    "standard-no-std": lambda: StandardScaler(with_std=False),
    "minmax": MinMaxScaler,
    "minmax-range-clip": lambda: MinMaxScaler(feature_range=(-2, 3), clip=True),
    "robust": RobustScaler,
    "robust-range-unit-variance": lambda: RobustScaler(quantile_range=(10.0, 90.0), unit_variance=True),
    "robust-no-centering": lambda: RobustScaler(with_centering=False),
    "robust-no-scaling": lambda: RobustScaler(with_scaling=False),
    "maxabs": MaxAbsScaler,
    "yeo-johnson": PowerTransformer,
    "yeo-johnson-unstandardized": lambda: PowerTransformer(standardize=False),
    "box-cox": lambda: make_pipeline(MinMaxScaler(feature_range=(1, 2), clip=True), PowerTransformer("box-cox")),
    "log1p": lambda: make_pipeline(MinMaxScaler(clip=True), FunctionTransformer(np.log1p)),
    "bins-uniform-ordinal": lambda: KBinsDiscretizer(n_bins=4, strategy="uniform", encode="ordinal"),
    "bins-quantile-onehot": lambda: KBinsDiscretizer(n_bins=5, strategy="quantile", encode="onehot-dense"),
    "bins-quantile-inverted-cdf": lambda: KBinsDiscretizer(n_bins=6, quantile_method="inverted_cdf",
                                                           encode="ordinal"),
    "bins-kmeans-sparse": lambda: KBinsDiscretizer(n_bins=3, strategy="kmeans", encode="onehot"),
}

IMPUTING: dict[str, Callable[[], Any]] = {
    "mean-indicator": lambda: SimpleImputer(add_indicator=True),
    "median": lambda: SimpleImputer(strategy="median"),
    "most-frequent-indicator": lambda: SimpleImputer(strategy="most_frequent", add_indicator=True),
    "constant": lambda: SimpleImputer(strategy="constant", fill_value=-7.0),
    "constant-default": lambda: SimpleImputer(strategy="constant"),
    "impute-then-scale": lambda: make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()),
    "impute-then-bins": lambda: make_pipeline(SimpleImputer(strategy="median"), KBinsDiscretizer(encode="ordinal")),
    "scale-then-impute": lambda: make_pipeline(RobustScaler(), SimpleImputer(strategy="median")),
}


@pytest.mark.parametrize("data", datasets(), ids=lambda d: d.name)
@pytest.mark.parametrize("make", NUMERIC.values(), ids=NUMERIC.keys())
def test_numeric_transformers_match_scikit_learn(make: Callable[[], Any], data: Data) -> None:
    train, test = frames(data)
    assert_parity(column_transformer(make(), list(train.columns)).fit(train), train, test)


@pytest.mark.parametrize("data", datasets(missing=0.05), ids=lambda d: d.name)
@pytest.mark.parametrize("make", IMPUTING.values(), ids=IMPUTING.keys())
def test_imputers_match_scikit_learn_with_missing_values_in_training_and_after(make: Callable, data: Data) -> None:
    train, test = frames(data)
    assert test.isna().any().any()
    assert_parity(column_transformer(make(), list(train.columns)).fit(train), train, test)


@pytest.mark.parametrize("data", datasets(missing=0.02), ids=lambda d: d.name)
def test_scalers_pass_missing_values_through_like_scikit_learn(data: Data) -> None:
    train, test = frames(data)
    ct = ColumnTransformer([("s", StandardScaler(), list(train.columns[:4])),
                            ("m", MinMaxScaler(), list(train.columns[4:8]))], remainder="drop").fit(train)
    pre = assert_parity(ct, train, test)
    assert np.isnan(pre.transform(test)["x"]).any()


def test_log1p_alone_and_a_bare_pipeline_and_transformer() -> None:
    wine = frames(datasets()[2])
    assert_parity(FunctionTransformer(np.log1p).fit(wine[0]), *wine)
    assert_parity(make_pipeline(SimpleImputer(), MaxAbsScaler(), "passthrough").fit(wine[0]), *wine)
    assert_parity(StandardScaler().fit(wine[0]), *wine)


# -- categories and mixed frames --------------------------------------------------------------------


def numbers() -> Pipeline:
    return make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler())


CATEGORICAL: dict[str, Callable[[], Any]] = {
    "onehot-ignore": lambda: OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    "onehot-sparse": lambda: OneHotEncoder(handle_unknown="ignore"),
    "onehot-infrequent-count": lambda: OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20),
    "onehot-infrequent-fraction": lambda: OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=0.1),
    "onehot-max-categories": lambda: OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=3),
    "onehot-warn": lambda: OneHotEncoder(handle_unknown="warn", max_categories=4),
    "onehot-drop-first": lambda: OneHotEncoder(drop="first", handle_unknown="ignore"),
    "onehot-drop-if-binary": lambda: OneHotEncoder(drop="if_binary", handle_unknown="ignore"),
    "onehot-drop-given": lambda: OneHotEncoder(drop=["m", "30s", 4, "no"], handle_unknown="ignore"),
    "onehot-given-categories": lambda: OneHotEncoder(
        categories=[["m", "f"], ["50s", "20s", "60s"], [3, 4, 5, 6], ["yes", "no"]], handle_unknown="ignore"),
    "impute-then-onehot": lambda: make_pipeline(SimpleImputer(strategy="most_frequent"),
                                                OneHotEncoder(handle_unknown="ignore")),
    "impute-constant-then-onehot": lambda: make_pipeline(SimpleImputer(strategy="constant", fill_value="gone"),
                                                         OneHotEncoder(handle_unknown="ignore", min_frequency=5)),
    "ordinal": lambda: OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2),
    "ordinal-infrequent": lambda: OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=99,
                                                 encoded_missing_value=-1, min_frequency=30),
    "ordinal-given-categories": lambda: OrdinalEncoder(
        categories=[["m", "f", np.nan], ["50s", "20s"], [3, 4, 5], ["yes", "no"]], handle_unknown="use_encoded_value",
        unknown_value=-1, encoded_missing_value=-3),
    "ordinal-max-categories": lambda: OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                                     encoded_missing_value=-1, max_categories=3),
    "ordinal-then-scale": lambda: make_pipeline(
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1),
        StandardScaler()),
}


@pytest.mark.parametrize("make", CATEGORICAL.values(), ids=CATEGORICAL.keys())
def test_encoders_match_scikit_learn_with_unknown_and_missing_categories(make: Callable[[], Any]) -> None:
    train, test = mixed()
    ct = ColumnTransformer([("num", numbers(), NUMBERS), ("cat", make(), CATEGORIES)]).fit(train)
    assert_parity(ct, train, test)


@pytest.mark.parametrize("encoder", [OneHotEncoder(sparse_output=False), OrdinalEncoder(encoded_missing_value=-1)],
                         ids=["onehot", "ordinal"])
def test_encoders_that_refuse_unknown_categories_match_on_known_ones(encoder: Any) -> None:
    train, _ = mixed()
    pre = assert_parity(ColumnTransformer([("cat", encoder, CATEGORIES)]).fit(train), train, train.iloc[::-1])
    with pytest.raises(PreprocessingError, match=r"column 'sex': unknown category 'x' at row 0"):
        pre.transform(mixed()[1])


@pytest.mark.parametrize("options", [
    {"remainder": "drop"},
    {"remainder": "passthrough"},
    {"remainder": "passthrough", "verbose_feature_names_out": False},
    {"remainder": MinMaxScaler()},
    {"remainder": "passthrough", "sparse_threshold": 0.9},
], ids=["drop", "passthrough", "short-names", "remainder-estimator", "sparse"])
def test_column_transformer_options(options: dict) -> None:
    train, test = (f.drop(columns=["decade"]) for f in mixed())  # strings cannot pass through to a model
    ct = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["high_bp", "sex"]),
                            ("num", numbers(), ["s1", "bmi"])], **options).fit(train)
    pre = assert_parity(ct, train, test)
    assert len(pre.inputs_["x"]) == len(ct.get_feature_names_out())


def test_output_columns_come_in_get_feature_names_out_order() -> None:
    train, test = mixed()
    ct = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["high_bp", "sex"]),
                            ("num", numbers(), ["s1", "bmi"]), ("drop", "drop", ["age"]),
                            ("bins", KBinsDiscretizer(n_bins=2, encode="onehot-dense"), ["level"])],
                           remainder="passthrough").fit(train.drop(columns=["bp", "decade"]))
    pre = assert_parity(ct, train, test)
    assert list(ct.get_feature_names_out()) == [
        "cat__high_bp_no", "cat__high_bp_yes", "cat__sex_f", "cat__sex_m", "cat__sex_nan", "num__s1", "num__bmi",
        "num__missingindicator_s1", "num__missingindicator_bmi", "bins__level_0.0", "bins__level_1.0",
        "remainder__s5"]
    assert pre.inputs_["x"] == ("high_bp=no", "high_bp=yes", "sex=f", "sex=m", "sex=null", "s1", "bmi",
                                "s1_missing", "bmi_missing", "level_bin0", "level_bin1", "s5")
    assert [c.name for c in pre.schema_.features] == ["bmi", "s1", "s5", "sex", "level", "high_bp"]


def test_strings_passed_through_are_refused_when_the_training_data_shows_them() -> None:
    train, _ = mixed()
    ct = ColumnTransformer([("num", numbers(), NUMBERS)], remainder="passthrough").fit(train)
    with pytest.raises(PreprocessingError, match=r"^column 'sex' reaches the model input as string values, passed "
                                                 r"through unencoded; encode it \(OneHotEncoder, OrdinalEncoder\)"):
        from_sklearn(ct, X=train)


def test_column_selections_by_selector_position_slice_and_mask() -> None:
    train, test = mixed()
    selections = [
        (make_column_selector(dtype_include=np.number), make_column_selector(dtype_exclude=np.number)),
        ([1, 2, 3], [5, 8]),
        (slice("bmi", "s5"), slice(5, 7)),
        (np.isin(train.columns, ["bp", "s1"]), [c in ("sex", "decade") for c in train.columns]),
    ]
    for numeric, categorical in selections:
        ct = ColumnTransformer([("num", numbers(), numeric), ("cat", OneHotEncoder(handle_unknown="ignore"),
                                                              categorical)]).fit(train)
        assert_parity(ct, train, test)


def test_pipelines_around_and_inside_column_transformers() -> None:
    train, test = mixed()
    inner = ColumnTransformer([("s", StandardScaler(), [0, 1]), ("m", MaxAbsScaler(), [2])], remainder="passthrough")
    outer = Pipeline([
        ("ct", ColumnTransformer([("num", numbers(), NUMBERS[:3]),
                                  ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["sex"])])),
        ("inner", inner),
        ("scale", MinMaxScaler(feature_range=(-1, 1))),
    ]).fit(train)
    assert_parity(outer, train, test)
    pandas_out = ColumnTransformer([("num", numbers(), NUMBERS)]).set_output(transform="pandas").fit(train)
    assert_parity(pandas_out, train, test)


def test_a_column_transformer_fitted_on_an_array_takes_columns_x0_x1() -> None:
    data = datasets(missing=0.05)[0]
    ct = ColumnTransformer([("a", numbers(), [0, 2, 4]), ("b", RobustScaler(), [1, 3])]).fit(data.train)
    pre = from_sklearn(ct)
    assert [c.name for c in pre.schema_.features] == ["x0", "x1", "x2", "x3", "x4"]
    for x in (data.train, data.test):
        got = pre.transform({f"x{j}": x[:, j] for j in range(x.shape[1])})["x"]
        np.testing.assert_allclose(got, ct.transform(x), **PARITY)
    with_stats = from_sklearn(ct, X=data.train)
    assert with_stats.schema_.columns[0].stats.missing_rate > 0


@pytest.mark.filterwarnings("ignore:Feature 0 is constant:UserWarning")
def test_constant_training_columns_give_one_bin_as_in_scikit_learn() -> None:
    train = pd.DataFrame({"a": [2.0, 2.0, 2.0], "b": [0.0, 1.0, 2.0]})
    test = pd.DataFrame({"a": [-5.0, 2.0, 9.0], "b": [-1.0, 0.5, 7.0]})
    kbins = KBinsDiscretizer(n_bins=2, encode="onehot-dense", strategy="uniform").fit(train)
    assert np.isinf(kbins.bin_edges_[0]).all()
    pre = assert_parity(kbins, train, test)
    assert pre.inputs_["x"] == ("a_bin0", "b_bin0", "b_bin1")


# -- a column feeding several branches ----------------------------------------------------------------


SHARED: dict[str, Callable[[list[str]], ColumnTransformer]] = {  # column names -> an unfitted ColumnTransformer
    "scaled-and-raw": lambda c: ColumnTransformer([("ma", MaxAbsScaler(), c[:1]), ("pass", "passthrough", c[:1])]),
    "standardized-and-bucketized": lambda c: ColumnTransformer(
        [("st", StandardScaler(), c[:3]), ("bins", KBinsDiscretizer(n_bins=4, encode="onehot-dense"), c[1:4])],
        remainder="passthrough"),
    "three-branches-and-a-remainder-estimator": lambda c: ColumnTransformer(
        [("mm", MinMaxScaler(), c[:2]), ("rb", RobustScaler(), c[1:2]), ("raw", "passthrough", c[:2])],
        remainder=StandardScaler()),
    "pipelines-on-the-copies": lambda c: ColumnTransformer(
        [("raw", "passthrough", c[:1]),
         ("bc", make_pipeline(MinMaxScaler(feature_range=(1, 2), clip=True), PowerTransformer("box-cox")), c[:3:2]),
         ("log", make_pipeline(MinMaxScaler(clip=True), FunctionTransformer(np.log1p)), c[:1])], remainder="drop"),
}
SHARED_MISSING: dict[str, Callable[[list[str]], ColumnTransformer]] = {
    "imputed-with-indicator-and-raw": lambda c: ColumnTransformer(
        [("imp", SimpleImputer(add_indicator=True), c[:3]), ("raw", "passthrough", c[:2])]),
    "imputed-scaled-and-imputed-bucketized-and-raw-scaled": lambda c: ColumnTransformer(
        [("s", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), c[:2]),
         ("b", make_pipeline(SimpleImputer(), KBinsDiscretizer(n_bins=3, encode="ordinal")), c[:2]),
         ("m", MaxAbsScaler(), c[1:2])], remainder="passthrough"),
}


def read_columns(ct: ColumnTransformer, columns: list[str]) -> list[str]:
    """The input columns some branch of a fitted ColumnTransformer reads (the remainder's by position)."""
    read = {columns[i] if isinstance(i, (int, np.integer)) else i
            for _, trans, selected in ct.transformers_ if not (isinstance(trans, str) and trans == "drop")
            for i in selected}
    return [c for c in columns if c in read]


def assert_shared_parity(ct: ColumnTransformer, train: pd.DataFrame, test: pd.DataFrame) -> Preprocessor:
    """Parity (JSON included), and with training data a schema listing each column read once, with its
    statistics, and a model input of scikit-learn's width."""
    assert_parity(ct, train, test)
    pre = from_sklearn(ct, X=train)
    np.testing.assert_allclose(pre.transform(test)["x"], sklearn_output(ct, test), **PARITY)
    assert [c.name for c in pre.schema_.features] == read_columns(ct, list(train.columns))
    for column in pre.schema_.columns:
        values, stats = train[column.name], column.stats
        if stats.categories is None:
            assert (stats.min, stats.max) == (values.min(), values.max())
        else:
            assert stats.categories == tuple(sorted(values.dropna().unique()))
        assert stats.missing_rate == values.isna().mean()
    assert len(pre.inputs_["x"]) == sklearn_output(ct, train).shape[1]
    return pre


@pytest.mark.parametrize("data", datasets(), ids=lambda d: d.name)
@pytest.mark.parametrize("make", SHARED.values(), ids=SHARED.keys())
def test_a_column_feeding_several_branches_matches_scikit_learn(make: Callable, data: Data) -> None:
    train, test = frames(data)
    assert_shared_parity(make(list(train.columns)).fit(train), train, test)


@pytest.mark.parametrize("data", datasets(missing=0.05), ids=lambda d: d.name)
@pytest.mark.parametrize("make", SHARED_MISSING.values(), ids=SHARED_MISSING.keys())
def test_a_column_imputed_in_one_branch_and_raw_in_another_matches_scikit_learn(make: Callable, data: Data) -> None:
    train, test = frames(data)
    pre = assert_shared_parity(make(list(train.columns)).fit(train), train, test)
    assert np.isnan(pre.transform(test)["x"]).any()  # the raw branch passes NaN on, as scikit-learn does
    assert all(c.nullable for c in pre.schema_.columns if c.name in train.columns[:2])  # missing in training
    ct = make(list(train.columns)).fit(train)
    if "raw" in ct.named_transformers_:  # without X, a column is nullable when no branch passes NaN on
        nullable = {c.name: c.nullable for c in from_sklearn(ct).schema_.columns}
        assert nullable == {train.columns[0]: False, train.columns[1]: False, train.columns[2]: True}


def test_a_raw_copy_beside_a_scaled_one_is_a_copy_step_before_the_branches() -> None:
    train, test = frames(datasets()[2])
    ct = SHARED["scaled-and-raw"](list(train.columns)).fit(train)
    pre = assert_shared_parity(ct, train, test)
    assert pre.steps[0] == Copy(["alcohol"], names=["pass__alcohol"])
    assert [(type(step), step.columns) for step in pre.steps[1:]] == [(MaxAbs, ("alcohol",))]
    assert pre.inputs_["x"] == ("alcohol", "pass__alcohol")
    taken = train.assign(pass__alcohol=train["ash"])  # the copy's name is taken: it gets an underscore
    ct = ColumnTransformer([("ma", MaxAbsScaler(), ["alcohol"]), ("pass", "passthrough", ["alcohol", "pass__alcohol"])])
    pre = assert_shared_parity(ct.fit(taken), taken, taken[::-1])
    assert pre.inputs_["x"] == ("alcohol", "_pass__alcohol", "pass__alcohol")


def test_a_column_twice_in_one_branch_and_shared_inside_nested_transformers() -> None:
    data = datasets()[0]
    twice = ColumnTransformer([("t", StandardScaler(), [0, 0, 1]), ("u", "passthrough", [1])]).fit(data.train)
    pre = from_sklearn(twice, X=data.train)
    assert [c.name for c in pre.schema_.features] == ["x0", "x1"]
    for x in (data.train, data.test):
        got = pre.transform({f"x{j}": x[:, j] for j in range(x.shape[1])})["x"]
        np.testing.assert_allclose(got, twice.transform(x), **PARITY)
    train, test = frames(data)
    inner = ColumnTransformer([("i", StandardScaler(), ["age"]), ("j", MaxAbsScaler(), ["age", "bmi"])])
    nested = ColumnTransformer([("o", inner, ["age", "bmi"]), ("raw", "passthrough", ["age"])])
    assert_shared_parity(nested.fit(train), train, test)
    # the second ColumnTransformer shares a column the first one scaled: its copies hold the scaled values
    chained = Pipeline([("a", SHARED["standardized-and-bucketized"](list(train.columns))),
                        ("b", ColumnTransformer([("m", MinMaxScaler(), [0, 2]), ("r", "passthrough", [0, 0])]))])
    assert_parity(chained.fit(train), train, test)


@pytest.mark.parametrize("strict_first", [True, False], ids=["strict-branch-first", "strict-branch-on-a-copy"])
def test_unknown_categories_and_missing_values_are_handled_per_branch(tmp_path: Path, strict_first: bool) -> None:
    """sex imputed then one-hot encoded refusing unknowns in one branch, one-hot encoded raw (its missing value
    a category, unknowns ignored) in another; age scaled and raw. A missing sex is predicted, an unknown one is a
    bad row named by its input row and column, whichever branch refuses it."""
    train, test = (f[["age", "sex", "decade"]] for f in mixed())
    strict = ("strict", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()), ["sex"])
    lenient = ("lenient", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["sex", "decade"])
    ct = ColumnTransformer([("age", StandardScaler(), ["age"]), ("raw", "passthrough", ["age"]),
                            *([strict, lenient] if strict_first else [lenient, strict])]).fit(train)
    known = test[test["sex"] != "x"]
    assert known["sex"].isna().any() and known["decade"].isna().any()
    pre = assert_shared_parity(ct, train, known)
    assert {c.name: c.nullable for c in pre.schema_.columns} == {"age": False, "sex": True, "decade": True}

    x = torch.from_numpy(ct.transform(train).astype(np.float32))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 8), nn.Tanh(), nn.Linear(8, 1)).eval()
    bundle = torchpredict.save(tmp_path / "shared.tpk", model, preprocessor=pre, heads=Regression("y"),
                               examples=train)
    predictor = torchpredict.load(bundle, verify=True)
    rows = test.head(12)
    with pytest.raises(SchemaError, match=r"column 'sex': unknown category 'x' at row 0 \(2 row\(s\) unknown\)"):
        predictor.predict(rows)
    rejected = []
    got = predictor.predict(rows, rejects=rejected.append).column("y").to_numpy()
    assert rejected[0].select(["row", "reason"]).to_pylist() == [
        {"row": 0, "reason": "column 'sex': unknown category 'x'"},
        {"row": 5, "reason": "column 'sex': unknown category 'x'"}]
    with torch.no_grad():
        expected = model(torch.from_numpy(ct.transform(rows.drop(index=[0, 5])).astype(np.float32))).numpy().ravel()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_bundle_from_a_shared_column_conversion_predicts_like_the_eager_model(tmp_path: Path) -> None:
    train, test = frames(datasets(missing=0.05)[0])
    ct = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), ["bmi", "bp"]),
        ("bins", make_pipeline(SimpleImputer(), KBinsDiscretizer(n_bins=4, encode="onehot-dense")), ["bmi"]),
        ("raw", make_pipeline(SimpleImputer(strategy="constant", fill_value=0.0), MaxAbsScaler()), ["bmi", "s5"]),
    ]).fit(train)
    target = load_diabetes().target.astype(np.float32)
    x, y = torch.from_numpy(ct.transform(train).astype(np.float32)), torch.from_numpy(target).reshape(-1, 1)
    model = trained_regressor(x, y)

    pre = from_sklearn(ct, X=train)
    assert Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict(), allow_nan=False))) == pre
    path = torchpredict.save(tmp_path / "shared.tpk", model, preprocessor=pre, heads=Regression("progression"),
                             examples=train)
    predictor = torchpredict.load(path, verify=True)
    assert predictor.preprocessor == pre
    assert [c.name for c in predictor.preprocessor.schema_.features] == ["bmi", "bp", "s5"]
    got = predictor.predict(test[["bmi", "bp", "s5"]]).column("progression").to_numpy()
    with torch.no_grad():
        expected = model(torch.from_numpy(ct.transform(test).astype(np.float32))).numpy().ravel()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    fitted = predictor.predict(train[["bmi", "bp", "s5"]]).column("progression").to_numpy()
    assert np.corrcoef(fitted, target)[0, 1] > 0.5  # it learned something


# -- schema ------------------------------------------------------------------------------------------


def test_schema_without_training_data_has_dtypes_and_nullability_but_no_statistics() -> None:
    train, _ = mixed()
    ct = ColumnTransformer([("num", numbers(), ["bmi"]), ("scaled", StandardScaler(), ["age"]),
                            ("cat", OneHotEncoder(handle_unknown="ignore"), ["sex", "level"]),
                            ("ord", OrdinalEncoder(), ["high_bp"])]).fit(train)
    schema = from_sklearn(ct).schema_
    assert [(c.name, c.dtype, c.nullable, c.stats) for c in schema.columns] == [
        ("age", "float64", False, None), ("bmi", "float64", True, None), ("sex", "string", True, None),
        ("level", "int64", True, None), ("high_bp", "string", False, None)]
    assert not schema.validate(train.drop(columns=["bp", "s1", "s5", "decade"]).assign(age=500.0)).drift


def test_schema_with_training_data_records_statistics_for_drift() -> None:
    train, test = mixed()
    ct = ColumnTransformer([("num", numbers(), NUMBERS), ("cat", OneHotEncoder(handle_unknown="ignore"),
                                                          ["sex", "decade"])]).fit(train)
    pre = from_sklearn(ct, X=train)
    stats = {c.name: c.stats for c in pre.schema_.columns}
    assert stats["bmi"].min == train["bmi"].min() and stats["bmi"].missing_rate == train["bmi"].isna().mean()
    assert stats["sex"].categories == ("f", "m")
    assert all(c.nullable for c in pre.schema_.columns)  # imputed or encoded with handle_unknown='ignore'
    drift = pre.schema_.validate(test[[*NUMBERS, "sex", "decade"]]).drift
    assert drift.columns["sex"].unseen_categories == 2 and drift.columns["decade"].unseen_categories == 2


# -- refusals ----------------------------------------------------------------------------------------


def refusal(fitted: Any, message: str) -> None:
    with pytest.raises(PreprocessingError, match=message):
        convert(fitted)


def test_unsupported_transformers_are_named_with_their_position() -> None:
    train, _ = mixed()
    ct = ColumnTransformer([("cat", OneHotEncoder(), ["sex"]),
                            ("num", make_pipeline(SimpleImputer(), QuantileTransformer(n_quantiles=10)), NUMBERS)])
    refusal(ct.fit(train), r"^ColumnTransformer branch 'num' step 2: QuantileTransformer is not supported; "
                           r"supported: StandardScaler, MinMaxScaler, .*'passthrough', 'drop'$")
    model = Pipeline([("ct", ColumnTransformer([("num", StandardScaler(), ["age"])])), ("lr", LinearRegression())])
    refusal(model.fit(train, train["age"]), r"^Pipeline step 2: LinearRegression is not supported; supported: .*; "
                                           r"convert the preprocessing alone, e.g. pipeline\[:-1\]$")
    assert_parity(model[:-1], train)
    nested = Pipeline([("ct", ColumnTransformer([("num", make_pipeline(StandardScaler(), QuantileTransformer(
        n_quantiles=10)), ["age"])]))]).fit(train)
    refusal(nested, r"^Pipeline step 1, ColumnTransformer branch 'num' step 2: QuantileTransformer is not")
    refusal(QuantileTransformer(n_quantiles=10).fit(train[NUMBERS[:1]]), r"^QuantileTransformer is not supported")
    refusal({"a": 1}, r"^dict is not supported")


def test_options_that_cannot_be_converted_say_why() -> None:
    train, _ = mixed()
    cases = [
        (ColumnTransformer([("f", FunctionTransformer(np.sqrt), ["age"])]),
         r"^ColumnTransformer branch 'f': FunctionTransformer: func=sqrt .* only np.log1p or none"),
        (ColumnTransformer([("i", SimpleImputer(missing_values=-1.0), ["age"])]),
         r"branch 'i': SimpleImputer: missing_values=-1.0 is not supported; torchpredict reads NaN and None"),
        (ColumnTransformer([("o", OrdinalEncoder(), ["sex"])]),
         r"branch 'o': OrdinalEncoder: encoded_missing_value=nan is not supported: codes are integers"),
        (ColumnTransformer([("o", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
                             ["high_bp"])]),
         r"branch 'o': OrdinalEncoder: unknown_value=nan is not supported"),
        (ColumnTransformer([("a", StandardScaler(), ["age"])], transformer_weights={"a": 2.0}),
         r"^ColumnTransformer: transformer_weights are not supported"),
    ]
    for fitted, message in cases:
        refusal(fitted.fit(train), message)
    with pytest.warns(UserWarning, match="Skipping features without any observed values"):
        imputer = ColumnTransformer([("i", SimpleImputer(), ["age", "s5"])]).fit(train.assign(s5=np.nan))
    refusal(imputer, r"SimpleImputer: column\(s\) 's5' had no values in training, and scikit-learn drops them")
    refusal(ColumnTransformer([("d", "drop", ["age"])]).fit(train), r"^ColumnTransformer outputs no columns")


def test_unfitted_objects_are_refused() -> None:
    refusal(ColumnTransformer([("s", StandardScaler(), ["a"])]), r"^ColumnTransformer is not fitted; fit it before")
    refusal(make_pipeline(StandardScaler()), r"^Pipeline is not fitted")


def test_without_scikit_learn_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(PreprocessingError, match=r"^scikit-learn import needs scikit-learn: pip install "
                                                 r"'torchpredict\[sklearn\]'$"):
        from_sklearn(object())
    assert SUPPORTED.startswith("StandardScaler")


# -- round trips and a model end to end --------------------------------------------------------------


def full_column_transformer() -> ColumnTransformer:
    return ColumnTransformer([
        ("num", numbers(), NUMBERS[1:3]),
        ("skewed", make_pipeline(SimpleImputer(), FunctionTransformer(np.log1p), PowerTransformer()), ["s5"]),
        ("bins", KBinsDiscretizer(n_bins=[3], encode="onehot-dense", quantile_method="linear"), ["age"]),
        ("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10), ["sex", "decade"]),
        ("ord", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["level", "high_bp"]),
        ("robust", make_pipeline(SimpleImputer(strategy="constant", fill_value=0.0), RobustScaler()), ["s1"]),
    ])


def test_a_converted_preprocessor_round_trips_through_json() -> None:
    train, test = mixed()
    pre = from_sklearn(full_column_transformer().fit(train), X=train)
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict(), allow_nan=False)))
    assert again == pre and again.schema_ == pre.schema_ and again.inputs_ == pre.inputs_
    assert np.array_equal(again.transform(test)["x"], pre.transform(test)["x"])


def test_a_model_trained_on_scikit_learn_output_predicts_the_same_from_the_bundle(tmp_path: Path) -> None:
    train, test = mixed()
    target = load_diabetes(scaled=False).target
    ct = full_column_transformer().fit(train)
    x = torch.from_numpy(ct.transform(train).astype(np.float32))
    y = torch.from_numpy(target[:330].astype(np.float32)).reshape(-1, 1)
    model = trained_regressor(x, y)

    pre = from_sklearn(ct, X=train)
    path = save(tmp_path / "mixed.tpk", model, preprocessor=pre, heads=Regression("progression"), examples=train)
    predictor = load(path, device="cpu", verify=True)
    got = predictor.predict(test).column("progression").to_numpy()
    with torch.no_grad():
        expected = model(torch.from_numpy(ct.transform(test).astype(np.float32))).numpy().ravel()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert np.corrcoef(got, target[330:])[0, 1] > 0.3  # it learned something
    assert predictor.preprocessor == pre


def test_imputer_then_refusing_encoder_rejects_unknown_rows_by_input_row(tmp_path: Path) -> None:
    """The usual SimpleImputer(most_frequent) -> OneHotEncoder(): a missing sex is imputed and predicted, an
    unknown one is a bad row named by its input row (or rejected), not a failure of the whole batch."""
    train, test = mixed()
    ct = ColumnTransformer([("num", StandardScaler(), ["age"]),
                            ("sex", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()), ["sex"])])
    pre = from_sklearn(ct.fit(train[["age", "sex"]]), train[["age", "sex"]])
    torch.manual_seed(0)
    bundle = save(tmp_path / "b.tpk", nn.Linear(pre.n_features_, 1).eval(), preprocessor=pre,
                  heads=Regression("y"), examples=train[["age", "sex"]].head(8))
    rows = test[["age", "sex"]].head(8).copy()
    rows.loc[3, "sex"] = None  # imputed: known
    predictor = load(bundle)
    with pytest.raises(SchemaError, match=r"column 'sex': unknown category 'x' at row 0 \(2 row\(s\) unknown\)"):
        predictor.predict(rows)
    rejected = []
    predictions = predictor.predict(rows, rejects=rejected.append)
    assert predictions.num_rows == 6
    assert rejected[0].select(["row", "reason"]).to_pylist() == [
        {"row": 0, "reason": "column 'sex': unknown category 'x'"},
        {"row": 5, "reason": "column 'sex': unknown category 'x'"}]


def trained_regressor(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A small MLP fitted to (x, y) in a second: the model the bundle tests save."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return model.eval()
