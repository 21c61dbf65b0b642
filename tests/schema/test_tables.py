"""as_table reads every documented table-like input, and a column of mixed values is named with its row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_wine

from torchpredict.errors import SchemaError
from torchpredict.schema.tables import as_table

WINE_V1 = Path(__file__).parents[1] / "data" / "wine-v1"  # a committed bundle and its new rows


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return load_wine(as_frame=True).data


def test_as_table_accepts_every_documented_input(wine: pd.DataFrame) -> None:
    small = wine.head(3)
    expected = pa.Table.from_pandas(small, preserve_index=False)
    assert as_table(small).equals(expected)
    assert as_table(expected) is expected
    assert as_table(expected.to_batches()[0]).equals(expected)
    assert as_table({c: small[c].to_numpy() for c in small}).equals(expected)
    assert as_table(small.to_dict("records")).equals(expected)


def test_as_table_errors() -> None:
    with pytest.raises(SchemaError, match=r"cannot read input of type int; pass a pyarrow Table"):
        as_table(5)
    with pytest.raises(SchemaError, match=r"cannot read the input as a table: .*expected length 2"):
        as_table({"a": [1, 2], "b": [1]})
    with pytest.raises(
        SchemaError, match=r"column 'a': mixed value types: int64 values, then 'x' \(string\) at row 1"
    ):
        as_table([{"a": 1}, {"a": "x"}])
    for data in ([{"a": 1}, {"a": 2**64 - 1}], {"a": [1, 2**70]}):  # Arrow's own OverflowError, caught
        with pytest.raises(SchemaError, match=r"column 'a': \d+ at row 1 is too large for a 64-bit integer"):
            as_table(data)


def test_a_dict_of_scalars_is_one_record_and_a_dict_of_lists_stays_columns(wine: pd.DataFrame) -> None:
    record = {name: float(value) for name, value in wine.iloc[0].items()}
    assert as_table(record).equals(as_table([record]))
    assert as_table({"a": np.float32(1.5), "b": None, "c": "x"}).to_pylist() == [{"a": 1.5, "b": None, "c": "x"}]
    assert as_table({"a": [1.0, 2.0]}).num_rows == 2
    assert as_table({"a": np.array([1.0, 2.0])}).num_rows == 2


@pytest.mark.parametrize("value", ["ab", b"ab", {"a": 1}, np.float64(2.0) * np.ones(()), 3.5])
def test_a_column_that_is_not_a_list_is_refused_not_split_into_rows(value: object) -> None:
    """list("ab") would make two rows of a string: a dict of columns must give each column as a list or array."""
    with pytest.raises(SchemaError, match="column 'b' of a dict of columns holds .*not a list or array of values"):
        as_table({"a": [1.0, 2.0], "b": value})


def test_numpy_arrays_read_as_the_cli_reads_npy_files(wine: pd.DataFrame) -> None:
    small = wine.head(3)
    expected = pa.Table.from_pandas(small, preserve_index=False)
    order = {name: "float64" for name in small.columns}
    assert as_table(small.to_numpy(), expected=order).equals(expected)
    structured = small.to_records(index=False)
    assert as_table(np.asarray(structured)).equals(expected)
    assert as_table(np.array([1.0, 2.0]), expected={"x": "float64"}).column("x").to_pylist() == [1.0, 2.0]


def test_numpy_arrays_that_do_not_give_the_columns_are_refused_with_the_fix() -> None:
    fix = "pass a 2-D array with one column per model feature, in schema order, or a structured array"
    with pytest.raises(SchemaError) as info:
        as_table(np.zeros((4, 3)), expected={"a": "float64", "b": "float64"})
    assert str(info.value) == f"a numpy array of shape (4, 3) has 3 column(s), the model takes 2 ('a', 'b'); {fix}"
    with pytest.raises(SchemaError) as info:
        as_table(np.zeros(2), expected={"a": "float64", "b": "float64"})
    assert str(info.value) == (f"a numpy array of shape (2,) has 1 column(s), the model takes 2 ('a', 'b'); {fix}; "
                               "one row of features is array.reshape(1, -1)")
    with pytest.raises(SchemaError, match=r"^a numpy array of shape \(2, 2, 2\) is not a table of rows; pass a 2-D"):
        as_table(np.zeros((2, 2, 2)), expected={"a": "float64"})
    with pytest.raises(SchemaError, match=r"^a plain numpy array of shape \(2, 2\) has no column names; pass a 2-D"):
        as_table(np.zeros((2, 2)))


def test_predict_takes_one_record_and_numpy_arrays_as_it_takes_a_table() -> None:
    from torchpredict.bundle import load
    from torchpredict.io.readers import read_table

    predictor = load(WINE_V1 / "wine.tpk", device="cpu")
    rows = read_table(WINE_V1 / "new_wines.csv").drop_columns(["id"]).slice(0, 4)
    expected = predictor.predict(rows)
    assert predictor.predict(rows.to_pylist()[0]).equals(predictor.predict(rows.slice(0, 1)))
    plain = np.column_stack([rows.column(name).to_numpy() for name in rows.column_names])
    assert predictor.predict(plain).equals(expected)
    assert predictor.predict(np.asarray(rows.to_pandas().to_records(index=False))).equals(expected)
