"""Hostile input, one table: every case names the exact error class on one line, exits non-zero and leaves
no partial output. Cases that are valid input in disguise (16-bit PNGs, paths with spaces and unicode) must
simply work, and are checked for the right result.

The CLI's error line is `videoseal-tflite: error: <ErrorClass>: <one sentence>`.
"""

from __future__ import annotations

import errno
import os
import pathlib
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from videoseal_tflite.cli.main import main

ERROR_LINE = re.compile(r"^videoseal-tflite: error: (\w+): \S")
MESSAGE = "0110100110010110"  # 16 bits: the compact card


def _run(capsys, argv: list[str]) -> tuple[int, list[str], str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    # progress bars (tqdm, ours and the quantizer's) share stderr; everything else is what a user reads
    lines = [line for line in captured.err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    return code, lines, captured.out


def _leftovers(*folders: Path) -> list[Path]:
    found = []
    for folder in folders:
        if folder.exists():
            found += [p for p in folder.rglob("*") if ".tmp-" in p.name or ".write-probe-" in p.name]
    return found


def _png16(path: Path, rgb16: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _photo(path: Path, size: int = 96) -> Path:
    rng = np.random.default_rng(3)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _real_photo(path: Path) -> Path:
    import skimage.data

    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


def _corrupt_buffer_length(data: bytes) -> bytes:
    """Valid TFL3 header and tables, but the largest buffer claims to run past the end of the file."""
    from ai_edge_litert import schema_py_generated as fb

    out = bytearray(data)
    model = fb.Model.GetRootAs(data, 0)
    index = max(range(model.BuffersLength()), key=lambda i: model.Buffers(i).DataLength())
    table = model.Buffers(index)._tab
    start = table.Vector(table.Offset(4))
    struct.pack_into("<I", out, start - 4, len(data))
    return bytes(out)


@pytest.fixture
def ctx(compact_artifacts, out_root, tmp_path):
    """Paths the cases need: the compact card's files (trained weights, 16 bits) and scratch space."""
    folder = compact_artifacts.out_dir
    return {
        "root": out_root,
        "detector": folder / "detector_128_fp32.tflite",
        "embedder": folder / "embedder_128_fp32.tflite",
        "tmp": tmp_path,
        "out": tmp_path / "out",
    }


def _model_file(ctx, payload: bytes) -> Path:
    path = ctx["tmp"] / "model.tflite"
    path.write_bytes(payload)
    return path


def _checkpoint(ctx, payload: bytes | None = None, obj=None) -> Path:
    path = ctx["tmp"] / "ckpt.pth"
    if obj is not None:
        torch.save(obj, path)
    else:
        path.write_bytes(payload)
    return path


COMPACT_WEIGHTS = Path(__file__).resolve().parents[1] / "videoseal_tflite" / "build" / "weights" / "compact.pth"


def _compact_state(nbits: int | None = None):
    ckpt = torch.load(COMPACT_WEIGHTS, map_location="cpu", weights_only=False)
    if nbits is not None:
        ckpt.setdefault("args", {})["nbits"] = nbits
    return ckpt


def _card_with(ctx, text_edit) -> Path:
    from videoseal_tflite.build.cards import resolve_card_path

    path = ctx["tmp"] / "card.yaml"
    path.write_text(text_edit(resolve_card_path("compact").read_text()))
    return path


def _image(ctx, kind: str) -> Path:
    path = ctx["tmp"] / f"in_{kind}.png"
    if kind == "text":
        path.write_text("this is not an image")
    elif kind == "1x1":
        Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    elif kind == "truncated":
        _photo(path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "png16_truncated":
        _png16(path, np.full((64, 64, 3), 40000, dtype=np.uint16))
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif kind == "zero":
        path.write_bytes(b"")
    return path


def _embed(ctx, image: Path, *extra) -> list:
    return ["embed", image, ctx["out"] / "marked.png", "--card", "compact", "--artifacts", ctx["root"], *extra]


# case -> (argv builder, expected error class). Every builder gets the ctx dict.
CASES = {
    # .tflite files
    "tflite_zero_bytes": (lambda c: ["inspect", _model_file(c, b"")], "InvalidModelFile"),
    "tflite_random_bytes": (
        lambda c: ["inspect", _model_file(c, np.random.default_rng(0).bytes(4096))],
        "InvalidModelFile",
    ),
    "tflite_header_only": (
        lambda c: ["inspect", _model_file(c, b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40)],
        "InvalidModelFile",
    ),
    "tflite_truncated": (
        lambda c: ["inspect", _model_file(c, c["detector"].read_bytes()[:2_000_000])],
        "InvalidModelFile",
    ),
    "tflite_corrupt_buffers": (
        lambda c: ["inspect", _model_file(c, _corrupt_buffer_length(c["detector"].read_bytes()))],
        "InvalidModelFile",
    ),
    "detect_with_corrupt_model": (
        lambda c: [
            "detect",
            _photo(c["tmp"] / "p.png"),
            "--detector",
            _model_file(c, _corrupt_buffer_length(c["detector"].read_bytes())),
        ],
        "InvalidModelFile",
    ),
    "detect_with_an_embedder": (
        lambda c: ["detect", _photo(c["tmp"] / "p.png"), "--detector", c["embedder"]],
        "InvalidModelFile",
    ),
    "detect_missing_model": (
        lambda c: ["detect", _photo(c["tmp"] / "p.png"), "--detector", c["tmp"] / "nope.tflite"],
        "InvalidModelFile",
    ),
    # checkpoints
    "checkpoint_missing": (
        lambda c: ["convert", "--card", "compact", "--checkpoint", c["tmp"] / "nope.pth", "--artifacts", c["out"]],
        "InvalidCheckpoint",
    ),
    "checkpoint_zero_bytes": (
        lambda c: ["convert", "--card", "compact", "--checkpoint", _checkpoint(c, b""), "--artifacts", c["out"]],
        "InvalidCheckpoint",
    ),
    "checkpoint_random_bytes": (
        lambda c: [
            "convert",
            "--card",
            "compact",
            "--checkpoint",
            _checkpoint(c, np.random.default_rng(1).bytes(10_000)),
            "--artifacts",
            c["out"],
        ],
        "InvalidCheckpoint",
    ),
    "checkpoint_truncated": (
        lambda c: [
            "convert",
            "--card",
            "compact",
            "--checkpoint",
            _checkpoint(c, COMPACT_WEIGHTS.read_bytes()[:1_000_000]),
            "--artifacts",
            c["out"],
        ],
        "InvalidCheckpoint",
    ),
    "checkpoint_wrong_architecture": (
        lambda c: [
            "convert",
            "--card",
            "compact",
            "--checkpoint",
            _checkpoint(c, obj={"model": {"embedder.weight": torch.zeros(3)}}),
            "--artifacts",
            c["out"],
        ],
        "InvalidCheckpoint",
    ),
    "checkpoint_not_a_dict": (
        lambda c: [
            "convert",
            "--card",
            "compact",
            "--checkpoint",
            _checkpoint(c, obj=[1, 2, 3]),
            "--artifacts",
            c["out"],
        ],
        "InvalidCheckpoint",
    ),
    "checkpoint_wrong_nbits": (
        lambda c: [
            "convert",
            "--card",
            "compact",
            "--checkpoint",
            _checkpoint(c, obj=_compact_state(nbits=32)),
            "--artifacts",
            c["out"],
        ],
        "NbitsMismatch",
    ),
    # cards
    "card_unknown": (
        lambda c: ["convert", "--card", "videoseal_9.9", "--random-init", "0", "--artifacts", c["out"]],
        "UnknownCard",
    ),
    "card_unknown_field": (
        lambda c: [
            "convert",
            "--card",
            _card_with(c, lambda t: t + "\nmystery_field: 1\n"),
            "--random-init",
            "0",
            "--artifacts",
            c["out"],
        ],
        "InvalidCard",
    ),
    "card_nbits_not_a_number": (
        lambda c: [
            "convert",
            "--card",
            _card_with(c, lambda t: re.sub(r"nbits: \d+", "nbits: sixteen", t)),
            "--random-init",
            "0",
            "--artifacts",
            c["out"],
        ],
        "InvalidCard",
    ),
    "card_not_yaml": (
        lambda c: [
            "convert",
            "--card",
            _card_with(c, lambda t: "{{{ not: yaml"),
            "--random-init",
            "0",
            "--artifacts",
            c["out"],
        ],
        "InvalidCard",
    ),
    # images
    "image_not_an_image": (lambda c: _embed(c, _image(c, "text"), "--message", MESSAGE), "InvalidImage"),
    "image_zero_bytes": (lambda c: _embed(c, _image(c, "zero"), "--message", MESSAGE), "InvalidImage"),
    "image_1x1": (lambda c: _embed(c, _image(c, "1x1"), "--message", MESSAGE), "InvalidImage"),
    "image_truncated_png": (lambda c: _embed(c, _image(c, "truncated"), "--message", MESSAGE), "InvalidImage"),
    "image_16bit_png_truncated": (
        lambda c: ["detect", _image(c, "png16_truncated"), "--card", "compact", "--artifacts", c["root"]],
        "InvalidImage",
    ),
    "image_missing_unicode_name": (
        lambda c: _embed(c, c["tmp"] / "fotó 照片.png", "--message", MESSAGE),
        "InvalidImage",
    ),
    # messages
    "message_too_short": (lambda c: _embed(c, _photo(c["tmp"] / "p.png"), "--message", "0101"), "InvalidMessage"),
    "message_too_long": (lambda c: _embed(c, _photo(c["tmp"] / "p.png"), "--message", MESSAGE + "1"), "InvalidMessage"),
    "message_not_binary": (lambda c: _embed(c, _photo(c["tmp"] / "p.png"), "--message", "0120" * 4), "InvalidMessage"),
    "message_bad_hex": (lambda c: _embed(c, _photo(c["tmp"] / "p.png"), "--message-hex", "zz12"), "InvalidMessage"),
    "message_hex_wrong_length": (
        lambda c: _embed(c, _photo(c["tmp"] / "p.png"), "--message-hex", "ABCDEF"),
        "InvalidMessage",
    ),
    # outputs
    "output_folder_is_a_file": (
        lambda c: ["convert", "--card", "compact", "--artifacts", _model_file(c, b"x") / "sub"],
        "OutputNotWritable",
    ),
    "unknown_variant": (
        lambda c: _embed(c, _photo(c["tmp"] / "p.png"), "--message", MESSAGE, "--variant", "int3"),
        "UnknownVariant",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input(case, ctx, capsys):
    build, expected = CASES[case]
    argv = build(ctx)
    before = sorted(ctx["root"].rglob("*"))
    code, err, _ = _run(capsys, argv)
    assert code != 0, f"{case}: exit 0"
    assert len(err) == 1, f"{case}: {err}"
    match = ERROR_LINE.match(err[0])
    assert match and match.group(1) == expected, f"{case}: expected {expected}, got {err[0]}"
    assert "Traceback" not in err[0]
    # no partial output: nothing half-written anywhere, no output created, the artifact tree untouched
    assert _leftovers(ctx["tmp"], ctx["root"]) == []
    assert not (ctx["out"] / "marked.png").exists()
    assert not ctx["out"].exists() or not list(ctx["out"].rglob("*.tflite"))
    assert sorted(ctx["root"].rglob("*")) == before


def test_there_are_at_least_20_hostile_cases():
    assert len(CASES) >= 20


def _copy_compact(ctx, root: Path) -> Path:
    shutil.copytree(
        ctx["detector"].parent, root / "compact", ignore=shutil.ignore_patterns("*_int8*", "*fp16*", "report*")
    )
    return root


def test_full_disk_during_quantize_leaves_nothing(ctx, capsys, monkeypatch):
    """ENOSPC (simulated at the write of the temp file: half the bytes land, then the disk is full)."""
    root = _copy_compact(ctx, ctx["tmp"] / "art")
    before = sorted(p.name for p in root.rglob("*"))
    real_write = pathlib.Path.write_bytes
    from videoseal_tflite.store.lock import LOCK_NAME  # the flock file stays by design; it holds no data

    def full_disk(self, data):
        if ".tmp-" in self.name and self.name.endswith(".tflite.tmp-" + str(os.getpid())):
            real_write(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
    code, err, _ = _run(
        capsys, ["quantize", "--card", "compact", "--variant", "fp16", "--part", "detector", "--artifacts", root]
    )
    assert code == 2 and len(err) == 1, err
    assert ERROR_LINE.match(err[0]).group(1) == "OutputNotWritable" and "No space left on device" in err[0]
    assert sorted(p.name for p in root.rglob("*") if p.name != LOCK_NAME) == before  # no partial file, no manifest


def test_full_disk_during_embed_leaves_nothing(ctx, capsys, monkeypatch):
    src = _photo(ctx["tmp"] / "p.png")
    real_save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        Path(fp).write_bytes(Path(fp).read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full_disk)
    ctx["out"].mkdir()
    code, err, _ = _run(capsys, _embed(ctx, src, "--message", MESSAGE))
    assert code == 2 and ERROR_LINE.match(err[0]).group(1) == "OutputNotWritable", err
    assert list(ctx["out"].iterdir()) == []


def test_read_only_output_folder(ctx, capsys, monkeypatch):
    """A read-only folder (chmod; as root, where chmod does not bind, the EROFS the kernel would give is simulated)."""
    src = _photo(ctx["tmp"] / "p.png")
    ctx["out"].mkdir()
    ctx["out"].chmod(0o555)
    try:
        if os.geteuid() == 0:
            real_write = pathlib.Path.write_bytes
            real_save = Image.Image.save

            def read_only(self, *args, **kwargs):
                if ctx["out"] in Path(self).parents:
                    raise OSError(errno.EROFS, "Read-only file system", str(self))
                return real_write(self, *args, **kwargs)

            def read_only_save(self, fp, *args, **kwargs):
                if ctx["out"] in Path(fp).parents:
                    raise OSError(errno.EROFS, "Read-only file system", str(fp))
                return real_save(self, fp, *args, **kwargs)

            monkeypatch.setattr(pathlib.Path, "write_bytes", read_only)
            monkeypatch.setattr(Image.Image, "save", read_only_save)
        code, err, _ = _run(capsys, _embed(ctx, src, "--message", MESSAGE))
    finally:
        ctx["out"].chmod(0o755)
    assert code == 2 and len(err) == 1 and ERROR_LINE.match(err[0]).group(1) == "OutputNotWritable", err
    assert list(ctx["out"].iterdir()) == []


def test_corrupt_manifest_is_named_by_verify(ctx, capsys):
    root = _copy_compact(ctx, ctx["tmp"] / "art")
    (root / "manifest.json").write_text("{ half a manifest")
    code, err, _ = _run(capsys, ["verify", "--artifacts", root, "--no-load"])
    assert code == 1 and len(err) == 1 and err[0].startswith("corrupt_manifest:"), err


def test_16bit_png_reads_like_its_8bit_twin(ctx, capsys):
    """A 16-bit RGB PNG is valid input: detection reads the same bits as from the 8-bit file it was made from."""
    src = _real_photo(ctx["tmp"] / "p.png")
    marked = ctx["tmp"] / "marked.png"
    assert (
        _run(capsys, ["embed", src, marked, "--card", "compact", "--artifacts", ctx["root"], "--message", MESSAGE])[0]
        == 0
    )
    pixels = np.asarray(Image.open(marked).convert("RGB")).astype(np.uint16) * 257  # 8-bit v -> 16-bit v*257
    deep = ctx["tmp"] / "marked16.png"
    _png16(deep, pixels)
    results = []
    for path in (marked, deep):
        code, err, out = _run(
            capsys, ["detect", path, "--card", "compact", "--artifacts", ctx["root"], "--message", MESSAGE]
        )
        assert code == 0, err
        results.append(out)
    assert results[0] == results[1] and "bit accuracy: " in results[0]


def test_paths_with_spaces_and_unicode(ctx, capsys):
    """Every command works on paths with spaces and non-ASCII characters."""
    root = _copy_compact(ctx, ctx["tmp"] / "my artifacts ünïcødé 工件")
    (root / "manifest.json").unlink(missing_ok=True)
    src = _real_photo(ctx["tmp"] / "фото с пробелом.png")
    marked = ctx["tmp"] / "résultat final 结果.png"
    code, err, _ = _run(
        capsys,
        ["quantize", "--card", "compact", "--variant", "dynamic_int8", "--part", "detector", "--artifacts", root],
    )
    assert code == 0, err
    assert (root / "compact" / "detector_128_dynamic_int8.tflite").is_file()
    code, err, _ = _run(capsys, ["embed", src, marked, "--card", "compact", "--artifacts", root, "--message", MESSAGE])
    assert code == 0 and marked.is_file(), err
    code, err, out = _run(
        capsys,
        ["detect", marked, "--card", "compact", "--artifacts", root, "--message", MESSAGE, "--variant", "dynamic_int8"],
    )
    assert code == 0 and "bit accuracy: 1.0000" in out, (err, out)
    code, err, out = _run(capsys, ["inspect", root / "compact" / "detector_128_dynamic_int8.tflite"])
    assert code == 0 and "BATCH_MATMUL" in out, err


# ---- nothing goes wrong silently (issue #28) ------------------------------------------------------------------


def _usage_error(capsys, argv: list) -> list[str]:
    """argv must stop at parse time: exit 2 and exactly one `videoseal-tflite ...: error:` line."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    assert stop.value.code == 2
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("videoseal-tflite")]


@pytest.mark.parametrize(
    "extra",
    [
        ["--fpr", "0"],
        ["--fpr", "2"],
        ["--fpr", "-1"],
        ["--fpr", "nan"],
        ["--threads", "0"],
        ["--quality", "0"],
        ["--crf", "52"],
        ["--step-size", "0"],
        ["--preset", "fastest"],
        ["--message-hex", "ABCD"],  # beside --message: the two are mutually exclusive
    ],
)
def test_bad_options_stop_before_any_work(ctx, capsys, extra):
    """Every numeric option is range-checked at parse time, image and video alike: one line, exit 2, no output."""
    for name in ("marked.png", "marked.mp4"):
        argv = _embed(ctx, _photo(ctx["tmp"] / "p.png"), "--message", MESSAGE, *extra)
        argv[2] = ctx["out"] / name
        err = _usage_error(capsys, argv)
        assert len(err) == 1 and extra[0] in err[0], err
        assert not (ctx["out"] / name).exists()
    detect = ["detect", ctx["tmp"] / "p.png", "--card", "compact", "--artifacts", ctx["root"]]
    if extra[0] in ("--fpr", "--threads"):
        assert len(_usage_error(capsys, [*detect, *extra])) == 1


def _damaged_copy(ctx, how: str) -> Path:
    """The compact files with the release manifest, one detector damaged: 20 KB overwritten in the middle, or its
    largest weight buffer filled with NaN (0xFF bytes) so that it loads and computes NaN."""
    from ai_edge_litert import schema_py_generated as fb

    root = _copy_compact(ctx, ctx["tmp"] / "art")
    shutil.copy(ctx["root"] / "manifest.json", root / "manifest.json")
    target = root / "compact" / "detector_128_fp32.tflite"
    data = bytearray(target.read_bytes())
    if how == "overwritten":
        middle = len(data) // 2
        data[middle : middle + 20_000] = np.random.default_rng(0).bytes(20_000)
    else:
        model = fb.Model.GetRootAs(bytes(data), 0)
        buf = max((model.Buffers(i) for i in range(model.BuffersLength())), key=lambda b: b.DataLength())
        start = buf.DataAsNumpy().ctypes.data - np.frombuffer(bytes(data), np.uint8).ctypes.data
        start = bytes(data).find(bytes(buf.DataAsNumpy()[:64]))
        data[start : start + buf.DataLength()] = b"\xff" * buf.DataLength()
    target.write_bytes(bytes(data))
    return root


def test_a_damaged_model_is_refused_before_use(ctx, capsys):
    """A file that differs from its release manifest: detect and embed name it and say what to run."""
    root = _damaged_copy(ctx, "overwritten")
    src = _photo(ctx["tmp"] / "p.png")
    for argv in (
        ["detect", src, "--card", "compact", "--artifacts", root, "--json"],
        ["embed", src, ctx["out"] / "m.png", "--card", "compact", "--artifacts", root, "--message", MESSAGE],
    ):
        code, err, out = _run(capsys, argv)
        assert code == 2 and len(err) == 1 and ERROR_LINE.match(err[0]).group(1) == "ModelDamaged", err
        assert "detector_128_fp32.tflite" in err[0] and "videoseal-tflite verify --artifacts" in err[0]
        assert out == "" and not (ctx["out"] / "m.png").exists()


def test_a_model_computing_nan_is_an_error_and_json_stays_valid(ctx, capsys):
    """Without a manifest to compare with, a model whose output is not finite is an error naming the file; the
    JSON of a good run parses strictly (no bare NaN or Infinity)."""
    import json

    root = _damaged_copy(ctx, "nan")
    (root / "manifest.json").unlink()
    src = _photo(ctx["tmp"] / "p.png")
    code, err, out = _run(capsys, ["detect", src, "--card", "compact", "--artifacts", root, "--json"])
    assert code == 2 and len(err) == 1 and ERROR_LINE.match(err[0]).group(1) == "ModelOutputNotFinite", err
    assert "detector_128_fp32.tflite" in err[0] and out == ""
    code, err, out = _run(capsys, ["detect", src, "--card", "compact", "--artifacts", ctx["root"], "--json"])

    def refuse(constant):
        raise AssertionError(f"{constant} in --json output")

    assert code == 0 and json.loads(out, parse_constant=refuse)["bits"]


def test_the_input_is_never_replaced_without_force(ctx, capsys):
    """embed X X (or a hard link of X) is refused; with --force the output is replaced atomically: a new file takes
    the name, so another name of the old file (the hard link) still holds the original."""
    src = _real_photo(ctx["tmp"] / "p.png")
    original = src.read_bytes()
    link = ctx["tmp"] / "same inode.png"
    os.link(src, link)
    for output in (src, link):
        argv = ["embed", src, output, "--card", "compact", "--artifacts", ctx["root"], "--message", MESSAGE]
        code, err, _ = _run(capsys, argv)
        assert code == 2 and len(err) == 1 and ERROR_LINE.match(err[0]).group(1) == "OutputIsInput", err
        assert "--force" in err[0] and src.read_bytes() == original == link.read_bytes()
    code, err, _ = _run(capsys, ["embed", src, src, "--card", "compact", "--artifacts", ctx["root"], "--message",
                                 MESSAGE, "--force"])  # fmt: skip
    assert code == 0, err
    assert src.read_bytes() != original and link.read_bytes() == original and _leftovers(ctx["tmp"]) == []


def test_animated_and_gif_are_refused_with_the_reason(ctx, capsys):
    frames = [Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)) for i in range(3)]
    gif = ctx["tmp"] / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    code, err, _ = _run(capsys, _embed(ctx, gif, "--message", MESSAGE))
    assert code == 2 and ERROR_LINE.match(err[0]).group(1) == "UnsupportedAnimation" and "3 frames" in err[0], err
    argv = _embed(ctx, _photo(ctx["tmp"] / "p.png"), "--message", MESSAGE)
    argv[2] = ctx["out"] / "m.gif"
    code, err, _ = _run(capsys, argv)
    assert code == 2 and ERROR_LINE.match(err[0]).group(1) == "UnsupportedOutput" and ".png" in err[0], err
    assert not ctx["out"].exists() or list(ctx["out"].iterdir()) == []


def test_an_unknown_card_names_the_known_ones(ctx, capsys):
    code, err, _ = _run(
        capsys, ["detect", _photo(ctx["tmp"] / "p.png"), "--card", "compactt", "--artifacts", ctx["root"]]
    )
    assert code == 2 and len(err) == 1 and ERROR_LINE.match(err[0]).group(1) == "UnknownCard", err
    assert "known cards:" in err[0] and "compact" in err[0] and "convert --card compactt" not in err[0]


def test_resync_never_keeps_a_less_confident_reading(ctx, robust_fp32, capsys):
    """The strip of issue #28 (a photo at 40 px wide, tiled down to 40 x 20480), marked with compact_robust: the
    re-found reading replaces the as-is one only when it is the more confident, so here detect reads at least what
    --no-resync reads (it read 4/16 against 14/16 before); the p-value still counts every reading compared."""
    from videoseal_tflite.runtime import Detector, Embedder, load_image
    from videoseal_tflite.runtime.resync import confidence
    from videoseal_tflite.runtime.verdict import decide

    photo = Image.open(_real_photo(ctx["tmp"] / "p.png")).resize((40, 512))
    strip = np.tile(np.asarray(photo), (40, 1, 1))
    message = np.array([int(b) for b in MESSAGE], np.float32)
    marked = ctx["tmp"] / "strip marked.png"
    pixels = np.ascontiguousarray(strip.transpose(2, 0, 1), np.float32) / 255
    watermarked = Embedder(robust_fp32["embedder"]).embed(pixels, message)
    Image.fromarray((np.clip(watermarked, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)).save(marked)
    image = load_image(marked)
    searched = Detector(robust_fp32["detector"]).detect(image)
    as_is = Detector(robust_fp32["detector"], resync=False).detect(image)
    print(f"strip: as is {as_is.bit_accuracy(message)}, detect {searched.bit_accuracy(message)}")
    if searched.synced is None:
        assert (searched.bits == as_is.bits).all()
    else:
        assert searched.synced.agreement > confidence(as_is.bit_logits)
    assert searched.bit_accuracy(message) >= as_is.bit_accuracy(message)
    if searched.searched is not None:  # a search was made: its readings count, whichever was kept
        with_search = decide(searched.bits, message, 1e-6, searched.hypotheses)
        assert searched.hypotheses > 1 and with_search.pvalue >= decide(searched.bits, message, 1e-6).pvalue


# ---- every format says what happened to it (issue #28, item 6) ----------------------------------------------


def _notes(out: str) -> list[str]:
    return [line[len("note: ") :] for line in out.splitlines() if line.startswith("note: ")]


def _deep_image(ctx, kind: str) -> Path:
    """The photo stored as `kind`: what each one loses is what the output format and the 8-bit RGB watermark
    cannot hold."""
    import skimage.data
    import tifffile

    photo = skimage.data.chelsea()
    path = ctx["tmp"] / {"tiff_16bit_rgba": "in.tif", "jpeg_cmyk": "in.jpg"}.get(kind, "in.png")
    if kind == "png_16bit_rgb":
        _png16(path, photo.astype(np.uint16) * 257)
    elif kind == "png_16bit_gray":
        Image.fromarray(photo.mean(axis=2).astype(np.uint16) * 257).save(path)
    elif kind == "tiff_16bit_rgba":
        rgba = np.dstack([photo, np.full(photo.shape[:2], 200, np.uint8)]).astype(np.uint16) * 257
        tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    elif kind == "jpeg_cmyk":
        Image.fromarray(photo).convert("CMYK").save(path, quality=95)
    elif kind == "png_palette":
        Image.fromarray(photo).convert("P").save(path)
    else:
        Image.fromarray(photo).save(path)
    return path


COLOUR_8BIT = "colour is read and written at 8 bits a channel"
# input kind -> (output suffix, the note lines embed prints, in order)
IMAGE_LOSSES = {
    "png_16bit_rgb": (".png", [f"16-bit RGB input written as 8-bit RGB: {COLOUR_8BIT}"]),
    "png_16bit_gray": (
        ".png",
        [
            f"16-bit grayscale input written as 8-bit RGB: {COLOUR_8BIT}",
            "grayscale input written in RGB colour: this card's watermark is in colour, and converting it back to "
            "gray would lose its bits",
        ],
    ),
    "tiff_16bit_rgba": (
        ".jpg",
        [
            f"16-bit RGBA input written as 8-bit RGB: {COLOUR_8BIT}",
            "alpha channel dropped: JPEG has no alpha (use .png, .webp or .tiff to keep it)",
        ],
    ),
    "jpeg_cmyk": (".png", ["CMYK input written in RGB colour (the watermark needs full colour)"]),
    "png_palette": (".png", ["palette (P) input written in RGB colour (the watermark needs full colour)"]),
    "png_8bit_rgb": (".png", []),
}


@pytest.mark.parametrize("kind", sorted(IMAGE_LOSSES))
def test_an_image_that_loses_depth_colour_or_alpha_says_so(ctx, capsys, kind):
    """One note line per kind of loss (none for an 8-bit RGB PNG), the same list in --json, and the output still
    carries the mark."""
    import json

    suffix, expected = IMAGE_LOSSES[kind]
    src = _deep_image(ctx, kind)
    marked = ctx["tmp"] / f"marked{suffix}"
    code, err, out = _run(capsys, ["embed", src, marked, "--card", "compact", "--artifacts", ctx["root"],
                                   "--message", MESSAGE])  # fmt: skip
    assert code == 0 and err == [], err
    assert _notes(out) == expected, out
    code, err, out = _run(capsys, ["embed", src, marked, "--card", "compact", "--artifacts", ctx["root"],
                                   "--message", MESSAGE, "--json"])  # fmt: skip
    assert code == 0 and json.loads(out)["notes"] == expected
    code, err, out = _run(
        capsys, ["detect", marked, "--card", "compact", "--artifacts", ctx["root"], "--message", MESSAGE]
    )
    assert code == 0 and "bit accuracy: 1.0000" in out, (err, out)


def _video_coding(codec: str, pix_fmt: str) -> tuple[str, str]:
    """(encoder, pix_fmt) to make the input with: HEVC needs libx265, which a PyAV build may lack; H.264 at the
    same depth shows the same loss."""
    import av

    return (codec, pix_fmt) if codec in av.codecs_available else ("libx264", pix_fmt)


def _clip(path: Path, codec: str, pix_fmt: str, width: int = 320, height: int = 180, count: int = 8) -> Path:
    """A pan across the photo, coded as asked (near-lossless where the encoder allows it, fast presets)."""
    import av
    import skimage.data

    from videoseal_tflite.validate.clips import pan_frames

    options = {
        "libx264": {"crf": "10", "preset": "ultrafast"},
        "libx265": {"crf": "10", "preset": "ultrafast", "x265-params": "log-level=none"},
        "libvpx-vp9": {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"},
        "mpeg4": {"qscale": "2"},
    }.get(codec, {})
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=24, options=options)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        for pixels in pan_frames(skimage.data.chelsea(), width, height, count):
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode(None))
    return path


# case -> (encoder, pix_fmt, input suffix); the note names what the decoder gave
VIDEO_LOSSES = {
    "hevc_10bit": ("libx265", "yuv420p10le", ".mp4"),
    "h264_444": ("libx264", "yuv444p", ".mkv"),
    "vp9": ("libvpx-vp9", "yuv420p", ".webm"),
    "mpeg4": ("mpeg4", "yuv420p", ".avi"),
    "h264_420": ("libx264", "yuv420p", ".mp4"),
}
_CODEC_SAID = {"libx265": "HEVC", "libx264": "H.264", "libvpx-vp9": "VP9", "mpeg4": "MPEG-4 Part 2"}


@pytest.mark.parametrize("case", sorted(VIDEO_LOSSES))
def test_a_video_that_loses_depth_chroma_or_codec_says_so(ctx, capsys, case):
    """10-bit, 4:4:4 or other-codec input becomes 8-bit yuv420p H.264: one note line naming both ends (none for
    8-bit 4:2:0 H.264), in --json too; the output reads back."""
    import json

    codec, pix_fmt = _video_coding(*VIDEO_LOSSES[case][:2])
    src = _clip(ctx["tmp"] / f"in{VIDEO_LOSSES[case][2]}", codec, pix_fmt)
    depth = 10 if "10" in pix_fmt else 8
    coded = f"{depth}-bit {pix_fmt} {_CODEC_SAID[codec]}"
    expected = [] if case == "h264_420" else [f"input is {coded}; the output is 8-bit yuv420p H.264"]
    marked = ctx["tmp"] / "marked.mp4"
    code, err, out = _run(capsys, ["embed", src, marked, "--card", "compact", "--artifacts", ctx["root"],
                                   "--message", MESSAGE, "--crf", "0", "--preset", "ultrafast"])  # fmt: skip
    assert code == 0 and err == [], err
    assert _notes(out) == expected and "bit accuracy:   1.0000" in out, out
    if case == "hevc_10bit":
        code, err, out = _run(capsys, ["embed", src, marked, "--card", "compact", "--artifacts", ctx["root"],
                                       "--message", MESSAGE, "--json", "--crf", "0"])  # fmt: skip
        report = json.loads(out)
        assert code == 0 and report["notes"] == expected and report["input_format"] == coded, report
    code, err, out = _run(
        capsys, ["detect", marked, "--card", "compact", "--artifacts", ctx["root"], "--message", MESSAGE]
    )
    assert code == 0 and "bit accuracy: 1.0000" in out, (err, out)
