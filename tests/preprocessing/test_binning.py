"""Bucketize: the bin edges and bin numbers of scikit-learn's KBinsDiscretizer, one-hot names, errors, JSON."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest
from sklearn.preprocessing import KBinsDiscretizer
from threadpoolctl import threadpool_limits

from sklearn_data import Data, datasets, same, transformed, via_json
from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing import Preprocessor
from torchpredict.preprocessing.binning import QUANTILE_METHODS, Bucketize


def kbins(**options) -> KBinsDiscretizer:
    return KBinsDiscretizer(subsample=None, **options)


def assert_same_bins(step: Bucketize, reference: KBinsDiscretizer, data: Data) -> None:
    for ours, theirs in zip(step.bin_edges_, reference.bin_edges_, strict=True):
        if np.isinf(theirs).any():  # a constant column: sklearn's edges are (-inf, inf), ours (value, value)
            assert len(ours) == 2 and ours[0] == ours[1]
        else:
            np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    for x in (data.train, data.test):  # bin numbers are exact, inside the training range and beyond it
        np.testing.assert_array_equal(transformed(step, data, x), reference.transform(x))


@pytest.mark.parametrize("strategy", ["uniform", "kmeans"])
@pytest.mark.parametrize("n_bins", [2, 3, 5, 10, 20])
def test_uniform_and_kmeans_match_kbins_discretizer(strategy: str, n_bins: int) -> None:
    # sklearn warns about the bins it drops and k-means about duplicate points; its OpenMP k-means runs 40x
    # faster on one thread here than fighting torch's threads for two cores
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        for data in datasets():
            step = Bucketize(data.columns, n_bins=n_bins, strategy=strategy, encode="ordinal")
            step.fit(data.table(data.train))
            assert_same_bins(step, kbins(n_bins=n_bins, strategy=strategy, encode="ordinal").fit(data.train), data)


@pytest.mark.parametrize("method", QUANTILE_METHODS)
def test_quantile_matches_kbins_discretizer_for_every_quantile_method(method: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for data in datasets():
            for n_bins in (3, 10):
                step = Bucketize(data.columns, n_bins=n_bins, quantile_method=method, encode="ordinal")
                step.fit(data.table(data.train))
                reference = kbins(n_bins=n_bins, quantile_method=method, encode="ordinal").fit(data.train)
                assert_same_bins(step, reference, data)


def test_defaults_and_onehot_match_kbins_discretizer() -> None:
    """Defaults as sklearn's: 5 quantile bins, averaged_inverted_cdf, one-hot; per-column bin counts."""
    data = datasets()[2]
    n_bins = tuple(2 + i % 6 for i in range(len(data.columns)))
    for step, reference in [
        (Bucketize(data.columns), kbins(encode="onehot-dense")),
        (Bucketize(data.columns, n_bins=n_bins), kbins(n_bins=list(n_bins), encode="onehot-dense")),
    ]:
        step.fit(data.table(data.train))
        reference.fit(data.train)
        names = [
            f"{c}_bin{i}" for c, edges in zip(data.columns, step.bin_edges_, strict=True) for i in range(len(edges) - 1)
        ]
        for x in (data.train, data.test):
            out = step.transform(data.table(x))
            assert out.column_names == names
            np.testing.assert_array_equal(transformed(step, data, x, names), reference.transform(x))


def test_onehot_columns_replace_the_column_in_place() -> None:
    table = pa.table({"a": [1.0, 2.0], "x": [0.0, 10.0], "z": ["p", "q"]})
    step = Bucketize(["x"], n_bins=3, strategy="uniform").fit(table)
    out = step.transform(pa.table({"a": [0.0] * 4, "x": [-5.0, 4.0, 7.0, 99.0], "z": ["p"] * 4}))
    assert out.column_names == ["a", "x_bin0", "x_bin1", "x_bin2", "z"]
    assert np.array_equal(np.column_stack(out.columns[1:4]), np.eye(3)[[0, 1, 2, 2]])


def test_fixed_edges_skip_learning() -> None:
    step = Bucketize(["x", "y"], edges=[[0, 1, 10], [5, 6]], encode="ordinal").fit(pa.table({"x": [0.0], "y": [1]}))
    assert step.bin_edges_ == ((0.0, 1.0, 10.0), (5.0, 6.0))
    out = step.transform(pa.table({"x": [-1.0, 0.5, 1.0, 10.0, 1e9], "y": [7, 7, 7, 7, 7]}))
    assert out.column("x").to_pylist() == [0.0, 0.0, 1.0, 1.0, 1.0]  # an edge starts the bin above it, as in sklearn
    assert out.column("y").to_pylist() == [0.0] * 5


def test_a_constant_column_gets_one_bin() -> None:
    x = np.column_stack([np.full(20, 4.0), np.arange(20.0)])
    data = Data("constant", ("c", "n"), x, x - 30)
    for strategy in ("uniform", "quantile", "kmeans"):
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            reference = kbins(n_bins=4, strategy=strategy, encode="ordinal").fit(x)
        step = Bucketize(data.columns, n_bins=4, strategy=strategy, encode="ordinal").fit(data.table(x))
        assert step.bin_edges_[0] == (4.0, 4.0)
        assert_same_bins(step, reference, data)


def test_in_a_preprocessor_a_row_alone_equals_its_batch() -> None:
    data = datasets()[1]
    steps = [Bucketize(data.columns[:10], strategy="kmeans"), Bucketize(data.columns[10:], encode="ordinal")]
    pre = Preprocessor(steps).fit(data.table(data.train))
    assert pre.n_features_ == sum(len(e) - 1 for e in steps[0].bin_edges_) + 20
    table = data.table(data.test)
    batch = pre.transform(table)["x"]
    for i in range(0, table.num_rows, 41):
        assert np.array_equal(pre.transform(table.slice(i, 1))["x"][0], batch[i])


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"n_bins": 3, "strategy": "uniform", "encode": "ordinal"},
        {"n_bins": (2, 4), "strategy": "kmeans"},
        {"quantile_method": "linear"},
        {"edges": [[0.0, 2.5, 3.0], [-1, 1]]},
    ],
)
def test_round_trip_fitted_and_unfitted(options: dict) -> None:
    table = pa.table({"a": [1.0, 2.0, 4.0, 0.5, 9.0, 3.0], "b": pa.array([3, 1, 2, 7, 40, 2], pa.int64())})
    step = Bucketize(["a", "b"], **options)
    assert via_json(step) == step and not via_json(step).fitted
    step.fit(table)
    again = via_json(step)
    assert again == step and again.fitted and same(again.transform(table), step.transform(table))


# -- errors ----------------------------------------------------------------------------------------


def test_missing_values_are_refused_with_their_row() -> None:
    message = (
        r"^Bucketize\(columns=\['x'\]\): column 'x': expected a number, got a missing value at row 1 "
        r"\(2 such row\(s\)\); add Impute\(\['x'\]\) before Bucketize$"
    )
    with pytest.raises(PreprocessingError, match=message):
        Bucketize(["x"]).fit(pa.table({"x": [1.0, None, np.nan]}))
    step = Bucketize(["x"], n_bins=2).fit(pa.table({"x": [1.0, 2.0, 3.0]}))
    with pytest.raises(PreprocessingError, match=r"column 'x': expected a number, got a missing value at row 0"):
        step.transform(pa.table({"x": [np.nan]}))
    with pytest.raises(PreprocessingError, match=r"column 'x': expected finite numbers, got inf at row 2"):
        Bucketize(["x"]).fit(pa.table({"x": [1.0, 2.0, np.inf]}))


def test_unfitted_too_few_values_and_name_clashes() -> None:
    with pytest.raises(PreprocessingError, match=r"^Bucketize\(columns=\['x'\]\) is not fitted; call fit"):
        Bucketize(["x"]).transform(pa.table({"x": [1.0]}))
    with pytest.raises(PreprocessingError, match=r"column 'x' has 2 value\(s\), fewer than the 5 k-means bins"):
        Bucketize(["x"], strategy="kmeans").fit(pa.table({"x": [1.0, 2.0]}))
    table = pa.table({"x": [1.0, 2.0], "x_bin1": [0.0, 0.0]})
    with pytest.raises(PreprocessingError, match=r"output column\(s\) 'x_bin1' already exist in the data; rename"):
        Bucketize(["x"], n_bins=2).fit(table).transform(table)


def test_bad_parameters() -> None:
    for n_bins in (1, 2.5, True, (2, 3, 4), "5"):
        with pytest.raises(
            PreprocessingError, match=r"^Bucketize n_bins must be an int >= 2 or one such int for each of the 2"
        ):
            Bucketize(["a", "b"], n_bins=n_bins)
    for what, value in (("strategy", "kde"), ("quantile_method", "lower"), ("encode", "onehot-dense")):
        with pytest.raises(PreprocessingError, match=rf"^Bucketize {what} must be one of .*, got '{value}'$"):
            Bucketize(["a"], **{what: value})
    with pytest.raises(PreprocessingError, match=r"^Bucketize edges must give one list per column \(2\), got 1$"):
        Bucketize(["a", "b"], edges=[[0, 1]])
    for edges in ([[0.0]], [[1, 0]], [[0, 0, 1]], [[0, np.inf]]):
        with pytest.raises(
            PreprocessingError, match=r"edges for column 'a' must be at least 2 finite, strictly increasing numbers"
        ):
            Bucketize(["a"], edges=edges)
