"""FP32 conversion: parity on LiteRT (and tf.lite as a second opinion), names, metadata, atomic output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videoseal_tflite.build.convert.wrappers import export_module, sample_inputs
from videoseal_tflite.tflite.inspect import inspect_model
from videoseal_tflite.tflite.metadata import read_metadata

CARDS = ["videoseal_0.0", "videoseal_1.0"]


def _fp32(card_artifacts, card, part):
    return next(r for r in card_artifacts(card).converted if r.part == part)


@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("part", ["embedder", "detector"])
def test_fp32_parity_on_litert(card, part, card_artifacts):
    result = _fp32(card_artifacts, card, part)
    assert result.path.is_file()
    assert result.path.name == f"{part}_256_fp32.random-init-seed0.tflite"
    assert result.parity.inputs >= 8
    assert result.parity.max_abs_diff <= 1e-4
    if part == "detector":
        assert result.parity.bit_agreement == 1.0


@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("part", ["embedder", "detector"])
def test_fp32_parity_on_tf_lite_second_interpreter(card, part, card_artifacts, loaded_models):
    import tensorflow as tf

    result = _fp32(card_artifacts, card, part)
    loaded = loaded_models(card)
    reference = export_module(loaded.model, part, loaded.card.yuv)
    runner = tf.lite.Interpreter(model_path=str(result.path), num_threads=2).get_signature_runner()
    for seed in (11, 12):
        inputs = sample_inputs(part, 256, loaded.card.nbits, seed)
        with torch.no_grad():
            expected = {k: v.numpy() for k, v in reference(**inputs).items()}
        got = runner(**{k: v.numpy() for k, v in inputs.items()})
        for key in expected:
            assert np.abs(got[key] - expected[key]).max() <= 1e-4, key


@pytest.mark.parametrize("card", CARDS)
def test_named_io_and_metadata(card, card_artifacts, loaded_models):
    nbits = loaded_models(card).card.nbits
    emb = inspect_model(_fp32(card_artifacts, card, "embedder").path, load=False)
    det = inspect_model(_fp32(card_artifacts, card, "detector").path, load=False)
    assert [i["signature_name"] for i in emb.inputs] == ["image", "message"]
    assert [o["signature_name"] for o in emb.outputs] == ["watermark"]
    assert [i["signature_name"] for i in det.inputs] == ["image"]
    assert sorted(o["signature_name"] for o in det.outputs) == ["bit_logits", "detection_logit"]
    det_shapes = {o["signature_name"]: o["shape"] for o in det.outputs}
    assert det_shapes["bit_logits"] == [1, nbits]
    for inspection, part in ((emb, "embedder"), (det, "detector")):
        meta = inspection.metadata
        assert meta["card"] == card and meta["part"] == part and meta["nbits"] == nbits
        assert meta["weights"] == "random-init" and meta["weights_label"] == "random-init-seed0"


@pytest.mark.parametrize("card", CARDS)
def test_embedder_has_neither_broadcast_to_nor_embedding_lookup(card, card_artifacts):
    ops = inspect_model(_fp32(card_artifacts, card, "embedder").path, load=False).op_histogram
    assert "BROADCAST_TO" not in ops and "EMBEDDING_LOOKUP" not in ops, ops


def test_no_temp_files_left(card_artifacts, out_root):
    card_artifacts("videoseal_0.0")
    leftovers = [p for p in out_root.rglob("*") if ".tmp-" in p.name or p.name.startswith(".write-probe")]
    assert leftovers == []


def test_metadata_roundtrip(card_artifacts, tmp_path):
    from videoseal_tflite.tflite.metadata import with_metadata

    fp32 = next(r for r in card_artifacts("videoseal_1.0").converted if r.part == "detector")
    once = with_metadata(fp32.path.read_bytes(), {"card": "x", "nbits": 16})
    twice = with_metadata(once, {"card": "y", "nbits": 32})
    assert read_metadata(once) == {"card": "x", "nbits": 16}
    assert read_metadata(twice) == {"card": "y", "nbits": 32}
    assert abs(len(twice) - len(once)) < 64  # replaced, not appended
