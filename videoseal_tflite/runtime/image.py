"""Watermark and detect with the .tflite files alone: numpy + Pillow + the LiteRT interpreter, no torch and no scipy.

This mirrors videoseal's `Videoseal.embed` / `detect` (image mode) step by step, so a mobile port can
follow it line by line:

embed(image HxW, message):
  1. x = image as float RGB in [0,1]                                   [3,H,W]
  2. x_s = resize(x, S x S)        bilinear, antialiased (torch F.interpolate(..., antialias=True))
  3. w = embedder.tflite(x_s, message)   tanh output, C = 3 (RGB) or 1 (Y)   [C,S,S]
  4. w = resize(w, H x W)          bilinear, antialiased
  5. w = JND(x) * w                at full resolution, when the card has attenuation (numpy, below)
  6. y = clamp(scaling_i * x + scaling_w * w, 0, 1), rounded to uint8 by the caller's saver
detect(image):
  x_s = resize(x, S x S); bit_logits, detection_logit = detector.tflite(x_s); bits = bit_logits > 0
  (not in videoseal) when the card declares its watermark tile and the reading is unsure, the tile is looked for
  at another extent and phase, as a crop leaves it (`resync.py`); the bits then come from that reading
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
from PIL import Image

from videoseal_tflite.errors import (
    InvalidImage,
    InvalidMessage,
    InvalidModelFile,
    InvalidOption,
    ModelDamaged,
    ModelOutputNotFinite,
)
from videoseal_tflite.runtime import bands
from videoseal_tflite.runtime.resync import SyncedReading, comb_of, confidence, resynchronise, unsure
from videoseal_tflite.store.manifest import recorded_sha256
from videoseal_tflite.tflite.interpreter import SignatureModel
from videoseal_tflite.tflite.metadata import read_metadata

MIN_SIDE = 32
_T = TypeVar("_T")
_R = TypeVar("_R")


def resize_bilinear(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """[C,H,W] float32 -> [C,height,width]; Pillow's BILINEAR is the antialiased triangle filter torch's
    `F.interpolate(mode='bilinear', align_corners=False, antialias=True)` reproduces. The planes are resized in
    parallel (Pillow lets go of the GIL while it resamples)."""
    if planes.shape[1:] == (height, width):
        return planes.astype(np.float32, copy=True)

    def resize(plane: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
        return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))

    return np.stack(each_plane(resize, planes)).astype(np.float32)


# above this many pixels an 8-bit image is worked on in row bands (runtime/bands.py): memory then grows with the
# width, not the area. Below it the whole-image float path is faster (one conversion, Pillow's resize in one call)
# and its float copies are small (12 bytes a pixel: 96 MB at 8 MP)
BANDED_ABOVE_PIXELS = 8_000_000


def _banded(image: np.ndarray | Image.Image) -> bool:
    height, width = bands.size_of(image)
    return height * width > BANDED_ABOVE_PIXELS


def _as_float(image: np.ndarray | Image.Image) -> np.ndarray:
    """[3,H,W] float in [0,1] of a float image (as is), an HxWx3 uint8 array or a Pillow RGB image."""
    if isinstance(image, np.ndarray) and image.dtype != np.uint8:
        return image
    return bands.as_float_planes(np.asarray(image))


def _resize_any(image: np.ndarray | Image.Image, height: int, width: int) -> np.ndarray:
    """`resize_bilinear` of a float [3,H,W] image, or the banded downscale of uint8 / Pillow RGB pixels."""
    if isinstance(image, np.ndarray) and image.dtype != np.uint8:
        return resize_bilinear(image, height, width)
    return bands.downscale(image, height, width)


def each_plane(fn: Callable[[_T], _R], planes: Iterable[_T]) -> list[_R]:
    """[fn(plane) for plane in planes], run on up to three threads (one per colour plane)."""
    return list(_plane_pool().map(fn, planes))


@functools.lru_cache(maxsize=1)
def _plane_pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=3, thread_name_prefix="vst-plane")


def _conv_same(plane: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D cross-correlation with zero padding (torch Conv2d, padding=k//2), in float32 like torch: the
    luminance mask is discontinuous at 127, so a more precise sum would land on the other side of it."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(plane.astype(np.float32), pad)
    out = np.zeros(plane.shape, dtype=np.float32)
    for dy in range(k):
        for dx in range(k):
            if kernel[dy, dx]:
                out += kernel[dy, dx] * padded[dy : dy + plane.shape[0], dx : dx + plane.shape[1]]
    return out


_KX = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
_KY = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float32)
_KLUM = np.array(
    [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]], dtype=np.float32
)


def jnd_heatmaps(image: np.ndarray, in_channels: int = 1, out_channels: int = 1) -> np.ndarray:
    """videoseal.modules.jnd.JND.heatmaps in numpy: [3,H,W] in [0,1] -> [out_channels,H,W]."""
    x = np.float32(255.0) * image.astype(np.float32)
    if in_channels == 1:
        x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    maps = []
    for plane in x:
        la = _conv_same(plane, _KLUM) / 32
        la = np.where(la <= 127, 17 * (1 - np.sqrt(np.maximum(la, 0) / 127 + 1e-5)), 3 / 128 * (la - 127) + 3)
        gx, gy = _conv_same(plane, _KX), _conv_same(plane, _KY)
        cm = np.sqrt(gx**2 + gy**2)
        cm = 0.117 * (16 * cm**2.4 / (cm**2 + 26**2))
        maps.append(np.maximum(la + cm - 0.3 * np.minimum(la, cm), 0))
    hmaps = np.stack(maps)
    if out_channels == 3 and in_channels == 1:
        hmaps = np.repeat(hmaps, 3, axis=0)
    elif out_channels == 1 and in_channels == 3:
        hmaps = np.sum(hmaps / 3, axis=0, keepdims=True)
    return (hmaps / 255).astype(np.float32)


_ATTENUATION = {"jnd_1_1": (1, 1), "jnd_3_3": (3, 3), "jnd_1_3": (1, 3), "jnd_3_1": (3, 1)}


def parse_message(text: str | None = None, hex_text: str | None = None, nbits: int | None = None) -> np.ndarray:
    """'0101...' or hex -> float32 [nbits] of 0/1. Raises InvalidMessage naming the problem."""
    if hex_text is not None:
        clean = hex_text.lower().removeprefix("0x")
        if not clean or any(c not in "0123456789abcdef" for c in clean):
            raise InvalidMessage(f"--message-hex must be hexadecimal digits, got '{hex_text}'")
        text = "".join(f"{int(c, 16):04b}" for c in clean)
        if nbits is not None and len(text) >= nbits and set(text[: len(text) - nbits]) <= {"0"}:
            text = text[len(text) - nbits :]
    if text is None:
        raise InvalidMessage("no message given")
    bad = sorted(set(text) - {"0", "1"})
    if bad:
        raise InvalidMessage(f"message must be binary (0/1), found {''.join(bad)!r}")
    if nbits is not None and len(text) != nbits:
        raise InvalidMessage(f"message has {len(text)} bits but the model takes {nbits}")
    return np.array([int(c) for c in text], dtype=np.float32)


def bits_to_text(bits: np.ndarray) -> str:
    return "".join("1" if b else "0" for b in np.asarray(bits).astype(bool))


def load_image(path: Path) -> np.ndarray:
    """Any Pillow-readable image -> float32 [3,H,W] in [0,1] (16-bit PNGs keep their precision)."""
    from videoseal_tflite.runtime.image_io import load_image_file

    pixels = load_image_file(path).pixels
    if min(pixels.shape[1:]) < MIN_SIDE:
        raise InvalidImage(
            f"{path} is {pixels.shape[2]}x{pixels.shape[1]} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed"
        )
    return pixels


def checked_pixels(image: np.ndarray | Image.Image) -> np.ndarray | Image.Image:
    """What the runtime's Python API takes: a Pillow RGB image, HxWx3 uint8, or float [3,H,W]; each side at least
    MIN_SIDE. Anything else is one InvalidImage sentence here, not a shape error from inside LiteRT."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise InvalidImage(f"a Pillow image must be RGB, got mode {image.mode} (convert('RGB') first)")
        height, width = image.height, image.width
    elif isinstance(image, np.ndarray) and image.dtype == np.uint8:
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidImage(f"uint8 pixels must be HxWx3 (RGB), got shape {image.shape}")
        height, width = image.shape[:2]
    elif isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        if image.ndim != 3 or image.shape[0] != 3:
            raise InvalidImage(f"float pixels must be [3,H,W] in [0,1], got shape {image.shape}")
        height, width = image.shape[1:]
    else:
        kind = f"{image.dtype} array" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidImage(f"pixels must be a Pillow RGB image, HxWx3 uint8 or float [3,H,W]; got a {kind}")
    if min(height, width) < MIN_SIDE:
        raise InvalidImage(f"the image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    return image


def round_8bit(image: np.ndarray) -> np.ndarray:
    """What saving as 8-bit does to a float image in [0,1]: clip and round to multiples of 1/255."""
    return (np.round(np.clip(image, 0, 1) * 255) / 255).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[3,H,W] in [0,1] -> HxWx3 uint8 (round to nearest)."""
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def blend(
    image: np.ndarray, watermark: np.ndarray, scaling_w: float, scaling_i: float, attenuation: tuple[int, int] | None
) -> np.ndarray:
    """Steps 5-6 of embed at the image's own size: JND attenuation, additive blend, clamp."""
    if attenuation:
        watermark = jnd_heatmaps(image, *attenuation) * watermark
    return np.clip(scaling_i * image + scaling_w * watermark, 0, 1).astype(np.float32)


def attenuation_of(meta: dict) -> tuple[int, int] | None:
    return _ATTENUATION.get(meta.get("attenuation") or "")


class _Model:
    """A videoseal-tflite .tflite with its metadata record. Checked before use: a file that a release manifest lists
    must have the sha256 it records (`ModelDamaged`), and every output must be finite (`ModelOutputNotFinite`);
    other errors become one-line `InvalidModelFile`."""

    def __init__(self, path: Path, threads: int) -> None:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidModelFile(f"cannot read {path}: {exc.strerror}") from None
        _check_against_manifest(path, data)
        try:
            meta = read_metadata(data)
        except Exception:
            raise InvalidModelFile(f"{path} is not a videoseal-tflite model (no readable metadata)") from None
        if not meta:
            raise InvalidModelFile(f"{path} carries no videoseal_tflite metadata; convert it with videoseal-tflite")
        self.meta: dict[str, Any] = meta
        try:
            self.model = SignatureModel(content=data, threads=threads, convert_io=True)
        except (RuntimeError, ValueError) as exc:
            raise InvalidModelFile(f"{path} does not load: {' '.join(str(exc).split())[:300]}") from None
        self.path = path

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model(**{k: v.astype(np.float32) for k, v in inputs.items()})
        bad = [name for name, value in out.items() if not np.isfinite(value).all()]
        if bad:
            raise ModelOutputNotFinite(
                f"{self.path} gave non-finite values (NaN or infinity) in {', '.join(bad)}: the file is damaged or "
                f"was built wrong; check it with `videoseal-tflite verify --artifacts DIR` or rebuild it "
                f"(`make convert`)"
            )
        return out


_HASHED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: each file hashed once per process


def _sha256_of(path: Path, data: bytes) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = hashlib.sha256(data).hexdigest()
    return _HASHED[key]


def _check_against_manifest(path: Path, data: bytes) -> None:
    """Once per file and process (the hash is cached): the bytes a release manifest records, or `ModelDamaged`."""
    recorded = recorded_sha256(path)
    if recorded is None:
        return
    manifest, expected = recorded
    actual = _sha256_of(path, data)
    if actual != expected:
        raise ModelDamaged(
            f"{path} does not match {manifest} (sha256 {actual[:12]}..., recorded {expected[:12]}...): "
            f"the file was changed or damaged; run `videoseal-tflite verify --artifacts {manifest.parent}` or "
            f"rebuild it (`make convert`)"
        )


@dataclasses.dataclass(frozen=True)
class Detection:
    bit_logits: np.ndarray  # [nbits]
    bits: np.ndarray  # [nbits] bool
    detection_logit: float
    synced: SyncedReading | None = None  # the re-synchronised reading these bits come from, when it was kept
    searched: SyncedReading | None = None  # the best re-synchronised reading, when one was looked for

    @property
    def hypotheses(self) -> int:
        """How many readings these bits were chosen among (1: read as is); p-values are multiplied by it. A search
        that kept the as-is reading still counts: the choice was made among all of them."""
        return self.searched.hypotheses if self.searched else 1

    def bit_accuracy(self, message: np.ndarray) -> float:
        return float((self.bits == np.asarray(message).astype(bool)).mean())


MAX_STRENGTH = 10.0


class Embedder:
    """`strength` multiplies the card's `scaling_w` (videoseal's `blender.scaling_w`): above 1 the mark is louder,
    more robust and more visible (PSNR falls by 20*log10(strength) dB); 1 is the card as trained."""

    def __init__(self, path: Path, threads: int = 2, strength: float = 1.0) -> None:
        if not 0 < strength <= MAX_STRENGTH:
            raise InvalidOption(f"strength must be in (0, {MAX_STRENGTH:g}], got {strength:g}")
        self.model = _Model(path, threads)
        meta = self.model.meta
        if meta.get("part") != "embedder":
            raise InvalidModelFile(f"{path} is a {meta.get('part')}, not an embedder")
        self.nbits, self.size = int(meta["nbits"]), int(meta["size"])
        self.strength = float(strength)
        self.scaling_w = float(meta.get("scaling_w", 1.0)) * self.strength
        self.scaling_i = float(meta.get("scaling_i", 1.0))
        self.attenuation = attenuation_of(meta)
        # the blend is then image + delta in 8-bit levels: `embed_rgb8` adds the rounded, upsampled delta to the
        # 8-bit pixels (bands.add_upscaled) with no float copy of the image. Attenuating (JND) cards and cards that
        # scale the image take the float path
        self.adds_levels = not self.attenuation and self.scaling_i == 1.0

    def watermark(self, image: np.ndarray, message: np.ndarray) -> np.ndarray:
        """The embedder's watermark signal upsampled to full resolution, [C,H,W] (before JND and scaling_w)."""
        message = self._checked(message)  # a public entry too: a wrong length is InvalidMessage, not XNNPACK's text
        _, height, width = image.shape
        small = resize_bilinear(image, self.size, self.size)
        w = self.model(image=small[None], message=message.reshape(1, -1))["watermark"][0]
        return resize_bilinear(w, height, width)

    def embed_rgb8(self, rgb8: np.ndarray, message: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 + [nbits] 0/1 -> the watermarked HxWx3 uint8: `to_uint8(embed(...))`, in row bands.
        A card that adds its watermark to the image as is (`adds_levels`) adds it in 8-bit levels
        (`bands.add_upscaled`): within one level of the float path, on ~1e-5 of the values, where the float sum
        lands on a rounding boundary. Other cards take the float path, above BANDED_ABOVE_PIXELS in row bands, so
        memory grows with the width, not the area (runtime/bands.py), the JND of attenuating cards computed per band
        with the rows its 5x5 kernel reaches beyond it."""
        message = self._checked(message)
        if not isinstance(rgb8, np.ndarray) or rgb8.dtype != np.uint8:
            raise InvalidImage("embed_rgb8 takes HxWx3 uint8 pixels; embed takes float [3,H,W]")
        checked_pixels(rgb8)
        if self.adds_levels:
            small = bands.downscale(rgb8, self.size, self.size)
            watermark = self.model(image=small[None], message=message.reshape(1, -1))["watermark"][0]
            delta = np.float32(255 * self.scaling_w) * watermark  # in 8-bit levels
            if np.abs(delta).max() <= bands.MAX_DELTA:
                return bands.add_upscaled(rgb8, delta)
        if not _banded(rgb8):
            return to_uint8(self.embed(bands.as_float_planes(rgb8), message))
        height, width = rgb8.shape[:2]
        small = bands.downscale(rgb8, self.size, self.size)
        watermark = self.model(image=small[None], message=message.reshape(1, -1))["watermark"][0]
        upscale = bands.Upscale(watermark, height, width)
        reach = 2 if self.attenuation else 0

        def band(start: int, stop: int) -> np.ndarray:
            lo, hi = max(start - reach, 0), min(stop + reach, height)
            x = bands.as_float_planes(rgb8[lo:hi])
            w = upscale.rows(start, stop)
            if self.attenuation:
                w = jnd_heatmaps(x, *self.attenuation)[:, start - lo : stop - lo] * w
            y = self.scaling_i * x[:, start - lo : stop - lo] + self.scaling_w * w
            return to_uint8(np.clip(y, 0, 1).astype(np.float32))

        out = np.empty_like(rgb8)
        for start, rows in bands.map_bands(band, height):
            out[start : start + rows.shape[0]] = rows
        return out

    def _checked(self, message: np.ndarray) -> np.ndarray:
        message = np.asarray(message, np.float32).reshape(-1)
        if message.size != self.nbits:
            raise InvalidMessage(f"message has {message.size} bits but the model takes {self.nbits}")
        return message

    def embed(self, image: np.ndarray, message: np.ndarray) -> np.ndarray:
        """[3,H,W] in [0,1] + [nbits] 0/1 -> watermarked [3,H,W] in [0,1] (float; round with `to_uint8`)."""
        message = self._checked(message)
        if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.floating):
            raise InvalidImage("embed takes float [3,H,W] pixels in [0,1]; embed_rgb8 takes HxWx3 uint8")
        checked_pixels(image)
        return blend(image, self.watermark(image, message), self.scaling_w, self.scaling_i, self.attenuation)


def _bit_logits(model: _Model, small: np.ndarray) -> np.ndarray:
    """The detector `model` on one [3,S,S] input -> its [nbits] bit logits."""
    return model(image=small[None])["bit_logits"][0].astype(np.float32)


@functools.lru_cache(maxsize=1)
def _second_reader():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="vst-read")


class Detector:
    """`resync`: when the card declares its watermark tile (`tile_period`) and the as-is reading is unsure, look for
    the tile at another scale and phase (a crop read as is; `resync.py`); video reads track the tile from frame to
    frame (`video.TileTracker`). False: read at the grid only."""

    def __init__(self, path: Path, threads: int = 2, resync: bool = True) -> None:
        self.model = _Model(path, threads)
        meta = self.model.meta
        if meta.get("part") != "detector":
            raise InvalidModelFile(f"{path} is a {meta.get('part')}, not a detector")
        self.nbits, self.size = int(meta["nbits"]), int(meta["size"])
        self.tile_period = int(meta["tile_period"]) if resync and meta.get("tile_period") else None
        self.threads = threads
        self._pair: tuple[_Model, _Model] | None = None  # read_all's two 1-thread copies, made on first use

    def logits(self, small: np.ndarray) -> tuple[np.ndarray, float]:
        """[3,S,S] at the processing size -> ([nbits] bit logits, detection logit)."""
        out = self.model(image=small[None])
        return out["bit_logits"][0].astype(np.float32), float(out["detection_logit"].reshape(-1)[0])

    def read(self, small: np.ndarray) -> np.ndarray:
        """[3,S,S] at the processing size -> [nbits] bit logits."""
        return _bit_logits(self.model, small)

    def read_all(self, smalls: list[np.ndarray]) -> list[np.ndarray]:
        """`read` of each [3,S,S] input, in order. With 2 threads or more, two 1-thread copies of the model read
        alternate inputs at once: one 2-thread invoke of a model this small leaves the second core idle most of
        the time (docs/runtime.md, "A crop read as is"), and XNNPACK gives the same numbers at 1 and 2 threads
        (bit for bit: tests/test_resync.py)."""
        if self.threads < 2 or len(smalls) < 2:
            return [self.read(small) for small in smalls]
        if self._pair is None:
            self._pair = (_Model(self.model.path, 1), _Model(self.model.path, 1))
        here, aside = self._pair
        odd = _second_reader().submit(lambda: [_bit_logits(aside, small) for small in smalls[1::2]])
        even = [_bit_logits(here, small) for small in smalls[0::2]]
        out = [np.empty(0, np.float32)] * len(smalls)
        out[0::2], out[1::2] = even, odd.result()
        return out

    def detect(self, image: np.ndarray | Image.Image) -> Detection:
        """`image`: [3,H,W] float in [0,1], or HxWx3 uint8 or a Pillow RGB image; above BANDED_ABOVE_PIXELS read in row
        bands (memory of the decoded file and a few bands, runtime/bands.py)."""
        checked_pixels(image)
        logits, detection_logit = self.logits(_resize_any(image, self.size, self.size))
        if self.tile_period and unsure(logits):
            comb = comb_of(image, self.tile_period, self.size, _resize_any)
            if not comb.periodic:  # no tile in the spectrum: nothing to re-synchronise to, the reading as is stands
                return Detection(logits, logits > 0, detection_logit)
            if not _banded(image):
                image = _as_float(image)  # the search resizes the image many times: once to float, when it fits
            found = resynchronise(image, self.read_all, self.tile_period, self.size, _resize_any, comb)
            # never worse than as is: the re-found reading replaces it only when it is the more confident one
            if found.agreement > confidence(logits):
                return Detection(found.bit_logits, found.bit_logits > 0, detection_logit, found, found)
            return Detection(logits, logits > 0, detection_logit, None, found)
        return Detection(logits, logits > 0, detection_logit)
