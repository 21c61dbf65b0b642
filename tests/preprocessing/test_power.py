"""Power: the same exponents as scikit-learn's PowerTransformer (hence SciPy's optimizers), errors, JSON."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from sklearn.preprocessing import PowerTransformer

from sklearn_data import PARITY, Data, datasets, same, transformed, via_json
from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.power import Power


def positive(data: Data) -> Data:
    """The data shifted so that every column is > 0 (Box-Cox's domain), the test rows by the same amount."""
    shift = 1.0 - np.nanmin(data.train, axis=0)
    test = np.maximum(data.test + shift, 1e-3)
    return Data(data.name, data.columns, data.train + shift, test)


def same_maximum(step: Power, reference: PowerTransformer, train: np.ndarray) -> None:
    """Both exponents maximise the same likelihood, to what the optimisers and the likelihood's rounding allow.

    Near its maximum the log-likelihood is flat: L(l) ~ L* - c (l - l*)**2 / 2, so two implementations whose
    L differ only in rounding (~1e-16 |L|: SciPy 1.17 rewrote `yeojohnson_llf`) find maxima up to
    sqrt(2e-16 |L| / c) apart, plus Brent's xtol of 1.48e-8 each. For these columns that is up to ~2e-6 in
    the exponent (7e-8 relative, seen at lambda -26.6), so the exponents are compared at rtol 1e-6 and what
    is really claimed, the same maximum, is checked on SciPy's own likelihood to 1e-10 of its value.
    """
    llf = stats.yeojohnson_llf if step.params["method"] == "yeo-johnson" else stats.boxcox_llf
    np.testing.assert_allclose(step.lambdas_, reference.lambdas_, rtol=1e-6)
    for j, (ours, theirs) in enumerate(zip(step.lambdas_, reference.lambdas_, strict=True)):
        column = train[:, j][~np.isnan(train[:, j])]
        np.testing.assert_allclose(llf(ours, column), llf(theirs, column), rtol=1e-10)


@pytest.mark.parametrize("method", ["yeo-johnson", "box-cox"])
def test_power_matches_power_transformer(method: str) -> None:
    for data in datasets(missing=0.05):
        data = positive(data) if method == "box-cox" else data
        reference = PowerTransformer(method=method).fit(data.train)
        for standardize in (True, False):
            step = Power(data.columns, method=method, standardize=standardize).fit(data.table(data.train))
            reference.standardize = standardize  # sklearn's exponents do not depend on it: one (slow) fit serves both
            same_maximum(step, reference, data.train)
            for x in (data.train, data.test):
                np.testing.assert_allclose(transformed(step, data, x), reference.transform(x), **PARITY)
        np.testing.assert_allclose(step.mean_, np.zeros(len(data.columns)))
        np.testing.assert_allclose(step.scale_, np.ones(len(data.columns)))
        step = Power(data.columns, method=method).fit(data.table(data.train))
        np.testing.assert_allclose(step.mean_, reference._scaler.mean_, **PARITY)
        np.testing.assert_allclose(step.scale_, reference._scaler.scale_, **PARITY)


def test_exponents_beyond_the_initial_bracket_and_near_the_edges() -> None:
    """Columns that need exponents far from 1: Box-Cox's bracket search has to leave (-2, 2)."""
    rng = np.random.default_rng(1)
    z = rng.normal(10, 1, size=300)
    x = np.column_stack([z**0.2, z**-0.2, np.exp(rng.normal(size=300)) ** 4, rng.normal(size=300) ** 3])
    x = np.column_stack([x, np.r_[np.zeros(299), 1.0], np.round(rng.normal(size=300), 1)])
    data = Data("skewed", tuple("abcdef"), x, x[::-1] * 1.1)
    for method, columns in (("box-cox", "abc"), ("yeo-johnson", "abcdef")):
        index = ["abcdef".index(c) for c in columns]
        step = Power(list(columns), method=method).fit(data.table(x))
        reference = PowerTransformer(method=method).fit(x[:, index])
        same_maximum(step, reference, x[:, index])
        for rows in (x, data.test):
            np.testing.assert_allclose(
                transformed(step, data, rows, list(columns)), reference.transform(rows[:, index]), **PARITY
            )
        if method == "box-cox":
            assert max(step.lambdas_) > 2 and min(step.lambdas_) < -2


def test_constant_columns_are_kept_as_they_are_by_yeo_johnson() -> None:
    """Lambda 1 and output 0 for a constant column, missing values or not (sklearn optimises "b": noise)."""
    x = np.column_stack([np.full(50, 3.0), np.r_[np.full(49, -2.0), np.nan], np.r_[np.nan, np.full(49, 0.1)]])
    data = Data("constant", ("a", "b", "c"), x, x)
    step = Power(["a", "b", "c"]).fit(data.table(x))
    assert step.lambdas_ == (1.0, 1.0, 1.0) and step.scale_ == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(step.mean_, (3.0, -2.0, 0.1))  # lambda 1 is the identity up to rounding
    assert np.array_equal(transformed(step, data, x), np.where(np.isnan(x), np.nan, 0.0), equal_nan=True)
    np.testing.assert_allclose(transformed(step, data, np.array([[4.0, -1.0, 0.3]])), [[1.0, 1.0, 0.2]])
    reference = PowerTransformer().fit(x[:, :1])  # where sklearn treats the column as constant, the same values
    np.testing.assert_allclose(transformed(step, data, x)[:, :1], reference.transform(x[:, :1]), **PARITY)


def test_a_row_alone_gives_bit_identical_values_to_the_same_row_in_a_batch() -> None:
    data = positive(datasets(missing=0.05)[2])
    for method in Power.methods:
        step = Power(data.columns, method=method).fit(data.table(data.train))
        table = data.table(data.test)
        batch = transformed(step, data, data.test)
        for i in range(0, table.num_rows, 7):
            row = step.transform(table.slice(i, 1))
            assert np.array_equal(np.array([row.column(c)[0].as_py() for c in data.columns]), batch[i], equal_nan=True)


@pytest.mark.parametrize("method", Power.methods)
@pytest.mark.parametrize("standardize", [True, False])
def test_round_trip_fitted_and_unfitted(method: str, standardize: bool) -> None:
    table = pa.table({"a": [1.0, None, 4.0, 0.5, 9.0], "b": pa.array([3, 1, 2, 7, 40], pa.int64())})
    step = Power(["a", "b"], method=method, standardize=standardize)
    assert via_json(step) == step and not via_json(step).fitted
    step.fit(table)
    again = via_json(step)
    assert again == step and again.fitted and same(again.transform(table), step.transform(table))


# -- errors ----------------------------------------------------------------------------------------


def test_box_cox_names_the_first_value_that_is_not_positive() -> None:
    message = (
        r"^Power\(columns=\['x'\], method='box-cox'\): column 'x': expected values > 0 for Box-Cox, got 0.0 at "
        r"row 2 \(2 such row\(s\)\); use method='yeo-johnson' or shift the column$"
    )
    with pytest.raises(PreprocessingError, match=message):
        Power(["x"], method="box-cox").fit(pa.table({"x": [1.0, None, 0.0, -3.0, 2.0]}))
    step = Power(["x"], method="box-cox").fit(pa.table({"x": [1.0, 2.0, 5.0]}))
    with pytest.raises(PreprocessingError, match=r"column 'x': expected values > 0 for Box-Cox, got -1.5 at row 1 \(1"):
        step.transform(pa.table({"x": [1.0, -1.5, np.nan]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(step.transform(pa.table({"x": [np.nan]})).column("x")[0].as_py())


def test_box_cox_of_a_constant_column() -> None:
    with pytest.raises(
        PreprocessingError, match=r"column 'x' is constant \(2\); Box-Cox needs at least two distinct values"
    ):
        Power(["x"], method="box-cox").fit(pa.table({"x": [2.0, 2.0, None]}))


def test_unfitted_missing_and_infinite_values() -> None:
    with pytest.raises(PreprocessingError, match=r"^Power\(columns=\['x'\]\) is not fitted; call fit"):
        Power(["x"]).transform(pa.table({"x": [1.0]}))
    with pytest.raises(PreprocessingError, match=r"column 'x' has no non-missing values to fit on"):
        Power(["x"]).fit(pa.table({"x": pa.array([None], pa.float64())}))
    with pytest.raises(PreprocessingError, match=r"column 'x': expected finite numbers, got inf at row 1"):
        Power(["x"]).fit(pa.table({"x": [1.0, np.inf]}))


def test_bad_parameters() -> None:
    with pytest.raises(PreprocessingError, match=r"^Power method must be 'yeo-johnson' or 'box-cox', got 'log'$"):
        Power(["x"], method="log")
