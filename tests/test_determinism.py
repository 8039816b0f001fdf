"""Two conversions of the same card and weights give byte-identical files (FP32 and every variant)."""

from __future__ import annotations

import hashlib


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tflite"))}


def test_rerun_is_byte_identical(compact_artifacts, tmp_path):
    from videoseal_tflite.pipeline import convert_card
    from videoseal_tflite.weights import WeightSource

    again = convert_card("compact", WeightSource(), tmp_path, progress=False)
    first, second = _hashes(compact_artifacts.out_dir), _hashes(again.out_dir)
    assert first.keys() == second.keys() and len(first) >= 9
    differing = sorted(name for name in first if first[name] != second[name])
    assert differing == [], f"not byte-identical across runs: {differing}"


def test_official_vit_detector_rerun_is_byte_identical(card_artifacts, tmp_path):
    """videoseal_0.0 (random-init): the ViT detector's FP32 file and its full-int8 variant (calibration, repairs)
    come out byte-identical from a second conversion in a fresh folder."""
    from videoseal_tflite.pipeline import convert_card
    from videoseal_tflite.weights import WeightSource

    first = card_artifacts("videoseal_0.0")
    again = convert_card(
        "videoseal_0.0",
        WeightSource(random_init_seed=0),
        tmp_path,
        parts=("detector",),
        variants=("int8",),
        progress=False,
    )
    names = {p.name for p in again.out_dir.glob("*.tflite")}
    assert names == {"detector_256_fp32.random-init-seed0.tflite", "detector_256_int8.random-init-seed0.tflite"}
    for name in names:
        assert _hashes(first.out_dir)[name] == _hashes(again.out_dir)[name], name
