"""Image steps: decode, resize, crop, pad, rescale and normalise an image column into one float32 tensor per row.

`ImageEncode` holds an ordered list of image operations, each the plain-data twin of a torchvision transforms v2
transform applied to a PIL image (see torchvision_import.from_torchvision), and replaces a column of encoded
images (bytes) or image file paths (strings) by a fixed-shape float32 tensor column, which a Preprocessor routes to
the model as its own [rows, C, H, W] (or [rows, H, W, C]) input.

The arithmetic, so that one file gives one tensor on every machine:
- Decode: Pillow decodes the file (PNG, JPEG, WebP, BMP, GIF: the first frame), applies the EXIF orientation
  (exif=True), and converts the mode to the trained one (RGB or L) with Pillow's `convert`.
- Resize, CenterCrop, Crop, Pad: on the uint8 image, by Pillow (`Image.resize` with the trained resampling
  filter, always antialiased, as torchvision does for PIL images), with torchvision's size and anchor rules.
- Rescale: uint8 to float32, `x * float32(1/255)` (torchvision v2 `ToDtype(float32, scale=True)`) or
  `x / float32(255)` (v1 `ToTensor`); without it the float32 values stay 0..255.
- Normalize: `(x - mean[c]) / std[c]` in float32, per channel; mean and std given, or fitted from the
  training images (population statistics of the rescaled pixels, in float64).
Decoding and the uint8 operations run on a thread pool (Pillow releases the GIL), a batch at a time.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from torchpredict.errors import PreprocessingError
from torchpredict.messages import described, first_line
from torchpredict.preprocessing.steps import Step, register_step, state_rules

__all__ = ["FORMATS", "IMAGE_OPS", "INTERPOLATIONS", "LAYOUTS", "MAX_PIXELS", "MODES", "CenterCrop", "Crop",
           "Decode", "ImageEncode", "Normalize", "Pad", "Rescale", "Resize", "is_image_tensor"]

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # the only decoders Pillow may use (no EPS, no plugins)
MODES = {"RGB": 3, "L": 1}
INTERPOLATIONS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}  # PIL codes
LAYOUTS = ("CHW", "HWC")
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (a 9459 x 9459 image)
MAX_SIDE = 16_384  # the largest side an operation may make (or crop, or pad by): bounds what a bundle can ask for


class BadImage(ValueError):
    """One image that cannot be encoded; its message is the row's reason."""


# -- the operations, as plain data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decode:
    """Decode the bytes (or the file) with Pillow; mode: the trained one, converted to unless convert=False,
    which refuses images of another mode instead. channels="BGR": an RGB image's channels reversed, as OpenCV
    reads them, for a model trained on cv2.imread's arrays (Normalize's mean and std then in BGR order too)."""

    op: ClassVar[str] = "decode"
    mode: str = "RGB"
    exif: bool = True
    convert: bool = True
    max_pixels: int = MAX_PIXELS
    channels: str = "RGB"

    def __post_init__(self) -> None:
        _expect(self.mode in MODES, self, "mode", f"one of {', '.join(map(repr, MODES))}", self.mode)
        _expect(self.channels == "RGB" or (self.channels == "BGR" and self.mode == "RGB"), self, "channels",
                "'RGB', or 'BGR' with mode 'RGB'", self.channels)
        _expect(_count(self.max_pixels) and self.max_pixels >= 1, self, "max_pixels", "a count >= 1", self.max_pixels)
        for name in ("exif", "convert"):
            _expect(isinstance(getattr(self, name), bool), self, name, "true or false", getattr(self, name))


@dataclass(frozen=True)
class Resize:
    """torchvision's Resize on a PIL image: size an int (the shorter side, the longer one int(size * long /
    short), capped by max_size) or [height, width]."""

    op: ClassVar[str] = "resize"
    size: int | Sequence[int]
    interpolation: str = "bilinear"
    max_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self, "size", self.size, allow_int=True))
        _expect(self.interpolation in INTERPOLATIONS, self, "interpolation",
                f"one of {', '.join(map(repr, INTERPOLATIONS))}", self.interpolation)
        _expect(self.max_size is None or (_count(self.max_size) and isinstance(self.size, int)
                                          and self.size < self.max_size <= MAX_SIDE), self, "max_size",
                f"null, or a size > size (with an int size), at most {MAX_SIDE:,}", self.max_size)

    def apply(self, image: Any) -> Any:
        height, width = resized_size(image.height, image.width, self.size, self.max_size)  # type: ignore[arg-type]
        if height * width > MAX_PIXELS:
            raise BadImage(f"resizing the {image.width}x{image.height} image to {width}x{height} would make "
                           f"{width * height:,} pixels, over the limit of {MAX_PIXELS:,}")
        if (height, width) == (image.height, image.width):
            return image
        return image.resize((width, height), resample=INTERPOLATIONS[self.interpolation])


@dataclass(frozen=True)
class CenterCrop:
    """torchvision's CenterCrop: [height, width] from the centre (anchor rounded half to even, as int(round())
    does), zero-padded first where the image is smaller."""

    op: ClassVar[str] = "center_crop"
    size: int | Sequence[int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self, "size", self.size, allow_int=True, square=True))

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        crop_h, crop_w = self.size  # type: ignore[misc]  # [height, width], from __post_init__
        h, w = pixels.shape[:2]
        if crop_h > h or crop_w > w:
            left, top = (crop_w - w) // 2 if crop_w > w else 0, (crop_h - h) // 2 if crop_h > h else 0
            right, bottom = (crop_w - w + 1) // 2 if crop_w > w else 0, (crop_h - h + 1) // 2 if crop_h > h else 0
            pixels = _padded(pixels, (left, top, right, bottom), 0)
            h, w = pixels.shape[:2]
        top, left = round((h - crop_h) / 2.0), round((w - crop_w) / 2.0)  # half to even, as torchvision
        return pixels[top:top + crop_h, left:left + crop_w]


@dataclass(frozen=True)
class Crop:
    """A fixed window: rows top..top+height, columns left..left+width (zeros where it leaves the image)."""

    op: ClassVar[str] = "crop"
    top: int
    left: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("top", "left"):
            _expect(_count(getattr(self, name)) and 0 <= getattr(self, name) <= MAX_SIDE, self, name,
                    f"a count in 0..{MAX_SIDE:,}", getattr(self, name))
        for name in ("height", "width"):
            _expect(_count(getattr(self, name)) and 1 <= getattr(self, name) <= MAX_SIDE, self, name,
                    f"a size in 1..{MAX_SIDE:,}", getattr(self, name))

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        h, w = pixels.shape[:2]
        right, bottom = max(0, self.left + self.width - w), max(0, self.top + self.height - h)
        if right or bottom:
            pixels = _padded(pixels, (0, 0, right, bottom), 0)
        return pixels[self.top:self.top + self.height, self.left:self.left + self.width]


@dataclass(frozen=True)
class Pad:
    """torchvision's Pad with padding_mode='constant': [left, top, right, bottom] pixels of `fill`."""

    op: ClassVar[str] = "pad"
    padding: int | Sequence[int]
    fill: int = 0

    def __post_init__(self) -> None:
        padding = self.padding
        if _count(padding):
            padding = (padding,) * 4  # type: ignore[assignment]
        elif isinstance(padding, (list, tuple)) and len(padding) == 2:
            padding = (padding[0], padding[1], padding[0], padding[1])
        _expect(isinstance(padding, (list, tuple)) and len(padding) == 4
                and all(_count(p) and 0 <= p <= MAX_SIDE for p in padding), self, "padding",
                f"a count, [left/right, top/bottom] or [left, top, right, bottom] of counts in 0..{MAX_SIDE:,}",
                self.padding)
        object.__setattr__(self, "padding", tuple(padding))  # type: ignore[arg-type]
        _expect(_count(self.fill) and 0 <= self.fill <= 255, self, "fill", "an integer in 0..255", self.fill)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        return _padded(pixels, self.padding, self.fill)  # type: ignore[arg-type]  # 4 counts, from __post_init__


@dataclass(frozen=True)
class Rescale:
    """uint8 0..255 to float32 0..1: "multiply" by float32(1/255) as torchvision v2's ToDtype(scale=True),
    or "divide" by 255 as v1's ToTensor; the two differ in the last bit of some values."""

    op: ClassVar[str] = "rescale"
    method: str = "multiply"

    def __post_init__(self) -> None:
        _expect(self.method in ("multiply", "divide"), self, "method", "'multiply' or 'divide'", self.method)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float32)
        return x * np.float32(1.0 / 255) if self.method == "multiply" else x / np.float32(255)


@dataclass(frozen=True)
class Normalize:
    """(x - mean[c]) / std[c] in float32; mean and std null: fitted from the training images."""

    op: ClassVar[str] = "normalize"
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = (value,)
                _expect(isinstance(value, (list, tuple)) and len(value) >= 1
                        and all(_number(v) and math.isfinite(v) for v in value), self, name,
                        "a list of finite numbers, or null (fitted)", value)
                object.__setattr__(self, name, tuple(float(v) for v in value))
        _expect((self.mean is None) == (self.std is None), self, "mean", "given together with std, or both null",
                self.mean)
        _expect(self.std is None or all(v > 0 for v in self.std), self, "std", "numbers > 0", self.std)

    @property
    def learned(self) -> bool:
        """mean and std are fitted from the training images."""
        return self.mean is None


IMAGE_OPS: dict[str, type] = {cls.op: cls for cls in (Decode, Resize, CenterCrop, Crop, Pad, Rescale, Normalize)}
Op = Decode | Resize | CenterCrop | Crop | Pad | Rescale | Normalize


def op_to_dict(op: Op) -> dict[str, Any]:
    return {"op": op.op, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(op).items()}}


def op_from_dict(d: Any) -> Op:
    if isinstance(d, (Decode, Resize, CenterCrop, Crop, Pad, Rescale, Normalize)):
        return d
    if not isinstance(d, Mapping) or d.get("op") not in IMAGE_OPS:
        known = ", ".join(map(repr, IMAGE_OPS))
        raise PreprocessingError(f"an image operation must be an object whose 'op' is one of {known}, got "
                                 f"{described(d)}")
    params = {k: v for k, v in d.items() if k != "op"}
    try:
        return IMAGE_OPS[d["op"]](**params)
    except TypeError as exc:
        raise PreprocessingError(f"image operation {d['op']!r}: {exc}") from None


# -- the step --------------------------------------------------------------------------------------------------


@register_step
class ImageEncode(Step):
    """Replace an image column (encoded bytes, or file paths) by one float32 tensor per row, after `ops`.

    ops: the operations in order (Decode first; if it is left out, Decode() is). Every image must come out of
    them in one size, which fit records (`shape_`): end with a CenterCrop or a Resize to [height, width] when
    the training images differ in size. layout: "CHW" (torchvision's) or "HWC" (channels last).
    An image that cannot be decoded, is over max_pixels, has a mode Decode refuses, or comes out in another size
    is a bad row: rejected with its reason (with rejects) or an error naming the row and the file.

    >>> step = ImageEncode(["image"], [Resize([4, 4]), Rescale(), Normalize()])  # doctest: +SKIP
    """

    type = "image_encode"
    state = state_rules(
        shape_=lambda step, name, value: _state_shape(step, name, value),
        mean_=lambda step, name, value: _state_channels(step, name, value, positive=False),
        std_=lambda step, name, value: _state_channels(step, name, value, positive=True),
        pixel_mean_=lambda step, name, value: _state_channels(step, name, value, positive=False),
        sizes_=lambda step, name, value: _state_sizes(step, name, value),
    )

    def __init__(self, columns: Sequence[str], ops: Sequence[Any] = (), *, layout: str = "CHW") -> None:
        parsed = [op_from_dict(op) for op in ops]
        if not parsed or not isinstance(parsed[0], Decode):
            parsed.insert(0, Decode())
        _check_order(parsed)
        if layout not in LAYOUTS:
            raise PreprocessingError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}")
        channels = MODES[parsed[0].mode]  # type: ignore[union-attr]
        for op in parsed:
            if isinstance(op, Normalize) and op.mean is not None and len(op.mean) not in (1, channels):
                raise PreprocessingError(f"Normalize has {len(op.mean)} means for {channels}-channel "
                                         f"{parsed[0].mode} images")  # type: ignore[union-attr]
            if isinstance(op, Normalize) and op.std is not None and len(op.std) != len(op.mean or ()):
                raise PreprocessingError(f"Normalize has {len(op.mean or ())} means and {len(op.std)} stds")
        super().__init__(columns, ops=[op_to_dict(op) for op in parsed], layout=layout)
        self.ops = tuple(parsed)

    @property
    def decode(self) -> Decode:
        return self.ops[0]  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return MODES[self.decode.mode]

    def fit(self, frame: pa.Table) -> ImageEncode:
        pixel_sum = np.zeros(self.channels)
        pixel_sq = np.zeros(self.channels)
        image_means = []  # per image, its channels' mean on the 0..1 scale, for drift
        count, sizes, shapes = 0, [], set()
        for name in self.columns:
            values = self._column(frame, name)
            for start in range(0, len(values), _FIT_BATCH):
                batch = values.slice(start, _FIT_BATCH)
                results = _pool_map(lambda v: self._uint8_stage(v, sizes_out=True), batch.to_pylist())
                for row, (result, size) in enumerate(results):
                    if isinstance(result, BadImage):
                        raise PreprocessingError(f"column {name!r}: training image at row {start + row}: {result}")
                    scaled = self._scaled(result)
                    x = scaled.astype(np.float64).reshape(-1, self.channels)
                    pixel_sum += x.sum(axis=0)
                    pixel_sq += (x**2).sum(axis=0)
                    count += len(x)
                    image_means.append(_channel_means(result))
                    sizes.append(size)
                    shapes.add(self._after_normalize(scaled).shape)
        if not count:
            raise PreprocessingError(f"{self!r}: no training images to fit on")
        if len(shapes) > 1:
            seen = " and ".join(f"{h}x{w}" for h, w, _ in sorted(shapes)[:2])
            raise PreprocessingError(f"{self!r}: the training images come out of the operations in different sizes "
                                     f"({seen}, height x width); end them with a CenterCrop or a Resize to "
                                     "[height, width]")
        mean = pixel_sum / count
        std = np.sqrt(np.maximum(pixel_sq / count - mean**2, 0.0))
        h, w, _ = shapes.pop()
        self.shape_ = (self.channels, h, w) if self.params["layout"] == "CHW" else (h, w, self.channels)
        normalize = self._normalize
        if normalize is not None and normalize.learned:
            if not (std > 0).all():
                raise PreprocessingError(f"{self!r}: a channel of the training images is constant (std 0); give "
                                         "Normalize a mean and std")
            self.mean_, self.std_ = tuple(mean.tolist()), tuple(std.tolist())
        else:
            self.mean_ = normalize.mean if normalize is not None else None  # type: ignore[assignment]
            self.std_ = normalize.std if normalize is not None else None  # type: ignore[assignment]
        self.pixel_mean_ = tuple(np.mean(image_means, axis=0).tolist())
        arr = np.asarray(sizes, dtype=np.float64)
        self.sizes_ = {"height": _summary(arr[:, 0]), "width": _summary(arr[:, 1])}
        return self

    def transform(self, frame: pa.Table) -> pa.Table:
        """frame with each image column encoded (a column already encoded, by Preprocessor.check_rows, is
        kept); a bad image raises a PreprocessingError naming its row."""
        self._check_fitted()
        for name in self.columns:
            col = self._column(frame, name)
            if is_image_tensor(col.type):
                continue
            encoded, bad, reasons, _ = self.encode(col)
            if len(bad):
                raise PreprocessingError(f"column {name!r}: {reasons[0]} at row {bad[0]}")
            frame = frame.set_column(frame.column_names.index(name), name, encoded)
        return frame

    def encode(self, values: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray, list[str], ImageStats]:
        """(the tensor column, its bad rows, their reasons, what the good ones looked like): bad rows hold zeros."""
        self._check_fitted()
        out = np.zeros((len(values), *self.shape_), dtype=np.float32)
        stats = ImageStats(np.full((len(values), 2), np.nan), np.full((len(values), self.channels), np.nan))
        bad: list[int] = []
        reasons: list[str] = []
        lock = threading.Lock()

        def one(row_value: tuple[int, Any]) -> None:
            row, value = row_value
            try:
                pixels, size = self._uint8_stage(value)
                out[row] = self._finish(pixels)
                stats.sizes[row], stats.means[row] = size, _channel_means(pixels)
            except BadImage as exc:
                with lock:
                    bad.append(row)
                    reasons.append(str(exc))

        items = list(enumerate(values.to_pylist()))
        for item in items[:1]:
            one(item)
        decoded = stats.sizes[0, 0] * stats.sizes[0, 1] if len(items) else 0.0
        if decoded >= POOL_PIXELS:  # large images: decoding and resizing release the GIL, so threads gain
            _pool_run(one, items[1:])
        else:  # small ones (or a bad first one): threads would spend more on the GIL than they save
            for item in items[1:]:
                one(item)
        order = np.argsort(bad, kind="stable")
        return (pa.FixedShapeTensorArray.from_numpy_ndarray(out), np.asarray(bad, dtype=np.int64)[order],
                [reasons[i] for i in order], stats)

    def drift(self, stats: ImageStats) -> dict[str, Any]:
        """The drift of encoded images against the training ones (ColumnDrift's image fields, as a dict): rows
        whose decoded size lies outside the training sizes, and the channels' summed means with the training
        means (on the 0..1 scale of the decoded pixels)."""
        good = ~np.isnan(stats.sizes[:, 0])
        sizes, limits = stats.sizes[good], self.sizes_
        outside = ((sizes[:, 0] < limits["height"]["min"]) | (sizes[:, 0] > limits["height"]["max"])
                   | (sizes[:, 1] < limits["width"]["min"]) | (sizes[:, 1] > limits["width"]["max"]))
        return {"rows": int(good.sum()), "out_of_range": int(outside.sum()), "image_rows": int(good.sum()),
                "pixel_sum": stats.means[good].sum(axis=0).tolist(), "training_pixel_mean": list(self.pixel_mean_)}

    # -- one image --------------------------------------------------------------------------------------

    @property
    def _normalize(self) -> Normalize | None:
        return next((op for op in self.ops if isinstance(op, Normalize)), None)

    def _uint8_stage(self, value: Any, sizes_out: bool = False) -> tuple[Any, tuple[int, int] | None]:
        """The image after the operations before Rescale, as uint8 [H, W, C], and its decoded (height, width);
        a BadImage (returned, not raised, when sizes_out: fit names the row)."""
        try:
            image = open_image(value, self.decode)
            size = (image.height, image.width)
            pixels = None
            for op in self.ops[1:]:
                if isinstance(op, (Rescale, Normalize)):
                    break
                if isinstance(op, Resize):
                    image = op.apply(image if pixels is None else _pil(pixels))
                    pixels = None
                else:
                    pixels = op.apply(_array(image) if pixels is None else pixels)  # type: ignore[union-attr]
            pixels = _array(image) if pixels is None else pixels
            return (pixels[:, :, ::-1] if self.decode.channels == "BGR" else pixels), size
        except BadImage as exc:
            if sizes_out:
                return exc, None
            raise

    def _scaled(self, pixels: np.ndarray) -> np.ndarray:
        """pixels through Rescale (and the crops and pads after it) as float32, before Normalize."""
        x: np.ndarray | None = None
        started = False
        for op in self.ops[1:]:
            if isinstance(op, Rescale):
                x, started = op.apply(pixels), True
            elif isinstance(op, Normalize):
                break
            elif started:
                x = op.apply(x)  # type: ignore[union-attr, arg-type]
        return pixels.astype(np.float32) if x is None else x

    def _after_normalize(self, x: np.ndarray) -> np.ndarray:
        """x through the crops and pads after Normalize."""
        if self._normalize is not None:
            for op in self.ops[self.ops.index(self._normalize) + 1:]:
                x = op.apply(x)  # type: ignore[union-attr]
        return x

    def _finish(self, pixels: np.ndarray) -> np.ndarray:
        x = self._scaled(pixels)
        if self._normalize is not None:
            x = (x - np.asarray(self.mean_, dtype=np.float32)) / np.asarray(self.std_, dtype=np.float32)
            x = self._after_normalize(x)
        if self.params["layout"] == "CHW":
            x = x.transpose(2, 0, 1)
        if x.shape != tuple(self.shape_):
            raise BadImage(f"the image comes out {_shape_text(x.shape, self.params['layout'])}, the model takes "
                           f"{_shape_text(self.shape_, self.params['layout'])}")
        return x


@dataclass(frozen=True)
class ImageStats:
    """Per encoded row: its decoded (height, width) and its channels' mean on the 0..1 scale (NaN for bad rows)."""

    sizes: np.ndarray
    means: np.ndarray


def _channel_means(pixels: np.ndarray) -> np.ndarray:
    """An uint8 [H, W, C] image's per-channel mean on the 0..1 scale."""
    return pixels.reshape(-1, pixels.shape[-1]).mean(axis=0) / 255.0


# -- decoding -------------------------------------------------------------------------------------------------


def open_image(value: Any, decode: Decode) -> Any:
    """A decoded PIL image in decode's mode; raises BadImage with the reason (naming the file, for a path)."""
    Image, ImageOps, UnidentifiedImageError = pillow()

    where = f"{value!r}: " if isinstance(value, str) else ""
    if value is None:
        raise BadImage("missing image (null)")
    if isinstance(value, str) and not os.path.isfile(value):
        raise BadImage(f"{where}no such image file")
    source = value if isinstance(value, str) else io.BytesIO(value)
    try:
        with Image.open(source, formats=FORMATS) as opened:
            width, height = opened.size
            if width * height > decode.max_pixels:
                raise BadImage(f"{where}the image is {width}x{height} = {width * height:,} pixels, over the limit "
                               f"of {decode.max_pixels:,} (max_pixels)")
            opened.seek(0)  # an animation's first frame
            opened.load()
            image = ImageOps.exif_transpose(opened) if decode.exif else opened.copy()
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"{where}the image is over the decompression-bomb limit: {first_line(exc)}") from None
    except UnidentifiedImageError:
        raise BadImage(f"{where}not an image in a known format ({', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated, corrupt, or unreadable
        raise BadImage(f"{where}cannot decode the image: {exc}") from None
    if image.mode != decode.mode:
        if not decode.convert:
            bands = len(image.getbands())
            raise BadImage(f"{where}the image has mode {image.mode} ({bands} channel{'s' * (bands != 1)}); "
                           f"the model takes {decode.mode} and Decode(convert=False) refuses others")
        image = image.convert(decode.mode)
    return image


def pillow() -> tuple[Any, Any, Any]:
    """Pillow's Image, ImageOps and UnidentifiedImageError; a PreprocessingError saying how to install it."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise PreprocessingError("image steps decode with Pillow, which is not installed: pip install "
                                 "'torchpredict[images]'") from None
    return Image, ImageOps, UnidentifiedImageError


def is_image_tensor(t: pa.DataType) -> bool:
    return isinstance(t, pa.FixedShapeTensorType)


def resized_size(height: int, width: int, size: int | tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """torchvision's output size for Resize (functional._compute_resized_output_size)."""
    if not isinstance(size, int):
        return size[0], size[1]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_h, new_w


# -- helpers -----------------------------------------------------------------------------------------------------

_FIT_BATCH = 256
POOL_PIXELS = 32_768  # decoded pixels from which an image batch is decoded on the thread pool (about 181 x 181)
_WORKERS = min(8, os.cpu_count() or 1)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="tp-images")
        return _POOL


def _pool_run(fn: Callable[[Any], None], items: list[Any]) -> None:
    """fn on every item, on the pool, a few contiguous runs of items per worker (a task per item costs more than
    a small image's decoding)."""
    workers = _WORKERS
    if len(items) <= 1 or workers <= 1:
        for item in items:
            fn(item)
        return
    size = max(1, -(-len(items) // (workers * 4)))

    def run(start: int) -> None:
        for item in items[start:start + size]:
            fn(item)

    for _ in _pool().map(run, range(0, len(items), size)):
        pass


def _pool_map(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    if len(items) <= 1:
        return [fn(item) for item in items]
    return list(_pool().map(fn, items))


def _array(image: Any) -> np.ndarray:
    pixels = np.asarray(image)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _pil(pixels: np.ndarray) -> Any:
    return pillow()[0].fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def _padded(pixels: np.ndarray, ltrb: Sequence[int], fill: float) -> np.ndarray:
    left, top, right, bottom = ltrb
    return np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="constant", constant_values=fill)


def _check_order(ops: list[Op]) -> None:
    """Decode once and first; Rescale and Normalize at most once, Normalize after Rescale when both; no
    Resize on float pixels (torchvision resizes tensors with other kernels than Pillow's)."""
    names = [op.op for op in ops]
    if names.count("decode") > 1:
        raise PreprocessingError("image operations: Decode must come once, first")
    for once in ("rescale", "normalize"):
        if names.count(once) > 1:
            raise PreprocessingError(f"image operations: {once} may come at most once")
    if "rescale" in names and "normalize" in names and names.index("normalize") < names.index("rescale"):
        raise PreprocessingError("image operations: Normalize must come after Rescale")
    floats = min([names.index(n) for n in ("rescale", "normalize") if n in names], default=len(names))
    late = [i for i, n in enumerate(names) if n == "resize" and i > floats]
    if late:
        raise PreprocessingError(f"image operations: Resize at position {late[0]} comes after {names[floats]}: "
                                 "images are resized as uint8 by Pillow; move Resize before Rescale")


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}


def _shape_text(shape: Sequence[int], layout: str) -> str:
    c, h, w = shape if layout == "CHW" else (shape[2], shape[0], shape[1])
    return f"{h}x{w} with {c} channel{'s' * (c != 1)}"


def _expect(ok: bool, op: Any, name: str, wanted: str, value: Any) -> None:
    if not ok:
        raise PreprocessingError(f"image operation {op.op!r}: {name} must be {wanted}, got {described(value)}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _size(op: Any, name: str, value: Any, *, allow_int: bool, square: bool = False) -> Any:
    """A size >= 1 (or [height, width] of them), at most MAX_SIDE a side: a bundle cannot ask for an image of
    gigabytes."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if _count(value) and allow_int:
        _expect(1 <= value <= MAX_SIDE, op, name, f"a size in 1..{MAX_SIDE:,}", value)
        return (value, value) if square else value
    _expect(isinstance(value, (list, tuple)) and len(value) == 2 and all(_count(v) and 1 <= v <= MAX_SIDE
                                                                          for v in value), op,
            name, f"a size in 1..{MAX_SIDE:,} or [height, width] of them", value)
    return tuple(value)


def _state_shape(step: Step, name: str, value: Any) -> tuple[int, ...]:
    if (not isinstance(value, list) or len(value) != 3 or not all(_count(v) and v >= 1 for v in value)
            or math.prod(value) > MAX_SIDE * MAX_SIDE * 4):
        raise step.bad_state(name, f"3 sizes >= 1 (at most {MAX_SIDE:,} x {MAX_SIDE:,} x 4 in all)",
                             described(value))
    return tuple(value)


def _state_channels(step: Step, name: str, value: Any, *, positive: bool) -> tuple[float, ...] | None:
    channels = MODES[step.decode.mode]  # type: ignore[attr-defined]
    if value is None and name in ("mean_", "std_"):
        return None
    ok = (isinstance(value, list) and len(value) in (1, channels)
          and all(_number(v) and math.isfinite(v) and (v > 0 or not positive) for v in value))
    if not ok:
        raise step.bad_state(name, f"{channels} finite number(s){' > 0' if positive else ''}", described(value))
    return tuple(float(v) for v in value)


def _state_sizes(step: Step, name: str, value: Any) -> dict[str, dict[str, float]]:
    ok = isinstance(value, Mapping) and set(value) == {"height", "width"} and all(
        isinstance(s, Mapping) and set(s) == {"min", "mean", "max"} and all(_number(v) and math.isfinite(v)
                                                                             for v in s.values())
        for s in value.values())
    if not ok:
        raise step.bad_state(name, "height and width summaries (min, mean, max)", described(value))
    return {k: dict(v) for k, v in value.items()}

