"""Full-resolution work in row bands: memory that grows with the width, not the area (issue #28).

`runtime.image.resize_bilinear` on a whole [3,H,W] float image needs 12 bytes a pixel for the float copy alone
(1.2 GB at 100 MP), and the watermark upsampled to full size as much again. Pillow's antialiased bilinear resize
is two separable passes, horizontal then vertical, each in float32 for mode "F" images, so both can run on bands:

  downscale (H x W uint8 -> S x S float, `downscale`): Pillow's coefficients (`_coefficients`, its
      `precompute_coeffs`) as small dense float32 matrices (`_plan`): the vertical pass first, each block of 16
      rows converted to float as it is multiplied, then the horizontal pass on the S rows. BLAS sums in float32
      where Pillow sums in double: within four float32 ulps of Pillow's resize of the whole float image, and 3x
      faster than Pillow's own passes (no float conversion of whole rows, products instead of per-pixel loops).
  the watermark added in 8-bit levels (`add_upscaled`): the horizontal pass once (S x W rows), the vertical pass
      per block of 16 output rows (each reads two or three source rows), rounded and added in int16 while the
      block is in cache.
  upscale (S x S float -> H x W float rows, `Upscale`, the float path of attenuating cards): the vertical pass per
      band from the two or three source rows each output row needs, summed in double as Pillow does: bit for bit.

Bands run on a thread pool (Pillow and numpy let go of the GIL), so the work also spreads over the cores.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Literal

import numpy as np
from PIL import Image

BLOCK_ROWS = 16  # rows (or output rows) per matrix product in a band: see `_plan`
COLUMN_BLOCK = 128  # columns per product of the horizontal pass
BAND_ROWS = 256  # rows per band: 256 x 10,000 px x 3 x 4 bytes = 30 MB of float per band in flight
THREADS = 2
# `downscale` and `add_upscaled` split their bands over the pool only above this size: BLAS serialises the two
# threads' small products, so below it the split costs more than it gains (docs/runtime.md, "Band threads")
SPLIT_ABOVE_PIXELS = 8_000_000
_BILINEAR = Image.Resampling.BILINEAR


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(THREADS, thread_name_prefix="band")


def split_over_pool(height: int, width: int) -> bool:
    """Whether an image this size has its bands split over the pool (SPLIT_ABOVE_PIXELS)."""
    return height * width >= SPLIT_ABOVE_PIXELS


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
    height, width)` without the full-size float copy, as products of Pillow's coefficient matrices (`_plan`):
    the vertical pass on the 8-bit levels, one block of BLOCK_ROWS rows at a time (converted to float32 as it is
    used), then the horizontal pass on the S rows, then the scale to [0,1]. Summed in float32 by BLAS where Pillow
    sums in double: within a few float32 ulps of Pillow's resize (tests/test_bands.py)."""
    full_h, full_w = size_of(rgb8)

    def vertical(span: tuple[int, int]) -> tuple[int, np.ndarray]:
        rows = rows_rgb8(rgb8, *span).reshape(span[1] - span[0], full_w * 3)
        if full_h == height:
            return span[0], rows.astype(np.float32)
        blocks = [b for b in _plan(full_h, height, "in") if span[0] <= b.start < span[1]]
        if not blocks:
            return 0, np.zeros((0, full_w * 3), np.float32)
        first = blocks[0].out_start
        part = np.zeros((blocks[-1].out_stop - first, full_w * 3), np.float32)
        for b in blocks:
            levels = rows[b.start - span[0] : b.stop - span[0]].astype(np.float32)
            _product(b.matrix, levels, part[b.out_start - first : b.out_stop - first], add=True)
        return first, part

    split = split_over_pool(full_h, full_w)
    if not split and isinstance(rgb8, np.ndarray):
        return _horizontal_planes(vertical((0, full_h))[1], height, full_w, width)
    # a Pillow image is cropped band by band (copies); an array is only read, so it is split evenly over the pool
    rows = BAND_ROWS if isinstance(rgb8, Image.Image) else -(-full_h // (THREADS * BLOCK_ROWS)) * BLOCK_ROWS
    tall = np.zeros((height, full_w * 3), np.float32)  # [height, W x 3]: the vertical pass, channels interleaved
    for first, part in (_pool().map if split else map)(vertical, bands(full_h, rows)):
        tall[first : first + part.shape[0]] += part
    return _horizontal_planes(tall, height, full_w, width)


def _horizontal_planes(tall: np.ndarray, height: int, full_w: int, width: int) -> np.ndarray:
    """`downscale`'s second half: [height, full_w x 3] channel-interleaved rows -> [3, height, width] in [0,1]."""
    columns = np.ascontiguousarray(tall.reshape(height, full_w, 3).transpose(1, 2, 0)).reshape(full_w, 3 * height)
    narrow = _horizontal_t(columns, width) * np.float32(1 / 255)  # [width, 3 x height]
    return np.ascontiguousarray(narrow.reshape(width, 3, height).transpose(1, 2, 0))


def _horizontal_t(columns: np.ndarray, width: int) -> np.ndarray:
    """Pillow's horizontal pass on rows given as columns, [w, n] float32 -> [width, n], as products of its
    coefficients by blocks of columns (the transposed layout makes each block's product whole rows of the result)."""
    if columns.shape[0] == width:
        return columns
    if columns.shape[0] > width:  # blocks of the larger side, so that most of each block is non-zero
        out = np.zeros((width, columns.shape[1]), np.float32)
        for b in _plan(columns.shape[0], width, "in", COLUMN_BLOCK):
            _product(b.matrix, columns[b.start : b.stop], out[b.out_start : b.out_stop], add=True)
        return out
    out = np.empty((width, columns.shape[1]), np.float32)  # output blocks: disjoint, together every output
    for b in _plan(columns.shape[0], width, "out", COLUMN_BLOCK):
        _product(b.matrix, columns[b.start : b.stop], out[b.out_start : b.out_stop])
    return out


# the largest |delta| in levels `embed_rgb8` adds this way: what the page's 8-bit form (web/, `addLevels`: the delta
# offset by 128 in a byte) holds, so that the page and the runtime take the same path
MAX_DELTA = 127


def add_upscaled(rgb8: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 + the small [C,S,S] float delta in 8-bit levels (C = 3, or 1 for every colour) ->
    clip(rgb8 + round(resize_bilinear(delta, H, W)), 0, 255) as HxWx3 uint8, one band of rows at a time (no float
    copy of the full-size image): the horizontal pass once (S x W), the vertical pass per block of BLOCK_ROWS output
    rows as a product with Pillow's coefficients, added to the pixels, clipped and rounded to levels, in float32
    while the block is in cache. Summed in float32 where Pillow sums in double: a level apart from Pillow's resize
    on a few values in a million (a sum on a rounding boundary; tests/test_bands.py)."""
    height, width = rgb8.shape[:2]
    channels, small_h, small_w = delta.shape
    columns = np.ascontiguousarray(delta.transpose(2, 0, 1), np.float32).reshape(small_w, channels * small_h)
    wide_t = _horizontal_t(columns, width).reshape(width, channels, small_h)  # [x, c, y]
    wide = np.broadcast_to(wide_t.transpose(2, 0, 1), (small_h, width, 3))  # [y, x, c], one channel used thrice
    # channels interleaved, as the pixels; + 0.5 here is + 0.5 in every upsampled value (Pillow's weights sum to 1)
    wide = (np.ascontiguousarray(wide) + np.float32(0.5)).reshape(small_h, width * 3)
    plan = _plan(small_h, height, "out")
    out = np.empty(rgb8.shape, np.uint8)  # C order whatever the input's: each band's rows are then a view of it

    def band(start: int, stop: int) -> np.ndarray:
        target = out[start:stop].reshape(stop - start, width * 3)
        pixels = rgb8[start:stop].reshape(stop - start, width * 3)
        for b in plan[start // BLOCK_ROWS : -(-stop // BLOCK_ROWS)]:  # a block at a time: its arrays stay in cache
            lo, hi = b.out_start - start, b.out_stop - start
            up = np.empty((hi - lo, width * 3), np.float32)
            _product(b.matrix, wide[b.start : b.stop], up)  # delta + 0.5
            up += pixels[lo:hi]
            np.clip(up, 0, 255, out=up)
            target[lo:hi] = up  # the conversion truncates: floor(pixel + delta + 0.5), the delta rounded half up
        return target

    for _ in map_bands(band, height, split=split_over_pool(height, width)):  # each band writes its rows of `out`
        pass
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


# OpenBLAS (numpy's BLAS) runs a product of m x k by k x n on the calling thread when m * n * k <= 4 * 65536 (its
# GEMM_MULTITHREAD_THRESHOLD x SMP_THRESHOLD_MIN); above, it wakes its own threads, which only contend with the band
# pool's (and spin while they wait: on a busy machine the downscale took 4x longer). `_product` keeps under it
_SINGLE_THREAD_MNK = 4 * 65536


def _product(matrix: np.ndarray, x: np.ndarray, out: np.ndarray, add: bool = False) -> None:
    """out (+)= matrix @ x for a small matrix and a wide x, by chunks of x's columns small enough for BLAS to stay on
    the calling thread (`_SINGLE_THREAD_MNK`)."""
    step = max(64, _SINGLE_THREAD_MNK // max(1, matrix.shape[0] * matrix.shape[1]))
    for lo in range(0, x.shape[1], step):
        if add:
            out[:, lo : lo + step] += matrix @ x[:, lo : lo + step]
        else:
            np.matmul(matrix, x[:, lo : lo + step], out=out[:, lo : lo + step])


@dataclasses.dataclass(frozen=True)
class _Block:
    """One product of a resize: outputs out_start..out_stop = matrix @ inputs start..stop."""

    start: int
    stop: int
    out_start: int
    out_stop: int
    matrix: np.ndarray  # [out_stop - out_start, stop - start] float32, Pillow's coefficients


@functools.lru_cache(maxsize=32)
def _plan(in_size: int, out_size: int, by: Literal["in", "out"], block: int = BLOCK_ROWS) -> list[_Block]:
    """Pillow's resize from in_size to out_size (`_coefficients`) as a list of small dense products: by blocks of
    `block` inputs (each with the outputs they reach) or of `block` outputs (each with the inputs it reads). Dense
    blocks of a banded matrix: small enough that most of each block is non-zero, big enough for BLAS."""
    first, weights = _coefficients(in_size, out_size)
    taps = np.minimum(weights.shape[1], in_size - first)
    stop = first + np.array([np.flatnonzero(w[:t]).max(initial=-1) + 1 for w, t in zip(weights, taps)])
    blocks = []
    for lo in range(0, in_size if by == "in" else out_size, block):
        if by == "in":
            a, b = lo, min(lo + block, in_size)
            oa, ob = int(np.searchsorted(stop, a, "right")), int(np.searchsorted(first, b, "left"))
        else:
            oa, ob = lo, min(lo + block, out_size)
            a, b = int(first[oa:ob].min()), int(stop[oa:ob].max())
        if ob <= oa:
            continue
        matrix = np.zeros((ob - oa, b - a), np.float64)
        for o in range(oa, ob):
            s, e = max(first[o], a), min(stop[o], b)
            if s < e:
                matrix[o - oa, s - a : e - a] = weights[o, s - first[o] : e - first[o]]
        blocks.append(_Block(a, b, oa, ob, matrix.astype(np.float32)))
    return blocks


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
    fn: Callable[[int, int], np.ndarray], height: int, rows: int = BAND_ROWS, split: bool = True
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, fn(start, stop)) for every band of rows, in order, computed on the pool with at most THREADS + 1 bands
    in flight (so memory stays a few bands, whatever the height), or in the calling thread when not `split`."""
    if not split:
        yield from ((start, fn(start, stop)) for start, stop in bands(height, rows))
        return
    pending = []
    for start, stop in bands(height, rows):
        pending.append((start, _pool().submit(fn, start, stop)))
        if len(pending) > THREADS:
            first, future = pending.pop(0)
            yield first, future.result()
    for first, future in pending:
        yield first, future.result()
