"""Image sets that need no download: scikit-image's bundled samples plus seeded procedural images.

Calibration and evaluation sets are disjoint by construction (different bundled names, different
procedural seed ranges); `tests/test_images.py` checks it. Images are float32 [3,H,W] in [0,1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from videoseal_tflite.runtime.image_io import NamedImage, load_image_file, to_rgb_float

EVAL_BUNDLED = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "camera", "coins", "moon")
CALIB_BUNDLED = (
    "brick",
    "grass",
    "gravel",
    "clock",
    "cell",
    "colorwheel",
    "hubble_deep_field",
    "retina",
    "page",
    "text",
    "logo",
    "checkerboard",
)
EVAL_PROCEDURAL_SEEDS = range(2000, 2008)
# Full-resolution held-out photos (>= 512 px on the long side), never trained or calibrated on: what a user's
# photo looks like to the runtime. `matplotlib:` names come from matplotlib's bundled sample data.
EVAL_FULLRES_PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "camera",
    "immunohistochemistry",
    "moon",
    "stereo_motorcycle",
    "matplotlib:grace_hopper.jpg",
)
EVAL_FULLRES_PROCEDURAL_SIZE = 512
CALIB_PROCEDURAL_SEEDS = range(1000, 1024)
TRAIN_PROCEDURAL_SEEDS = range(10_000, 100_000)  # training only; never in eval or calibration


def bundled_image(name: str) -> NamedImage:
    import skimage.data

    return NamedImage(f"skimage:{name}", to_rgb_float(getattr(skimage.data, name)()))


def fullres_photo(name: str) -> NamedImage:
    """A held-out photo at its own size (skimage's bundled data, or matplotlib's `sample_data`)."""
    if name.startswith("matplotlib:"):
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / name.split(":", 1)[1]
        return NamedImage(name, load_image_file(path).pixels)
    import skimage.data

    data = getattr(skimage.data, name)()
    return NamedImage(f"skimage:{name}", to_rgb_float(data[0] if isinstance(data, tuple) else data))


def fullres_evaluation_image(slot: int) -> NamedImage:
    """Slot `slot` of the full-resolution held-out set: the photos above, then the procedural seeds at 512 px."""
    photos = len(EVAL_FULLRES_PHOTOS)
    if slot < photos:
        return fullres_photo(EVAL_FULLRES_PHOTOS[slot])
    return procedural_image(EVAL_PROCEDURAL_SEEDS[slot - photos], EVAL_FULLRES_PROCEDURAL_SIZE)


def fullres_evaluation_images() -> list[NamedImage]:
    """The full-resolution held-out set, every slot (`fullres_evaluation_image`)."""
    return [fullres_evaluation_image(i) for i in range(len(EVAL_FULLRES_PHOTOS) + len(EVAL_PROCEDURAL_SEEDS))]


def procedural_image(seed: int, size: int = 256) -> NamedImage:
    """'Dead leaves' (occluding discs of random colour and size) over a colour gradient, plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.random(3), rng.random(3)
    angle = rng.random() * 2 * np.pi
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2
    img = (c0[:, None, None] * (1 - t) + c1[:, None, None] * t).astype(np.float32)
    for _ in range(int(rng.integers(40, 120))):
        radius = size * (0.02 + 0.25 * rng.random() ** 3)
        cy, cx = rng.random(2) * size
        mask = (yy * size - cy) ** 2 + (xx * size - cx) ** 2 <= radius**2
        shade = rng.random(3)[:, None, None] * (0.8 + 0.2 * (yy * rng.random() + xx * rng.random()))[None]
        img = np.where(mask[None], shade, img)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return NamedImage(f"procedural:{seed}", img.clip(0, 1).astype(np.float32))


def fit_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size (bicubic); float32 [3,size,size]."""
    _, h, w = pixels.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = pixels[:, top : top + side, left : left + side]
    if side == size:
        return crop.astype(np.float32)
    channels = [np.asarray(Image.fromarray(c, mode="F").resize((size, size), Image.Resampling.BICUBIC)) for c in crop]
    return np.stack(channels).clip(0, 1).astype(np.float32)


def calibration_images(size: int) -> list[NamedImage]:
    images = [bundled_image(n) for n in CALIB_BUNDLED] + [procedural_image(s, size) for s in CALIB_PROCEDURAL_SEEDS]
    return [NamedImage(i.name, fit_square(i.pixels, size)) for i in images]


def calibration_names() -> list[str]:
    """The names of `calibration_images`, in order, without making them (a full-int8 file's calibration set)."""
    return [f"skimage:{n}" for n in CALIB_BUNDLED] + [f"procedural:{s}" for s in CALIB_PROCEDURAL_SEEDS]


def evaluation_image(slot: int, size: int) -> NamedImage:
    """Slot `slot` of the processing-size held-out set (the bundled photos, then the procedural seeds), fitted to
    `size` x `size`; the same slot of `fullres_evaluation_image` is the same content at full size."""
    n = len(EVAL_BUNDLED)
    image = bundled_image(EVAL_BUNDLED[slot]) if slot < n else procedural_image(EVAL_PROCEDURAL_SEEDS[slot - n], size)
    return NamedImage(image.name, fit_square(image.pixels, size))


def evaluation_images(size: int) -> list[NamedImage]:
    return [evaluation_image(i, size) for i in range(len(EVAL_BUNDLED) + len(EVAL_PROCEDURAL_SEEDS))]


def random_messages(count: int, nbits: int, seed: int) -> np.ndarray:
    """float32 [count, nbits] of 0/1, seeded."""
    return np.random.default_rng(seed).integers(0, 2, (count, nbits)).astype(np.float32)
