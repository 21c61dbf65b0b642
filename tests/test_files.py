from __future__ import annotations

import pyarrow as pa
import pytest

from torchpredict.errors import InputError
from torchpredict.files import TableWriter, detect_format, iter_batches, read_table, write_table

TABLE = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "zip": ["007", "010", None],
        "x": pa.array([0.5, None, 2.25], pa.float64()),
    }
)


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.parquet", "t.jsonl"])
def test_round_trip_every_format(tmp_path, name):
    path = tmp_path / name
    write_table(TABLE, path)
    back = read_table(path, column_types={"zip": pa.string()})
    assert back.column_names == TABLE.column_names
    assert back.column("id").to_pylist() == [1, 2, 3]
    assert back.column("zip").to_pylist() == ["007", "010", None]
    assert back.column("x").to_pylist() == [0.5, None, 2.25]


def test_batches_keep_file_order(tmp_path):
    path = tmp_path / "big.csv"
    write_table(pa.table({"i": list(range(1000))}), path)
    batches = list(iter_batches(path, batch_rows=128))
    assert max(b.num_rows for b in batches) <= 128
    assert [v for b in batches for v in b.column(0).to_pylist()] == list(range(1000))


def test_format_from_extension_or_explicit():
    assert detect_format("a.PARQUET") == "parquet"
    assert detect_format("a.data", "csv") == "csv"
    with pytest.raises(InputError, match=r"cannot tell the format from extension '.data'.*--format"):
        detect_format("a.data")
    with pytest.raises(InputError, match="format must be one of csv, tsv, parquet, jsonl, got 'xls'"):
        detect_format("a.csv", "xls")


def test_missing_and_malformed_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="input file .* does not exist"):
        read_table(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(InputError, match="cannot read it as csv"):
        read_table(bad)
    empty = tmp_path / "empty.parquet"
    write_table(TABLE.slice(0, 0), empty)
    with pytest.raises(InputError, match="holds no rows"):
        read_table(empty)


def test_a_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), TableWriter(path, TABLE.schema) as writer:
        writer.write(TABLE)
        raise RuntimeError("killed halfway")
    assert list(tmp_path.iterdir()) == []


def test_output_appears_only_when_complete(tmp_path):
    path = tmp_path / "out.parquet"
    with TableWriter(path, TABLE.schema) as writer:
        writer.write(TABLE)
        assert not path.exists()
    assert read_table(path).equals(TABLE)


def test_output_folder_must_exist(tmp_path):
    with pytest.raises(InputError, match="output folder .* does not exist"):
        TableWriter(tmp_path / "no" / "out.csv", TABLE.schema)
