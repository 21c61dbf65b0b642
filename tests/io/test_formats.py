from __future__ import annotations

import pytest

from torchpredict.errors import InputError
from torchpredict.io.formats import detect_format, expand_inputs, image_files


def test_format_from_extension_or_explicit():
    assert detect_format("a.PARQUET") == "parquet"
    assert detect_format("a.data", "csv") == "csv"
    with pytest.raises(InputError, match=r"cannot tell the format from extension '.data'.*--format"):
        detect_format("a.data")
    with pytest.raises(InputError, match="format must be one of csv, tsv, parquet, jsonl, npy, images, got 'xls'"):
        detect_format("a.csv", "xls")


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


def test_a_name_too_long_for_the_file_system_is_a_missing_input_not_a_crash(tmp_path):
    name = str(tmp_path / ("x" * 300 + ".csv"))  # one component past the usual 255-byte limit: ENAMETOOLONG
    with pytest.raises(InputError, match=r"^input file '.*xxx\.csv' does not exist$"):
        expand_inputs(name)


def test_a_folder_or_glob_of_images_is_one_input_of_format_images(tmp_path):
    (tmp_path / "shots" / "b").mkdir(parents=True)
    for name in ("shots/a.png", "shots/b/c.JPG", "shots/.hidden.png", "shots/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    folder = str(tmp_path / "shots")
    assert expand_inputs(folder) == [folder] and detect_format(folder) == "images"
    assert image_files(folder) == [str(tmp_path / "shots/a.png"), str(tmp_path / "shots/b/c.JPG")]
    pattern = str(tmp_path / "shots" / "*.png")
    assert expand_inputs(pattern) == [pattern] and image_files(pattern) == [str(tmp_path / "shots/a.png")]
    (tmp_path / "shots" / "rows.csv").write_text("a\n1\n")
    assert expand_inputs(folder) == [str(tmp_path / "shots" / "rows.csv")]  # data files win: a folder of data
    with pytest.raises(InputError, match=r"matches images and other files \(notes\.txt\); match one kind"):
        expand_inputs(str(tmp_path / "shots" / "*.*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"holds no \.csv, .* files and no images \(\.png, \.jpg"):
        expand_inputs(str(tmp_path / "empty"))
