from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from torchpredict.errors import InputError, SchemaError
from torchpredict.io import readers
from torchpredict.io.formats import detect_format
from torchpredict.io.readers import read_chunks, read_table
from torchpredict.io.writers import write_table
from torchpredict.schema.tables import as_table

TABLE = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "zip": ["007", "010", None],
        "x": pa.array([0.5, None, 2.25], pa.float64()),
    }
)


def test_batches_keep_file_order(tmp_path):
    path = tmp_path / "big.parquet"  # Parquet comes in chunks of batch_rows rows (CSV in blocks of bytes)
    write_table(pa.table({"i": list(range(1000))}), path)
    chunks = list(read_chunks(path, batch_rows=128))
    assert len(chunks) > 1 and max(c.rows for c in chunks) <= 128
    assert [v for c in chunks for v in as_table(c.data).column(0).to_pylist()] == list(range(1000))


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


@pytest.fixture
def small_line_limit(monkeypatch):
    """A 4 KiB line limit, so that over-long lines are cheap to write."""
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 4096)
    return 4096


def test_a_line_past_the_limit_is_an_input_error_naming_where_it_starts(tmp_path, small_line_limit):
    path = tmp_path / "t.jsonl"
    path.write_text('{"x": 1}\n{"x": 2}\n{"x": "' + "a" * small_line_limit + '"}\n')
    with pytest.raises(InputError, match=r"^file '.*t\.jsonl': line 3 runs on past 4,096 bytes \(the limit\) without "
                                         r"a line break; is it a text file of lines\?$"):
        list(read_chunks(path, block_bytes=256))
    path = tmp_path / "t.csv"
    path.write_text("x\n" + "1\n" * 300 + "9" * small_line_limit + "\n")
    with pytest.raises(InputError, match=r"^file '.*t\.csv': row 300 runs on past 4,096 bytes"):
        list(read_chunks(path, block_bytes=256))


def test_cr_only_line_endings_past_the_limit_get_a_hint(tmp_path, small_line_limit):
    path = tmp_path / "mac.csv"
    path.write_bytes(b"x,y\r" + b"1,2\r" * small_line_limit)
    with pytest.raises(InputError, match=r"^file '.*mac\.csv': the header runs on past 4,096 bytes \(the limit\) "
                                         r"without a \\n; its lines seem to end in \\r alone \(old Mac style\): "
                                         r"convert them to \\n, e\.g\. tr '\\r' '\\n'$"):
        list(read_chunks(path, block_bytes=256))
    path.write_bytes(b"x,y\r" + b"1,2\r" * 10)  # within the limit, pyarrow reads CR-only lines as they are
    assert read_table(path).num_rows == 10


def test_an_unclosed_quote_past_the_limit_is_named(tmp_path, small_line_limit):
    path = tmp_path / "t.csv"
    path.write_text('x,y\n1,2\n3,"open\n' + "4,5\n" * small_line_limit)
    with pytest.raises(InputError, match=r"^file '.*t\.csv': a quoted value in row 1 runs on past 4,096 bytes "
                                         r"\(the limit\); is a closing quote missing\?$"):
        list(read_chunks(path, block_bytes=256))


def test_a_line_as_long_as_the_block_still_reads(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x\n" + "7" * 1000 + "\n1\n")
    assert read_table(path, column_types={"x": pa.string()}).column("x").to_pylist() == ["7" * 1000, "1"]
    assert sum(c.rows for c in read_chunks(path, block_bytes=64)) == 2


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_a_header_naming_a_column_twice_is_a_schema_error(tmp_path, delimiter):
    path = tmp_path / ("t.csv" if delimiter == "," else "t.tsv")
    path.write_text(delimiter.join(["a", "b", "a", "c", "c"]) + "\n" + delimiter.join("12345") + "\n")
    with pytest.raises(SchemaError, match=r"^file '.*t\.[ct]sv': duplicate column\(s\) 'a', 'c' in the header$"):
        list(read_chunks(path))


@pytest.mark.parametrize("text", ['{"a": 1, "b": 2, "a": 3}', '{"a": 1, "b": {"c": 1, "c": 2}}'])
def test_a_json_object_naming_a_key_twice_is_a_schema_error(tmp_path, text):
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1, "b": {"c": 0}}\n\n' + text + "\n")
    key = "a" if text.count('"a"') == 2 else "c"
    with pytest.raises(SchemaError, match=rf"^file '.*t\.jsonl': duplicate key\(s\) '{key}' in the object on line 3$"):
        list(read_chunks(path))


def test_duplicate_keys_are_caught_in_blocks_arrow_gives_up_on_for_other_reasons(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"a": "two"}\n{"a": 3, "a": 4}\n')  # mixed types: read as Python records
    with pytest.raises(SchemaError, match="duplicate key\\(s\\) 'a' in the object on line 3$"):
        list(read_chunks(path))


def test_a_json_line_nested_too_deep_for_python_is_an_input_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"a": "two"}\n{"a": ' + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(InputError, match=r"^file '.*t\.jsonl': line 3 nests arrays or objects too deeply to read$"):
        list(read_chunks(path))


@pytest.mark.parametrize("levels", [1_500, 30_000])
def test_jsonl_nested_past_what_arrow_survives_is_an_input_error_not_a_crash(tmp_path, levels):
    """Arrow's JSON parser recurses once per level and overflows its stack near 30,000 levels (a segfault,
    so this runs in a child process); deep blocks go to Python's parser, whose limit is a clear error."""
    path = tmp_path / "deep.jsonl"
    path.write_text('{"a": 1}\n{"a": ' + "[" * levels + "]" * levels + "}\n")
    code = ("import sys; from torchpredict.io.readers import read_chunks\n"
            "try:\n    list(read_chunks(sys.argv[1]))\nexcept Exception as exc:\n    print(type(exc).__name__, exc)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-300:]
    assert result.stdout.strip() == f"InputError file '{path}': line 2 nests arrays or objects too deeply to read"


def test_a_long_line_nested_a_few_levels_still_reads_with_arrow(tmp_path):
    path = tmp_path / "wide.jsonl"
    path.write_text('{"a": [' + ", ".join(["[1, 2]"] * 2_000) + ']}\n{"a": [[3]]}\n')
    chunks = list(read_chunks(path))
    assert isinstance(chunks[0].data, pa.Table) and chunks[0].data.num_rows == 2


def test_a_jsonl_line_that_is_not_an_object_is_refused_naming_it(tmp_path):
    """A first line `null` crashed pyarrow 26's JSON reader (SIGSEGV): lines that are not objects never reach it."""
    for text, message in (("null\n{}\n", r"line 1 is null, not an object; each line of a JSONL file is one row"),
                          ('  null\n{"a": 1}\n', "line 1 is null, not an object"),
                          ('{"a": 1}\n[1, 2]\n', r"line 2 is a list of 2, not an object")):
        path = tmp_path / "in.jsonl"
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            list(read_chunks(path))


def test_an_empty_npy_file_is_an_input_error(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(InputError, match=r"file '.*empty.npy': cannot read it as npy: No data left in file"):
        list(read_chunks(tmp_path / "empty.npy"))


def test_a_folder_of_images_reads_as_chunks_of_paths_in_path_order(tmp_path):
    for i in range(150):
        (tmp_path / f"{i:03d}.png").write_bytes(b"x")
    chunks = list(read_chunks(tmp_path, names=["path", "image"]))
    assert [c.rows for c in chunks] == [64, 64, 22] and [c.first_row for c in chunks] == [0, 64, 128]
    assert chunks[-1].done == 1.0 and chunks[0].data.column_names == ["path", "image"]
    assert chunks[1].data.column("image")[0].as_py() == str(tmp_path / "064.png")
    with pytest.raises(InputError, match="holds no images"):
        list(read_chunks(tmp_path / "*.jpg", format="images"))
