"""Re-synchronisation (`resync.py`): a crop read as is puts the compact card's 8-px tile off the detector's grid;
`detect` finds its extent and phase again. Real runs: the default card's FP32 files, full-resolution images saved
as PNG, cropped, read back through the runtime and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from videoseal_tflite.build.images import fullres_evaluation_image, procedural_image
from videoseal_tflite.cli.main import main
from videoseal_tflite.runtime.image import Detector, Embedder, _resize_any, blend, load_image, round_8bit, to_uint8
from videoseal_tflite.runtime.resync import (
    ANALYSIS_SIZE,
    COMB_ABOVE,
    EXTENT_CANDIDATES,
    EXTENTS,
    FOUND_ABOVE,
    HARMONICS,
    SURE_ABOVE,
    comb_of,
    comb_scores,
    harmonics,
    peaks_of,
    resynchronise,
    unsure,
    whitened_log_power,
)
from videoseal_tflite.runtime.verdict import decide, pvalue
from videoseal_tflite.runtime.video import TileTracker, frame_logits
from videoseal_tflite.validate.attacks import crop_area, crop_half_area
from videoseal_tflite.validate.clips import photo_pan_frames, write_clip

MESSAGE = np.array([int(c) for c in "1011001110001101"], dtype=np.float32)


@pytest.fixture(scope="module")
def marked(robust_fp32):
    """Two held-out photos and one procedural image at 512 px, watermarked at full resolution, rounded to 8 bits."""
    embedder = Embedder(robust_fp32["embedder"])
    originals = [
        fullres_evaluation_image(0).pixels,
        fullres_evaluation_image(3).pixels,
        procedural_image(2001, 512).pixels,
    ]
    return [(x, round_8bit(embedder.embed(x, MESSAGE))) for x in originals]


def test_half_area_crop_is_found_again(robust_fp32, marked):
    detector, as_is = Detector(robust_fp32["detector"]), Detector(robust_fp32["detector"], resync=False)
    assert detector.tile_period == 8 and as_is.tile_period is None
    synced, plain = [], []
    for _, y in marked:
        crop = crop_half_area(y)
        found = detector.detect(crop)
        assert found.synced is not None and found.hypotheses == 1 + 6 * 64
        assert np.allclose(found.synced.extent, crop.shape[2] / y.shape[2], atol=0.02)  # 1/sqrt(2) each way
        synced.append(found.bit_accuracy(MESSAGE))
        plain.append(as_is.detect(crop).bit_accuracy(MESSAGE))
    print(f"50 % crops: resynchronised {synced}, as is {plain}")
    assert np.mean(synced) >= 0.9 and np.mean(plain) <= 0.75


def test_a_sure_reading_ends_the_search_and_the_skipped_extents_still_count(robust_fp32, marked, monkeypatch):
    """resync.SURE_ABOVE: the extents are read best comb first and a reading that agrees more than the card's
    threshold ends the search. On these crops it keeps the reading the full search keeps, having read fewer extents,
    and the p-value still counts every extent's phases; an unmarked image reads every extent."""
    detector = Detector(robust_fp32["detector"])
    tile, size = detector.tile_period, detector.size
    stopped = []
    for _, y in marked:
        crop = np.asarray(crop_half_area(y), np.float32)
        comb = comb_of(crop, tile, size, _resize_any)
        early = resynchronise(crop, detector.read_all, tile, size, _resize_any, comb)
        with monkeypatch.context() as patch:
            patch.setitem(SURE_ABOVE, tile, np.inf)
            full = resynchronise(crop, detector.read_all, tile, size, _resize_any, comb)
        assert full.extents_read == len(comb.extents) and early.hypotheses == full.hypotheses == 1 + 6 * 64
        assert (early.extent, early.phase) == (full.extent, full.phase)
        assert np.array_equal(early.bit_logits, full.bit_logits)
        if early.agreement >= SURE_ABOVE[tile]:
            stopped.append(early.extents_read)
    assert stopped and min(stopped) < len(comb.extents), "at least one crop ended the search early"
    unmarked = procedural_image(2003, 512).pixels
    found = resynchronise(unmarked, detector.read_all, tile, size, _resize_any)
    assert found.agreement < SURE_ABOVE[tile] and found.extents_read == EXTENT_CANDIDATES[0] + EXTENT_CANDIDATES[1]


def test_two_one_thread_readers_give_the_two_thread_numbers(robust_fp32, marked):
    """`read_all` reads alternate canvases on two 1-thread copies of the detector at once: every logit equals the
    2-thread `read`'s, and a whole search (a crop: 385 readings) ends on the same reading, bit for bit."""
    detector, single = Detector(robust_fp32["detector"], threads=2), Detector(robust_fp32["detector"], threads=1)
    canvases = [np.random.default_rng(i).random((3, 128, 128), dtype=np.float32) for i in range(5)]
    together = detector.read_all(canvases)
    assert detector._pair is not None  # the pair was used, not the sequential path
    assert all(np.array_equal(a, detector.read(c)) for a, c in zip(together, canvases))
    crop = crop_half_area(marked[0][1])
    two, one = detector.detect(crop), single.detect(crop)
    assert two.synced is not None and np.array_equal(two.bit_logits, one.bit_logits)
    assert (two.synced.extent, two.synced.phase) == (one.synced.extent, one.synced.phase)


def test_a_sure_reading_is_not_resynchronised(robust_fp32, marked):
    detector = Detector(robust_fp32["detector"])
    for _, y in marked:
        found = detector.detect(y)
        assert found.synced is None and found.hypotheses == 1 and found.bit_accuracy(MESSAGE) == 1.0


def test_unmarked_crops_are_not_called_watermarked(robust_fp32, marked):
    """The reading kept is the best of 385, so its p-value counts them: no unmarked crop reaches FPR 1e-2."""
    detector = Detector(robust_fp32["detector"])
    for x, _ in marked:
        found = detector.detect(crop_half_area(x))
        verdict = decide(found.bits, MESSAGE, 1e-2, found.hypotheses)
        k = int((found.bits == MESSAGE.astype(bool)).sum())
        assert verdict.pvalue == min(1.0, pvalue(k, 16) * found.hypotheses) and not verdict.watermarked


def test_unmarked_images_report_no_tile_found(robust_fp32, marked):
    """Issue #28: every unmarked image read "tile found". The claim now needs an agreement unmarked images were not
    measured to reach (resync.FOUND_ABOVE); the three originals and their half-area crops stay below it, while the
    marked crops' re-found readings that read right reach it on average."""
    detector = Detector(robust_fp32["detector"])
    for x, y in marked:
        for image in (x, crop_half_area(x)):
            found = detector.detect(image)
            assert found.searched is None or not found.searched.found, found.searched
    crops = [detector.detect(crop_half_area(y)).searched for _, y in marked]
    assert np.mean([c.found for c in crops]) >= 2 / 3, [c.agreement for c in crops]


def test_an_image_without_a_tile_comb_is_not_searched(robust_fp32, marked):
    """resync.COMB_ABOVE: an unmarked 512-px image whose spectrum shows no tile comb (seed 50161 of the separation
    record, strength 16.5 < 20) is read as is, no phase search, one hypothesis; a marked half-area crop (comb above
    22 in the record) is still searched and read right."""
    detector = Detector(robust_fp32["detector"])
    plain = to_uint8(procedural_image(50_161, 512).pixels)
    as_is = detector.logits(_resize_any(plain, detector.size, detector.size))[0]
    assert unsure(as_is)  # the search would have run without the gate
    assert comb_of(plain, detector.tile_period, detector.size, _resize_any).strength < COMB_ABOVE[8] == 20.0
    found = detector.detect(plain)
    assert found.searched is None and found.hypotheses == 1
    cropped = [detector.detect(crop_half_area(y)) for _, y in marked]
    assert all(c.searched is not None for c in cropped)
    assert np.mean([c.bit_accuracy(MESSAGE) for c in cropped]) >= 0.9


def test_bonferroni_verdict():
    sixteen = np.ones(16)
    assert decide(sixteen, sixteen, 1e-2, hypotheses=385).watermarked  # 385 / 2**16 = 0.0059
    strict = decide(sixteen, sixteen, 1e-3, hypotheses=385)
    assert not strict.watermarked and not strict.reachable and strict.best_fpr == pytest.approx(385 / 2**16)
    assert decide(np.r_[np.ones(14), np.zeros(2)], sixteen, hypotheses=385).pvalue == pytest.approx(385 * 137 / 2**16)
    assert decide(np.r_[np.ones(13), np.zeros(3)], sixteen, hypotheses=385).pvalue == 1.0  # 385 x 697 / 2**16
    with pytest.raises(ValueError):
        decide(sixteen, sixteen, hypotheses=0)


def test_cli_detect_says_it_resynchronised(robust_fp32, marked, tmp_path, capsys):
    path = tmp_path / "crop.png"
    Image.fromarray((crop_half_area(marked[0][1]) * 255).round().astype(np.uint8).transpose(1, 2, 0)).save(path)
    bits = "".join(str(int(b)) for b in MESSAGE)
    args = ["detect", str(path), "--detector", str(robust_fp32["detector"]), "--message", bits, "--fpr", "1e-2"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["resynchronised"]["hypotheses"] == 385 and report["watermarked"]
    assert 1 <= report["resynchronised"]["extents_read"] <= sum(EXTENT_CANDIDATES)
    assert report["pvalue"] == pytest.approx(385 * pvalue(report["matching_bits"], 16))
    found = report["resynchronised"]["tile_found"]
    assert report["resynchronised"]["kept"] and found == (report["resynchronised"]["agreement"] >= FOUND_ABOVE)
    assert main(args) == 0
    line = capsys.readouterr().out.splitlines()[0]
    # this crop reads every bit, yet its agreement may stay where unmarked images were measured: then it says so
    assert (
        line.startswith("re-synchronised: the reading as is was unsure; the mark's tile was found at")
        if found
        else (line.startswith("re-synchronisation: ") and "no tile found" in line)
    )
    assert main([*args, "--no-resync", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "resynchronised" not in report and not report["watermarked"]
    assert load_image(path).shape[1:] == crop_half_area(marked[0][1]).shape[1:]


# ---- video: the tile a codec drags (issue #14) ---------------------------------------------------------------

DRAG_PX = (0, 5, 10, 5, 0, -5, -10, -15)  # the tile moved by this many px at 1280 px wide: 10 px = 1 px at 128


def _dragged_frames(robust_fp32, photo: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 1280x720 frame of a pan over `photo`, and that frame marked with its watermark moved by DRAG_PX along x,
    as a P frame carries it when motion compensation drags the mark with the picture (HxWx3 uint8 each)."""
    embedder = Embedder(robust_fp32["embedder"])
    frame = photo_pan_frames(photo, 1280, 720, 2)[0]
    x = frame.transpose(2, 0, 1) / np.float32(255)
    w = embedder.watermark(x, MESSAGE)
    return frame, [
        to_uint8(blend(x, np.roll(w, px, axis=2), embedder.scaling_w, embedder.scaling_i, embedder.attenuation))
        for px in DRAG_PX
    ]


@pytest.mark.parametrize("photo", ["coffee", "camera"])
def test_tile_tracker_follows_a_dragged_tile(robust_fp32, photo):
    """The tracker reads each frame at the shift that puts the tile back on the grid (within one 0.5-px step of
    drag / 10, and the reach of 1 px), and reads every bit; read as is, the frames dragged by 10-15 px lose bits
    (measured: 16/16 tracked on every frame; as is 14, 15, 11 of 16 on coffee and 13, 15, 11 on camera)."""
    detector = Detector(robust_fp32["detector"])
    tracker, tracked, plain = TileTracker(detector), [], []
    for px, frame in zip(DRAG_PX, _dragged_frames(robust_fp32, photo)[1]):
        bits, _, (dx, dy) = tracker(frame)
        assert abs(dx - max(-1.0, px / 10)) <= 0.5 and abs(dy) <= 0.5, (px, dx, dy)
        tracked.append(int(((bits > 0) == MESSAGE.astype(bool)).sum()))
        plain.append(int(((frame_logits(frame, detector)[0] > 0) == MESSAGE.astype(bool)).sum()))
    print(f"{photo}, bits per frame: tracked {tracked}, as is {plain}")
    assert tracked == [16] * len(DRAG_PX) and sum(plain) < sum(tracked)


def test_cli_detect_video_tracks_the_tile(robust_fp32, tmp_path, capsys):
    """`detect` on a clip of dragged frames says it tracked the tile (--json: the shift of every frame); with
    --no-resync it reads as is. The same pan unmarked is not called watermarked: the tracker picks by confidence
    and never sees the message, so the p-value is the plain binomial one."""
    unmarked, frames = _dragged_frames(robust_fp32, "coffee")
    marked = write_clip(tmp_path / "dragged.mp4", frames, crf=10)
    plain = write_clip(tmp_path / "plain.mp4", [unmarked] * len(frames), crf=10)
    bits = "".join(str(int(b)) for b in MESSAGE)
    args = ["--detector", str(robust_fp32["detector"]), "--message", bits, "--fpr", "1e-2"]
    assert main(["detect", str(marked), *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tracking = report["tile_tracking"]
    assert report["matching_bits"] == 16 and report["pvalue"] == pvalue(16, 16) and report["watermarked"]
    assert len(tracking["per_frame_shift"]) == len(frames) and tracking["largest_shift"] == 1.0
    assert main(["detect", str(marked), *args]) == 0
    assert "tile tracked: " in capsys.readouterr().out
    assert main(["detect", str(marked), *args, "--no-resync", "--json"]) == 0
    assert "tile_tracking" not in json.loads(capsys.readouterr().out)
    assert main(["detect", str(plain), *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "tile_tracking" in report and not report["watermarked"] and report["matching_bits"] <= 12


def test_card_tile_period_must_divide_the_processing_size(tmp_path, capsys):
    from videoseal_tflite.build.cards import resolve_card_path

    card = yaml.safe_load(resolve_card_path("compact_robust").read_text())
    card["args"]["watermark_tile_period"] = 7
    path = Path(tmp_path) / "odd.yaml"
    path.write_text(yaml.safe_dump(card))
    assert main(["convert", "--card", str(path), "--random-init", "0", "--artifacts", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "watermark_tile_period must be a positive integer dividing 128, got 7" in err[0]


def test_corner_crop_is_found_at_its_own_phase(robust_fp32, marked):
    """A crop at the top-left corner keeps the tile's grid at (0, 0). The centred crop starts 0.146 of the side in,
    18.7 px of 128, so its next tile corner is 5.3 px into it: the phase search finds each."""
    detector = Detector(robust_fp32["detector"])
    accuracies = []
    for _, y in marked:
        corner, centre = detector.detect(crop_area(y, 0.5, corner=True)), detector.detect(crop_half_area(y))
        print(f"phases: corner {corner.synced.phase}, centre {centre.synced.phase}")
        assert max(abs(((p + 4) % 8) - 4) for p in corner.synced.phase) <= 1  # (0, 0) up to a pixel
        assert all(4 <= p <= 6 for p in centre.synced.phase)
        accuracies.append(corner.bit_accuracy(MESSAGE))
    assert np.mean(accuracies) >= 0.9


@pytest.mark.fast
@pytest.mark.parametrize("level", [0, 30, 128, 255])
def test_a_flat_image_shows_no_comb(level):
    """A constant image has no spectrum but the float32 rounding of its resize (~1e-9 a bin): whitened, that noise
    scored 60, above every marked crop, and sent every flat image into the full search. With resync.POWER_FLOOR it
    scores as the nothing it is, from 8-bit pixels (the banded resize) and from floats alike."""
    flat = np.full((480, 640, 3), level, np.uint8)
    for image in (flat, flat.transpose(2, 0, 1).astype(np.float32) / 255):
        assert comb_of(image, 8, 128, _resize_any).strength < COMB_ABOVE[8] / 10


@pytest.mark.fast
def test_comb_scores_are_the_3x3_peak_at_each_harmonic():
    """`comb_scores` looks up one precomputed 3 x 3 maximum (`peaks_of`); checked against the definition, bin by
    bin, on a random log spectrum: y wraps, x is clamped at the rfft2 half, a harmonic beyond it adds nothing."""
    rng = np.random.default_rng(0)
    log_power = rng.normal(size=(64, 33))
    cx = rng.uniform(0.45, 1.1, 50)
    cy = rng.uniform(0.45, 1.1, 50)
    period = 4.0
    expected = np.zeros(50)
    for kx, ky in HARMONICS:
        for i in range(50):
            ix, iy = round(kx * cx[i] / period * 64), round(ky * cy[i] / period * 64)
            if ix < 0:
                ix, iy = -ix, -iy
            if ix >= 33:
                continue
            expected[i] += max(
                log_power[(iy + dy) % 64, min(max(ix + dx, 0), 32)] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            )
    assert np.allclose(comb_scores(peaks_of(log_power), cx, cy, period), expected)


@pytest.mark.fast
def test_a_16px_tile_is_found_by_harmonics_scaled_to_it():
    """compact64's 16-px tile puts most of its power above the third harmonic, where the 8-px tile's comb stops
    (`resync.harmonics`: k <= 3 at 8 px, 6 at 16 px). A random 16 x 16 tile (flat spectrum up to its eighth
    harmonic) added to a procedural photo at 1024 px, cropped to half the area: the crop's extent (0.707) is among
    the comb's same-aspect candidates with the harmonics scaled to the tile, and not with the 8-px tile's."""
    assert len(HARMONICS) == 24 and harmonics(8) == HARMONICS and max(k for k, _ in harmonics(16)) == 6
    rng = np.random.default_rng(3)
    tile = rng.normal(0, 1.0 / 255, (3, 16, 16)).astype(np.float32)
    full = np.kron(np.tile(tile, (1, 8, 8)), np.ones((8, 8), np.float32))  # 128 px at 1024: 16 px at 128
    photo = np.clip(procedural_image(11, 1024).pixels + 8 * full, 0, 1)  # ~3 % of the range, as a loud mark
    crop = crop_half_area(to_uint8(photo).transpose(2, 0, 1).astype(np.float32) / 255)
    peaks = peaks_of(whitened_log_power(crop, _resize_any))

    def found(terms) -> bool:
        scores = comb_scores(peaks, EXTENTS, EXTENTS, ANALYSIS_SIZE * 16 / 128, terms)
        best = EXTENTS[np.argsort(scores)[::-1][: EXTENT_CANDIDATES[0]]]
        return bool(np.any(np.abs(best - np.sqrt(0.5)) <= 0.012))

    assert found(harmonics(16))
    assert not found(HARMONICS)
    assert comb_of(crop, 16, 128, _resize_any).periodic
