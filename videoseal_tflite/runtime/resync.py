"""Read a periodic watermark that a crop moved off the detector's grid (issue #13: the 50 % crop read as is).

The compact cards' embedder writes a tile of `tile_period` px (8) at the processing size S, so at full resolution
its period is tile * W / S px. A crop keeping a fraction c of the width, resized to S x S by `detect`, stretches the
tile by 1/c and shifts its phase, and the detector reads chance. Re-synchronisation, numpy + the detector only:

  1. extent c (the fraction of the marked image's width / height the input shows): the tile shows as a comb of
     peaks in the input's power spectrum (resized to ANALYSIS_SIZE px, Hann window, whitened by its local mean log
     power). Each c in EXTENTS scores the log power at its harmonics (k_x c_x, k_y c_y) / period (`harmonics`:
     |k_x|, k_y <= 3 for an 8-px tile, 6 for a 16-px one), with c_x = c_y (a crop that keeps the aspect ratio) and
     apart; the best few are kept.
  2. phase: the input is resized to (c_y S, c_x S), so the tile is `tile_period` px again. Canvases of S x S put
     a tile corner of phase (ox, oy) on the canvas grid: the input mirrored out to S at three offsets, and the
     tile-aligned part of the input repeated. The detector reads every phase on the first canvas, and the
     PHASES_KEPT most confident on all four.
  3. choice: the (extent, phase) whose canvases agree most, mean over bits of |mean over canvases of
     tanh(logit / 2)|. At a wrong phase the detector reads content, and the canvases disagree on it. The extents
     are read best comb first; a reading that agrees more than SURE_ABOVE ends the search.

The reading kept is the best of `hypotheses` (extents x phases, plus the as-is reading), so `verdict.decide`
multiplies its p-value by that number (Bonferroni); the extents a sure reading skipped stay counted, as the search
could have chosen among them. It only runs when the as-is reading is unsure (`unsure`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import numpy as np
from PIL import Image

ANALYSIS_SIZE = 256
# added to every bin's power before the whitening, so that a flat image's spectrum (float32 rounding of the resize,
# ~1e-9 a bin) is not whitened up into a comb: measured, a constant grey image scored 60, above every marked crop.
# 8-bit quantization noise lies far above it even where the resize averages it most (a 100-MP photo gives each
# analysis pixel ~1,500 of its pixels: ~2e-5 a bin)
POWER_FLOOR = 1e-6
PAD_FACTOR = 4  # zero padding of the FFT: frequency resolution 1 / (4 * 256) cycles per pixel
# the comb's harmonics reach HARMONIC_REACH cycles per processing-size pixel: k <= 3 for the 8-px tile of the 16-bit
# cards, 6 for compact64's 16-px tile, whose power lies mostly above its third harmonic (experiments/capacity.md)
HARMONIC_REACH = 3 / 8


def harmonics(tile_period: int) -> tuple[tuple[int, int], ...]:
    """The (k_x, k_y) the comb scores for a tile of `tile_period` px: |k_x|, k_y <= K = HARMONIC_REACH x period
    (at least 3), one of each +-k pair (the spectrum of a real image is symmetric)."""
    k = max(3, round(HARMONIC_REACH * tile_period))
    return tuple((kx, ky) for kx in range(-k, k + 1) for ky in range(0, k + 1) if (ky > 0 or kx > 0))


HARMONICS = harmonics(8)  # the 8-px tile's 24: comb scores are scaled to this many terms
EXTENTS = np.arange(0.45, 1.10, 0.005)  # crops down to ~20 % of the area, and a little upscaling
EXTENT_CANDIDATES = (4, 2)  # best same-aspect extents, then best other-aspect extents
PHASES_KEPT = 6  # phases per extent read on every canvas after the first canvas ranked them
# the as-is reading's mean |tanh(logit/2)| below which `detect` re-synchronises. Measured on the held-out set with
# the compact_robust files: marked photos read as is (clean, JPEG 50, resize 0.5x) 0.87-0.99; a 50 % crop of a
# marked photo or any unmarked photo 0.09-0.42
SYNC_BELOW = 0.6
# a re-found reading's agreement above which `detect` says the tile was found. Measured with the default card's FP32
# files (experiments/resync_separation.py, its record beside it): 210 unmarked images of seven shapes (40 x 2000 to
# 3000 x 3000) reach at most 0.711; 88 of the 103 marked inputs that the search reads right (>= 0.9 of the bits:
# crops to 80 %, 50 % (centred or at a corner) and 30 % of the area, strips, tiny) reach 0.72 or more. compact64's
# 16-px tile (2026-12-07 record): 197 unmarked at most 0.702; 37 of the 59 read right reach 0.72
FOUND_ABOVE = 0.72
# the comb strength (`Comb.strength`) below which the phase search does not run (no tile to re-synchronise to), by
# tile period (px at the processing size); a period not measured has no gate. Measured at ANALYSIS_SIZE 256 with
# experiments/resync_separation.py (records beside it). 8 px, the default card's FP32 files (2026-12-05): the 103
# marked inputs the search reads right (>= 0.9 of the bits) have a comb of 22.4 or more; of 210 unmarked images
# (seven shapes) 16 % fall below 20, 43 % below 22. 16 px (harmonics up to 6), compact64's FP32 files
# (2026-12-07): the 59 read right have 13.58 or more; 4 % of 197 unmarked images fall below 13
COMB_ABOVE = {8: 20.0, 16: 13.0}
# an agreement that ends the search (the candidate extents not yet read are skipped), by tile period; a period not
# measured reads every extent. Measured on the 16 held-out photos' 50 % crops, centred and at a corner, FP32 files
# (experiments/sure_reading.py, records beside it): the search keeps the full search's reading on 31 of 32 crops at
# 16 px (the other reads as many bits) and 32 of 32 at 8 px, and reads 39 % (16 px) and 31 % (8 px) fewer extents.
# Both lie above FOUND_ABOVE, so an unmarked image (at most 0.711 measured) still reads every extent
SURE_ABOVE = {8: 0.85, 16: 0.75}


def agreement(logits: np.ndarray) -> np.ndarray:
    """[canvases, nbits] logits -> [nbits] soft bits in [-1, 1]: the mean over canvases of tanh(logit / 2)."""
    return np.tanh(np.asarray(logits, np.float64) / 2).mean(axis=0)


def confidence(bit_logits: np.ndarray) -> float:
    """How sure one [nbits] reading is: the mean over bits of |tanh(logit / 2)|, in [0, 1]."""
    return float(np.abs(agreement(np.asarray(bit_logits)[None])).mean())


def unsure(bit_logits: np.ndarray) -> bool:
    """True when a reading is too weak to trust as is (see SYNC_BELOW)."""
    return confidence(bit_logits) < SYNC_BELOW


def whitened_log_power(image: np.ndarray | Image.Image, resize: Callable) -> np.ndarray:
    """[3,H,W] -> the log power spectrum (summed over channels, rfft2 zero-padded) less its local mean."""
    side, pad = ANALYSIS_SIZE, ANALYSIS_SIZE * PAD_FACTOR
    planes = resize(image, side, side)
    planes = planes - planes.mean(axis=(1, 2), keepdims=True)
    window = np.outer(np.hanning(side), np.hanning(side)).astype(np.float32)
    spectrum = np.fft.rfft2((planes * window).astype(np.float32), s=(pad, pad))  # complex64: float32 in, float32 out
    power = (spectrum.real.astype(np.float64) ** 2 + spectrum.imag.astype(np.float64) ** 2).sum(axis=0)
    log_power = np.log(power + POWER_FLOOR)
    return log_power - local_mean(log_power, 17)


def local_mean(values: np.ndarray, size: int) -> np.ndarray:
    """The mean over a size x size window around each value, the array wrapping round at its edges: scipy's
    `ndimage.uniform_filter(values, size, mode="wrap")` in numpy (one box filter per axis, by cumulative sums), so
    the runtime needs no scipy."""
    out = np.asarray(values, np.float64)
    half = size // 2
    for axis in (0, 1):
        padded = np.concatenate([out.take(range(-half, 0), axis), out, out.take(range(size - half - 1), axis)], axis)
        sums = np.cumsum(padded, axis=axis)
        zero = np.zeros_like(sums.take([0], axis))
        sums = np.concatenate([zero, sums], axis)
        n = out.shape[axis]
        out = (sums.take(range(size, size + n), axis) - sums.take(range(n), axis)) / size
    return out


def peaks_of(log_power: np.ndarray) -> np.ndarray:
    """The largest value in the 3 x 3 bins around each bin (wrapping in y, clamped at the x edges of the rfft2
    half): computed once, then looked up for every harmonic of every extent pair."""
    wide = np.concatenate([log_power[:, :1], log_power, log_power[:, -1:]], axis=1)
    across = np.maximum(np.maximum(wide[:, :-2], wide[:, 1:-1]), wide[:, 2:])
    return np.maximum(np.maximum(np.roll(across, 1, axis=0), across), np.roll(across, -1, axis=0))


def comb_scores(
    peaks: np.ndarray, cx: np.ndarray, cy: np.ndarray, period: float, terms: tuple[tuple[int, int], ...] = HARMONICS
) -> np.ndarray:
    """Summed log peak power (3x3 bins, `peaks_of`) at the harmonics `terms` for each extent pair (cx[i], cy[i]),
    scaled to len(HARMONICS) terms (an 8-px tile's scale is 1.0, so its score is the plain sum, bit for bit); a
    harmonic beyond the spectrum's x half adds 0."""
    pad, half = peaks.shape
    score = np.zeros(cx.shape)
    for kx, ky in terms:
        ix, iy = np.rint(kx * cx / period * pad).astype(int), np.rint(ky * cy / period * pad).astype(int)
        flip = ix < 0  # rfft2 keeps the non-negative x half: use the conjugate-symmetric bin
        ix, iy = np.where(flip, -ix, ix), np.where(flip, -iy, iy) % pad
        score += np.where(ix < half, peaks[iy, np.minimum(ix, half - 1)], 0.0)
    return score * (len(HARMONICS) / len(terms))


def _best_distinct(scores: np.ndarray, cx: np.ndarray, cy: np.ndarray, count: int, taken: list) -> list:
    out: list[tuple[float, float]] = []
    for i in np.argsort(scores)[::-1]:
        if len(out) == count:
            break
        if all(abs(cx[i] - a) > 0.02 or abs(cy[i] - b) > 0.02 for a, b in taken + out):
            out.append((float(cx[i]), float(cy[i])))
    return out


@dataclasses.dataclass(frozen=True)
class Comb:
    """Step 1's result: how strongly the input shows the tile's comb of peaks, and where."""

    strength: float  # the best same-aspect comb score (summed log whitened power at the harmonics)
    extents: list[tuple[float, float]]  # the likeliest (c_x, c_y), same-aspect ones first
    gate: float  # COMB_ABOVE for the tile's period; -inf where it was not measured

    @property
    def periodic(self) -> bool:
        """Whether the comb is one that marked crops were measured to show (COMB_ABOVE): else nothing is searched."""
        return self.strength >= self.gate


def comb_of(image: np.ndarray | Image.Image, tile_period: int, size: int, resize: Callable) -> Comb:
    """Step 1 on [3,H,W] floats or HxWx3 uint8 (whatever `resize` takes)."""
    peaks = peaks_of(whitened_log_power(image, resize))
    period = ANALYSIS_SIZE * tile_period / size  # the tile's period in the analysis image of an uncropped input
    terms = harmonics(tile_period)
    scores = comb_scores(peaks, EXTENTS, EXTENTS, period, terms)
    same = _best_distinct(scores, EXTENTS, EXTENTS, EXTENT_CANDIDATES[0], [])
    cx, cy = (g.ravel() for g in np.meshgrid(EXTENTS, EXTENTS))
    other = _best_distinct(comb_scores(peaks, cx, cy, period, terms), cx, cy, EXTENT_CANDIDATES[1], same)
    return Comb(float(scores.max()), same + other, COMB_ABOVE.get(tile_period, -np.inf))


# step 2's canvases: the input mirrored out to S with a tile corner at (tile x n + phase), or the tile-aligned part
# of the input repeated ("repeat"). The first ranks all phases; the best PHASES_KEPT are read on all of them
CanvasKind = tuple[Literal["repeat", "symmetric", "reflect"], int]  # how the crop is extended, and by how many tiles
CANVASES: tuple[CanvasKind, ...] = (("symmetric", 0), ("repeat", 0), ("symmetric", 3), ("reflect", 2))


def canvas(planes: np.ndarray, ox: int, oy: int, kind: CanvasKind, tile: int, size: int) -> np.ndarray:
    """Step 2: an S x S canvas whose grid of `tile` px starts at pixel (oy, ox) of `planes` [3,h,w]."""
    mode, tiles = kind
    if mode == "repeat":
        sub = planes[:, oy:, ox:]
        sub = sub[:, : max(tile, sub.shape[1] // tile * tile), : max(tile, sub.shape[2] // tile * tile)]
        return np.tile(sub, (1, -(-size // sub.shape[1]), -(-size // sub.shape[2])))[:, :size, :size]
    top, left = (tile - oy) % tile + tile * tiles, (tile - ox) % tile + tile * tiles
    pads = ((0, 0), (top, max(0, size - top - planes.shape[1])), (left, max(0, size - left - planes.shape[2])))
    return np.pad(planes, pads, mode=mode)[:, :size, :size]


Phase = tuple[int, int]  # (ox, oy) at the processing size


@dataclasses.dataclass(frozen=True)
class ExtentReading:
    """Step 2 at one extent: the first canvas read at every phase, then the PHASES_KEPT phases it ranked most
    confident read on every canvas."""

    first: dict[Phase, np.ndarray]  # phase -> [nbits] logits on the first canvas, all tile x tile phases
    kept: list[tuple[float, np.ndarray, Phase]]  # (agreement, [nbits] soft bits, phase), most confident first


ReadAll = Callable[[list[np.ndarray]], list[np.ndarray]]  # [3,S,S] canvases -> their [nbits] logits, in order


def read_extent(
    image: np.ndarray | Image.Image,
    extent: tuple[float, float],
    read_all: ReadAll,
    tile: int,
    size: int,
    resize: Callable,
) -> ExtentReading:
    """Step 2 for the extent (c_x, c_y): the input resized so the tile is `tile` px again, then its phases read
    (each canvas set in one `read_all` call, which may read several at once)."""
    cx, cy = extent
    planes = resize(image, max(2 * tile, round(size * cy)), max(2 * tile, round(size * cx)))
    phases = [(ox, oy) for oy in range(tile) for ox in range(tile)]
    first = dict(zip(phases, read_all([canvas(planes, ox, oy, CANVASES[0], tile, size) for ox, oy in phases])))
    ranked = sorted(first, key=lambda phase: -confidence(first[phase]))[:PHASES_KEPT]
    others = read_all([canvas(planes, ox, oy, kind, tile, size) for ox, oy in ranked for kind in CANVASES[1:]])
    kept = []
    for i, (ox, oy) in enumerate(ranked):
        more = others[i * (len(CANVASES) - 1) : (i + 1) * (len(CANVASES) - 1)]
        soft = agreement(np.stack([first[(ox, oy)], *more]))
        kept.append((float(np.abs(soft).mean()), soft, (ox, oy)))
    return ExtentReading(first, kept)


@dataclasses.dataclass(frozen=True)
class SyncedReading:
    bit_logits: np.ndarray  # [nbits]: atanh of the agreed soft bits, x2 (a logit scale; sign = the bit)
    extent: tuple[float, float]  # (c_x, c_y)
    phase: tuple[int, int]  # (ox, oy) at the processing size
    agreement: float  # mean |soft bit|
    hypotheses: int  # readings the choice could be made among (the as-is reading included)
    extents_read: int  # candidate extents read before the choice (a sure reading skips the rest)

    @property
    def found(self) -> bool:
        """Whether the agreement is one that unmarked images were not measured to reach (FOUND_ABOVE)."""
        return self.agreement >= FOUND_ABOVE


def resynchronise(
    image: np.ndarray | Image.Image,
    read_all: ReadAll,
    tile: int,
    size: int,
    resize: Callable,
    comb: Comb | None = None,
) -> SyncedReading:
    """Steps 1-3 (step 1 given as `comb` when already done). `read_all`: the detector on a list of [3,S,S] canvases;
    `resize`: the runtime's [C,H,W] resize. Every phase of every candidate extent counts as a hypothesis, the ones
    the first canvas ranked low included, and so are the extents a sure reading (SURE_ABOVE) left unread."""
    extents = (comb or comb_of(image, tile, size, resize)).extents
    sure = SURE_ABOVE.get(tile, np.inf)
    best: tuple[float, np.ndarray, tuple[float, float], tuple[int, int]] | None = None  # agreement, soft, extent, phase
    read = 0
    for read, extent in enumerate(extents, 1):
        for score, soft, phase in read_extent(image, extent, read_all, tile, size, resize).kept:
            if best is None or score > best[0]:
                best = (score, soft, extent, phase)
        if best is not None and best[0] >= sure:
            break
    if best is None:
        raise ValueError("resynchronise: the comb gave no candidate extent")
    score, soft, extent, phase = best
    logits = (2 * np.arctanh(np.clip(soft, -0.999999, 0.999999))).astype(np.float32)
    return SyncedReading(logits, extent, phase, score, 1 + tile * tile * len(extents), read)
