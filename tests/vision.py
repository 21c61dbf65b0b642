"""torchvision for the tests, and the image files they write.

PyPI's torchvision wheel is a CUDA build whose C++ ops cannot load beside the CPU torch the suite pins; its
transforms and models need none of them, but importing it registers fake kernels for two ops (nms, qnms) that
must exist. They are declared here, without kernels, when torchvision's own library did not load them.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch


def import_torchvision() -> Any:
    try:
        torch.ops.torchvision.nms  # noqa: B018  # present when torchvision's C++ ops loaded
    except (AttributeError, RuntimeError):
        for op in ("nms", "qnms"):
            with contextlib.suppress(RuntimeError):  # defined already
                torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> "
                                     "Tensor")
    import torchvision

    return torchvision


def photo(height: int = 60, width: int = 80, seed: int = 0, mode: str = "RGB") -> Any:
    """A PIL image with smooth gradients, edges and noise: resampling filters give different results on it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [(x * 255 / max(1, width - 1)), (y * 255 / max(1, height - 1)), ((x + y) % 32) * 8.0]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    pixels[height // 3: height // 2, width // 4: width // 2] = (250, 20, 40)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image.convert(mode) if mode != "RGB" else image


def encoded(image: Any, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_image(path: Path, image: Any, **options: Any) -> Path:
    path.write_bytes(encoded(image, {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
                                     ".gif": "GIF"}[path.suffix.lower()], **options))
    return path
