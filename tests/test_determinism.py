"""Two conversions of the same card and weights give byte-identical files (FP32 and every variant).

The compact card's rerun is `tests/test_workflow.py::test_merged_release_is_byte_identical_to_a_single_run`: the CI
shards convert it again, part by part in separate processes, and every file must equal the session's own run."""

from __future__ import annotations

import hashlib


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tflite"))}


def test_official_vit_detector_rerun_is_byte_identical(card_artifacts, tmp_path):
    """videoseal_0.0 (random-init): the ViT detector's FP32 file and its full-int8 variant (calibration, repairs)
    come out byte-identical from a second conversion in a fresh folder."""
    from videoseal_tflite.build.pipeline import convert_card
    from videoseal_tflite.build.weights import WeightSource

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
