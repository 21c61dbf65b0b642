"""Copy: new columns sharing the copied column's buffers, placed after it; JSON, registry and refusals."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sklearn_data import datasets, same, via_json
from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing import STEP_TYPES, Preprocessor
from torchpredict.preprocessing.copying import Copy, copied_from
from torchpredict.preprocessing.numeric import Standardize


def wine() -> pa.Table:
    data = datasets(missing=0.05)[2]
    return data.table(data.train)


def test_copies_follow_their_column_and_share_its_buffers() -> None:
    table = wine()
    out = Copy(["hue", "alcohol", "hue"], names=["hue_a", "alcohol_raw", "hue_b"]).fit(table).transform(table)
    names = table.column_names
    at = names.index("hue") + 1
    assert out.column_names[:1] == ["alcohol"] and out.column_names[1:2] == ["alcohol_raw"]
    assert out.column_names[at + 1:at + 3] == ["hue_a", "hue_b"] and out.num_columns == table.num_columns + 3
    for copy, source in (("hue_a", "hue"), ("hue_b", "hue"), ("alcohol_raw", "alcohol")):
        got, original = out.column(copy), table.column(source)
        assert np.array_equal(got.to_numpy(), original.to_numpy(), equal_nan=True) and np.isnan(got.to_numpy()).any()
        assert [b.address for b in got.chunk(0).buffers() if b] == [b.address for b in original.chunk(0).buffers()
                                                                   if b]  # no value copied
    assert same(out.select(names), table)


def test_a_copy_is_independent_of_what_later_steps_do_to_its_column() -> None:
    table = wine()
    steps = [Copy(["alcohol"], names=["alcohol_raw"]), Standardize(["alcohol"])]
    frame = table
    for step in steps:
        frame = step.fit(frame).transform(frame)
    np.testing.assert_array_equal(frame.column("alcohol_raw").to_numpy(), table.column("alcohol").to_numpy())
    assert abs(np.nanmean(frame.column("alcohol").to_numpy())) < 1e-12


def test_copy_is_registered_learns_nothing_and_round_trips_through_json() -> None:
    step = Copy(["alcohol", "alcohol"], names=["a1", "a2"])
    assert STEP_TYPES["copy"] is Copy and step.fitted
    again = via_json(step)
    assert again == step and again.to_dict() == {"type": "copy", "columns": ["alcohol", "alcohol"],
                                                "params": {"names": ["a1", "a2"]}, "state": {}}
    assert same(again.transform(wine()), step.transform(wine()))
    assert copied_from([step, Copy(["a1"], names=["a1b"])]) == {"a1": "alcohol", "a2": "alcohol", "a1b": "alcohol"}


@pytest.mark.parametrize(("names", "message"), [
    (["x"], r"^Copy needs one name per column copied: 2 column\(s\), got 1 name\(s\)$"),
    (["x", "x"], r"^Copy names 'x' repeat or name a copied column; give each copy a new name$"),
    (["x", "hue"], r"^Copy names 'hue' repeat or name a copied column"),
    ("xy", r"^Copy names must be a list of non-empty column names, got 'xy'$"),
    (["x", ""], r"^Copy names must be a list of non-empty column names"),
])
def test_bad_names_are_refused(names: list[str], message: str) -> None:
    with pytest.raises(PreprocessingError, match=message):
        Copy(["alcohol", "hue"], names=names)


def test_a_name_the_data_already_has_or_a_missing_column_is_refused() -> None:
    with pytest.raises(PreprocessingError, match=r"^output column\(s\) 'ash' already exist in the data"):
        Copy(["alcohol"], names=["ash"]).transform(wine())
    with pytest.raises(PreprocessingError, match=r"^Copy\(columns=\['volts'\], names=\('v2',\)\): column 'volts' is "
                                                 r"not in the data \(columns: alcohol, malic_acid"):
        Copy(["volts"], names=["v2"]).transform(wine())
    with pytest.raises(PreprocessingError, match=r"^step 1 \(copy\): Copy needs one name per column copied"):
        Preprocessor.from_dict({"steps": [{"type": "copy", "columns": ["a"], "params": {"names": []}}]})
