"""Row bands (runtime/bands.py, issue #28): the banded resizes are Pillow's whole-image resize, and the banded
embed and detect give what the whole-image float path gives."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from videoseal_tflite.runtime import bands
from videoseal_tflite.runtime import image as runtime_image
from videoseal_tflite.runtime.image import Detector, Embedder, resize_bilinear, to_uint8
from videoseal_tflite.runtime.image_io import to_rgb_float

MESSAGE = np.array([int(c) for c in "0110100110010110"], np.float32)
# (height, width) where Pillow starts with the horizontal pass: bit for bit; elsewhere within one float32 ulp
EXACT = [(1200, 1920), (777, 513), (300, 300), (129, 128), (40, 20480)]
NEAR = [(20480, 40), (4000, 130)]


@pytest.mark.fast
@pytest.mark.parametrize("shape", EXACT + NEAR, ids=lambda s: f"{s[0]}x{s[1]}")
def test_banded_downscale_is_pillows_resize(shape):
    rgb8 = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    whole = resize_bilinear(to_rgb_float(rgb8), 128, 128)
    banded = bands.downscale(rgb8, 128, 128)
    if shape in EXACT:
        assert np.array_equal(banded, whole)
    else:
        assert np.abs(banded - whole).max() <= 1.2e-7


@pytest.mark.fast
@pytest.mark.parametrize("shape", [(1200, 1920), (777, 513), (2000, 300), (40, 2048)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_banded_upscale_rows_are_the_whole_resize(shape):
    small = np.random.default_rng(1).standard_normal((3, 128, 128)).astype(np.float32)
    whole = resize_bilinear(small, *shape)
    up = bands.Upscale(small, *shape)
    rows = np.concatenate([up.rows(a, b) for a, b in bands.bands(shape[0], rows=100)], axis=1)
    assert np.abs(rows - whole).max() <= (0 if shape[0] >= 128 else 1.2e-7)


@pytest.mark.parametrize("name", ["coffee", "astronaut"])
def test_banded_embed_and_detect_equal_the_float_path(default_fp32, monkeypatch, name):
    """Forced into bands (the threshold set to 0), embed writes the float path's pixels and detect reads its bits."""
    rgb8 = getattr(skimage.data, name)()
    embedder, detector = Embedder(default_fp32["embedder"]), Detector(default_fp32["detector"])
    whole = to_uint8(embedder.embed(to_rgb_float(rgb8), MESSAGE))
    read_whole = detector.detect(to_rgb_float(whole))
    monkeypatch.setattr(runtime_image, "BANDED_ABOVE_PIXELS", 0)
    banded = embedder.embed_rgb8(rgb8, MESSAGE)
    assert np.array_equal(banded, whole)
    read_banded = detector.detect(banded)
    assert np.array_equal(read_banded.bit_logits, read_whole.bit_logits)
    assert read_banded.bit_accuracy(MESSAGE) == 1.0
