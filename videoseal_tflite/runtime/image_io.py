"""Read an image for the embedder and write the watermarked one back without losing what the input carried.

Pillow + numpy only. `read_image` gives the runtime float RGB pixels [3,H,W] plus everything the output must
keep; `write_image` puts it back:

- alpha (RGBA, LA, palette transparency): the RGB is watermarked, the original alpha goes back unchanged;
- EXIF orientation: applied to the pixels on reading, and the tag is set to 1 in the output. The watermark is
  embedded in the upright pixels and the saved file stores exactly those pixels, so `detect` (which reads the
  stored pixels) and any viewer or pipeline that does or does not apply EXIF rotation all see the watermarked
  orientation. (Keeping tag 6 with the pixels as stored would break detection as soon as a tool bakes in
  the rotation: the detector then sees the image turned by 90 degrees.)
- the EXIF block, byte for byte but for that one orientation value; the ICC profile; the DPI; PNG text chunks;
- the mode where the output format allows it: grayscale in, grayscale out when the watermarked image is still
  gray (a card that watermarks luma only, like videoseal's Y-channel embedders: then L is lossless). A card
  that watermarks colour (the compact card) would lose most of its bits in L (measured on held-out photos:
  mean bit accuracy 0.59-0.77 in L against 0.81-1.0 in RGB), so the output stays RGB and a note says so.

Whatever a format cannot hold (alpha in JPEG, EXIF in BMP, grayscale in WebP, ...) is named in `Written.notes`.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from videoseal_tflite.errors import InvalidImage, InvalidOption, UnsupportedAnimation, UnsupportedOutput
from videoseal_tflite.store.atomic import atomic_path

MIN_SIDE = 32  # as runtime.MIN_SIDE (not imported: this module needs no interpreter)
DEFAULT_QUALITY = 95
ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF"}
OUTPUT_FORMATS[".tiff"] = "TIFF"
LOSSY_FORMATS = ("JPEG", "WEBP")
# What Pillow writes (and reads back) per format: pixel modes, and which metadata it stores.
_MODES = {
    "PNG": ("L", "LA", "I;16", "RGB", "RGBA"),
    "TIFF": ("L", "LA", "I;16", "RGB", "RGBA"),
    "JPEG": ("L", "RGB"),
    "WEBP": ("RGB", "RGBA"),
    "BMP": ("L", "RGB"),
}
_METADATA = {"PNG": ("EXIF", "ICC profile"), "TIFF": ("EXIF", "ICC profile"), "JPEG": ("EXIF", "ICC profile")}
_METADATA["WEBP"] = ("EXIF", "ICC profile")
_GRAY_MODES = ("1", "L", "LA", "La", "I;16", "I;16B", "I;16L", "I", "F")
# TIFF layout tags: a TIFF file's own structure, not EXIF metadata to carry into another file
_TIFF_LAYOUT = {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 338, 339}
_TIFF_LAYOUT |= {ORIENTATION_TAG, 322, 323, 324, 325, 530, 531, 532, 700, 34377, 34675}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class NamedImage:
    name: str
    pixels: np.ndarray  # float32 [3,H,W] in [0,1]


def to_rgb_float(array: np.ndarray) -> np.ndarray:
    """Any HxW / HxWx{1,3,4} array (uint8, uint16, bool, float) -> float32 [3,H,W] in [0,1]."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    else:
        a = a.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            a = (a - lo) / max(hi - lo, 1e-8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise InvalidImage(f"unsupported image array shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.concatenate([a] * 3, axis=-1)
    a = a[..., :3]
    return np.ascontiguousarray(a.transpose(2, 0, 1).clip(0, 1), dtype=np.float32)


_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I")  # read at their own precision, not through 8-bit RGB


def _deep_planes(im: Image.Image) -> np.ndarray:
    """A 16-bit (or 32-bit integer, or float) grayscale image -> float32 [3,H,W] in [0,1] at its own precision:
    16-bit over 65535, the others over their maximum."""
    array = np.asarray(im).astype(np.float32)
    scale = 65535.0 if im.mode.startswith("I;16") else max(float(array.max()), 1.0)
    return to_rgb_float(array / scale)


def read_pixels(path: Path) -> Image.Image | np.ndarray:
    """What `detect` reads, as stored (no EXIF rotation): a Pillow RGB image for 8-bit files, which the runtime
    reads in row bands and never copies whole (runtime/bands.py), or float [3,H,W] in [0,1] for 16-bit ones.
    Raises InvalidImage with one sentence (unreadable, too small)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            pixels: Image.Image | np.ndarray
            if im.mode in _DEEP_MODES:
                pixels = _deep_planes(im)
                height, width = pixels.shape[1:]
            else:
                rgb = im if im.mode == "RGB" else im.convert("RGB")
                pixels, height, width = rgb, rgb.height, rgb.width
    except FileNotFoundError:
        raise InvalidImage(f"image not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"{path} is not a readable image ({str(exc)[:120]})") from None
    if min(height, width) < MIN_SIDE:
        raise InvalidImage(f"{path} is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    return pixels


def load_image_file(path: Path) -> NamedImage:
    """Read a PNG/JPEG/... from disk as float RGB. Raises InvalidImage with one sentence."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            pixels = _deep_planes(im) if im.mode in _DEEP_MODES else to_rgb_float(np.asarray(im.convert("RGB")))
    except FileNotFoundError:
        raise InvalidImage(f"image not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"{path} is not a readable image ({str(exc)[:120]})") from None
    return NamedImage(path.name, pixels)


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """An input image: what the runtime needs (`rgb8`, or `pixels`) and what the output must carry over."""

    path: Path
    format: str | None  # Pillow's name of the input format: 'PNG', 'JPEG', ...
    mode: str  # the input's Pillow mode as stored: 'RGB', 'RGBA', 'L', 'LA', 'I;16', 'P', 'CMYK', ...
    # upright (EXIF orientation applied): HxWx3 uint8 for 8-bit inputs (the runtime works on them in row bands),
    # float32 [3,H,W] in [0,1] for deeper ones (16-bit grayscale keeps its precision)
    array: np.ndarray
    alpha: np.ndarray | None  # uint8 [H,W], upright; None when the input has no transparency
    exif: bytes | None  # 'Exif\0\0' + TIFF block; orientation already set to 1 when it was applied
    icc_profile: bytes | None
    orientation: int = 1  # the input's EXIF orientation (1-8), applied to `pixels` and `alpha`
    dpi: tuple | None = None
    png_text: dict | None = None
    bits: int = 8  # bits per sample as the file stores them: 16 for a 16-bit PNG/TIFF, even one read as 8-bit RGB

    @property
    def rgb8(self) -> np.ndarray | None:
        """HxWx3 uint8, or None for a 16-bit input."""
        return self.array if self.array.dtype == np.uint8 else None

    @property
    def pixels(self) -> np.ndarray:
        """float32 [3,H,W] in [0,1] (a full-size float copy for 8-bit inputs: 12 bytes a pixel)."""
        return to_rgb_float(self.array) if self.array.dtype == np.uint8 else self.array

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.array.shape[:2] if self.array.dtype == np.uint8 else self.array.shape[1:]

    @property
    def gray(self) -> bool:
        return self.mode in _GRAY_MODES

    @property
    def deep(self) -> bool:
        """16 bits per sample (grayscale); written back as 16-bit where the format allows it."""
        return self.mode.startswith("I;16")


@dataclasses.dataclass(frozen=True)
class Written:
    """What `write_image` wrote: the mode, what it kept from the input, and what it could not keep."""

    path: Path
    format: str
    mode: str
    kept: tuple[str, ...]
    notes: tuple[str, ...]


def output_format(path: Path) -> str:
    """Pillow's format name for an output path; raises UnsupportedOutput for anything but an image extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        raise UnsupportedOutput(
            f"output {path}: GIF keeps at most 256 colours, which erases the watermark; write a .png instead"
        )
    fmt = OUTPUT_FORMATS.get(suffix)
    if fmt is None:
        raise UnsupportedOutput(f"output {path} needs an image extension (.png recommended: lossless)")
    return fmt


QUALITY_RANGE = (1, 100)  # JPEG/WebP quality; the CLI checks it when parsing, the Python API here


def check_quality(quality: int) -> int:
    low, high = QUALITY_RANGE
    if not low <= int(quality) <= high:
        raise InvalidOption(f"--quality must be {low}-{high}, got {quality}")
    return int(quality)


def reset_orientation(exif: bytes) -> bytes:
    """The EXIF block with IFD0's Orientation set to 1 and every other byte unchanged (offsets stay valid)."""
    head = 6 if exif.startswith(b"Exif\x00\x00") else 0
    tiff = exif[head:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return exif
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return exif
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    out = bytearray(exif)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind, n = struct.unpack_from(order + "HHI", tiff, entry)
        if tag == ORIENTATION_TAG and kind == 3 and n == 1:
            struct.pack_into(order + "H", out, head + entry + 8, 1)
    return bytes(out)


def _exif_of(im: Image.Image) -> tuple[bytes | None, int]:
    """(EXIF block with the 'Exif\\0\\0' prefix or None, orientation 1-8). Broken EXIF reads as none."""
    raw = im.info.get("exif")
    try:
        exif = im.getexif()
        orientation = int(exif.get(ORIENTATION_TAG, 1) or 1)
        if raw is None and im.format == "TIFF":  # a TIFF's tags are its own IFD: carry the non-layout ones
            carried = Image.Exif()
            for tag, value in exif.items():
                if tag not in _TIFF_LAYOUT and tag not in (0x8769, 0x8825):
                    carried[tag] = value
            for pointer in (0x8769, 0x8825):  # the Exif and GPS sub-IFDs
                if exif.get_ifd(pointer):
                    carried.get_ifd(pointer).update(exif.get_ifd(pointer))
            raw = carried.tobytes() if len(carried) else None
    except Exception:  # noqa: BLE001 -- a malformed EXIF block must not make the image unreadable
        orientation = 1
    if raw and not raw.startswith(b"Exif\x00\x00"):
        raw = b"Exif\x00\x00" + raw  # WebP stores the TIFF block without the JPEG APP1 prefix
    orientation = orientation if orientation in _TRANSPOSE else 1
    if raw and orientation != 1:
        raw = reset_orientation(raw)
    return raw or None, orientation


def _pixels_and_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """HxWx3 uint8 RGB (float [3,H,W] for 16-bit and float inputs, which keep their precision) and the alpha
    plane (uint8) or None."""
    if im.mode in (*_DEEP_MODES, "F"):
        return _deep_planes(im), None
    if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode in ("LA", "La"):
        im = im.convert("LA")
        return np.asarray(im.getchannel("L").convert("RGB")), np.asarray(im.getchannel("A")).copy()
    if im.mode == "RGBA":
        return np.asarray(im.convert("RGB")), np.asarray(im.getchannel("A")).copy()
    return np.asarray((im.convert("L") if im.mode == "1" else im).convert("RGB")), None


def _stored_bits(im: Image.Image) -> int:
    """Bits per sample as the file stores them, from the decoder's raw mode before `load()` (8 when it says no
    more): Pillow reads 16-bit colour PNG/TIFF ('RGB;16B', 'RGBA;16L', 'LA;16B') as 8-bit RGB(A)/LA, so the
    mode alone cannot tell. BMP's packed 'BGR;15'/'BGR;16' count bits per pixel, not per sample."""
    if im.mode.startswith("I;16"):
        return 16
    if im.mode in ("I", "F"):
        return 32
    for tile in getattr(im, "tile", None) or ():  # ImageFile's decoder tiles (a plain Image has none)
        args = getattr(tile, "args", None)
        raw = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
        depth = re.search(r";(16|32)", raw) if isinstance(raw, str) and not raw.startswith("BGR") else None
        if depth:
            return int(depth.group(1))
    return 8


def read_image(path: Path) -> ImageFile:
    """Any Pillow-readable image -> ImageFile. Raises InvalidImage with one sentence (unreadable, too small)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise UnsupportedAnimation(
                    f"{path} is an animated {im.format} of {frames} frames; marking its first frame alone would drop "
                    "the animation: save it as a video (.mp4) and embed that, or export the one frame to mark"
                )
            bits = _stored_bits(im)  # before load(), which drops the tiles that say it
            im.load()
            exif, orientation = _exif_of(im)
            fmt, mode, info = im.format, im.mode, dict(im.info)
            png_text = dict(getattr(im, "text", None) or {}) if fmt == "PNG" else None
            upright = im.transpose(_TRANSPOSE[orientation]) if orientation != 1 else im
            pixels, alpha = _pixels_and_alpha(upright)
    except FileNotFoundError:
        raise InvalidImage(f"image not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"{path} is not a readable image ({str(exc)[:120]})") from None
    height, width = pixels.shape[:2] if pixels.dtype == np.uint8 else pixels.shape[1:]
    if min(height, width) < MIN_SIDE:
        raise InvalidImage(f"{path} is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    dpi = info.get("dpi")
    icc = info.get("icc_profile") or None
    return ImageFile(path, fmt, mode, pixels, alpha, exif, icc, orientation, dpi, png_text, bits)


def _color_mode(rgb: np.ndarray, source: ImageFile, fmt: str, notes: list[str]) -> tuple[str, np.ndarray]:
    """The output's colour mode ('I;16', 'L' or 'RGB') and its HxW[x3] array; `rgb`: float [3,H,W] in [0,1], or
    HxWx3 uint8 already rounded (`Embedder.embed_rgb8`)."""
    modes = _MODES[fmt]
    deep = source.deep and "I;16" in modes
    levels = 65535 if deep else 255
    if rgb.dtype == np.uint8:
        quantized = rgb.transpose(2, 0, 1)
        rgb = quantized  # an 8-bit image has nothing to round below: the 255 levels are the values
    else:
        quantized = np.clip(np.round(rgb * levels), 0, levels).astype(np.uint16 if deep else np.uint8)
    if source.gray:
        still_gray = bool((quantized[0] == quantized[1]).all() and (quantized[1] == quantized[2]).all())
        if still_gray and ("L" in modes or deep):
            if source.mode == "1":
                notes.append("bilevel (1-bit) input written as 8-bit grayscale: one bit cannot hold the watermark")
            return ("I;16" if deep else "L"), quantized[0]
        if not still_gray:
            notes.append(
                "grayscale input written in RGB colour: this card's watermark is in colour, and converting it "
                "back to gray would lose its bits"
            )
        else:
            notes.append(f"grayscale input written in RGB colour: {fmt} has no grayscale mode")
        if quantized.dtype != np.uint8:
            quantized = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    elif source.mode not in ("RGB", "RGBA", "RGBX"):
        kind = {"P": "palette (P)", "PA": "palette (PA)"}.get(source.mode, source.mode)
        notes.append(f"{kind} input written in RGB colour (the watermark needs full colour)")
    return "RGB", quantized.transpose(1, 2, 0)


def _depth_note(source: ImageFile, fmt: str, mode: str) -> str | None:
    """One line when the output keeps fewer bits per sample than the input stored (None when it keeps them all)."""
    kept = 16 if mode == "I;16" else 8
    if source.bits <= kept:
        return None
    kind = "grayscale" if source.gray else source.mode
    if mode.startswith("L") and source.deep:
        why = f"{fmt} has no 16-bit grayscale"
    elif mode.startswith("RGB"):
        why = "colour is read and written at 8 bits a channel"
    else:
        why = "samples deeper than 16 bits are written at 8"
    return f"{source.bits}-bit {kind} input written as 8-bit {mode}: {why}"


def _with_alpha(im: Image.Image, source: ImageFile, fmt: str, notes: list[str]) -> Image.Image:
    if source.alpha is None:
        return im
    alpha = Image.fromarray(source.alpha)
    if im.mode + "A" in _MODES[fmt] and im.mode in ("L", "RGB"):
        return Image.merge(im.mode + "A", (*im.split(), alpha))
    if "RGBA" in _MODES[fmt]:
        if im.mode != "RGB":
            notes.append(f"grayscale with alpha written as RGBA: {fmt} has no grayscale with alpha")
        return Image.merge("RGBA", (*im.convert("RGB").split(), alpha))
    notes.append(f"alpha channel dropped: {fmt} has no alpha (use .png, .webp or .tiff to keep it)")
    return im


def _icc_fits(icc: bytes, mode: str) -> bool:
    """An ICC profile describes one colour space (header bytes 16-20): it must match the pixels'."""
    space = icc[16:20]
    return space == (b"GRAY" if mode in ("L", "LA", "I;16") else b"RGB ")


def _metadata(source: ImageFile, fmt: str, mode: str, notes: list[str]) -> tuple[dict, list[str]]:
    """Pillow save keywords carrying the input's metadata, and the names of what they keep."""
    params: dict[str, object] = {}
    kept: list[str] = []
    can = _METADATA.get(fmt, ())
    if source.exif:
        if "EXIF" in can:
            params["exif"] = source.exif
            kept.append(
                f"EXIF (orientation {source.orientation} applied, tag set to 1)" if source.orientation > 1 else "EXIF"
            )
        else:
            notes.append(f"EXIF dropped: {fmt} cannot store it")
    if source.icc_profile:
        if "ICC profile" not in can:
            notes.append(f"ICC profile dropped: {fmt} cannot store it")
        elif not _icc_fits(source.icc_profile, mode):
            space = source.icc_profile[16:20].decode("latin-1").strip()
            notes.append(f"ICC profile dropped: it describes {space} pixels and the output is {mode}")
        else:
            params["icc_profile"] = source.icc_profile
            kept.append("ICC profile")
    if source.dpi and fmt != "WEBP":
        params["dpi"] = source.dpi
    if source.png_text and fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in source.png_text.items():
            info.add_text(key, value)
        params["pnginfo"] = info
        kept.append("PNG text")
    return params, kept


def write_image(path: Path, rgb: np.ndarray, source: ImageFile, quality: int = DEFAULT_QUALITY) -> Written:
    """Save watermarked RGB (float [3,H,W] in [0,1], or HxWx3 uint8) to `path` (format from the extension) with
    what `source` carried; atomic: a reader never sees half a file, and a failure leaves nothing. `quality`
    (1-100) is used by JPEG and WebP."""
    path = Path(path)
    fmt = output_format(path)
    check_quality(quality)
    notes: list[str] = []
    mode, array = _color_mode(rgb, source, fmt, notes)
    im = _with_alpha(Image.fromarray(array), source, fmt, notes)  # uint16 HxW -> I;16, uint8 -> L / RGB
    depth = _depth_note(source, fmt, im.mode)
    if depth:
        notes.insert(0, depth)
    params, kept = _metadata(source, fmt, im.mode, notes)
    if source.alpha is not None and "A" in im.mode:
        kept.insert(0, "alpha")
    if source.gray and im.mode in ("L", "LA", "I;16"):
        kept.append(f"mode {im.mode}")
    if fmt in LOSSY_FORMATS:
        params["quality"] = int(quality)
    if fmt == "JPEG":
        params["subsampling"] = 0  # 4:4:4: a colour watermark loses ~5 points of bit accuracy to 4:2:0 at Q95
    if fmt == "WEBP":
        params["exact"] = True  # keep the RGB under transparent pixels (libwebp would flatten it otherwise)
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **params)
    return Written(path, fmt, im.mode, tuple(kept), tuple(notes))
