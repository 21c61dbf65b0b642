"""Preprocessing: training statistics reused at inference, a row equals its batch bitwise, routing into
named model inputs (an embedding model end to end), JSON, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from sklearn.datasets import load_diabetes, load_wine
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from torch import nn

from torchpredict.bundle import load, save
from torchpredict.errors import PreprocessingError
from torchpredict.heads.regression import Regression
from torchpredict.preprocessing import (
    STEP_TYPES,
    Copy,
    Impute,
    IndexEncode,
    MinMax,
    OneHot,
    Preprocessor,
    Standardize,
    Step,
)


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).data


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return load_wine(as_frame=True).data


def mixed() -> pa.Table:
    """A hand-made table: numeric and categorical features with nulls, plus an id to pass through."""
    return pa.table(
        {
            "age": [34.0, None, 51.0, 29.0, 46.0, 29.0],
            "visits": pa.array([3, 1, 0, 7, 2, 2], pa.int64()),
            "city": ["paris", "oslo", None, "lima", "oslo", "lima"],
            "plan": pa.array([1, 2, 1, 3, 2, 2], pa.int32()),
            "id": ["a", "b", "c", "d", "e", "f"],
        }
    )


def mixed_preprocessor() -> Preprocessor:
    steps = [
        Impute(["age"], strategy="median"),
        Impute(["city"], strategy="most_frequent"),
        Standardize(["age"]),
        MinMax(["visits"]),
        OneHot(["city"]),
        OneHot(["plan"], handle_unknown="ignore"),
    ]
    return Preprocessor(steps, passthrough=["id"])


def via_json(obj: Step | Preprocessor) -> Step | Preprocessor:
    return type(obj).from_dict(json.loads(json.dumps(obj.to_dict(), allow_nan=False)))


# -- numbers ---------------------------------------------------------------------------------------


def test_standardize_matches_scikit_learn(diabetes: pd.DataFrame) -> None:
    out = Preprocessor([Standardize(list(diabetes.columns))]).fit_transform(diabetes)["x"]
    expected = StandardScaler().fit_transform(diabetes.to_numpy())
    assert out.dtype == np.float32 and out.shape == (442, 10)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_standardize_uses_the_training_mean_and_std_not_the_input_s(wine: pd.DataFrame) -> None:
    pre = Preprocessor([Standardize(list(wine.columns))]).fit(wine)
    shifted = wine.head(20) + 10.0
    out = pre.transform(shifted)["x"]
    train = wine.to_numpy()
    expected = ((shifted.to_numpy() - train.mean(axis=0)) / train.std(axis=0)).astype(np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert not np.allclose(out.mean(axis=0), 0.0, atol=0.1)  # the input's own statistics were not used


def test_standardize_options_and_constant_columns() -> None:
    step = Standardize(["a", "b"], with_mean=False).fit(pa.table({"a": [1.0, 3.0], "b": [5.0, 5.0]}))
    assert step.mean_ == (0.0, 0.0) and step.scale_ == (1.0, 1.0)
    assert Standardize(["a"], with_std=False).fit(pa.table({"a": [1.0, 3.0]})).scale_ == (1.0,)


def test_minmax_matches_scikit_learn_and_clips(wine: pd.DataFrame) -> None:
    cols = list(wine.columns)
    pre = Preprocessor([MinMax(cols, feature_range=(-1, 1))]).fit(wine)
    expected = MinMaxScaler(feature_range=(-1, 1)).fit(wine.to_numpy())
    np.testing.assert_allclose(pre.transform(wine)["x"], expected.transform(wine.to_numpy()), atol=1e-6)
    beyond = wine.head(2) * 100
    clipped = Preprocessor([MinMax(cols, clip=True)]).fit(wine).transform(beyond)["x"]
    assert clipped.min() >= 0.0 and clipped.max() == 1.0


def test_impute_strategies() -> None:
    table = pa.table({"a": [1.0, None, 2.0, 2.0, 10.0], "s": ["y", "x", None, "x", "y"]})
    assert Impute(["a"]).fit(table).statistics_ == (3.75,)
    assert Impute(["a"], strategy="median").fit(table).statistics_ == (2.0,)
    assert Impute(["a", "s"], strategy="most_frequent").fit(table).statistics_ == (
        2.0,
        "x",
    )  # tie -> smallest
    filled = Impute(["a", "s"], strategy="constant", fill_value=0).fit(table).transform(table)
    assert filled.column("a").to_pylist() == [1.0, 0.0, 2.0, 2.0, 10.0]
    assert filled.column("s").to_pylist() == ["y", "x", "0", "x", "y"]
    nan = pa.table({"a": np.array([1.0, np.nan, 3.0])})
    assert Impute(["a"]).fit(nan).transform(nan).column("a").to_pylist() == [1.0, 2.0, 3.0]


# -- the preprocessor ------------------------------------------------------------------------------


def test_preprocessor_records_schema_features_and_nullable_columns() -> None:
    pre = mixed_preprocessor().fit(mixed())
    assert [c.name for c in pre.schema_.features] == ["age", "visits", "city", "plan"]
    assert [c.name for c in pre.schema_.passthrough] == ["id"]
    assert {c.name for c in pre.schema_.columns if c.nullable} == {"age", "city", "plan"}
    assert pre.feature_names_ == (
        "age",
        "visits",
        "city=lima",
        "city=oslo",
        "city=paris",
        "plan=1",
        "plan=2",
        "plan=3",
    )
    assert pre.n_features_ == 8
    x = pre.transform(mixed())["x"]
    assert x.dtype == np.float32 and x.shape == (6, 8)
    assert x[2].tolist()[2:5] == [1.0, 0.0, 0.0]  # null city -> most frequent; tie 'lima'/'oslo' -> 'lima'


def test_explicit_features_and_input_name(wine: pd.DataFrame) -> None:
    pre = Preprocessor([Standardize(["hue"])], features=["hue", "proline"], input_name="features").fit(wine)
    out = pre.transform(wine)
    assert list(out) == ["features"] and out["features"].shape == (178, 2)
    assert pre.feature_names_ == ("hue", "proline")


def test_a_row_alone_gives_bit_identical_values_to_the_same_row_in_a_batch(diabetes: pd.DataFrame) -> None:
    cases = [
        (mixed_preprocessor(), mixed()),
        (
            Preprocessor([Standardize(list(diabetes.columns[:5])), MinMax(list(diabetes.columns[5:]))]),
            diabetes,
        ),
    ]
    for pre, data in cases:
        table = pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data
        batch = pre.fit(table).transform(table)["x"]
        for i in range(0, table.num_rows, max(1, table.num_rows // 25)):
            assert np.array_equal(pre.transform(table.slice(i, 1))["x"][0], batch[i])
        order = np.arange(table.num_rows)[::-1]
        assert np.array_equal(pre.transform(table.take(order))["x"], batch[order])


def test_validated_then_transformed_equals_transformed() -> None:
    pre = mixed_preprocessor().fit(mixed())
    validated = pre.schema_.validate(mixed())
    assert np.array_equal(pre.transform(validated.table)["x"], pre.transform(mixed())["x"])


# -- model inputs ----------------------------------------------------------------------------------


def routed() -> Preprocessor:
    steps = [Impute(["age"], strategy="median"), Standardize(["age"]), OneHot(["city"]),
             IndexEncode(["plan"], handle_unknown="reserved"), IndexEncode(["visits"], handle_unknown="reserved")]
    return Preprocessor(steps, passthrough=["id"], inputs={"codes": ["plan", "visits"], "dense": ["city", "age"]})


def test_inputs_route_columns_and_expanded_columns_into_named_arrays_in_order() -> None:
    pre = routed().fit(mixed())
    assert pre.inputs_ == {"codes": ("plan", "visits"), "dense": ("city=lima", "city=oslo", "city=paris",
                                                                  "city=null", "age")}
    assert pre.input_dtypes_ == {"codes": "int64", "dense": "float32"}
    out = pre.transform(mixed())
    assert list(out) == ["codes", "dense"]
    assert out["codes"].dtype == np.int64 and out["codes"].tolist() == [[1, 4], [2, 2], [1, 1], [3, 5], [2, 3],
                                                                        [2, 3]]
    assert out["dense"].dtype == np.float32 and out["dense"].shape == (6, 5)
    assert out["dense"][2, :4].tolist() == [0.0, 0.0, 0.0, 1.0]  # a missing city seen in training is a category
    assert {c.name for c in pre.schema_.columns if c.nullable} == {"age", "city", "plan", "visits"}


def test_an_input_mixing_codes_and_numbers_is_float32_and_codes_alone_are_int64_by_default() -> None:
    table = pa.table({"a": [1.0, 2.0], "c": ["u", "v"]})
    steps = [IndexEncode(["c"], handle_unknown="reserved")]
    mixed_input = Preprocessor(steps, inputs={"both": ["c", "a"]}).fit_transform(table)["both"]
    assert mixed_input.dtype == np.float32 and mixed_input.tolist() == [[1.0, 1.0], [2.0, 2.0]]
    alone = Preprocessor(steps, features=["c"]).fit_transform(table)
    assert list(alone) == ["x"] and alone["x"].dtype == np.int64 and alone["x"].tolist() == [[1], [2]]
    restandardized = Preprocessor([*steps, Standardize(["c"])], features=["c"]).fit_transform(table)["x"]
    assert restandardized.dtype == np.float32  # a later step turned the codes into numbers


def test_replaced_columns_are_traced_through_neighbours_and_later_steps() -> None:
    table = pa.table({"ab": ["x", "y"], "a": ["p", "q"], "n": [1.0, 2.0]})
    pre = Preprocessor([Impute(["ab"], strategy="most_frequent"), OneHot(["ab", "a"]), MinMax(["ab=x"])],
                       inputs={"first": ["a"], "second": ["ab", "n"]}).fit(table)
    assert pre.inputs_ == {"first": ("a=p", "a=q"), "second": ("ab=x", "ab=y", "n")}


def test_a_row_alone_gives_the_same_inputs_as_in_a_batch() -> None:
    pre = routed().fit(mixed())
    batch = pre.transform(mixed())
    for i in range(mixed().num_rows):
        alone = pre.transform(mixed().slice(i, 1))
        assert all(np.array_equal(alone[name][0], batch[name][i]) for name in batch)


def test_inputs_round_trip_and_bundles_written_before_inputs_existed_still_load() -> None:
    pre = routed()
    assert via_json(pre) == pre and via_json(pre).inputs == pre.inputs
    pre.fit(mixed())
    again = via_json(pre)
    assert again == pre and again.inputs_ == pre.inputs_ and again.input_dtypes_ == pre.input_dtypes_
    assert all(np.array_equal(again.transform(mixed())[k], v) for k, v in pre.transform(mixed()).items())
    old = mixed_preprocessor().fit(mixed()).to_dict()
    del old["inputs"], old["state"]["inputs"]
    loaded = Preprocessor.from_dict(old)
    assert loaded.inputs is None and loaded.input_dtypes_ == {"x": "float32"}
    assert loaded.transform(mixed())["x"].shape == (6, 8)


def test_inputs_that_do_not_cover_the_columns_or_name_unknown_ones() -> None:
    with pytest.raises(PreprocessingError, match=r"^column\(s\) 'visits' of the transformed data go to no model "
                                                 r"input; add them to inputs=\{\.\.\.\}, or leave them out of"):
        Preprocessor([OneHot(["city"], handle_unknown="ignore")], features=["city", "visits"],
                     inputs={"x": ["city"]}).fit(mixed())
    with pytest.raises(PreprocessingError, match=r"^inputs\['x'\]: 'cty' is not a column of the transformed data nor "
                                                 r"one a step replaced; the transformed columns are 'visits', 'city=l"):
        Preprocessor([OneHot(["city"])], features=["visits", "city"], inputs={"x": ["visits", "cty"]}).fit(mixed())
    with pytest.raises(PreprocessingError, match=r"^inputs\['x'\] holds 'city=lima' more than once"):
        Preprocessor([OneHot(["city"])], features=["city"], inputs={"x": ["city", "city=lima"]}).fit(mixed())


@pytest.mark.parametrize(("inputs", "message"), [
    ({}, r"inputs must map model input names to lists of columns, got \{\}"),
    ({"x": "age"}, r"inputs\['x'\] must be a non-empty list of column names, got 'age'"),
    ({"x": []}, r"inputs\['x'\] must be a non-empty list of column names, got \[\]"),
    ({"": ["age"]}, r"inputs: model input names must be non-empty strings, got ''"),
    ({"x": ["age", "age"]}, r"inputs\['x'\] names 'age' more than once"),
])
def test_bad_inputs(inputs: dict, message: str) -> None:
    with pytest.raises(PreprocessingError, match=message):
        Preprocessor(inputs=inputs)


def test_inputs_and_input_name_exclude_each_other() -> None:
    with pytest.raises(PreprocessingError, match=r"pass either input_name \('features'\) or inputs, not both"):
        Preprocessor(input_name="features", inputs={"x": ["a"]})


class EmbeddingRegressor(nn.Module):
    """An embedding table per categorical column, concatenated with the numeric features."""

    def __init__(self, cardinalities: tuple[int, ...], n_numbers: int, width: int = 3) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, width) for n in cardinalities)
        self.mlp = nn.Sequential(nn.Linear(width * len(cardinalities) + n_numbers, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, codes: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        parts = [embedding(codes[:, i]) for i, embedding in enumerate(self.embeddings)]
        return self.mlp(torch.cat([*parts, numbers], dim=1))


def test_an_embedding_model_saves_loads_and_predicts_through_the_bundle(tmp_path: Path) -> None:
    raw = load_diabetes(scaled=False, as_frame=True).frame
    rows = np.arange(len(raw))
    table = pa.table({
        "age": raw["age"].astype(int).to_numpy(),
        "sex": pa.array(np.where(raw["sex"] == 1, "f", "m"), pa.string(), mask=rows % 29 == 0),
        "s4": raw["s4"].to_numpy(),
        **{name: raw[name].to_numpy() for name in ("bmi", "bp", "s5")},
    })
    train, test = table.slice(0, 350), table.slice(350)
    categorical = ["age", "sex", "s4"]
    pre = Preprocessor([IndexEncode(categorical, handle_unknown="reserved", min_frequency=2),
                        Standardize(["bmi", "bp", "s5"])],
                       inputs={"codes": categorical, "numbers": ["bmi", "bp", "s5"]}).fit(train)
    target = raw["target"].to_numpy()
    head = Regression("progression", scale=True).fit(target[:350])
    model = EmbeddingRegressor(pre.steps[0].cardinality_, 3)
    inputs = {k: torch.from_numpy(v) for k, v in pre.transform(train).items()}
    y = torch.from_numpy(head.encode_target(target[:350])).reshape(-1, 1)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(*inputs.values()), y).backward()
        optimizer.step()
    model.eval()

    path = save(tmp_path / "embedding.tpk", model, preprocessor=pre, heads=head, examples=train, storage="export")
    predictor = load(path, device="cpu", verify=True)
    assert [(i["name"], i["dtype"], i["shape"]) for i in predictor.model_entry.to_dict()["inputs"]] == [
        ("codes", "int64", [3]), ("numbers", "float32", [3])]
    unseen = pre.transform(test)["codes"]
    assert (unseen == 0).any()  # ages, s4 values and missing sexes the model never saw
    got = predictor.predict(test).column("progression").to_numpy()
    with torch.no_grad():
        expected = head.interpret(model(*(torch.from_numpy(v) for v in pre.transform(test).values())))
    np.testing.assert_allclose(got, expected["progression"].to_numpy(), rtol=1e-5, atol=1e-4)
    assert np.corrcoef(got, target[350:])[0, 1] > 0.3  # it learned something

# -- JSON round trip -------------------------------------------------------------------------------


def test_steps_round_trip_fitted_and_unfitted() -> None:
    table = mixed()
    steps = [
        Standardize(["visits"], with_mean=False),
        MinMax(["visits"], feature_range=(-1, 2), clip=True),
        Impute(["age"], strategy="constant", fill_value=-1.5),
        Impute(["city"], strategy="most_frequent"),
        OneHot(["city", "plan"], handle_unknown="ignore"),
        OneHot(["city"], categories=[["paris", "oslo", "lima"]], handle_unknown="ignore"),
    ]
    for step in steps:
        assert via_json(step) == step and not via_json(step).fitted
        step.fit(table)
        again = via_json(step)
        assert again == step and again.fitted and again != type(step)(step.columns)
        assert step.transform(table).equals(again.transform(table))


def test_preprocessor_round_trip_fitted_and_unfitted() -> None:
    pre = mixed_preprocessor()
    assert via_json(pre) == pre
    pre.fit(mixed())
    again = via_json(pre)
    assert again == pre and again.schema_ == pre.schema_ and again.feature_names_ == pre.feature_names_
    assert np.array_equal(again.transform(mixed())["x"], pre.transform(mixed())["x"])


def test_step_types_come_only_from_the_registry() -> None:
    assert {"standardize", "minmax", "impute", "onehot", "indexencode"} <= set(STEP_TYPES)
    with pytest.raises(PreprocessingError, match=r"unknown preprocessing step type 'os:system'; known: "):
        Step.from_dict({"type": "os:system", "columns": ["a"], "params": {}, "state": None})


# -- errors ----------------------------------------------------------------------------------------


def test_unfitted_step_and_preprocessor_refuse_to_transform() -> None:
    message = r"^Standardize\(columns=\['age'\]\) is not fitted; call fit\(\.\.\.\) on training data first$"
    with pytest.raises(PreprocessingError, match=message):
        Standardize(["age"]).transform(mixed())
    with pytest.raises(
        PreprocessingError, match=r"OneHot\(columns=\['c'\], handle_unknown='ignore'\) is not"
    ):
        OneHot("c", handle_unknown="ignore").transform(mixed())
    with pytest.raises(
        PreprocessingError, match=r"^Preprocessor is not fitted; call fit\(\.\.\.\) on training"
    ):
        mixed_preprocessor().transform(mixed())
    with pytest.raises(PreprocessingError, match=r"^Preprocessor is not fitted"):
        _ = mixed_preprocessor().n_features_


def test_unknown_category_names_column_value_row_and_known_categories() -> None:
    pre = mixed_preprocessor().fit(mixed())
    data = {"age": [30.0] * 3, "visits": [1] * 3, "city": ["oslo", "lima", "rome"], "plan": [1] * 3}
    message = (
        r"column 'city': unknown category 'rome' at row 2 \(1 row\(s\) unknown\); "
        r"known categories: 'lima', 'oslo', 'paris'"
    )
    with pytest.raises(PreprocessingError, match=message):
        pre.transform(data)


def test_string_column_without_an_encoder() -> None:
    with pytest.raises(
        PreprocessingError,
        match=r"column 'city' holds strings and no step encodes it; add OneHot\(\['city'\]\) or IndexEncode",
    ):
        Preprocessor([Impute(["city"], strategy="most_frequent")], features=["visits", "city"]).fit(mixed())


def test_missing_training_values_without_a_step_for_them() -> None:
    with pytest.raises(
        PreprocessingError, match=r"column 'age' has 1 missing value\(s\) .*; add Impute\(\['age'\]\)$"
    ):
        Preprocessor(features=["age"]).fit(mixed())
    fix = r"add Impute\(\['city'\], strategy='most_frequent'\), OneHot\(\['city'\]\) or IndexEncode\(\['city'\], "
    with pytest.raises(PreprocessingError, match=fix + r"handle_unknown='reserved'\)$"):
        Preprocessor([Standardize(["age"])], features=["city"]).fit(mixed())
    with pytest.raises(PreprocessingError, match=r"IndexEncode\(columns=\['city'\]\): column 'city' has missing"):
        Preprocessor([IndexEncode(["city"])], features=["city"]).fit(mixed())


def test_transform_with_missing_columns() -> None:
    pre = Preprocessor([Standardize(["visits"])], features=["visits", "plan"]).fit(mixed())
    with pytest.raises(
        PreprocessingError, match=r"missing column\(s\) 'plan'; check inputs with schema_.validate"
    ):
        pre.transform({"visits": [1]})


def test_step_on_a_column_not_in_the_data_or_of_the_wrong_kind() -> None:
    with pytest.raises(
        PreprocessingError, match=r"Standardize\(columns=\['nope'\]\): column 'nope' is not in the data"
    ):
        Standardize(["nope"]).fit(mixed())
    with pytest.raises(
        PreprocessingError, match=r"column 'city' holds string values, not numbers; encode it with OneHot"
    ):
        MinMax(["city"]).fit(mixed())
    with pytest.raises(
        PreprocessingError, match=r"column 'city' is not numeric; use strategy='most_frequent'"
    ):
        Impute(["city"], strategy="median").fit(mixed())
    with pytest.raises(PreprocessingError, match=r"fill_value 'x' is a string but column 'age' is numeric"):
        Impute(["age"], strategy="constant", fill_value="x").fit(mixed())


def test_nothing_to_fit_on() -> None:
    empty = pa.table({"a": pa.array([None, None], pa.float64()), "s": pa.array([None, None], pa.string())})
    for step in (
        Standardize(["a"]),
        MinMax(["a"]),
        Impute(["a"]),
        Impute(["s"], strategy="most_frequent"),
        OneHot(["s"]),
    ):
        with pytest.raises(PreprocessingError, match=r"column '[as]' has no non-missing values to fit on"):
            step.fit(empty)


def test_non_scalar_columns_cannot_become_model_input() -> None:
    with pytest.raises(PreprocessingError, match=r"column 'v' holds fixed_size_list.* one number per column"):
        Preprocessor().fit({"v": np.ones((3, 2))})


def test_bad_parameters() -> None:
    with pytest.raises(PreprocessingError, match=r"Standardize needs at least one column"):
        Standardize([])
    with pytest.raises(
        PreprocessingError, match=r"MinMax feature_range must have low < high, got \(1.0, 0.0\)"
    ):
        MinMax(["a"], feature_range=(1, 0))
    with pytest.raises(PreprocessingError, match=r"Impute strategy must be one of 'mean', .* got 'mode'"):
        Impute(["a"], strategy="mode")
    with pytest.raises(PreprocessingError, match=r"Impute\(strategy='constant'\) needs a fill_value"):
        Impute(["a"], strategy="constant")


# --- text: token ids as model inputs -------------------------------------------------------------------------


def test_a_text_column_becomes_an_int64_input_of_token_ids() -> None:
    from torchpredict.preprocessing import TextEncode

    table = pa.table({"text": ["abc", "ba"], "x": [1.0, 2.0]})
    pre = Preprocessor([TextEncode(["text"], max_length=4)], inputs={"src": ["text"], "x": ["x"]}).fit(table)
    out = pre.transform(table)
    assert pre.input_dtypes_ == {"src": "int64", "x": "float32"}
    assert out["src"].dtype == np.int64 and out["src"].tolist() == [[4, 5, 6, 2], [5, 4, 2, 0]]
    assert out["src"].flags.writeable  # torch.from_numpy warns about read-only arrays
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert np.array_equal(again.transform(table.slice(1))["src"], out["src"][1:])


def test_text_lengths_are_opt_in_and_routed_like_any_column() -> None:
    from torchpredict.preprocessing import TextEncode

    table = pa.table({"text": ["abc", "ba"]})
    pre = Preprocessor([TextEncode(["text"], max_length=4, lengths=True)],
                       inputs={"src": ["text"], "lengths": ["text_length"]}).fit(table)
    assert pre.transform(table)["lengths"].tolist() == [[4.0], [3.0]]
    with pytest.raises(PreprocessingError, match=r"column\(s\) 'text_length' of the transformed data go to no model"):
        Preprocessor([TextEncode(["text"], max_length=4, lengths=True)], inputs={"src": ["text"]}).fit(table)


def test_token_ids_do_not_mix_with_other_columns_in_one_input() -> None:
    from torchpredict.preprocessing import TextEncode

    table = pa.table({"text": ["abc"], "x": [1.0]})
    with pytest.raises(PreprocessingError, match=r"inputs\['src'\] mixes token-id column\(s\) 'text' with other "
                                                 r"columns \('x'\); give each token-id column a model input"):
        Preprocessor([TextEncode(["text"], max_length=4)], inputs={"src": ["text", "x"]}).fit(table)
    with pytest.raises(PreprocessingError, match=r"inputs\['src'\] mixes token-id column\(s\) 'a', 'b'"):
        Preprocessor([TextEncode(["a", "b"], max_length=4)], inputs={"src": ["a", "b"]}).fit({"a": ["x"], "b": ["y"]})


def test_text_that_may_be_missing_is_nullable_in_the_schema() -> None:
    from torchpredict.preprocessing import TextEncode
    from torchpredict.preprocessing.text import TextCounts

    table = pa.table({"text": ["ab", None]})
    pre = Preprocessor([TextEncode(["text"], max_length=3, nulls="empty")]).fit(table)
    assert pre.schema_.features[0].nullable
    counts = TextCounts()
    assert pre.transform({"text": [None, "abz"]}, counts=counts)["x"].tolist() == [[2, 0, 0], [4, 5, 2]]
    assert (counts.truncated, counts.unknown) == ({"text": 1}, {"text": 0})
    with pytest.raises(PreprocessingError, match="column 'text' has 1 missing value.*add nulls='empty' to its "
                                                 "TextEncode step"):
        Preprocessor([TextEncode(["text"], max_length=3)]).fit(table)


def test_importing_preprocessing_registers_the_text_step() -> None:
    import subprocess
    import sys

    code = "import torchpredict.preprocessing as p; print('text_encode' in p.STEP_TYPES)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr


def test_check_rows_reports_categories_an_encoder_refuses_in_columns_as_they_arrive() -> None:
    steps = [OneHot(["city"]), IndexEncode(["plan"]), Standardize(["age"])]
    pre = Preprocessor(steps, passthrough=["id"]).fit(mixed().drop_null())
    table = pa.table({"age": [34.0, 99.0], "visits": pa.array([1, 2], pa.int64()), "city": ["rome", "oslo"],
                      "plan": pa.array([2, 9], pa.int32())})
    reports = []
    pre.check_rows(table, lambda rows, reasons, message: reports.append(
        (rows.tolist(), reasons(rows), message(int(rows[0])))))
    assert reports == [
        ([0], ["column 'city': unknown category 'rome'"],
         "column 'city': unknown category 'rome' at row 0 (1 row(s) unknown); known categories: 'lima', 'oslo', "
         "'paris'; use OneHot(..., handle_unknown='ignore') to encode unknowns as all zeros"),
        ([1], ["column 'plan': unknown category 9"],
         "column 'plan': unknown category 9 at row 1 (1 row(s) unknown); known categories: '1', '2', '3'; "
         "use IndexEncode(..., handle_unknown='reserved') to encode unknowns as 0"),
    ]


def test_check_rows_sees_a_column_as_the_steps_before_the_encoder_left_it() -> None:
    # scikit-learn's usual SimpleImputer(most_frequent) -> OneHotEncoder(): the imputed nulls are known
    pre = Preprocessor([Impute(["city"], strategy="most_frequent"), OneHot(["city"]), OneHot(["plan"])],
                       passthrough=["id"]).fit(mixed().drop_null())
    table = pa.table({"age": [1.0] * 4, "visits": pa.array([1] * 4, pa.int64()),
                      "city": [None, "rome", "oslo", "nice"], "plan": pa.array([9, 1, 2, 3], pa.int32())})
    reports = []
    pre.check_rows(table, lambda rows, reasons, message: reports.append((rows.tolist(), reasons(rows))))
    assert reports == [([1, 3], ["column 'city': unknown category 'rome'", "column 'city': unknown category 'nice'"]),
                       ([0], ["column 'plan': unknown category 9"])]
    with pytest.raises(PreprocessingError, match="unknown category 'rome'"):
        pre.transform(table)


# -- Copy: one input column feeding several steps ----------------------------------------------------


def test_a_copied_column_feeds_two_steps_and_stays_one_input_column(wine: pd.DataFrame) -> None:
    pre = Preprocessor([Copy(["alcohol"], names=["alcohol_range"]), Standardize(["alcohol"]),
                        MinMax(["alcohol_range"])], features=["alcohol", "hue"]).fit(wine)
    assert [c.name for c in pre.schema_.features] == ["alcohol", "hue"]
    assert pre.schema_.columns[0].stats.max == wine["alcohol"].max()
    assert pre.inputs_ == {"x": ("alcohol", "alcohol_range", "hue")}
    expected = np.column_stack([StandardScaler().fit_transform(wine[["alcohol"]]),
                                MinMaxScaler().fit_transform(wine[["alcohol"]]), wine["hue"]])
    np.testing.assert_allclose(pre.transform(wine)["x"], expected, rtol=1e-6, atol=1e-6)
    assert Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre


def test_a_copied_column_with_missing_values_needs_every_copy_handled() -> None:
    copy = Copy(["age"], names=["age_2"])
    with pytest.raises(PreprocessingError, match=r"^column 'age' has 1 missing value\(s\) in the training data and "
                                                 r"no step handles them; add Impute\(\['age'\]\)$"):
        Preprocessor([copy, Impute(["age"]), Standardize(["age_2"]), OneHot(["city"])], passthrough=["id"]).fit(mixed())
    for steps in ([copy, Impute(["age", "age_2"])], [Impute(["age"]), copy, Standardize(["age_2"])]):
        pre = Preprocessor([*steps, OneHot(["city"])], passthrough=["id"]).fit(mixed())
        assert {c.name: c.nullable for c in pre.schema_.columns}["age"]
        assert not np.isnan(pre.transform(mixed())["x"]).any()


def test_check_rows_follows_a_copy_and_names_the_column_copied() -> None:
    # the refusing encoder reads a copy of the imputed column: the imputing and the copying run first
    steps = [Impute(["age", "city"], strategy="most_frequent"), Copy(["city"], names=["city_strict"]),
             OneHot(["city"], handle_unknown="ignore"), OneHot(["city_strict"])]
    pre = Preprocessor(steps, passthrough=["id"]).fit(mixed())
    table = pa.table({"age": [1.0] * 4, "visits": pa.array([1] * 4, pa.int64()),
                      "city": [None, "rome", "oslo", "nice"], "plan": pa.array([1] * 4, pa.int32())})
    reports = []
    pre.check_rows(table, lambda rows, reasons, message: reports.append(
        (rows.tolist(), reasons(rows), message(int(rows[0])))))
    assert [(rows, reasons) for rows, reasons, _ in reports] == [
        ([1, 3], ["column 'city': unknown category 'rome'", "column 'city': unknown category 'nice'"])]
    assert reports[0][2].startswith("column 'city': unknown category 'rome' at row 1 (2 row(s) unknown)")


def test_a_copy_of_codes_holds_codes() -> None:
    pre = Preprocessor([IndexEncode(["plan"], handle_unknown="reserved"), Copy(["plan"], names=["plan_2"]),
                        Impute(["age"]), OneHot(["city"], handle_unknown="ignore")],
                       passthrough=["id"], inputs={"codes": ["plan", "plan_2"], "x": ["age", "visits", "city"]})
    out = pre.fit_transform(mixed())
    assert pre.input_dtypes_ == {"codes": "int64", "x": "float32"}
    assert out["codes"].tolist() == [[1, 1], [2, 2], [1, 1], [3, 3], [2, 2], [2, 2]]


def test_a_model_input_left_without_columns_is_refused_at_fit() -> None:
    pre = Preprocessor([OneHot(["c"], drop="first")])
    with pytest.raises(PreprocessingError, match=r"^model input 'x' gets no columns from the steps \(for example"):
        pre.fit(pa.table({"c": ["a", "a", "a"]}))
