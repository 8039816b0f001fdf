"""Reruns redo only what is missing or stale (by input hash): nothing when nothing changed; exactly the deleted
or tampered files otherwise; everything with --force."""

from __future__ import annotations

import hashlib
import shutil

from videoseal_tflite.build.pipeline import convert_card
from videoseal_tflite.build.weights import WeightSource
from videoseal_tflite.store.manifest import read_manifest


def _tree(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.tflite"))
    }


def test_rerun_reuses_everything_then_rebuilds_only_what_is_missing_or_tampered(compact_artifacts, out_root, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(compact_artifacts.out_dir, root / "compact")
    manifest = (out_root / "manifest.json").read_text()
    (root / "manifest.json").write_text(manifest)
    first = _tree(root)

    again = convert_card("compact", WeightSource(), root, progress=False)
    assert all(c.reused for c in again.converted) and all(v.reused for v in again.variants)
    assert _tree(root) == first

    gone = root / "compact" / "detector_128_dynamic_int8.tflite"
    gone.unlink()
    tampered = root / "compact" / "embedder_128_fp16.tflite"
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    third = convert_card("compact", WeightSource(), root, progress=False)
    rebuilt = sorted(f"{v.part}/{v.variant}" for v in third.variants if not v.reused)
    assert rebuilt == ["detector/dynamic_int8", "embedder/fp16"]
    assert all(c.reused for c in third.converted)
    assert _tree(root) == first  # rebuilt byte-identical
    entries = read_manifest(root)["files"]
    assert all(len(e["input_hash"]) == 64 for e in entries.values())


def test_force_rebuilds(compact_artifacts, out_root, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(compact_artifacts.out_dir, root / "compact")
    (root / "manifest.json").write_text((out_root / "manifest.json").read_text())
    again = convert_card("compact", WeightSource(), root, progress=False, variants=("fp16",), force=True)
    assert not any(c.reused for c in again.converted) and not any(v.reused for v in again.variants)


def test_calibration_names_are_the_calibration_images_names():
    """The int8 input hash names the calibration set without making it (`calibration_names`): the same list."""
    from videoseal_tflite.build.images import calibration_images, calibration_names

    assert calibration_names() == [image.name for image in calibration_images(32)]
