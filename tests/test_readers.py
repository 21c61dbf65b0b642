from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchpredict.errors import InputError
from torchpredict.formats import detect_format
from torchpredict.readers import iter_batches, read_chunks, read_table
from torchpredict.writers import write_table

TABLE = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "zip": ["007", "010", None],
        "x": pa.array([0.5, None, 2.25], pa.float64()),
    }
)


def test_batches_keep_file_order(tmp_path):
    path = tmp_path / "big.csv"
    write_table(pa.table({"i": list(range(1000))}), path)
    batches = list(iter_batches(path, batch_rows=128))
    assert max(b.num_rows for b in batches) <= 128
    assert [v for b in batches for v in b.column(0).to_pylist()] == list(range(1000))


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
