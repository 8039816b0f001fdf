"""Images lose nothing: `embed` keeps alpha, EXIF (orientation applied, tag set to 1), ICC profile and, where the
watermark allows it, the mode; `--quality` drives JPEG/WebP; a saved file that loses bits gets one warning line.

Inputs are made here from a real photo (skimage's astronaut, 512x512) with the compact card's trained weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from videoseal_tflite.cli.main import main
from videoseal_tflite.runtime.image_io import read_image, reset_orientation, write_image

MESSAGE = "0110100110010110"  # 16 bits: the compact card
ORIENTATION = 0x0112
WARNING = "videoseal-tflite: warning: the saved file reads back with bit accuracy"


@pytest.fixture(scope="module")
def root(out_root) -> Path:
    """Only the compact card's FP32 files (shared with `compact_artifacts` when the whole suite runs)."""
    from videoseal_tflite.build.pipeline import convert_card
    from videoseal_tflite.build.weights import WeightSource

    convert_card("compact", WeightSource(), out_root, variants=(), progress=False)
    return out_root


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from videoseal_tflite.build.images import fullres_photo
    from videoseal_tflite.runtime.image import to_uint8

    return to_uint8(fullres_photo("astronaut").pixels)  # HxWx3 uint8


def _icc(space: str = "sRGB") -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION], exif[0x010F], exif[0x0110] = orientation, "PhoneMaker", "Phone 1"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 12:00:00"  # DateTimeOriginal, in the Exif sub-IFD
    return exif.tobytes()


def _embed(capsys, root: Path, src: Path, out: Path, *extra) -> tuple[int, dict, list[str]]:
    argv = ["embed", src, out, "--card", "compact", "--artifacts", root, "--message", MESSAGE, "--json", *extra]
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    return code, (json.loads(captured.out) if code == 0 else {}), err


def _alpha_plane(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = ((xx + 2 * yy) * 255 // (w + 2 * h)).astype(np.uint8)
    alpha[:48, :48] = 0  # a fully transparent corner
    alpha[-48:, -48:] = 255
    return alpha


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tiff"])
def test_rgba_keeps_its_alpha(root, photo, tmp_path, capsys, suffix):
    alpha = _alpha_plane(*photo.shape[:2])
    src = tmp_path / "in.png"
    Image.fromarray(np.dstack([photo, alpha])).save(src)
    out = tmp_path / f"out{suffix}"
    code, report, err = _embed(capsys, root, src, out)
    assert code == 0, err
    written = Image.open(out)
    assert written.mode == "RGBA" and report["mode"] == "RGBA" and "alpha" in report["kept"]
    assert np.array_equal(np.asarray(written.getchannel("A")), alpha)
    assert report["bit_accuracy"] >= 0.9


def test_rgba_to_jpeg_says_the_alpha_is_dropped(root, photo, tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(np.dstack([photo, _alpha_plane(*photo.shape[:2])])).save(src)
    code, report, err = _embed(capsys, root, src, tmp_path / "out.jpg")
    assert code == 0, err
    assert report["mode"] == "RGB" and any("alpha channel dropped" in n for n in report["notes"])


def _phone_jpeg(path: Path, photo: np.ndarray) -> Path:
    """What a phone writes: the sensor's sideways pixels, EXIF orientation 6 (rotate 90 cw to display), ICC."""
    sideways = Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90)
    sideways.save(path, quality=95, exif=_exif(6), icc_profile=_icc())
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_phone_jpeg_orientation_exif_and_icc(root, photo, tmp_path, capsys, suffix):
    src = _phone_jpeg(tmp_path / "phone.jpg", photo)
    out = tmp_path / f"out{suffix}"
    code, report, err = _embed(capsys, root, src, out)
    assert code == 0, err
    assert report["bit_accuracy"] >= 0.9, report  # detect on the saved file reads the message
    before, after = Image.open(src), Image.open(out)
    assert after.info["icc_profile"] == before.info["icc_profile"]
    old, new = before.getexif(), after.getexif()
    assert new[ORIENTATION] == 1 and old[ORIENTATION] == 6
    assert {k: v for k, v in new.items() if k != ORIENTATION} == {k: v for k, v in old.items() if k != ORIENTATION}
    assert new.get_ifd(0x8769) == old.get_ifd(0x8769) == {0x9003: "2024:05:01 12:00:00"}
    # the stored pixels are upright: the orientation was applied, so every reader sees the watermarked image
    stored = np.asarray(after.convert("RGB")).astype(np.float32)
    assert np.abs(stored - photo).mean() < 4 < np.abs(stored - np.asarray(before.convert("RGB"))).mean()
    assert any(k.startswith("EXIF (orientation 6 applied, tag set to 1)") for k in report["kept"])


def test_orientation_reset_changes_one_value_only():
    for order in ("<", ">"):
        exif = Image.Exif()
        exif[ORIENTATION], exif[0x010F] = 6, "Maker"
        raw = exif.tobytes() if order == ">" else b"Exif\x00\x00" + _little_endian(exif)
        fixed = reset_orientation(raw)
        assert len(fixed) == len(raw) and sum(a != b for a, b in zip(raw, fixed)) == 1
        check = Image.Exif()
        check.load(fixed)
        assert check[ORIENTATION] == 1 and check[0x010F] == "Maker"
    assert reset_orientation(b"Exif\x00\x00garbage") == b"Exif\x00\x00garbage"


def _little_endian(exif: Image.Exif) -> bytes:
    from PIL import TiffImagePlugin

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    for tag, value in exif.items():
        ifd[tag] = value
    return b"II\x2a\x00\x08\x00\x00\x00" + ifd.tobytes(8)


def _gray_bit_accuracies(root: Path, photo: np.ndarray, count: int = 4) -> tuple[float, float]:
    """Mean bit accuracy of the compact card on a gray photo: written as RGB, and converted back to L."""
    from videoseal_tflite.runtime.image import Detector, Embedder, round_8bit
    from videoseal_tflite.runtime.image_io import to_rgb_float

    folder = root / "compact"
    embedder, detector = Embedder(folder / "embedder_128_fp32.tflite"), Detector(folder / "detector_128_fp32.tflite")
    gray = to_rgb_float(np.asarray(Image.fromarray(photo).convert("L")))
    rgb, luma = [], []
    for message in np.random.default_rng(0).integers(0, 2, (count, embedder.nbits)).astype(np.float32):
        marked = round_8bit(embedder.embed(gray, message))
        rgb.append(detector.detect(marked).bit_accuracy(message))
        l_plane = np.round(np.clip(0.299 * marked[0] + 0.587 * marked[1] + 0.114 * marked[2], 0, 1) * 255)
        luma.append(detector.detect(to_rgb_float(l_plane.astype(np.uint8))).bit_accuracy(message))
    return float(np.mean(rgb)), float(np.mean(luma))


def test_grayscale_in_gives_rgb_out_with_a_note_for_a_colour_watermark(root, photo, tmp_path, capsys):
    """The compact card watermarks colour: gray -> L would lose the bits (measured here), so the output is RGB."""
    src = tmp_path / "gray.png"
    Image.fromarray(photo).convert("L").save(src, icc_profile=_icc("sRGB"))
    code, report, err = _embed(capsys, root, src, tmp_path / "out.png")
    assert code == 0, err
    assert report["mode"] == "RGB" and Image.open(tmp_path / "out.png").mode == "RGB"
    assert any(n.startswith("grayscale input written in RGB colour") for n in report["notes"])
    assert report["bit_accuracy"] >= 0.9
    in_rgb, in_l = _gray_bit_accuracies(root, photo)
    assert in_l <= in_rgb - 0.1, (in_rgb, in_l)
    main(
        ["embed", str(src), str(tmp_path / "plain.png"), "--card", "compact", "--artifacts", str(root)]
        + ["--message", MESSAGE]
    )
    assert "note: grayscale input written in RGB colour" in capsys.readouterr().out


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("L", ".jpg"), ("I;16", ".png"), ("LA", ".png")])
def test_grayscale_stays_grayscale_when_the_watermark_is_gray(tmp_path, mode, suffix):
    """A luma-only watermark (videoseal's Y-channel embedders) leaves a gray image gray: L / I;16 / LA out."""
    rng = np.random.default_rng(1)
    if mode == "I;16":
        im = Image.fromarray((rng.random((64, 80)) * 65535).astype(np.uint16))
    else:
        im = Image.fromarray((rng.random((64, 80)) * 255).astype(np.uint8)).convert(mode)
    src = tmp_path / "in.png"
    im.save(src)
    source = read_image(src)
    marked = np.clip(source.pixels + 0.01 * rng.standard_normal((1, 64, 80)), 0, 1)  # same on all channels
    written = write_image(tmp_path / f"out{suffix}", marked, source)
    back = Image.open(tmp_path / f"out{suffix}")
    assert written.mode == back.mode == mode and not written.notes
    levels = 65535 if mode == "I;16" else 255
    if suffix == ".png":  # lossless: the gray plane is the watermarked one, rounded once
        stored = np.asarray(back)
        stored = stored[..., 0] if stored.ndim == 3 else stored
        assert np.array_equal(stored, np.round(marked[0] * levels).astype(stored.dtype))


def test_webp_keeps_exif_and_icc(root, photo, tmp_path, capsys):
    src = tmp_path / "in.webp"
    Image.fromarray(photo).save(src, quality=95, exif=_exif(1), icc_profile=_icc())
    code, report, err = _embed(capsys, root, src, tmp_path / "out.webp")
    assert code == 0, err
    before, after = Image.open(src), Image.open(tmp_path / "out.webp")
    assert after.info["icc_profile"] == before.info["icc_profile"]
    assert after.info["exif"] == before.info["exif"]  # orientation 1: the block is kept byte for byte
    assert report["quality"] == 95 and report["kept"] == ["EXIF", "ICC profile"]


def test_quality_changes_the_jpeg(root, photo, tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    sizes = {}
    for quality in (95, 40):
        code, report, err = _embed(capsys, root, src, tmp_path / f"q{quality}.jpg", "--quality", str(quality))
        assert code == 0 and report["quality"] == quality, err
        sizes[quality] = (tmp_path / f"q{quality}.jpg").stat().st_size
    assert sizes[40] < 0.6 * sizes[95], sizes


def test_lost_bits_warn_on_stderr_and_exit_0(root, photo, tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    code, report, err = _embed(capsys, root, src, tmp_path / "out.png")
    assert code == 0 and report["bit_accuracy"] == 1.0 and err == [], err
    # the shipped weights keep every bit of this photo down to JPEG quality 10 (measured); quality 1 loses one
    code, report, err = _embed(capsys, root, src, tmp_path / "out.jpg", "--quality", "1")
    assert code == 0 and report["bit_accuracy"] < 1.0, report
    assert len(err) == 1 and err[0].startswith(WARNING) and "--quality 1 lost bits" in err[0], err


@pytest.mark.parametrize("quality", ["0", "101"])
def test_bad_quality_is_one_line_and_no_file(root, photo, tmp_path, capsys, quality):
    src = tmp_path / "in.png"
    Image.fromarray(photo).save(src)
    with pytest.raises(SystemExit) as stop:  # checked at parse time, before any file is read
        _embed(capsys, root, src, tmp_path / "out.jpg", "--quality", quality)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("videoseal-tflite")]
    assert stop.value.code == 2 and len(err) == 1 and "--quality: must be in [1, 100]" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


@pytest.mark.parametrize(
    "suffix,note",
    [
        (".bmp", "EXIF dropped: BMP cannot store it"),
        (".bmp", "ICC profile dropped: BMP cannot store it"),
        (".webp", "grayscale input written in RGB colour: WEBP has no grayscale mode"),
    ],
)
def test_what_a_format_cannot_hold_is_named(tmp_path, suffix, note):
    src = tmp_path / "in.jpg"
    Image.fromarray(np.full((40, 48), 120, np.uint8)).save(src, exif=_exif(1), icc_profile=_icc("sRGB"))
    source = read_image(src)
    written = write_image(tmp_path / f"out{suffix}", source.pixels, source)
    assert note in written.notes, written.notes


@pytest.mark.parametrize(
    ("pixels", "words"),
    [
        (np.zeros((64, 64, 2), np.uint8), "uint8 pixels must be HxWx3 (RGB), got shape (64, 64, 2)"),
        (np.zeros((64, 64, 3), np.float32), "float pixels must be [3,H,W] in [0,1], got shape (64, 64, 3)"),
        (np.zeros((3, 16, 64), np.float32), "the image is 64x16 pixels; at least 32x32 is needed"),
        (np.zeros((64, 64, 3), np.int32), "got a int32 array"),
        (Image.new("L", (64, 64)), "a Pillow image must be RGB, got mode L"),
    ],
)
def test_the_python_api_names_a_wrong_image_shape(root, pixels, words):
    """An embedding service that hands the runtime the wrong layout gets one InvalidImage sentence, not a shape
    error from inside LiteRT (a 2-channel uint8 array used to reach the detector as a [1,2,S,S] tensor)."""
    from videoseal_tflite.errors import InvalidImage
    from videoseal_tflite.runtime.image import Detector, Embedder
    from videoseal_tflite.store.artifact import Artifact

    find = {part: Artifact.find(root / "compact", part, "fp32")[0][1] for part in ("embedder", "detector")}
    with pytest.raises(InvalidImage, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Detector(find["detector"]).detect(pixels)
    embedder = Embedder(find["embedder"])
    message = np.zeros(embedder.nbits, np.float32)
    with pytest.raises(InvalidImage):
        (embedder.embed_rgb8 if isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 else embedder.embed)(
            pixels, message
        )
