"""Mutation fuzzing of the media `embed` and `detect` read: a damaged JPEG, PNG or MP4 (bytes changed in its header,
middle or tail, or the file cut short) is either marked and read like any input, or refused with one line naming
an input error class; never a traceback, never a partial output. `make test` runs a short, derandomized pass
(reproducible in CI); `make fuzz` a longer random one (`make fuzz FUZZ_MEDIA_EXAMPLES=1000` for more), or:

    VIDEOSEAL_TFLITE_FUZZ_MEDIA_EXAMPLES=1000 VIDEOSEAL_TFLITE_FUZZ_RANDOM=1 pytest tests/test_fuzz_media.py

Inputs that once failed are kept as fixed cases (`REGRESSIONS`), checked the same way.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from videoseal_tflite.cli.main import main

# per kind of file; each example is one embed and one detect in-process (~0.2 s)
EXAMPLES = int(os.environ.get("VIDEOSEAL_TFLITE_FUZZ_MEDIA_EXAMPLES", "30"))
RANDOM = os.environ.get("VIDEOSEAL_TFLITE_FUZZ_RANDOM", "") not in ("", "0")
HEAD = 1024  # containers keep their headers (PNG IHDR, JPEG tables, mp4 ftyp/moov) near the ends of the file
MESSAGE = "0110100110010110"  # 16 bits: the compact card
ERROR_LINE = re.compile(r"^videoseal-tflite: error: (\w+): \S")
# what a damaged input may be refused as: its own kind's error, never the base class or another's
REFUSALS = {"image": {"InvalidImage", "UnsupportedAnimation"}, "video": {"InvalidVideo"}}
SUFFIX = {"jpeg": ".jpg", "png": ".png", "mp4": ".mp4"}


@pytest.fixture(scope="module")
def root(out_root) -> Path:
    """The compact card's FP32 files (shared with the other tests' `out_root`: built once per session)."""
    from videoseal_tflite.build.pipeline import convert_card
    from videoseal_tflite.build.weights import WeightSource

    convert_card("compact", WeightSource(), out_root, variants=(), progress=False)
    return out_root


def _photo(width: int, height: int) -> np.ndarray:
    import skimage.data

    return np.asarray(Image.fromarray(skimage.data.chelsea()).resize((width, height), Image.Resampling.BICUBIC))


class Seeds(dict):
    """kind -> bytes; shown by name in hypothesis' report of a failing example (not as 30 KB of bytes)."""

    def __repr__(self) -> str:
        return f"Seeds({', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())})"


def _metadata() -> dict:
    """What a camera file carries, for the mutations to hit: EXIF (orientation 6, a make, a GPS block), an ICC
    profile, and (PNG) a text chunk."""
    from PIL import ImageCms, PngImagePlugin

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    exif[0x010F] = "fuzz camera"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)  # GPS latitude
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "a cat")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return {"exif": exif.tobytes(), "icc_profile": icc, "pnginfo": text}


@pytest.fixture(scope="module")
def seeds() -> Seeds:
    """Small valid files of each kind: a 96x64 photo as JPEG and PNG (with EXIF, ICC profile, PNG text), 6 frames
    of it panning as H.264 .mp4."""
    from videoseal_tflite.validate.clips import pan_frames

    out = Seeds()
    for kind, fmt in (("jpeg", "JPEG"), ("png", "PNG")):
        buffer = io.BytesIO()
        Image.fromarray(_photo(96, 64)).save(buffer, format=fmt, quality=90, **_metadata())
        out[kind] = buffer.getvalue()
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=24, options={"crf": "20", "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        for pixels in pan_frames(_photo(192, 128), 96, 64, 6):
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode(None))
    out["mp4"] = buffer.getvalue()
    return out


def _apply(data: bytes, edits: list[tuple[int, int, int]], cut: float | None, fix_crc: bool = False) -> bytes:
    """Set one byte per edit, in the head (region 0), the tail (1) or anywhere (2); with `fix_crc` (PNG), write
    each chunk's CRC anew so that the damage reaches the decoder past its checksum; then keep the first `cut` of
    the file (None: all of it)."""
    out = bytearray(data)
    for region, offset, value in edits:
        position = offset % HEAD if region == 0 else len(out) - 1 - offset % HEAD if region == 1 else offset % len(out)
        out[position % len(out)] = value
    if fix_crc:
        _fix_png_crcs(out)
    if cut is not None:
        out = out[: int(len(out) * cut)]
    return bytes(out)


def _fix_png_crcs(data: bytearray) -> None:
    """Recompute the CRC of every PNG chunk, walking the lengths as stored, until one runs past the end."""
    at = 8
    while at + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        end = at + 8 + length
        if end + 4 > len(data):
            return
        struct.pack_into(">I", data, end, zlib.crc32(bytes(data[at + 4 : end])) & 0xFFFFFFFF)
        at = end + 4


def _size_of(path: Path, video: bool, upright: bool = False) -> tuple[int, int]:
    """(width, height) of the file as decoded (a video: its first frame); `upright`: as `embed` reads an image,
    EXIF orientation applied."""
    if video:
        with av.open(str(path), metadata_errors="replace") as container:  # as the runtime opens it
            frame = next(container.decode(video=0))
            return frame.width, frame.height
    if upright:
        from videoseal_tflite.runtime.image_io import read_image

        height, width = read_image(path).size
        return width, height
    with Image.open(path) as im:
        im.load()
        return im.size


def _run(capfd, argv: list) -> tuple[int, list[str], str]:
    """The CLI in-process; every line a user would see on stderr (native libraries' too: fd 2 is captured)."""
    capfd.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit:  # argparse: not what a damaged file may cause
        raise AssertionError(f"usage error on {argv}: {capfd.readouterr().err}") from None
    captured = capfd.readouterr()
    lines = [line for line in captured.err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    return code, lines, captured.out


def _refused_cleanly(video: bool, code: int, err: list[str]) -> None:
    assert code == 2, (code, err)
    assert len(err) == 1, err
    match = ERROR_LINE.match(err[0])
    assert match and match.group(1) in REFUSALS["video" if video else "image"], err[0]
    assert "Traceback" not in err[0] and len(err[0]) < 400, err[0]


def check_input(src: Path, folder: Path, root: Path, capfd) -> None:
    """embed then detect on `src` (an image or a video by its name, as the CLI decides): each succeeds with a sound
    result (embed: a readable output of the input's size, even-padded for video) or refuses with one line naming an
    input error, leaving nothing behind."""
    from videoseal_tflite.runtime.video import is_video_path

    video = is_video_path(src)
    out_dir = folder / "out"
    out_dir.mkdir()
    marked = out_dir / ("marked.mp4" if video else "marked.png")
    models = ["--card", "compact", "--artifacts", root]
    code, err, out = _run(capfd, ["embed", src, marked, *models, "--message", MESSAGE, "--preset", "ultrafast"])
    if code == 0:
        # a warning (the saved file reads back below 1) is allowed; nothing else on stderr
        assert all(line.startswith("videoseal-tflite: warning: ") for line in err), err
        assert "bit accuracy:" in out
        width, height = _size_of(src, video, upright=True)
        expected = (width + width % 2, height + height % 2) if video else (width, height)
        assert _size_of(marked, video) == expected
        assert [p.name for p in out_dir.iterdir()] == [marked.name]
    else:
        _refused_cleanly(video, code, err)
        assert list(out_dir.iterdir()) == [], list(out_dir.iterdir())
    code, err, out = _run(capfd, ["detect", src, *models, "--message", MESSAGE])
    if code == 0:
        assert err == [] and "bit accuracy: " in out, (err, out)
    else:
        _refused_cleanly(video, code, err)


def check_mutant(kind: str, data: bytes, folder: Path, root: Path, capfd, named_as: str | None = None) -> None:
    """`data` (a mutant of the `kind` seed) saved under the name of `named_as` (default: its own kind), then
    `check_input`."""
    src = folder / f"mutant{SUFFIX[named_as or kind]}"
    src.write_bytes(data)
    check_input(src, folder, root, capfd)


# mutants that failed once: (kind, edits, cut, fix_crc, named_as), run first whatever the strategy draws
REGRESSIONS: list[tuple[str, list[tuple[int, int, int]], float | None, bool, str | None]] = [
    ("mp4", [(1, 0, 128)], None, False, None),  # a metadata tag no longer UTF-8 (the mp4's last byte)
    ("png", [(2, 0, 0x89)], None, False, "mp4"),  # a PNG named .mp4: FFmpeg 8 attaches EXIF side data
]

edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**31 - 1), st.integers(0, 255)), min_size=1, max_size=16)
cuts = st.one_of(st.none(), st.floats(0.0, 1.0))
fix_crcs = st.booleans()
# most mutants keep their own name; some are named as another kind (the CLI decides image or video by the name)
disguises = st.one_of(st.none(), st.sampled_from(sorted(SUFFIX)))


def _fuzz(kind: str):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(edits=edits, cut=cuts, fix_crc=fix_crcs if kind == "png" else st.just(False), named_as=disguises)
    def test(root, seeds, tmp_path_factory, capfd, edits, cut, fix_crc, named_as):
        mutant = _apply(seeds[kind], edits, cut, fix_crc)
        check_mutant(kind, mutant, tmp_path_factory.mktemp("fuzz"), root, capfd, named_as)

    for k, case_edits, case_cut, case_fix, case_name in REGRESSIONS:
        if k == kind:
            test = example(edits=case_edits, cut=case_cut, fix_crc=case_fix, named_as=case_name)(test)
    test.__doc__ = f"A damaged {kind.upper()} through embed and detect: a sound result or one clean line."
    return test


test_mutated_jpeg = _fuzz("jpeg")
test_mutated_png = _fuzz("png")
test_mutated_mp4 = _fuzz("mp4")


@pytest.mark.parametrize("kind", sorted(SUFFIX))
def test_the_seeds_are_marked_and_read(root, seeds, tmp_path, capfd, kind):
    """The undamaged seeds go through: the fuzz tests start from files the runtime reads."""
    check_mutant(kind, seeds[kind], tmp_path, root, capfd)


def test_a_camera_mjpeg_clip_with_exif_is_marked(root, tmp_path, capfd):
    """Found beside the fuzzing: an MJPEG .avi whose frames carry EXIF (old cameras write these) decodes with
    FFmpeg 8's EXIF side data, which PyAV 18 cannot name; reading the display matrix through `frame.side_data` then
    raised ValueError (a traceback), and the half-built frame could crash the process when freed."""
    from fractions import Fraction

    exif = Image.Exif()
    exif[0x010F] = "old camera"
    src = tmp_path / "camera.avi"
    with av.open(str(src), "w") as out:
        video = out.add_stream("mjpeg", rate=24)
        video.width, video.height, video.pix_fmt = 96, 64, "yuvj420p"
        for i in range(4):
            buffer = io.BytesIO()
            Image.fromarray(np.roll(_photo(96, 64), 4 * i, axis=1)).save(buffer, "JPEG", exif=exif.tobytes())
            packet = av.Packet(buffer.getvalue())
            packet.stream, packet.pts, packet.dts, packet.time_base = video, i, i, Fraction(1, 24)
            out.mux(packet)
    check_input(src, tmp_path, root, capfd)
