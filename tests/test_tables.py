"""as_table reads every documented table-like input, and a column of mixed values is named with its row."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from sklearn.datasets import load_wine

from torchpredict.errors import SchemaError
from torchpredict.tables import as_table


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
