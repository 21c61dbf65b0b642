"""from_torchvision: a torchvision transforms pipeline (v1 or v2) as an ImageEncode step of the same arithmetic.

The training script's eval transform (`Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize(mean, std)])`)
is read, not re-typed: each transform becomes the image operation that computes what it computes on a PIL image.
Nothing is imported from torchvision: transforms are known by their class names and read by their attributes,
so a bundle never needs torchvision to load. What cannot be converted is refused with its name and position:
random augmentations (prediction is deterministic: pass the eval transform), Lambda and other code, options
whose arithmetic the operations do not reproduce (a Resize of a tensor, a Pad mode other than constant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchpredict.errors import PreprocessingError
from torchpredict.preprocessing.images import (
    INTERPOLATIONS,
    CenterCrop,
    Decode,
    ImageEncode,
    Normalize,
    Pad,
    Rescale,
    Resize,
)

__all__ = ["CONVERTIBLE", "from_torchvision"]

CONVERTIBLE = ("Compose", "Resize", "CenterCrop", "Pad", "Grayscale", "ToImage", "PILToTensor", "ToTensor",
               "ToDtype", "ConvertImageDtype", "Normalize", "Identity")
_RANDOM = ("AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix", "ColorJitter", "ElasticTransform",
           "GaussianBlur", "GaussianNoise", "CutMix", "MixUp", "FiveCrop", "TenCrop")


def from_torchvision(transform: Any, columns: str | Sequence[str] = "image", *, mode: str = "RGB", exif: bool = True,
                     convert: bool = True, max_pixels: int | None = None, layout: str = "CHW") -> ImageEncode:
    """The ImageEncode step computing what `transform` computes on the PIL images a torchvision dataset gives
    (which decodes with Pillow and converts to `mode`, as ImageFolder's loader does with RGB). Fit it, inside a
    Preprocessor, on the training images: that records the output shape (and mean and std if none was given).

    >>> eval_transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
    ...                                      transforms.ToTensor(), transforms.Normalize(mean, std)])  # doctest: +SKIP
    >>> pre = Preprocessor([from_torchvision(eval_transform)]).fit({"image": train_paths})  # doctest: +SKIP
    """
    decode: dict[str, Any] = {"mode": mode, "exif": exif, "convert": convert,
                              **({} if max_pixels is None else {"max_pixels": max_pixels})}
    ops: list[Any] = []
    state = {"tensor": None, "float": False}  # where the image became a tensor (its position), and float
    for position, item in _flattened(transform, ""):
        op = _converted(item, position, state, decode, bool(ops))
        if op is not None:
            ops.append(op)
    if not state["float"]:
        raise PreprocessingError("the transform leaves the images as uint8 (no ToTensor, ToDtype(float32, "
                                 "scale=True) or ConvertImageDtype); a model takes float32: add one")
    return ImageEncode(columns, [Decode(**decode), *ops], layout=layout)


def _flattened(transform: Any, prefix: str) -> list[tuple[str, Any]]:
    """(position, transform) in order, Compose (and nn.Sequential) unrolled: positions "0", "1", "2.0"."""
    inner = getattr(transform, "transforms", None) if _name(transform) == "Compose" else None
    if inner is None and _name(transform) == "Sequential" and hasattr(transform, "children"):
        inner = list(transform.children())
    if inner is None:
        return [(prefix or "0", transform)]
    out: list[tuple[str, Any]] = []
    for i, item in enumerate(inner):
        out += _flattened(item, f"{prefix}.{i}" if prefix else str(i))
    return out


def _converted(t: Any, position: str, state: dict[str, Any], decode: dict[str, Any], after_others: bool) -> Any:
    name = _name(t)
    where = f"{name} at position {position}"
    if name.startswith("Random") or name in _RANDOM:
        raise PreprocessingError(f"{where} is a random augmentation: prediction runs the same arithmetic on every "
                                 "image; convert the evaluation transform instead (the one without augmentations)")
    if name not in CONVERTIBLE:
        raise PreprocessingError(f"cannot convert {where} ({type(t).__module__}.{type(t).__qualname__}); "
                                 f"torchpredict converts {', '.join(CONVERTIBLE)}")
    if name == "Identity":
        return None
    if name == "Grayscale":
        if after_others or state["tensor"] is not None:
            raise PreprocessingError(f"{where}: a Grayscale after other transforms is not converted; put it first "
                                     "(or pass mode='L')")
        if getattr(t, "num_output_channels", 1) != 1:
            raise PreprocessingError(f"{where}: num_output_channels={t.num_output_channels} is not converted "
                                     "(only 1: mode 'L')")
        decode["mode"] = "L"
        return None
    if name in ("ToImage", "PILToTensor"):
        state["tensor"] = state["tensor"] or position
        return None
    if name == "ToTensor":
        state["tensor"], state["float"] = state["tensor"] or position, True
        return Rescale("divide")
    if name in ("ToDtype", "ConvertImageDtype"):
        return _rescale(t, where, state, name, position)
    if name == "Normalize":
        if not state["float"]:
            raise PreprocessingError(f"{where} comes before the images are float (ToTensor or ToDtype)")
        return Normalize(tuple(_floats(t.mean)), tuple(_floats(t.std)))
    if name == "Resize":
        if state["tensor"] is not None:
            raise PreprocessingError(f"{where} resizes a tensor (the images became tensors at position "
                                     f"{state['tensor']}): torchvision then uses its own kernels, not Pillow's; "
                                     "move Resize before ToImage/ToTensor")
        return Resize(_size(t.size), _interpolation(t.interpolation, where), getattr(t, "max_size", None))
    if name == "CenterCrop":
        return CenterCrop(_size(t.size))
    return _pad(t, where)  # Pad


def _rescale(t: Any, where: str, state: dict[str, Any], name: str, position: str) -> Any:
    dtype = getattr(t, "dtype", None)
    if isinstance(dtype, dict):
        dtype = next((v for k, v in dtype.items() if getattr(k, "__name__", "") in ("Image", "Tensor")), None)
    if str(dtype) != "torch.float32":
        raise PreprocessingError(f"{where}: dtype {dtype} is not converted (only torch.float32)")
    if state["float"]:
        return None  # float to float: nothing changes
    scale = getattr(t, "scale", True) if name == "ToDtype" else True
    state["tensor"], state["float"] = state["tensor"] or position, True
    if not scale:
        return None  # float32 values 0..255
    v1 = type(t).__module__.startswith("torchvision.transforms.transforms")  # v1 ConvertImageDtype divides
    return Rescale("divide" if v1 else "multiply")


def _pad(t: Any, where: str) -> Pad:
    mode = getattr(t, "padding_mode", "constant")
    if mode != "constant":
        raise PreprocessingError(f"{where}: padding_mode={mode!r} is not converted (only 'constant')")
    fill = t.fill
    if isinstance(fill, dict):
        fills = set(map(_fill, fill.values()))
        fill = fills.pop() if len(fills) == 1 else None
    fill = _fill(fill)
    if not isinstance(fill, int):
        raise PreprocessingError(f"{where}: fill={t.fill!r} is not converted (one integer 0..255 for every channel)")
    padding = t.padding
    return Pad(tuple(padding) if isinstance(padding, (list, tuple)) else padding, fill)  # Pad reads 1, 2 or 4


def _fill(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(set(value)) == 1:
        value = value[0]
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _size(size: Any) -> Any:
    if isinstance(size, (list, tuple)):
        return [int(s) for s in size] if len(size) != 1 else int(size[0])
    return int(size)


def _interpolation(mode: Any, where: str) -> str:
    value = getattr(mode, "value", mode)
    if isinstance(value, int):  # a PIL resampling code
        value = {code: name for name, code in INTERPOLATIONS.items()}.get(value, value)
    if value not in INTERPOLATIONS:
        raise PreprocessingError(f"{where}: interpolation {mode!r} is not converted")
    return str(value)


def _floats(values: Any) -> list[float]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    return [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]


def _name(t: Any) -> str:
    return type(t).__name__
