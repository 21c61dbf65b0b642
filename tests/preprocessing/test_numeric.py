"""Numeric steps: scikit-learn parity on real data with missing values, constant columns, JSON, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pytest
from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from sklearn_data import PARITY, Data, datasets, same, transformed, via_json
from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing import Preprocessor
from torchpredict.preprocessing.numeric import Clip, Log1p, MaxAbs, MinMax, Robust, Standardize
from torchpredict.preprocessing.steps import Step


def assert_parity(step: Step, reference: object, data: Data) -> None:
    """Fit both on the training rows; both must agree on the training rows and on unseen, shifted rows."""
    step.fit(data.table(data.train))
    reference.fit(data.train)  # type: ignore[attr-defined]
    for x in (data.train, data.test):
        np.testing.assert_allclose(transformed(step, data, x), reference.transform(x), **PARITY)  # type: ignore[attr-defined]


def or_neutral(values: np.ndarray | None, data: Data, neutral: float) -> np.ndarray:
    """sklearn's state for a disabled option is None; ours is the neutral value for each column."""
    return np.full(len(data.columns), neutral) if values is None else values


# -- scikit-learn parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_mean", [True, False])
@pytest.mark.parametrize("with_std", [True, False])
def test_standardize_matches_standard_scaler(with_mean: bool, with_std: bool) -> None:
    for data in datasets(missing=0.05):
        step = Standardize(data.columns, with_mean=with_mean, with_std=with_std)
        reference = StandardScaler(with_mean=with_mean, with_std=with_std)
        assert_parity(step, reference, data)
        if with_mean:
            np.testing.assert_allclose(step.mean_, reference.mean_, **PARITY)
        if with_std:
            np.testing.assert_allclose(step.scale_, reference.scale_, **PARITY)


@pytest.mark.parametrize("feature_range", [(0.0, 1.0), (-1.0, 1.0), (-3.0, 0.5)])
@pytest.mark.parametrize("clip", [False, True])
def test_minmax_matches_minmax_scaler(feature_range: tuple[float, float], clip: bool) -> None:
    for data in datasets(missing=0.05):
        step = MinMax(data.columns, feature_range=feature_range, clip=clip)
        reference = MinMaxScaler(feature_range=feature_range, clip=clip)
        assert_parity(step, reference, data)
        np.testing.assert_array_equal(step.data_min_, reference.data_min_)
        np.testing.assert_array_equal(step.data_max_, reference.data_max_)


@pytest.mark.parametrize("with_centering", [True, False])
@pytest.mark.parametrize("with_scaling", [True, False])
@pytest.mark.parametrize(
    ("quantile_range", "unit_variance"),
    [((25.0, 75.0), False), ((25.0, 75.0), True), ((10.0, 90.0), False), ((5.0, 60.0), True), ((0.0, 100.0), False)],
)
def test_robust_matches_robust_scaler(
    with_centering: bool, with_scaling: bool, quantile_range: tuple[float, float], unit_variance: bool
) -> None:
    options = {"with_centering": with_centering, "with_scaling": with_scaling, "quantile_range": quantile_range}
    for data in datasets(missing=0.05):
        step = Robust(data.columns, unit_variance=unit_variance, **options)
        reference = RobustScaler(unit_variance=unit_variance, **options)
        assert_parity(step, reference, data)
        np.testing.assert_allclose(step.center_, or_neutral(reference.center_, data, 0.0), **PARITY)
        np.testing.assert_allclose(step.scale_, or_neutral(reference.scale_, data, 1.0), **PARITY)


def test_maxabs_matches_maxabs_scaler() -> None:
    for data in datasets(missing=0.05):
        step, reference = MaxAbs(data.columns), MaxAbsScaler()
        assert_parity(step, reference, data)
        np.testing.assert_array_equal(step.scale_, reference.scale_)


def test_log1p_matches_function_transformer() -> None:
    for data in datasets(missing=0.05):
        assert_parity(Log1p(data.columns), FunctionTransformer(np.log1p), data)


@pytest.mark.parametrize(("lower", "upper"), [(None, 0.02), (0.0, None), (-0.01, 0.01)])
def test_clip_matches_numpy_clip(lower: float | None, upper: float | None) -> None:
    for data in datasets(missing=0.05):
        assert_parity(
            Clip(data.columns, lower=lower, upper=upper),
            FunctionTransformer(np.clip, kw_args={"a_min": lower, "a_max": upper}),
            data,
        )


def test_constant_and_near_constant_columns_follow_scikit_learns_rule() -> None:
    """A scale that is rounding noise becomes 1, as in sklearn, instead of blowing the column up."""
    x = np.column_stack(
        [
            np.full(100, 0.1),  # its variance is ~1e-34, not 0: rounding noise
            1.0 + np.arange(100) % 2 * 2.0**-52,  # a range of one ulp
            np.r_[np.zeros(50), np.full(50, 3.0)],  # median 1.5, quantiles 0 and 3
            np.r_[np.full(90, 7.0), np.arange(10.0)],  # interquartile range 0
            np.zeros(100),
        ]
    )
    x[::17, 0] = np.nan
    data = Data("constant", ("a", "b", "c", "d", "e"), x, x[::-1] * 3.0)
    for step, reference in [
        (Standardize(data.columns), StandardScaler()),
        (MinMax(data.columns), MinMaxScaler()),
        (Robust(data.columns), RobustScaler()),
        (Robust(data.columns, unit_variance=True), RobustScaler(unit_variance=True)),
        (MaxAbs(data.columns), MaxAbsScaler()),
    ]:
        assert_parity(step, reference, data)
    assert Standardize(["a"]).fit(data.table(x)).scale_ == (1.0,)


def test_constant_columns_scale_to_fixed_values_missing_values_or_not() -> None:
    """The rule, stated without sklearn's noise: a constant column keeps scale 1; centred steps give exactly 0
    (MinMax the low end of its range), MaxAbs gives the sign, and missing values stay missing."""
    x = np.column_stack([np.full(6, 0.1), np.r_[np.nan, np.full(5, -2.5)], np.r_[np.full(5, 7.0), np.nan]])
    data = Data("constant", ("a", "b", "c"), x, x)
    missing = np.isnan(x)
    expected = [
        (Standardize(data.columns), 0.0),
        (Robust(data.columns), 0.0),
        (Robust(data.columns, unit_variance=True), 0.0),
        (MinMax(data.columns, feature_range=(-1.0, 1.0)), -1.0),
        (MaxAbs(data.columns), np.sign(x)),
    ]
    for step, value in expected:
        out = transformed(step.fit(data.table(x)), data, x)
        assert np.array_equal(out, np.where(missing, np.nan, value), equal_nan=True), (step, out)
    step = Standardize(data.columns).fit(data.table(x))
    assert step.mean_ == (0.1, -2.5, 7.0) and step.scale_ == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(transformed(step, data, np.array([[1.1, -1.5, 9.0]])), [[1.0, 1.0, 2.0]])


# -- in the preprocessor ---------------------------------------------------------------------------


def numeric_preprocessor(data: Data) -> Preprocessor:
    a, b, c, d, e = (list(data.columns[i::5]) for i in range(5))
    steps = [
        Robust(a, quantile_range=(10, 90)),
        MaxAbs(b),
        Log1p(c),
        Clip(c, upper=2.0),
        MinMax(d, clip=True),
        Standardize(e),
    ]
    return Preprocessor(steps)


def test_a_row_alone_gives_bit_identical_values_to_the_same_row_in_a_batch() -> None:
    for data in datasets():
        pre = numeric_preprocessor(data).fit(data.table(data.train))
        table = data.table(data.test)
        batch = pre.transform(table)["x"]
        assert batch.dtype == np.float32 and batch.shape == data.test.shape
        for i in range(0, table.num_rows, 37):
            assert np.array_equal(pre.transform(table.slice(i, 1))["x"][0], batch[i])


def test_preprocessor_round_trip_with_every_numeric_step() -> None:
    data = datasets()[1]
    pre = numeric_preprocessor(data).fit(data.table(data.train))
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict(), allow_nan=False)))
    assert again == pre
    assert np.array_equal(again.transform(data.table(data.test))["x"], pre.transform(data.table(data.test))["x"])


# -- JSON round trip -------------------------------------------------------------------------------


NUMERIC_STEPS = [
    lambda: Standardize(["a", "b"], with_mean=False),
    lambda: MinMax(["a"], feature_range=(-2, 2), clip=True),
    lambda: Robust(["a", "b"], with_centering=False, quantile_range=(10, 90), unit_variance=True),
    lambda: MaxAbs(["b"]),
    lambda: Log1p(["a", "b"]),
    lambda: Clip(["a"], lower=-1.5),
    lambda: Clip(["a", "b"], lower=0, upper=3),
]


@pytest.mark.parametrize("make", NUMERIC_STEPS)
def test_steps_round_trip_fitted_and_unfitted(make) -> None:
    table = pa.table({"a": [1.0, None, 4.0, -0.5], "b": pa.array([3, 1, 0, 7], pa.int64())})
    step = make()
    assert via_json(step) == step
    step.fit(table)
    again = via_json(step)
    assert again == step and again.fitted
    assert same(step.transform(table), again.transform(table))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Robust(["age"]), r"^Robust\(columns=\['age'\]\) is not fitted; call fit\(\.\.\.\) on training data"),
        (lambda: MaxAbs(["age"]), r"^MaxAbs\(columns=\['age'\]\) is not fitted"),
    ],
)
def test_unfitted_steps_refuse_to_transform(make, message: str) -> None:
    with pytest.raises(PreprocessingError, match=message):
        make().transform(pa.table({"age": [1.0]}))


def test_steps_that_learn_nothing_are_fitted_from_the_start() -> None:
    table = pa.table({"a": [0.0, 3.0]})
    assert Log1p(["a"]).fitted and Clip(["a"], upper=1).fitted
    assert Clip(["a"], upper=1).transform(table).column("a").to_pylist() == [0.0, 1.0]


# -- errors ----------------------------------------------------------------------------------------


def test_log1p_names_the_first_value_at_or_below_minus_one() -> None:
    table = pa.table({"x": [0.5, -2.0, np.nan, -1.0]})
    message = (
        r"^Log1p\(columns=\['x'\]\): column 'x': expected values > -1, got -2.0 at row 1 \(2 such row\(s\)\); "
        r"clip or shift the column first$"
    )
    with pytest.raises(PreprocessingError, match=message):
        Log1p(["x"]).transform(table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # missing values pass through quietly
        assert np.isnan(Log1p(["x"]).transform(pa.table({"x": [np.nan]})).column("x")[0].as_py())


def test_infinite_training_values_are_refused() -> None:
    table = pa.table({"x": [1.0, np.inf, -np.inf]})
    for step in (Standardize(["x"]), MinMax(["x"]), Robust(["x"]), MaxAbs(["x"])):
        with pytest.raises(PreprocessingError, match=r"column 'x': expected finite numbers, got inf at row 1 \(2 such"):
            step.fit(table)


def test_nothing_to_fit_on_and_strings() -> None:
    empty = pa.table({"a": pa.array([None, np.nan], pa.float64()), "s": ["x", "y"]})
    for step in (Robust(["a"]), MaxAbs(["a"])):
        with pytest.raises(PreprocessingError, match=r"column 'a' has no non-missing values to fit on"):
            step.fit(empty)
        with pytest.raises(PreprocessingError, match=r"column 's' holds string values, not numbers; encode it"):
            type(step)(["s"]).fit(empty)


def test_bad_parameters() -> None:
    with pytest.raises(
        PreprocessingError, match=r"^Robust quantile_range must satisfy 0 <= q_min < q_max <= 100, got \(80, 20\)$"
    ):
        Robust(["a"], quantile_range=(80, 20))
    for bad in [(-1, 50), (50, 50), (0, 101)]:
        with pytest.raises(PreprocessingError, match=r"quantile_range must satisfy"):
            Robust(["a"], quantile_range=bad)
    with pytest.raises(
        PreprocessingError, match=r"unit_variance=True\) needs 0 < q_min < q_max < 100 .* got \(0, 100\)"
    ):
        Robust(["a"], quantile_range=(0, 100), unit_variance=True)
    with pytest.raises(PreprocessingError, match=r"^Clip needs a lower or an upper bound \(or both\), got neither$"):
        Clip(["a"])
    with pytest.raises(PreprocessingError, match=r"^Clip needs lower <= upper, got lower=2, upper=1$"):
        Clip(["a"], lower=2, upper=1)
    with pytest.raises(PreprocessingError, match=r"^MinMax feature_range must have low < high, got \(1.0, 0.0\)$"):
        MinMax(["a"], feature_range=(1, 0))
    with pytest.raises(PreprocessingError, match=r"^MaxAbs needs at least one column$"):
        MaxAbs([])


def test_clip_refuses_a_nan_bound_which_would_make_every_value_nan():
    with pytest.raises(PreprocessingError, match=r"Clip bounds must be numbers or None, got lower=nan, upper=None"):
        Clip(["a"], lower=float("nan"))
