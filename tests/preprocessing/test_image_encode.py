"""Image steps on real image files: decoding every format (EXIF orientation, modes, first GIF frame), the uint8
operations and the float ones, fitting, the JSON round trip, bad images as bad rows, and the Python forms of an
image (PIL, numpy, bytes, path) giving one tensor. Parity with torchvision is in test_torchvision_import.py."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from torchpredict.errors import PreprocessingError, SchemaError
from torchpredict.preprocessing import (
    CenterCrop,
    Crop,
    Decode,
    ImageEncode,
    Normalize,
    Pad,
    Preprocessor,
    Rescale,
    Resize,
)
from torchpredict.preprocessing.steps import Step
from vision import encoded, photo, write_image


def fitted(ops, images, **options) -> Preprocessor:
    return Preprocessor([ImageEncode(["image"], ops, **options)]).fit({"image": images})


def pixels(image) -> np.ndarray:
    """What the steps compute without any operation: the decoded image as float32 [C, H, W]."""
    array = np.asarray(image, dtype=np.float32)
    return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP"])
def test_a_lossless_file_gives_its_pixels_exactly(fmt):
    image = photo(20, 30)
    options = {"lossless": True} if fmt == "WEBP" else {}
    pre = fitted([], [encoded(image, fmt, **options)])
    assert np.array_equal(pre.transform({"image": [encoded(image, fmt, **options)]})["x"][0], pixels(image))


def test_a_jpeg_decodes_as_pillow_decodes_it():
    data = encoded(photo(20, 30), "JPEG", quality=90)
    pre = fitted([], [data])
    assert np.array_equal(pre.transform({"image": [data]})["x"][0], pixels(Image.open(io.BytesIO(data))))


def test_a_gif_gives_its_first_frame_in_rgb():
    first, second = photo(16, 16, seed=1).quantize(64), photo(16, 16, seed=2).quantize(64)
    data = encoded(first, "GIF", save_all=True, append_images=[second])
    pre = fitted([], [data])
    assert np.array_equal(pre.transform({"image": [data]})["x"][0], pixels(first.convert("RGB")))


def test_the_exif_orientation_is_applied_unless_turned_off(tmp_path):
    image = photo(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = write_image(tmp_path / "rotated.jpg", image, exif=exif, quality=95)
    upright = fitted([], [str(path)]).transform({"image": [str(path)]})["x"]
    assert upright.shape == (1, 3, 30, 20)  # displayed as portrait
    raw = fitted([Decode(exif=False)], [str(path)]).transform({"image": [str(path)]})["x"]
    assert raw.shape == (1, 3, 20, 30)
    assert np.array_equal(upright[0], np.rot90(raw[0], k=-1, axes=(1, 2)))


def test_modes_are_converted_to_the_trained_one_or_refused_with_convert_off():
    rgba, gray = photo(10, 10).convert("RGBA"), photo(10, 10, mode="L")
    pre = fitted([Decode(mode="L")], [encoded(gray)])
    assert pre.transform({"image": [encoded(rgba)]})["x"].shape == (1, 1, 10, 10)
    assert np.array_equal(pre.transform({"image": [encoded(rgba)]})["x"][0], pixels(rgba.convert("L")))
    strict = fitted([Decode(mode="RGB", convert=False)], [encoded(photo(10, 10))])
    with pytest.raises(PreprocessingError, match=r"^column 'image': the image has mode RGBA \(4 channels\); "
                                                 r"the model takes RGB and Decode\(convert=False\) refuses others"):
        strict.transform({"image": [encoded(rgba)]})


def test_the_uint8_operations_follow_torchvision_size_and_anchor_rules():
    image = photo(31, 50)
    out = fitted([Resize(20)], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    assert out.shape == (3, 20, 32)  # the shorter side 20, the longer int(20 * 50 / 31)
    assert np.array_equal(out, pixels(image.resize((32, 20), Image.BILINEAR)))
    capped = fitted([Resize(20, max_size=25)], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    assert capped.shape == (3, 15, 25)
    crop = fitted([CenterCrop(11)], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    top, left = round((31 - 11) / 2), round((50 - 11) / 2)
    assert np.array_equal(crop, pixels(image)[:, top:top + 11, left:left + 11])
    wider = fitted([CenterCrop([35, 50])], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    assert wider.shape == (3, 35, 50) and not wider[:, :2].any() and not wider[:, -2:].any()  # zero-padded
    window = fitted([Crop(2, 3, 5, 60)], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    assert np.array_equal(window[:, :, :47], pixels(image)[:, 2:7, 3:50]) and not window[:, :, 47:].any()
    padded = fitted([Pad([1, 2], fill=9)], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    assert padded.shape == (3, 35, 52) and (padded[:, 0] == 9).all() and (padded[:, :, 0] == 9).all()


def test_rescale_multiplies_or_divides_and_normalize_is_float32_arithmetic():
    image = photo(8, 8)
    x = pixels(image)
    multiply = fitted([Rescale()], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    divide = fitted([Rescale("divide")], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    assert np.array_equal(multiply, x * np.float32(1 / 255)) and np.array_equal(divide, x / np.float32(255))
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    normal = fitted([Rescale(), Normalize(mean, std)], [encoded(image)]).transform({"image": [encoded(image)]})["x"]
    expected = (x * np.float32(1 / 255) - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    assert normal.dtype == np.float32 and np.array_equal(normal[0], expected)


def test_normalize_without_mean_and_std_fits_them_on_the_training_images():
    images = [encoded(photo(12, 12, seed=s)) for s in range(5)]
    pre = fitted([Rescale(), Normalize()], images)
    step = pre.steps[0]
    x = np.stack([pixels(Image.open(io.BytesIO(b))) for b in images]).astype(np.float64) / 255
    assert np.allclose(step.mean_, x.mean(axis=(0, 2, 3)), rtol=1e-6)
    assert np.allclose(step.std_, x.std(axis=(0, 2, 3)), rtol=1e-6)
    out = pre.transform({"image": images})["x"]
    assert np.allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5) and np.allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert step.sizes_ == {"height": {"min": 12.0, "mean": 12.0, "max": 12.0},
                           "width": {"min": 12.0, "mean": 12.0, "max": 12.0}}


def test_channels_last_layout():
    image = photo(6, 9)
    out = fitted([], [encoded(image)], layout="HWC").transform({"image": [encoded(image)]})["x"]
    assert out.shape == (1, 6, 9, 3) and np.array_equal(out[0], np.asarray(image, dtype=np.float32))


def test_training_images_of_different_sizes_need_an_operation_that_fixes_the_size():
    images = [encoded(photo(10, 12)), encoded(photo(14, 9))]
    with pytest.raises(PreprocessingError, match=r"come out of the operations in different sizes \(10x12 and "
                                                 r"14x9, height x width\); end them with a CenterCrop or a Resize"):
        fitted([], images)
    assert fitted([Resize([8, 8])], images).transform({"image": images})["x"].shape == (2, 3, 8, 8)


def test_an_image_of_another_size_at_prediction_is_a_bad_row():
    pre = fitted([], [encoded(photo(10, 12))])
    with pytest.raises(PreprocessingError, match=r"the image comes out 11x12 with 3 channels, the model takes 10x12 "
                                                 r"with 3 channels at row 0"):
        pre.transform({"image": [encoded(photo(11, 12))]})


def test_the_step_round_trips_through_json_and_its_state_is_checked():
    images = [encoded(photo(12, 16, seed=s)) for s in range(3)]
    pre = fitted([Decode(mode="RGB", max_pixels=10_000), Resize(10, "bicubic"), CenterCrop(8), Pad(1),
                  Rescale("divide"), Normalize()], images)
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again.steps[0] == pre.steps[0]
    assert np.array_equal(again.transform({"image": images})["x"], pre.transform({"image": images})["x"])
    d = pre.steps[0].to_dict()
    for key, value, message in [("shape_", [3, 0, 8], "state 'shape_' must hold 3 sizes >= 1"),
                                ("std_", [0.2, 0.0, 0.1], "state 'std_' must hold 3 finite number.s. > 0"),
                                ("mean_", [0.1, 0.2], "state 'mean_' must hold 3 finite number"),
                                ("sizes_", {"height": {}}, "state 'sizes_' must hold height and width summaries")]:
        with pytest.raises(PreprocessingError, match=message):
            Step.from_dict({**d, "state": {**d["state"], key: value}})


@pytest.mark.parametrize(("ops", "message"), [
    ([Rescale(), Resize(8)], r"Resize at position 2 comes after rescale: images are resized as uint8 by Pillow"),
    ([Normalize([0.5], [0.5]), Rescale()], "Normalize must come after Rescale"),
    ([Decode(), Decode()], "Decode must come once, first"),
    ([Rescale(), Rescale()], "rescale may come at most once"),
    ([{"op": "blur"}], "an image operation must be an object whose 'op' is one of 'decode', 'resize'"),
    ([{"op": "resize", "size": 0}], r"image operation 'resize': size must be a size in 1\.\.16,384"),
    ([{"op": "resize", "size": [10, 10**9]}], r"size must be a size in 1\.\.16,384 or \[height, width\] of them"),
    ([{"op": "crop", "top": 0, "left": 0, "height": 5, "width": 10**6}], r"width must be a size in 1\.\.16,384"),
    ([{"op": "pad", "padding": 10**6}], r"padding must be a count, .* of counts in 0\.\.16,384"),
    ([{"op": "resize", "size": 8, "interpolation": "cubic"}], "interpolation must be one of 'nearest'"),
    ([{"op": "pad", "padding": [1, 2, 3]}], "image operation 'pad': padding must be a count"),
    ([{"op": "normalize", "mean": [0.5], "std": [0.0]}], "std must be numbers > 0"),
    ([{"op": "normalize", "mean": [0.5, 0.5], "std": [0.5, 0.5]}], "Normalize has 2 means for 3-channel RGB"),
    ([{"op": "decode", "mode": "CMYK"}], "mode must be one of 'RGB', 'L'"),
    ([{"op": "decode", "size": 3}], "image operation 'decode': .*unexpected keyword argument 'size'"),
])
def test_bad_operations_are_refused_with_what_is_wrong(ops, message):
    with pytest.raises(PreprocessingError, match=message):
        ImageEncode(["image"], ops)


def test_bad_images_are_bad_rows_with_their_reasons(tmp_path):
    good = encoded(photo(10, 10))
    pre = fitted([Decode(max_pixels=20 * 20)], [good])
    truncated = encoded(photo(10, 10), "JPEG")[:200]
    tiff = encoded(photo(10, 10), "TIFF")
    big = encoded(photo(30, 30))
    missing = str(tmp_path / "nowhere.png")
    values = [good, b"not an image", truncated, tiff, big, missing, None, good]
    validated = pre.schema_.validate({"image": values}, on_error="reject", row_check=pre.check_rows)
    reasons = dict(zip(validated.rejected.column("row").to_pylist(), validated.rejected.column("reason").to_pylist(),
                       strict=True))
    assert re.match(r"column 'image': cannot decode the image: .*(?i:truncated)", reasons.pop(2))
    assert reasons == {
        1: "column 'image': not an image in a known format (PNG, JPEG, WEBP, BMP, GIF)",
        3: "column 'image': not an image in a known format (PNG, JPEG, WEBP, BMP, GIF)",
        4: "column 'image': the image is 30x30 = 900 pixels, over the limit of 400 (max_pixels)",
        5: f"column 'image': {missing!r}: cannot read the image file: No such file or directory",  # read: with bytes
        6: "column 'image': missing value (null or NaN); the column is not nullable",
    }
    assert np.array_equal(pre.transform(validated)["x"], pre.transform({"image": [good, good]})["x"])
    with pytest.raises(SchemaError, match=r"^column 'image': not an image in a known format .* at row 1$"):
        pre.schema_.validate({"image": values[:2]}, row_check=pre.check_rows)
    with pytest.raises(SchemaError, match=rf"^column 'image': {re.escape(repr(missing))}: no such image file at row 0"):
        pre.schema_.validate({"image": [missing]}, row_check=pre.check_rows)  # paths only: opened when decoded


def test_a_bad_training_image_names_its_row():
    with pytest.raises(PreprocessingError, match=r"column 'image': training image at row 1: not an image"):
        fitted([], [encoded(photo(4, 4)), b"junk"])


def test_pil_images_arrays_bytes_and_paths_give_one_tensor(tmp_path):
    image = photo(12, 14)
    path = write_image(tmp_path / "a.png", image)
    pre = fitted([Resize([6, 6]), Rescale()], [encoded(image)])
    forms = [image, np.asarray(image), encoded(image), str(path), path]
    validated = pre.schema_.validate({"image": forms}, row_check=pre.check_rows)
    out = pre.transform(validated)["x"]
    assert all(np.array_equal(out[0], out[i]) for i in range(1, len(forms)))
    one = pre.transform(pre.schema_.validate({"image": image}, row_check=pre.check_rows))["x"]
    assert np.array_equal(one[0], out[0])
    stacked = pre.schema_.validate({"image": np.stack([np.asarray(image)] * 2)}, row_check=pre.check_rows)
    assert np.array_equal(pre.transform(stacked)["x"][1], out[0])
    odd = pre.schema_.validate({"image": [image, 5, np.zeros((4, 4), np.float64)]}, on_error="reject",
                               row_check=pre.check_rows)
    assert odd.rejected.column("reason").to_pylist() == [
        "column 'image': an image is bytes, a file path, a PIL image or a uint8 array, got int",
        "column 'image': an image array must be uint8 [height, width] or [height, width, channels] with 1, 3 or 4 "
        "channels, got float64 [4, 4]"]


def test_an_image_column_of_another_type_is_refused():
    with pytest.raises(SchemaError, match=r"column 'image': an image column holds encoded images \(bytes\) or file "
                                          r"paths \(strings\), got float64"):
        Preprocessor([ImageEncode(["image"])]).fit(pa.table({"image": [1.0, 2.0]}))


def test_without_pillow_an_image_step_says_how_to_install_it(tmp_path):
    pre = fitted([Resize([4, 4])], [encoded(photo(6, 6))])
    (tmp_path / "pre.json").write_text(json.dumps(pre.to_dict()))
    (tmp_path / "img.png").write_bytes(encoded(photo(6, 6)))
    code = ("import sys, json; sys.modules['PIL'] = None\n"
            "from torchpredict.errors import PreprocessingError\n"
            "from torchpredict.preprocessing import Preprocessor\n"
            f"pre = Preprocessor.from_dict(json.load(open({str(tmp_path / 'pre.json')!r})))\n"
            "try:\n"
            f"    pre.transform({{'image': [{str(tmp_path / 'img.png')!r}]}})\n"
            "except PreprocessingError as exc:\n"
            "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == ("image steps decode with Pillow, which is not installed: pip install "
                                     "'torchpredict[images]'"), result.stderr


def test_bgr_channels_reverse_an_rgb_image_as_opencv_reads_it():
    image = photo(9, 7)
    rgb = fitted([Resize([5, 5])], [encoded(image)]).transform({"image": [encoded(image)]})["x"][0]
    bgr = fitted([Decode(channels="BGR"), Resize([5, 5])], [encoded(image)]).transform({"image": [encoded(image)]})
    assert np.array_equal(bgr["x"][0], rgb[::-1])
    with pytest.raises(PreprocessingError, match=r"channels must be 'RGB', or 'BGR' with mode 'RGB', got 'BGR'"):
        Decode(mode="L", channels="BGR")


def test_a_resize_that_would_make_a_huge_image_is_a_bad_row():
    pre = fitted([Resize(5000), CenterCrop(4)], [encoded(photo(10, 10))])
    with pytest.raises(PreprocessingError, match=r"resizing the 4000x2 image to 10000000x5000 would make "
                                                 r"50,000,000,000 pixels, over the limit of 89,478,485 at row 0"):
        pre.transform({"image": [encoded(photo(2, 4000))]})
