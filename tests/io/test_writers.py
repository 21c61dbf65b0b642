from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from torchpredict.errors import InputError
from torchpredict.io.readers import read_chunks, read_table
from torchpredict.io.writers import TableWriter, write_table

TABLE = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "zip": ["007", "010", None],
        "x": pa.array([0.5, None, 2.25], pa.float64()),
    }
)


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.parquet", "t.jsonl", "t.csv.gz", "t.jsonl.zst"])
def test_round_trip_every_format(tmp_path, name):
    path = tmp_path / name
    write_table(TABLE, path)
    back = read_table(path, column_types={"zip": pa.string()})
    assert back.column_names == TABLE.column_names
    assert back.column("id").to_pylist() == [1, 2, 3]
    assert back.column("zip").to_pylist() == ["007", "010", None]
    assert back.column("x").to_pylist() == [0.5, None, 2.25]


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


def test_npy_round_trip_as_a_structured_array_or_named_2d_columns(tmp_path):
    numbers = pa.table({"a": pa.array([1.5, 2.5], pa.float32()), "b": pa.array([3, 4], pa.int64())})
    write_table(numbers, tmp_path / "t.npy")
    assert np.load(tmp_path / "t.npy").dtype.names == ("a", "b")
    assert read_table(tmp_path / "t.npy").equals(numbers)
    np.save(tmp_path / "plain.npy", np.arange(6.0).reshape(3, 2))
    (chunk,) = read_chunks(tmp_path / "plain.npy", names=["p", "q"])
    assert chunk.data.column("q").to_pylist() == [1.0, 3.0, 5.0]
    with pytest.raises(InputError, match="holds numbers only; column.*'zip'"):
        write_table(TABLE, tmp_path / "t2.npy")


def test_jsonl_output_is_valid_json_with_escapes_and_null_for_nan(tmp_path):
    table = pa.table({"s": ['a "q"\n', None], "f": [float("nan"), 2.0], "b": [True, None]})
    write_table(table, tmp_path / "t.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert lines == [{"s": 'a "q"\n', "f": None, "b": True}, {"s": None, "f": 2.0, "b": None}]


def test_compressed_text_output_by_extension(tmp_path):
    write_table(TABLE, tmp_path / "t.csv.gz")
    assert gzip.decompress((tmp_path / "t.csv.gz").read_bytes()).startswith(b'"id","zip","x"')
    with pytest.raises(InputError, match="cannot be compressed by extension"):
        write_table(TABLE, tmp_path / "t.parquet.gz")


def test_a_csv_column_of_lists_is_written_as_json_text(tmp_path):
    """A kept input column of lists (JSONL input): CSV has no such cells, and Arrow's CSV writer refuses them."""
    write_table(pa.table({"a": [[1, 2], None, []], "b": [1.5, 2.0, 3.0]}), tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == '"a","b"\n"[1, 2]",1.5\n,2\n"[]",3\n'


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_column_of_bytes_is_written_as_its_text_or_refused_when_it_is_not_utf8(tmp_path, fmt):
    """A CSV reader infers bytes for a column that is not valid UTF-8, and a kept column carries them to the
    output: text formats write UTF-8 bytes as their text (not b'...'), and refuse others, naming the column."""
    write_table(pa.table({"id": pa.array([b"a1", None, "é".encode()], pa.binary()), "x": [1, 2, 3]}),
                tmp_path / f"ok.{fmt}")
    assert read_table(tmp_path / f"ok.{fmt}").column("id").to_pylist() == ["a1", None, "é"]
    with pytest.raises(InputError, match=r"^column 'id' holds bytes that are not UTF-8 text \(b'15\\xb0'\); a "
                                         f"{fmt} file holds text only: write parquet"):
        write_table(pa.table({"id": pa.array([b"ok", b"15\xb0"], pa.binary())}), tmp_path / f"bad.{fmt}")
    assert not (tmp_path / f"bad.{fmt}").exists()
    write_table(pa.table({"id": pa.array([b"15\xb0"], pa.binary())}), tmp_path / "kept.parquet")
    assert read_table(tmp_path / "kept.parquet").column("id").to_pylist() == [b"15\xb0"]
