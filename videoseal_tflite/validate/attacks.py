"""Image attacks for robustness records (`validate --attacks`): float [3,H,W] in [0,1] -> float [3,H',W'].

They are applied to the full-resolution watermarked image as saved (8-bit PNG) and read back, never to the
processing-size tensor (`robustness.py`). Each is a small named function with Pillow/numpy, and PyAV for the
H.264 stand-in for video, so a mobile test harness can reproduce it.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from videoseal_tflite.runtime.image import to_uint8


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(image))


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return _from_pil(Image.open(buffer))


def crop_area(image: np.ndarray, area: float, corner: bool = False) -> np.ndarray:
    """Crop keeping `area` of the area (each side x sqrt(area)), centred or at the top-left corner."""
    _, h, w = image.shape
    ch, cw = int(round(h * np.sqrt(area))), int(round(w * np.sqrt(area)))
    top, left = (0, 0) if corner else ((h - ch) // 2, (w - cw) // 2)
    return image[:, top : top + ch, left : left + cw].copy()


def crop_half_area(image: np.ndarray) -> np.ndarray:
    """Centre crop keeping 50 % of the area (each side x 1/sqrt(2))."""
    return crop_area(image, 0.5)


def resize_half(image: np.ndarray) -> np.ndarray:
    _, h, w = image.shape
    return _from_pil(_to_pil(image).resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR))


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image * factor, 0, 1).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return _from_pil(_to_pil(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


H264_CLIP_FRAMES = 8


def h264(image: np.ndarray, crf: int, frames: int = H264_CLIP_FRAMES) -> np.ndarray:
    """A clip of `frames` copies of the image through libx264 (yuv420p, preset medium, CRF `crf`) and back;
    returns the middle decoded frame. Odd sizes lose their last row/column (yuv420p needs even sizes)."""
    import av

    pixels = to_uint8(image)
    h, w = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    pixels = np.ascontiguousarray(pixels[:h, :w])
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return decoded[len(decoded) // 2].astype(np.float32).transpose(2, 0, 1) / 255.0


ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg_50": lambda x: jpeg(x, 50),
    "jpeg_80": lambda x: jpeg(x, 80),
    "h264_crf23": lambda x: h264(x, 23),
    "h264_crf30": lambda x: h264(x, 30),
    "crop_50pct_area": crop_half_area,
    # beyond issue #13's table (scripts/heldout_table.py --attacks): other crops, all read as is
    "crop_80pct_area": lambda x: crop_area(x, 0.8),
    "crop_25pct_area": lambda x: crop_area(x, 0.25),
    "crop_50pct_area_corner": lambda x: crop_area(x, 0.5, corner=True),
    "crop_50pct_area_jpeg_80": lambda x: jpeg(crop_half_area(x), 80),
    "resize_0.5": resize_half,
    "brightness_1.5": lambda x: brightness(x, 1.5),
    "gaussian_blur_1": lambda x: gaussian_blur(x, 1.0),
}
