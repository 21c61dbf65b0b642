"""from_torchvision: each convertible transform and option gives what torchvision itself computes on the same
decoded images (v1 and v2), exactly; what cannot be converted is refused with its name and position."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing import Preprocessor, from_torchvision
from vision import encoded, import_torchvision, photo

torchvision = import_torchvision()
T = torchvision.transforms
v2 = importlib.import_module("torchvision.transforms.v2")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
IMAGES = [photo(60, 80, seed=0), photo(97, 41, seed=1), photo(33, 33, seed=2), photo(120, 64, seed=3)]


def both(transform_of):
    """The same pipeline in v1 and in v2 (transform_of(module, float_step))."""
    return [pytest.param(transform_of(T, lambda: T.ToTensor()), id="v1"),
            pytest.param(transform_of(v2, lambda: v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])),
                         id="v2")]


def assert_same_as_torchvision(transform, images=IMAGES, mode="RGB"):
    data = {"image": [encoded(image) for image in images]}
    ours = Preprocessor([from_torchvision(transform, mode=mode)]).fit(data).transform(data)["x"]
    theirs = np.stack([transform(image.convert(mode)).numpy() for image in images])
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs), float(np.abs(ours - theirs).max())


@pytest.mark.parametrize("transform", both(lambda t, to_float: t.Compose(
    [t.Resize(48), t.CenterCrop(40), to_float(), t.Normalize(MEAN, STD)])))
def test_the_classic_eval_pipeline(transform):
    assert_same_as_torchvision(transform)


@pytest.mark.parametrize("interpolation", ["NEAREST", "BILINEAR", "BICUBIC", "LANCZOS", "BOX", "HAMMING"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_resize_with_each_interpolation(interpolation, version):
    t = T if version == "v1" else v2
    mode = getattr(t.InterpolationMode, interpolation)
    to_float = T.ToTensor() if version == "v1" else v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    assert_same_as_torchvision(t.Compose([t.Resize((37, 29), interpolation=mode), to_float]))


@pytest.mark.parametrize(("size", "max_size"), [(30, None), ([30], None), ((25, 50), None), (30, 45), ([30], 45)])
def test_resize_sizes_and_max_size(size, max_size):
    to_float = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    transform = v2.Compose([v2.Resize(size, max_size=max_size), v2.CenterCrop(24), to_float])
    assert_same_as_torchvision(transform)


@pytest.mark.parametrize("size", [21, (20, 31), (70, 90)])  # (70, 90) is larger than some images: zero-padded
def test_center_crop(size):
    assert_same_as_torchvision(v2.Compose([v2.CenterCrop(size), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]),
                               images=[photo(60, 80, seed=0), photo(61, 81, seed=1)])


@pytest.mark.parametrize(("padding", "fill"), [(3, 0), ([2, 5], 17), ([1, 2, 3, 4], 255)])
def test_pad_constant(padding, fill):
    to_float = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    assert_same_as_torchvision(v2.Compose([v2.Resize([30, 30]), v2.Pad(padding, fill=fill), to_float]))
    assert_same_as_torchvision(T.Compose([T.Resize([30, 30]), T.Pad(padding, fill=fill), T.ToTensor()]))


def test_crops_and_pads_after_the_images_became_tensors():
    transform = v2.Compose([v2.Resize(40), v2.ToImage(), v2.CenterCrop(32), v2.ToDtype(torch.float32, scale=True),
                            v2.Pad(2), v2.Normalize(MEAN, STD), v2.CenterCrop(30)])
    assert_same_as_torchvision(transform)


def test_to_tensor_divides_and_to_dtype_multiplies_and_each_is_matched_to_the_bit():
    v1 = T.Compose([T.Resize([20, 20]), T.ToTensor()])
    v2_pipeline = v2.Compose([v2.Resize([20, 20]), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    assert_same_as_torchvision(v1)
    assert_same_as_torchvision(v2_pipeline)
    values = torch.arange(256, dtype=torch.float32)
    assert not torch.equal(values / 255, values * (1 / 255))  # why the two are kept apart


@pytest.mark.parametrize("transform", [
    pytest.param(T.Compose([T.Resize([20, 20]), T.PILToTensor(), T.ConvertImageDtype(torch.float32)]), id="v1"),
    pytest.param(v2.Compose([v2.Resize([20, 20]), v2.PILToTensor(), v2.ConvertImageDtype(torch.float32)]), id="v2"),
    pytest.param(v2.Compose([v2.Resize([20, 20]), v2.ToImage(), v2.ToDtype(torch.float32)]), id="unscaled"),
    pytest.param(v2.Compose([v2.Resize([20, 20]), v2.ToImage(), v2.ToDtype({torchvision.tv_tensors.Image: torch.float32,
                                                                            "others": None}, scale=True)]), id="dict"),
])
def test_convert_image_dtype_and_to_dtype_options(transform):
    assert_same_as_torchvision(transform)


@pytest.mark.parametrize("transform", both(lambda t, to_float: t.Compose(
    [t.Grayscale(), t.Resize(30), t.CenterCrop(28), to_float(), t.Normalize([0.5], [0.25])])))
def test_grayscale_first_decodes_to_l(transform):
    step = from_torchvision(transform)
    assert step.decode.mode == "L"
    assert_same_as_torchvision(transform, mode="L")


def test_nested_composes_and_identity_are_unrolled():
    transform = v2.Compose([v2.Compose([v2.Resize(30), v2.Identity()]), v2.CenterCrop(28),
                            v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])])
    assert_same_as_torchvision(transform)


@pytest.mark.parametrize(("transform", "message"), [
    (v2.Compose([v2.Resize(30), v2.RandomHorizontalFlip(), T.ToTensor()]),
     r"^RandomHorizontalFlip at position 1 is a random augmentation: prediction runs the same arithmetic"),
    (T.Compose([T.RandomResizedCrop(24), T.ToTensor()]), r"^RandomResizedCrop at position 0 is a random augmentation"),
    (v2.Compose([v2.Compose([v2.Resize(30), v2.ColorJitter(0.2)]), T.ToTensor()]),
     r"^ColorJitter at position 0\.1 is a random augmentation"),
    (T.Compose([T.Resize(30), T.Lambda(lambda x: x), T.ToTensor()]),
     r"^cannot convert Lambda at position 1 \(torchvision\.transforms\.transforms\.Lambda\); torchpredict converts "
     r"Compose, Resize"),
    (v2.Compose([v2.ToImage(), v2.Resize(30), v2.ToDtype(torch.float32, scale=True)]),
     r"^Resize at position 1 resizes a tensor \(the images became tensors at position 0\): torchvision then uses its "
     r"own kernels, not Pillow's; move Resize before ToImage/ToTensor"),
    (T.Compose([T.Pad(2, padding_mode="reflect"), T.ToTensor()]),
     r"^Pad at position 0: padding_mode='reflect' is not converted \(only 'constant'\)"),
    (T.Compose([T.Pad(2, fill=(1, 2, 3)), T.ToTensor()]), r"^Pad at position 0: fill=\(1, 2, 3\) is not converted"),
    (v2.Compose([v2.Resize(30), v2.PILToTensor()]), r"^the transform leaves the images as uint8"),
    (v2.Compose([v2.Resize(30), v2.Grayscale(), T.ToTensor()]), r"^Grayscale at position 1: a Grayscale after other"),
    (v2.Compose([v2.Grayscale(3), T.ToTensor()]), r"^Grayscale at position 0: num_output_channels=3 is not converted"),
    (v2.Compose([v2.ToImage(), v2.ToDtype(torch.float64, scale=True)]),
     r"^ToDtype at position 1: dtype torch\.float64 is not converted \(only torch\.float32\)"),
    (v2.Compose([v2.ToImage(), v2.Normalize(MEAN, STD)]),
     r"^Normalize at position 1 comes before the images are float"),
])
def test_what_cannot_be_converted_is_refused_with_its_name_and_position(transform, message):
    with pytest.raises(PreprocessingError, match=message):
        from_torchvision(transform)
