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
