from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from torchpredict.errors import InputError
from torchpredict.files import (
    TableWriter,
    detect_format,
    expand_inputs,
    iter_batches,
    read_chunks,
    read_table,
    write_table,
)

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
    with pytest.raises(InputError, match="format must be one of csv, tsv, parquet, jsonl, npy, got 'xls'"):
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


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bz2"])
def test_compressed_inputs_are_recognised_by_their_first_bytes(tmp_path, codec):
    plain = tmp_path / "t.csv"
    write_table(TABLE, plain)
    packed = tmp_path / "t.csv.packed"
    with pa.output_stream(str(packed), compression=codec) as out:
        out.write(plain.read_bytes())
    back = read_table(packed, format="csv", column_types={"zip": pa.string()})
    assert back.column("zip").to_pylist() == ["007", "010", None]
    assert detect_format("t.jsonl.zst") == "jsonl"


def test_text_is_read_in_blocks_of_whole_lines_and_quoted_newlines_stay_whole(tmp_path):
    rows = pa.table({"i": list(range(300)), "text": [f'say "hi"\nto {i}' for i in range(300)]})
    path = tmp_path / "t.csv"
    write_table(rows, path)
    chunks = list(read_chunks(path, block_bytes=256))
    assert len(chunks) > 10
    assert [c.first_row for c in chunks] == list(np.cumsum([0] + [c.rows for c in chunks[:-1]]))
    back = pa.concat_tables([c.data for c in chunks])
    assert back.equals(rows)
    assert 0 < chunks[0].done < chunks[-1].done == 1.0


def test_a_csv_value_that_is_not_of_its_pinned_type_is_kept_as_text_for_validation(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,name\n1.5,a\nforty,b\n2,c\n")
    (chunk,) = read_chunks(path, column_types={"x": pa.float64()})
    assert chunk.data["x"] == [1.5, "forty", 2.0]
    assert chunk.data["name"].to_pylist() == ["a", "b", "c"]


def test_jsonl_with_mixed_value_types_comes_as_records_naming_its_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"x": 1.5}\n\n{"x": "forty"}\n')
    (chunk,) = read_chunks(path)
    assert chunk.data == [{"x": 1.5}, {"x": "forty"}]
    path.write_text('{"x": 1.5}\n{"x": \n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        list(read_chunks(path))


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


def test_inputs_from_a_folder_a_glob_or_a_list_in_name_order(tmp_path):
    for name in ("b.csv", "a.parquet", "c.txt", ".hidden.csv"):
        (tmp_path / name).write_text("x\n1\n")
    (tmp_path / "empty").mkdir()
    assert expand_inputs(tmp_path) == [str(tmp_path / "a.parquet"), str(tmp_path / "b.csv")]
    assert expand_inputs(str(tmp_path / "*.csv")) == [str(tmp_path / "b.csv")]
    assert expand_inputs(["-", tmp_path / "b.csv"]) == ["-", str(tmp_path / "b.csv")]
    with pytest.raises(InputError, match="no input file matches"):
        expand_inputs(str(tmp_path / "*.tsv"))
    with pytest.raises(InputError, match="input folder .* holds no"):
        expand_inputs(tmp_path / "empty")


def test_compressed_text_output_by_extension(tmp_path):
    write_table(TABLE, tmp_path / "t.csv.gz")
    assert gzip.decompress((tmp_path / "t.csv.gz").read_bytes()).startswith(b'"id","zip","x"')
    with pytest.raises(InputError, match="cannot be compressed by extension"):
        write_table(TABLE, tmp_path / "t.parquet.gz")
