"""Image attacks for robustness records (`validate --attacks`): float [3,H,W] in [0,1] -> float [3,H',W'].

Each is a small named function with Pillow/numpy only, so a mobile test harness can reproduce it.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from .runtime import to_uint8


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(image))


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return _from_pil(Image.open(buffer))


def crop_half_area(image: np.ndarray) -> np.ndarray:
    """Centre crop keeping 50 % of the area (each side x 1/sqrt(2))."""
    _, h, w = image.shape
    ch, cw = int(round(h / np.sqrt(2))), int(round(w / np.sqrt(2)))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[:, top:top + ch, left:left + cw].copy()


def resize_half(image: np.ndarray) -> np.ndarray:
    _, h, w = image.shape
    return _from_pil(_to_pil(image).resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR))


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image * factor, 0, 1).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return _from_pil(_to_pil(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg_50": lambda x: jpeg(x, 50),
    "jpeg_80": lambda x: jpeg(x, 80),
    "crop_50pct_area": crop_half_area,
    "resize_0.5": resize_half,
    "brightness_1.5": lambda x: brightness(x, 1.5),
    "gaussian_blur_1": lambda x: gaussian_blur(x, 1.0),
}
