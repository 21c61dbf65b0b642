"""Fuzzing the image decoder: real PNG, JPEG, BMP, WebP and GIF files with bytes flipped, cut, inserted and
truncated. Every input is encoded or is a bad row with a one-line reason; no other exception gets out (Pillow's
decoders raise many kinds on corrupt data). A longer run: scripts/fuzz (TP_FUZZ_EXAMPLES)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import FUZZ
from torchpredict.preprocessing import ImageEncode, Preprocessor, Rescale, Resize
from vision import encoded, photo

SEEDS = [encoded(photo(20, 30), fmt) for fmt in ("PNG", "JPEG", "BMP", "WEBP")] + [
    encoded(photo(16, 16).quantize(32), "GIF"), encoded(photo(12, 12, mode="L"), "PNG")]


@pytest.fixture(scope="module")
def step() -> ImageEncode:
    return Preprocessor([ImageEncode(["image"], [Resize([8, 8]), Rescale()])]).fit({"image": SEEDS[:1]}).steps[0]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data = data[:at]
    return bytes(data)


@FUZZ
@given(data=mutated())
def test_a_corrupted_image_is_encoded_or_a_bad_row_with_a_short_reason(step, data: bytes):
    tensors, bad, reasons, _ = step.encode(pa.array([data], pa.binary()))
    assert tensors.to_numpy_ndarray().shape == (1, 3, 8, 8)
    if len(bad):
        assert bad.tolist() == [0] and 0 < len(reasons[0]) < 500 and "\n" not in reasons[0], reasons
