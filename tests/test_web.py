"""The web page (web/, LiteRT.js) in headless Chromium against the Python runtime, on the same .tflite files.

One session builds the default card's fp32 and int8 files with the CLI (or reuses the release folder named by
VIDEOSEAL_TFLITE_WEB_RELEASE), writes three held-out photos as PNG, and runs `node web/test/parity.mjs --ui` once:
the browser embeds and detects each photo with each variant, the `videoseal-tflite` CLI does the same (detect
--no-resync: the page reads as is), and the page itself is driven (bad input, an offline embed that downloads a
PNG, a detect whose verdict is read from the DOM beside a screenshot). The tests assert on its JSON and on the
files it wrote. Needs `make setup-web` (npm packages, Debian's Chromium): without them these tests fail, never skip.
The pure-JS steps (resize, JND, blend) are also checked against numpy in Node, bit for bit where numpy is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CARD = "compact_robust"
VARIANTS = ("fp32", "int8")
PHOTOS = ("chelsea", "coffee", "camera")  # skimage's bundled photos, held out (the runtime and validate tests use them)
BROKEN = "broken"  # a variant whose files are truncated: the page must say it does not load, and why


def _cli() -> Path:
    """The `videoseal-tflite` console script beside this interpreter (the package's module paths may move)."""
    return Path(sys.executable).parent / "videoseal-tflite"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the browser tests need Node.js (make setup-web)")
    if not (WEB / "node_modules" / "@litertjs" / "core" / "wasm").is_dir():
        pytest.fail("web/node_modules is missing: run `make setup-web` (npm ci in web/)")
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make setup-web` (apt-get install -y chromium)")
    return node


@pytest.fixture(scope="session")
def web_release(tmp_path_factory, out_root, robust_fp32) -> Path:
    """A release folder with compact_robust's fp32 and int8 files, plus a truncated `broken` variant. The files
    are the session's own (conftest's `out_root`): the FP32 pair is reused through the pipeline's input hashes,
    only int8 is built here."""
    from videoseal_tflite.build.pipeline import convert_card
    from videoseal_tflite.build.weights import WeightSource

    given = os.environ.get("VIDEOSEAL_TFLITE_WEB_RELEASE")
    if given:
        source = Path(given)
    else:
        convert_card(CARD, WeightSource(), out_root, variants=("int8",), progress=False)
        source = out_root
    # the page's release: the real files linked, and a damaged variant beside them in the manifest
    release = tmp_path_factory.mktemp("web_release")
    manifest = json.loads((source / "manifest.json").read_text())
    files = {}
    for rel, entry in manifest["files"].items():
        if not any(rel == f"{CARD}/{part}_128_{v}.tflite" for part in ("embedder", "detector") for v in VARIANTS):
            continue
        (release / rel).parent.mkdir(parents=True, exist_ok=True)
        (release / rel).symlink_to(source / rel)
        files[rel] = entry
        if rel.endswith("_fp32.tflite"):
            broken = rel.replace("_fp32.tflite", f"_{BROKEN}.tflite")
            data = (source / rel).read_bytes()[:4096]
            (release / broken).write_bytes(data)
            files[broken] = {**entry, "bytes": len(data), "variant": BROKEN}
    assert sorted(files) == sorted(
        f"{CARD}/{part}_128_{v}.tflite" for part in ("embedder", "detector") for v in (*VARIANTS, BROKEN)
    ), sorted(files)
    (release / "manifest.json").write_text(json.dumps({**manifest, "files": files}, indent=2))
    return release


@pytest.fixture(scope="session")
def web_images(tmp_path_factory) -> Path:
    import skimage.data

    folder = tmp_path_factory.mktemp("web_images")
    for name in PHOTOS:
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def parity(web_release, web_images, tmp_path_factory) -> tuple[dict, Path]:
    node = _node()
    out = tmp_path_factory.mktemp("web_parity") / "parity.json"
    cmd = [
        node,
        str(WEB / "test" / "parity.mjs"),
        "--release",
        str(web_release),
        "--images",
        str(web_images),
        "--out",
        str(out),
        "--card",
        CARD,
        "--variants",
        ",".join(VARIANTS),
        "--cli",
        str(_cli()),
        "--threads",
        "2",
        "--ui",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, f"parity.mjs failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return json.loads(out.read_text()), out.parent


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def test_every_photo_and_variant_was_run(parity):
    report, _ = parity
    pairs = sorted((r["image"], r["variant"]) for r in report["results"])
    assert pairs == sorted((f"{p}.png", v) for p in PHOTOS for v in VARIANTS)
    assert report["threads"] == 2 and report["chromium"].startswith(("Chrome/", "HeadlessChrome/"))
    assert report["page_errors"] == []


def test_browser_bits_equal_the_python_runtime(parity):
    """Same file in, same bits out (both watermarked PNGs), and each side reads its own mark the same."""
    report, _ = parity
    for r in report["results"]:
        assert r["bits_equal"], (r["image"], r["variant"], r["bits_equal_detail"], r["browser"], r["python"])
        assert r["browser"]["own"]["bits"] == r["message"], (r["image"], r["variant"])
        assert r["browser"]["own"]["matching"] == report["nbits"]
        assert r["pvalue_equal"], (r["browser"]["on_python_marked"]["pValue"], r["python"]["own_pvalue"])
        # an unmarked photo reads as near-zero logits; the two LiteRT builds still give the same bits there
        assert r["bits_equal_unmarked"], (r["image"], r["variant"], r["browser"]["on_original"], r["python"])


def test_browser_png_equals_python_png(parity):
    """Within one level on >= 99.9 % of values, PSNR >= 50 dB (the issue's bar): as the driver measured it, and
    again with Pillow from the PNG files."""
    report, folder = parity
    for r in report["results"]:
        browser, python = _pixels(folder / r["files"]["browser"]), _pixels(folder / r["files"]["python"])
        assert browser.shape == python.shape == (r["height"], r["width"], 3)
        diff = np.abs(browser - python)
        within = float((diff <= 1).mean())
        mse = float((diff.astype(np.float64) ** 2).mean())
        psnr = float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
        assert within >= 0.999 and psnr >= 50, (r["image"], r["variant"], within, psnr)
        assert within == pytest.approx(r["within_one_level"], abs=1e-9)
        assert (r["psnr_vs_python"] is None) == (mse == 0)
        if mse:
            assert psnr == pytest.approx(r["psnr_vs_python"], abs=1e-6)
        # tighter than the bar, as measured: the same level nearly everywhere (a 5 % error in the blend's
        # scale would change about a fifth of the values and stay "within one level"). The two sides' downscales
        # differ by float32 ulps (Pillow's double sums in the page, BLAS float32 products in Python): an FP32
        # embedder passes that on as ulps, a full-int8 one, whose input quantization has boundaries for a few
        # values to sit on, as a quantization step: measured 0.992 and 0.984 exact (chelsea, coffee), a few values
        # two levels apart, still within the bar above
        print(f"browser vs python PNG, {r['image']} {r['variant']}: exact {r['exact']:.5f}, within one {within:.5f}, "
              f"max {r['max_level_diff']} levels, PSNR {psnr:.1f} dB")  # fmt: skip
        exact, levels = (0.9999, 1) if r["variant"] == "fp32" else (0.98, 2)
        assert r["exact"] >= exact and r["max_level_diff"] <= levels, (r["image"], r["variant"], r["exact"])


def test_page_shows_the_verdict(parity):
    """The page's own flow, offline: embed downloads a PNG; detecting that PNG shows the verdict (read from the DOM;
    the screenshot is kept beside parity.json)."""
    report, folder = parity
    ui = report["ui"]
    assert ui["dropped_image_info"] == ui["image_info"], "a dropped file reads as a chosen one"
    assert ui["offline_fetch_fails"], "the page was not offline"
    assert ui["embed_error"] == "" and ui["downloaded"] == 1, ui
    assert f"read back as is: {report['nbits']}/{report['nbits']} bits match" in ui["embed_result"]
    detect = ui["detect"]
    assert detect["visible"] and detect["error"] == ""
    assert detect["matching"] == f"{report['nbits']}/{report['nbits']}"
    assert detect["verdict"].startswith("watermarked (p-value 1.53e-05 <= FPR 1e-04")
    assert detect["verdict_class"] == "watermarked"
    assert detect["payload"].startswith("none")
    shot = folder / ui["screenshot"]
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 400
    # the downloaded file is the module's embed of the same photo, and within one level of Python's
    downloaded = _pixels(folder / ui["downloaded_file"])
    first = next(r for r in report["results"] if r["variant"] == "fp32" and ui["image_info"].startswith(r["image"]))
    assert np.array_equal(downloaded, _pixels(folder / first["files"]["browser"]))
    assert detect["bits"] == first["message"]


def test_page_shows_progress_while_the_models_load(parity):
    log = parity[0]["ui"]["status_log"]
    assert log[-1] == f"ready: {CARD} fp32, 2 thread(s)", log
    for part in ("embedder", "detector"):
        assert any(line.startswith(f"downloading the {part}: ") and line.endswith(" MB") for line in log), log
        assert f"compiling the {part}…" in log, log
    assert log.index("compiling the embedder…") < log.index("compiling the detector…") < len(log) - 1


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("not_an_image", "is not an image"),
        ("huge_image", "8000x4000 (32.0 MP); this page takes up to 25 MP"),
        ("wrong_length_message", "message has 4 bits but the model takes 16"),
        ("wrong_length_detect_message", "message has 19 bits but the model takes 16"),
    ],
)
def test_bad_input_gets_a_visible_message_and_no_download(parity, case, words):
    result = parity[0]["ui"][case]
    assert result["error_visible"] and words in result["error"], result
    assert result["downloads"] == 0


def test_page_names_the_variant_it_cannot_load(parity):
    report, _ = parity
    probe = report["probe"]
    assert all(probe[v]["loads"] for v in VARIANTS), probe
    assert probe[BROKEN]["loads"] is False
    assert "is not a readable .tflite" in probe[BROKEN]["error"], probe[BROKEN]
    rows = {row[0]: row for row in report["ui"]["variants_table"]}
    assert rows["fp32"][-1] == "loads" and rows["int8"][-1] == "loads"
    assert rows[BROKEN][-1].startswith("does not load: embedder: embedder_128_broken.tflite is not a readable")


def _node_script(tmp_path: Path, body: str) -> None:
    script = tmp_path / "check.mjs"
    script.write_text(f"import * as vt from {json.dumps((WEB / 'videoseal_tflite.js').as_uri())};\n" + body)
    done = subprocess.run([_node(), str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


def test_js_resize_jnd_and_blend_match_numpy(tmp_path):
    """The module's steps in Node against the Python runtime's: resize bit for bit (Pillow's BILINEAR), JND and
    blend within a float32 rounding (numpy's float32 power is not libm's), for every attenuation config."""
    import skimage.data

    from videoseal_tflite.runtime.image import blend, jnd_heatmaps, resize_bilinear

    x = (skimage.data.chelsea().astype(np.float32) / np.float32(255)).transpose(2, 0, 1).copy()  # 300x451
    x.tofile(tmp_path / "x.bin")
    w = np.tanh(np.random.default_rng(0).normal(size=(1, 300, 451))).astype(np.float32)  # a 1-channel watermark
    w.tofile(tmp_path / "w.bin")
    sizes = [(128, 128), (77, 451), (300, 128), (640, 960)]
    _node_script(
        tmp_path,
        """import fs from 'node:fs';
const rd = (f) => { const b = fs.readFileSync(f); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); };
const x = rd('x.bin'), w = rd('w.bin');
const write = (name, a) => fs.writeFileSync(name, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
"""
        + "".join(f"write('r{h}x{ww}.bin', vt.resizeBilinear(x, 3, 300, 451, {h}, {ww}));\n" for h, ww in sizes)
        + "for (const [i, o] of [[1, 1], [3, 3], [1, 3], [3, 1]]) {\n"
        + "  write(`jnd${i}${o}.bin`, vt.jndHeatmaps(x, 300, 451, i, o));\n"
        + "  write(`blend${i}${o}.bin`, vt.blend(x, 300, 451, w, 1, 0.0175, 1.0, [i, o]));\n}\n"
        + "write('blend.bin', vt.blend(x, 300, 451, w, 1, 0.0175, 1.0, null));\n",
    )

    def read(name: str, shape) -> np.ndarray:
        return np.fromfile(tmp_path / name, dtype=np.float32).reshape(shape)

    for h, ww in sizes:
        np.testing.assert_array_equal(read(f"r{h}x{ww}.bin", (3, h, ww)), resize_bilinear(x, h, ww))
    np.testing.assert_array_equal(read("blend.bin", (3, 300, 451)), blend(x, w, 0.0175, 1.0, None))
    for i, o in [(1, 1), (3, 3), (1, 3), (3, 1)]:
        expected = jnd_heatmaps(x, i, o)
        got = read(f"jnd{i}{o}.bin", expected.shape)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
        assert float((got == expected).mean()) > 0.8
        marked_js, marked_py = read(f"blend{i}{o}.bin", (3, 300, 451)), blend(x, w, 0.0175, 1.0, (i, o))
        np.testing.assert_allclose(marked_js, marked_py, rtol=0, atol=1e-6)
        levels_js, levels_py = np.round(marked_js * 255), np.round(marked_py * 255)
        assert float((levels_js == levels_py).mean()) >= 0.9999 and np.abs(levels_js - levels_py).max() <= 1


def test_js_8bit_downscale_and_add_match_the_python_runtime(tmp_path):
    """The page's 8-bit path (downscaleRgba, addLevels: Pillow's resize, summed in double) against bands.downscale and
    bands.add_upscaled (the same coefficients as float32 matrix products): within a few float32 ulps, and within one
    level on <= 0.01 % of the values, on a photo, for each pass order (both passes, vertical only, horizontal only)
    and a 1-channel watermark."""
    import skimage.data

    from videoseal_tflite.runtime import bands

    rgb = skimage.data.chelsea()  # 300x451
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])  # alpha must come back as is
    rgba.tofile(tmp_path / "rgba.bin")
    w = np.tanh(np.random.default_rng(1).normal(size=(3, 128, 128)) * 2).astype(np.float32)
    w.tofile(tmp_path / "w.bin")
    sizes = [(128, 128), (128, 451), (300, 128)]
    _node_script(
        tmp_path,
        """import fs from 'node:fs';
const b = fs.readFileSync('rgba.bin'), rgba = new Uint8ClampedArray(b.buffer, b.byteOffset, b.byteLength);
const wb = fs.readFileSync('w.bin'), w = new Float32Array(wb.buffer, wb.byteOffset, wb.byteLength / 4);
const write = (name, a) => fs.writeFileSync(name, Buffer.from(a.buffer, a.byteOffset, a.byteLength));
"""
        + "".join(f"write('d{h}x{ww}.bin', vt.downscaleRgba(rgba, 300, 451, {h}, {ww}));\n" for h, ww in sizes)
        + "write('add3.bin', vt.addLevels(rgba, 300, 451, w, 3, 128, 0.02));\n"
        + "write('add1.bin', vt.addLevels(rgba, 300, 451, w.subarray(0, 128 * 128), 1, 128, 0.02));\n"
        + "if (vt.addLevels(rgba, 300, 451, w, 3, 128, 1.0) !== null) throw new Error('|delta| > MAX_DELTA kept');\n",
    )
    for h, ww in sizes:
        got = np.fromfile(tmp_path / f"d{h}x{ww}.bin", dtype=np.float32).reshape(3, h, ww)
        np.testing.assert_allclose(got, bands.downscale(rgb, h, ww), rtol=0, atol=5e-7)
    for name, planes in (("add3", w), ("add1", w[:1])):
        got = np.fromfile(tmp_path / f"{name}.bin", dtype=np.uint8).reshape(300, 451, 4)
        expected = bands.add_upscaled(rgb, np.float32(255 * 0.02) * planes)
        diff = np.abs(got[..., :3].astype(int) - expected)
        assert diff.max() <= 1 and (diff > 0).mean() <= 1e-4, (name, diff.max(), (diff > 0).mean())
        assert (got[..., 3] == 200).all()
        assert (got[..., :3] != rgb).mean() > 0.5  # the delta was added (a no-op would also match a no-op)


def test_js_verdict_matches_python(tmp_path):
    from videoseal_tflite.runtime import decide

    cases = [(16, 16, 1e-6), (16, 16, 1e-4), (16, 12, 1e-2), (32, 30, 1e-6), (32, 29, 1e-6), (64, 56, 1e-9)]
    cases.append((256, 200, 1e-6))
    _node_script(
        tmp_path,
        "import fs from 'node:fs';\nconst out = "
        + json.dumps(cases)
        + ".map(([n, k, fpr]) => vt.decide(Array.from({length: n}, (_, i) => i < k), Array(n).fill(true), fpr));\n"
        + "fs.writeFileSync('verdicts.json', JSON.stringify(out));\n",
    )
    for (n, k, fpr), js in zip(cases, json.loads((tmp_path / "verdicts.json").read_text())):
        py = decide(np.arange(n) < k, np.ones(n, bool), fpr)
        assert js["matching"] == py.matching_bits and js["thresholdBits"] == py.threshold_bits
        assert js["watermarked"] == py.to_json()["watermarked"]  # None: n bits cannot reach the FPR
        assert js["reason"] == py.to_json().get("reason")
        assert js["pValue"] == pytest.approx(py.pvalue, rel=1e-12)
        expected = py.sentence().replace("choose --fpr", "choose an FPR of")  # the page has no --fpr flag
        assert js["sentence"] == expected, (js["sentence"], expected)
