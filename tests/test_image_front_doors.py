"""Images on every front door of one bundle: the Python API (PIL images, arrays, bytes, paths), the CLI over a
folder, a glob, a CSV of paths and a Parquet of bytes, with bad images as bad rows; predictions identical
everywhere and equal to the training script's own. The server's BYTES inputs are in tests/server/test_image_inputs.py.

Labels are compared exactly, probabilities to 1e-5: a convolution's float32 sums differ in their last bit with
the batch it runs in (oneDNN picks its kernel by shape), so rows batched differently differ by about 1e-7."""

from __future__ import annotations

import json
import re
import shutil
import struct
import types
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cli_runs import run_cli
from conftest import training_time_predictions
from torchpredict.bundle import load
from torchpredict.errors import SchemaError
from torchpredict.io.readers import read_table
from torchpredict.io.writers import write_table
from torchpredict.jobs.plan import Plan, image_chunk_rows


def close(got: pa.Table, want: pa.Table) -> bool:
    names = [n for n in want.column_names if n.startswith("digit_probability")]
    return all(np.allclose(got.column(n).to_numpy(), want.column(n).to_numpy(), rtol=1e-5, atol=1e-7) for n in names)


@pytest.fixture(scope="module")
def predictor(digits_bundle):
    return load(digits_bundle, device="cpu")


@pytest.fixture(scope="module")
def expected(digits) -> pa.Table:
    """The training script's predictions of the new files, in path order."""
    table = pa.table({"image": digits["new_paths"]})
    return pa.table({"path": digits["new_paths"], **training_time_predictions(digits, table)})


def test_the_python_api_takes_pil_images_arrays_bytes_and_paths_alike(predictor, digits, expected):
    paths = digits["new_paths"][:12]
    forms = {"path": paths, "Path": [Path(p) for p in paths], "bytes": [Path(p).read_bytes() for p in paths],
             "PIL": [Image.open(p) for p in paths], "array": [np.asarray(Image.open(p)) for p in paths]}
    want = expected.slice(0, 12)
    for form, values in forms.items():
        got = predictor.predict({"image": values})
        assert got.column("digit").to_pylist() == want.column("digit").to_pylist(), form
        assert close(got, want), form
    one = predictor.predict({"image": Image.open(paths[0])})
    assert one.num_rows == 1 and one.column("digit")[0] == want.column("digit")[0]


def test_the_cli_predicts_a_folder_one_row_per_file_with_its_path(predictor, digits, expected, digits_bundle,
                                                                  tmp_path):
    out = tmp_path / "preds.csv"
    result = run_cli("predict", digits_bundle, digits["folder"] / "new", "-o", out)
    assert result.returncode == 0, result.stderr
    assert f"predicted {len(digits['new_paths'])} rows" in result.stderr
    got = read_table(out)
    assert got.column_names[0] == "path" and got.column("path").to_pylist() == digits["new_paths"]
    assert got.column("digit").cast(pa.string()).to_pylist() == expected.column("digit").to_pylist()
    assert close(got, expected)
    api = predictor.predict_file(digits["folder"] / "new", tmp_path / "api.parquet")
    assert api.rows_predicted == len(digits["new_paths"])
    via_api = pq.read_table(tmp_path / "api.parquet")
    assert via_api.column_names == expected.column_names and close(via_api, expected)
    assert via_api.column("digit").to_pylist() == expected.column("digit").to_pylist()


def test_a_glob_a_csv_of_paths_and_a_parquet_of_bytes_give_the_same_predictions(digits, digits_bundle, expected,
                                                                                 tmp_path):
    wanted = expected.filter(pa.array([Path(p).name.startswith("00") for p in digits["new_paths"]]))
    paths = wanted.column("path").to_pylist()
    assert run_cli("predict", digits_bundle, str(digits["folder"] / "new" / "00*.png"), "-o",
                   tmp_path / "glob.parquet").returncode == 0
    write_table(pa.table({"id": list(range(len(paths))), "image": paths}), tmp_path / "paths.csv")
    assert run_cli("predict", digits_bundle, tmp_path / "paths.csv", "-o", tmp_path / "csv.parquet", "--keep",
                   "id").returncode == 0
    pq.write_table(pa.table({"image": pa.array([Path(p).read_bytes() for p in paths], pa.binary())}),
                   tmp_path / "bytes.parquet")
    assert run_cli("predict", digits_bundle, tmp_path / "bytes.parquet", "-o", tmp_path / "bytes.out.parquet"
                   ).returncode == 0
    for name in ("glob.parquet", "csv.parquet", "bytes.out.parquet"):
        got = pq.read_table(tmp_path / name)
        assert got.column("digit").to_pylist() == wanted.column("digit").to_pylist(), name
        assert close(got, wanted), name
    assert pq.read_table(tmp_path / "glob.parquet").column("path").to_pylist() == paths


def _bomb_png() -> bytes:
    """A PNG header claiming 20000 x 20000 pixels (decoding it would take 400 MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_bad_images_are_rejected_with_their_reasons_and_nothing_else_is_lost(digits, digits_bundle, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(digits["folder"] / "new", folder)
    good = sorted(folder.glob("*.png"))
    good[1].write_bytes(good[1].read_bytes()[:60])  # truncated
    good[2].write_bytes(b"hello, not an image")  # an unknown format
    good[3].write_bytes(_bomb_png())
    Image.new("RGB", (8, 8)).save(folder / "tiny.jpg")  # a JPEG among PNGs: fine, converted to L
    out, rejects = tmp_path / "out.csv", tmp_path / "rejects.csv"
    result = run_cli("predict", digits_bundle, folder, "-o", out, "--rejects", rejects)
    assert result.returncode == 0, result.stderr
    rejected = read_table(rejects)
    reasons = dict(zip(rejected.column("path").to_pylist(), rejected.column("reason").to_pylist(), strict=True))
    assert set(reasons) == {str(good[1]), str(good[2]), str(good[3])}
    assert "cannot decode the image" in reasons[str(good[1])] and "truncated" in reasons[str(good[1])].lower()
    assert reasons[str(good[2])].endswith("not an image in a known format (PNG, JPEG, WEBP, BMP, GIF)")
    assert "decompression-bomb limit" in reasons[str(good[3])]
    predicted = read_table(out)
    assert predicted.num_rows + rejected.num_rows == len(good) + 1
    assert str(folder / "tiny.jpg") in predicted.column("path").to_pylist()
    result = run_cli("predict", digits_bundle, folder, "-o", tmp_path / "stopped.csv")
    assert result.returncode == 2 and not (tmp_path / "stopped.csv").exists()
    assert result.stderr.strip().splitlines() == [
        f"error: file '{folder}': column 'image': '{good[1]}': cannot decode the image: "
        f"{result.stderr.split('cannot decode the image: ')[1].split(' at row')[0]} at row 1"]


def test_a_folder_of_images_needs_a_bundle_of_one_image_column(wine_bundle, digits, tmp_path):
    result = run_cli("predict", wine_bundle, digits["folder"] / "new", "-o", tmp_path / "x.csv")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: '{digits['folder'] / 'new'}' is a folder or glob of images, and this "
                                    "bundle takes no images ('alcohol' (float64)")


def test_a_missing_or_odd_image_value_is_named_with_its_row(predictor, digits):
    with pytest.raises(SchemaError, match=r"^column 'image': an image is bytes, a file path, a PIL image or a uint8 "
                                          r"array, got float at row 1$"):
        predictor.predict({"image": [digits["new_paths"][0], 2.5]})
    with pytest.raises(SchemaError, match=r"^column 'image': 'nowhere\.png': no such image file at row 0$"):
        predictor.predict({"image": ["nowhere.png"]})


def test_drift_counts_images_of_other_sizes_and_shifted_channel_means(predictor, digits, digits_bundle, tmp_path):
    folder = tmp_path / "inverted"
    folder.mkdir()
    for path in digits["new_paths"][:20]:
        inverted = 255 - np.asarray(Image.open(path))
        Image.fromarray(inverted).resize((12, 12)).save(folder / Path(path).name)
    result = run_cli("predict", digits_bundle, folder, "-o", tmp_path / "out.csv", "--report",
                     tmp_path / "drift.json")
    assert result.returncode == 0, result.stderr
    assert re.search(r"drift: 1 column drifted in 20 rows: 'image' 20 images of a size outside training's and "
                     r"channel means 0\.\d\d \(training 0\.3\d\)", result.stderr), result.stderr
    image = json.loads((tmp_path / "drift.json").read_text())["drift"]["columns"]["image"]
    assert image["image_rows"] == 20 and image["out_of_range"] == 20 and image["pixel_mean"][0] > 0.6
    same = predictor.predict_file(digits["folder"] / "new", tmp_path / "same.csv")
    assert not same.drift and same.drift.columns["image"].image_rows == len(digits["new_paths"])
    assert abs(same.drift.columns["image"].pixel_mean[0] - same.drift.columns["image"].training_pixel_mean[0]) < 0.05


def test_a_bad_image_of_a_parquet_of_bytes_is_a_rejected_row_that_shows_its_size(digits, digits_bundle, tmp_path):
    good = Path(digits["new_paths"][0]).read_bytes()
    pq.write_table(pa.table({"id": ["a", "b"], "image": pa.array([good, b"\x00" * 100], pa.binary())}),
                   tmp_path / "in.parquet")
    result = run_cli("predict", digits_bundle, tmp_path / "in.parquet", "-o", tmp_path / "out.csv", "--keep", "id",
                     "--rejects", tmp_path / "rejects.csv")
    assert result.returncode == 0, result.stderr
    assert read_table(tmp_path / "rejects.csv").to_pylist() == [
        {"row": 1, "reason": "column 'image': not an image in a known format (PNG, JPEG, WEBP, BMP, GIF)",
         "image": "<100 bytes>", "id": "b"}]
    assert read_table(tmp_path / "out.csv").column("id").to_pylist() == ["a"]


def test_a_folder_is_read_in_chunks_of_whole_model_batches_of_about_32_mb(predictor, digits):
    """Small images in chunks of 1,024 files (a chunk's own cost paid rarely), big ones in one model batch."""
    assert predictor.batch_size == 1024  # 8 MB of 1 x 16 x 16 float32 inputs is 8,192: capped at 1,024
    plan = Plan.make(predictor, digits["folder"] / "new", None, (), None, None, 1 << 20, 1 << 16, 1 << 20)
    assert plan.batch_rows == 1024 and plan.keep == ("path",) and plan.npy_names == ["path", "image"]
    big = types.SimpleNamespace(image_row_bytes=4 * 3 * 224 * 224)  # 602 KB a row: 55 rows
    assert image_chunk_rows(big, 64) == 64 and image_chunk_rows(big, 16) == 48 and image_chunk_rows(big, 100) == 100
