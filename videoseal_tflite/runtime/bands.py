"""Full-resolution work in row bands: memory that grows with the width, not the area (issue #28).

`runtime.image.resize_bilinear` on a whole [3,H,W] float image needs 12 bytes a pixel for the float copy alone
(1.2 GB at 100 MP), and the watermark upsampled to full size as much again. Pillow's antialiased bilinear resize
is two separable passes, horizontal then vertical, each in float32 for mode "F" images, so both can run on bands:

  downscale (H x W uint8 -> S x S float): each band of rows is converted to float and resized horizontally on its
      own (rows are independent), the bands are stacked into an H x S image and resized vertically once. The
      result is bit for bit Pillow's resize of the whole float image.
  upscale (S x S float -> H x W, the watermark): the horizontal pass makes S x W rows (small); the vertical pass
      computes each band of output rows from the two or three source rows it needs, with Pillow's own
      coefficients (`_coefficients`, its `precompute_coeffs`) summed in double as Pillow does: bit for bit again.

Bands run on a thread pool (Pillow and numpy let go of the GIL), so the work also spreads over the cores.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageChops

BAND_ROWS = 256  # rows per band: 256 x 10,000 px x 3 x 4 bytes = 30 MB of float per band in flight
THREADS = 2
_BILINEAR = Image.Resampling.BILINEAR


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(THREADS, thread_name_prefix="band")


def bands(height: int, rows: int = BAND_ROWS) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering 0..height in steps of `rows`."""
    return [(start, min(start + rows, height)) for start in range(0, height, rows)]


def _resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(image.resize((width, height), _BILINEAR))


def as_float_planes(rgb8: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> [3,H,W] float32 in [0,1], as `image_io.to_rgb_float` computes it."""
    return np.ascontiguousarray(rgb8.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def size_of(image: np.ndarray | Image.Image) -> tuple[int, int]:
    """(height, width) of an HxWx3 uint8 array, a [C,H,W] float array or a Pillow RGB image."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return image.shape[:2] if image.dtype == np.uint8 else image.shape[1:]


def rows_rgb8(image: np.ndarray | Image.Image, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of an HxWx3 uint8 array or a Pillow RGB image, as uint8 [b,W,3] (a band: a Pillow image
    is never copied whole, so detect holds only the decoded file)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.crop((0, start, image.width, stop)))
    return image[start:stop]


def downscale(rgb8: np.ndarray | Image.Image, height: int, width: int) -> np.ndarray:
    """HxWx3 uint8 (or a Pillow RGB image) -> [3,height,width] float32: `resize_bilinear(to_rgb_float(rgb8),
    height, width)` without the full-size float copy. Pillow does the horizontal pass first for most shapes, and
    then this is bit for bit the same; where it starts with the vertical pass (some tall or very wide shapes) the
    two differ by at most one float32 ulp."""
    full_h, full_w = size_of(rgb8)

    def horizontal(span: tuple[int, int]) -> np.ndarray:
        rows = rows_rgb8(rgb8, *span)
        if full_w == width:
            return as_float_planes(rows)
        # in Pillow from the uint8 band to the float resize (no numpy pass over the full-size pixels); the scale to
        # [0,1] comes after, on the narrow rows: within one float32 ulp of scaling first
        planes = Image.fromarray(np.ascontiguousarray(rows)).split()
        narrow = [np.asarray(p.convert("F").resize((width, span[1] - span[0]), _BILINEAR)) for p in planes]
        return np.stack(narrow) * np.float32(1 / 255)

    narrow = np.concatenate(list(_pool().map(horizontal, bands(full_h))), axis=1)  # [3, H, width]
    if full_h == height:
        return narrow
    return np.stack(list(_pool().map(lambda p: _resize_plane(p, width, height), narrow)))


# the float delta is stored offset by this in an 8-bit plane: Pillow's float-to-8-bit conversion truncates, so
# + 0.5 rounds (half up), and the 8-bit sum `ImageChops.add(image, delta, 1.0, -OFFSET)` clips to 0..255
_OFFSET = 128
MAX_DELTA = _OFFSET - 1  # the largest |delta| in levels this form holds


def add_upscaled(rgb8: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 + the small [C,S,S] float delta in 8-bit levels (C = 3, or 1 for every colour) ->
    clip(rgb8 + round(resize_bilinear(delta, H, W)), 0, 255) as HxWx3 uint8, one band of rows at a time, in Pillow
    (resize, round, add: no float copy of the full-size image). Each band resizes its `box` of the source: Pillow
    takes the box in float32, so a band's coefficients can differ from the whole resize's in the last bit (a level
    on a few values in a million; web/videoseal_tflite.js `addLevels` does the same, bit for bit).
    |delta| must be at most MAX_DELTA."""
    height, width = rgb8.shape[:2]
    small_h, small_w = delta.shape[1:]
    planes = [Image.fromarray(np.ascontiguousarray(d + (_OFFSET + 0.5), dtype=np.float32), "F") for d in delta]

    def band(start: int, stop: int) -> np.ndarray:
        box = (0, start * small_h / height, small_w, stop * small_h / height)
        levels = [p.resize((width, stop - start), _BILINEAR, box=box).convert("L") for p in planes]
        merged = Image.merge("RGB", levels * 3 if len(levels) == 1 else levels)
        return np.asarray(ImageChops.add(Image.fromarray(rgb8[start:stop]), merged, 1.0, -_OFFSET))

    out = np.empty_like(rgb8)
    for start, rows in map_bands(band, height):
        out[start : start + rows.shape[0]] = rows
    return out


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


@functools.lru_cache(maxsize=16)
def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's `precompute_coeffs` for BILINEAR: per output row, the first source row and the (normalised, float64)
    weights of the rows from there ([out_size, taps], zero-padded)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    taps = int(math.ceil(support)) * 2 + 1
    first = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, taps), np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size) - lo
        k = [_bilinear((x + lo - center + 0.5) * (1.0 / filterscale)) for x in range(hi)]
        total = sum(k)
        first[out] = lo
        weights[out, :hi] = [w / total for w in k] if total != 0.0 else k
    return first, weights


class Upscale:
    """[C,S,S] float32 -> `resize_bilinear(small, height, width)` one band of rows at a time (`rows(start, stop)`):
    the horizontal pass once (S x width), the vertical pass per band with Pillow's coefficients, summed in double in
    Pillow's order: the rows of the whole resize, bit for bit where Pillow starts with the horizontal pass, within a
    float32 ulp where it does not (see `downscale`)."""

    def __init__(self, small: np.ndarray, height: int, width: int) -> None:
        wide = np.stack([_resize_plane(p, width, small.shape[1]) for p in small]) if small.shape[2] != width else small
        self.wide = wide.astype(np.float64)
        self.first, self.weights = _coefficients(small.shape[1], height)

    def rows(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros((self.wide.shape[0], stop - start, self.wide.shape[2]), np.float64)
        for tap in range(self.weights.shape[1]):
            k = self.weights[start:stop, tap]
            if not k.any():
                continue
            src = np.minimum(self.first[start:stop] + tap, self.wide.shape[1] - 1)
            out += self.wide[:, src, :] * k[None, :, None]
        return out.astype(np.float32)


def map_bands(
    fn: Callable[[int, int], np.ndarray], height: int, rows: int = BAND_ROWS
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, fn(start, stop)) for every band of rows, in order, computed on the pool with at most THREADS + 1 bands
    in flight (so memory stays a few bands, whatever the height)."""
    pending = []
    for start, stop in bands(height, rows):
        pending.append((start, _pool().submit(fn, start, stop)))
        if len(pending) > THREADS:
            first, future = pending.pop(0)
            yield first, future.result()
    for first, future in pending:
        yield first, future.result()
