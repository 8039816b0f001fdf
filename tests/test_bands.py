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
SHAPES = [(1200, 1920), (777, 513), (300, 300), (129, 128), (40, 20480), (20480, 40), (4000, 130)]


@pytest.mark.fast
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_banded_downscale_is_pillows_resize(shape):
    """Within four float32 ulps of Pillow's resize of the whole float image (Pillow's coefficients as float32 matrix
    products, the vertical pass first, the scale to [0,1] last, where Pillow sums in double; measured: 3.5 ulps at
    most, on the 40 x 20480 strip), at the processing size and at the search's other sizes."""
    rgb8 = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    whole = resize_bilinear(to_rgb_float(rgb8), 128, 128)
    banded = bands.downscale(rgb8, 128, 128)
    assert np.abs(banded - whole).max() <= 4 * 1.2e-7
    for size in ((256, 256), (90, 181)):  # the comb's analysis size; a crop's extent, other aspect
        assert np.abs(bands.downscale(rgb8, *size) - resize_bilinear(to_rgb_float(rgb8), *size)).max() <= 4 * 1.2e-7


@pytest.mark.fast
@pytest.mark.parametrize("shape", [(1200, 1920), (777, 513), (2000, 300), (40, 2048), (7, 5)], ids=str)
def test_added_levels_are_the_rounded_float_blend(shape):
    """`add_upscaled` (8-bit sum of the rounded, upsampled delta) against the float blend it replaces: within one
    level, on at most 0.01 % of the values (a float sum that lands on a rounding boundary)."""
    rng = np.random.default_rng(2)
    rgb8 = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    delta = rng.uniform(-40, 40, (3, 64, 64)).astype(np.float32)
    float_path = to_uint8(to_rgb_float(rgb8) + resize_bilinear(delta / np.float32(255), *shape))
    diff = np.abs(bands.add_upscaled(rgb8, delta).astype(int) - float_path.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-4
    # pixels in another memory order (a transposed view, as `to_uint8` of [3,H,W] planes returns): the same sum
    planar = np.ascontiguousarray(rgb8.transpose(2, 0, 1)).transpose(1, 2, 0)
    assert not planar.flags.c_contiguous
    np.testing.assert_array_equal(bands.add_upscaled(planar, delta), bands.add_upscaled(rgb8, delta))
    np.testing.assert_array_equal(bands.downscale(planar, 64, 64), bands.downscale(rgb8, 64, 64))


@pytest.mark.fast
@pytest.mark.parametrize("shape", [(1200, 1920), (777, 513), (2000, 300), (40, 2048)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_banded_upscale_rows_are_the_whole_resize(shape):
    small = np.random.default_rng(1).standard_normal((3, 128, 128)).astype(np.float32)
    whole = resize_bilinear(small, *shape)
    up = bands.Upscale(small, *shape)
    rows = np.concatenate([up.rows(a, b) for a, b in bands.bands(shape[0], rows=100)], axis=1)
    assert np.abs(rows - whole).max() <= (0 if shape[0] >= 128 else 1.2e-7)


@pytest.mark.parametrize("name", ["coffee", "astronaut"])
def test_banded_embed_and_detect_equal_the_float_path(robust_fp32, monkeypatch, name):
    """embed_rgb8 (8-bit levels, row bands) writes the float path's pixels within one level on <= 0.01 % of the
    values, and detect reads the same bits from it; forced into bands (the threshold set to 0) nothing changes."""
    rgb8 = getattr(skimage.data, name)()
    embedder, detector = Embedder(robust_fp32["embedder"]), Detector(robust_fp32["detector"])
    assert embedder.adds_levels
    whole = to_uint8(embedder.embed(to_rgb_float(rgb8), MESSAGE))
    levels = embedder.embed_rgb8(rgb8, MESSAGE)
    diff = np.abs(levels.astype(int) - whole.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-4
    read_whole = detector.detect(to_rgb_float(whole))
    monkeypatch.setattr(runtime_image, "BANDED_ABOVE_PIXELS", 0)
    assert np.array_equal(embedder.embed_rgb8(rgb8, MESSAGE), levels)
    read_banded = detector.detect(levels)
    assert np.array_equal(read_banded.bits, read_whole.bits)
    assert np.abs(read_banded.bit_logits - read_whole.bit_logits).max() < 1e-2
    assert read_banded.bit_accuracy(MESSAGE) == 1.0


def test_watermark_names_a_message_of_the_wrong_length(robust_fp32):
    """`Embedder.watermark` is public (the video path and tests call it): a message of the wrong length is the
    runtime's InvalidMessage, as for `embed`, not XNNPACK's "failed to reshape"."""
    from videoseal_tflite.errors import InvalidMessage

    embedder = Embedder(robust_fp32["embedder"])
    with pytest.raises(InvalidMessage, match="message has 64 bits but the model takes 16"):
        embedder.watermark(np.zeros((3, 64, 64), np.float32), np.zeros(64, np.float32))
