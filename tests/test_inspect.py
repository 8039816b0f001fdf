"""`inspect` on real conversions: BATCH_MATMUL census, the seed bug reproduced, and load checks."""

from __future__ import annotations

import json

from videoseal_tflite.cli import main
from videoseal_tflite.quantize.recipes import base_recipe
from videoseal_tflite.validate.inspect_model import inspect_model


def _fp32(card_artifacts, card, part):
    return next(r for r in card_artifacts(card).converted if r.part == part)


def test_vit_detector_batch_matmuls_before_and_after_relpos_rewrite(card_artifacts, unrewritten_detector_00):
    before = inspect_model(unrewritten_detector_00.path, load=False).ops_of("BATCH_MATMUL")
    after = inspect_model(_fp32(card_artifacts, "videoseal_0.0", "detector").path, load=False).ops_of("BATCH_MATMUL")
    assert len(before) == 48 and len(after) == 48
    assert sum(any(i.const for i in op.inputs[:2]) for op in before) == 24
    assert sum(op.inputs[0].const for op in before) == 24  # the constant sits on the left
    assert sum(op.inputs[0].const for op in after) == 0
    assert sum(op.inputs[1].const for op in after) == 24


def test_convnext_detector_has_no_batch_matmul(card_artifacts):
    inspection = inspect_model(_fp32(card_artifacts, "videoseal_1.0", "detector").path, load=False)
    assert inspection.ops_of("BATCH_MATMUL") == []


def test_fp32_models_load_in_a_child_process(card_artifacts):
    inspection = inspect_model(_fp32(card_artifacts, "videoseal_1.0", "embedder").path, load=True)
    assert inspection.load.loads and inspection.load.stage == "ok"
    assert inspection.errors == []


def _naive_dynamic_int8(fp32_path, target):
    from ai_edge_quantizer import quantizer, recipe

    # our recipe data is exactly the library's recipe
    assert base_recipe("dynamic_int8") == json.loads(json.dumps(recipe.dynamic_wi8_afp32(), default=lambda e: e.value))
    q = quantizer.Quantizer(str(fp32_path))
    q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    target.write_bytes(bytes(q.quantize().quantized_model))
    return target


def test_seed_bug_reproduced_and_flagged(unrewritten_detector_00, tmp_path, capsys):
    """Dynamic-range int8 of the unrewritten ViT detector: flagged statically, and LiteRT refuses to prepare it."""
    naive = _naive_dynamic_int8(unrewritten_detector_00.path, tmp_path / "detector_256_dynamic_int8.naive.tflite")
    inspection = inspect_model(naive, load=True)
    bad = [f for f in inspection.flags if f.kind == "batch_matmul_dtypes"]
    assert len(bad) == 24
    assert all("INT8 const x FLOAT32" in f.detail for f in bad)
    assert all("videoseal.modules.vit" in f.detail for f in bad)  # names the source module
    load = inspection.load
    assert not load.loads and load.stage == "allocate"
    assert "BATCH_MATMUL) failed to prepare" in load.error
    assert load.op == "BATCH_MATMUL" and load.node == bad[0].node
    # the same through the CLI: one report, exit code 1 because the model cannot load
    assert main(["inspect", str(naive)]) == 1
    out = capsys.readouterr().out
    assert "batch_matmul_dtypes x24" in out and "failed to prepare" in out


def test_seed_bug_second_opinion_tf_lite(unrewritten_detector_00, tmp_path):
    from videoseal_tflite.validate.load_check import load_check

    naive = _naive_dynamic_int8(unrewritten_detector_00.path, tmp_path / "naive.tflite")
    result = load_check(naive, runtime="tflite")
    assert not result.loads and "BATCH_MATMUL) failed to prepare" in result.error


def test_inspect_json_lists_every_op(card_artifacts, capsys):
    import json

    path = _fp32(card_artifacts, "videoseal_0.0", "embedder").path
    assert main(["inspect", str(path), "--json", "--no-load"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sum(report["op_histogram"].values()) == len(report["ops"])
    assert all("dtype" in i and "const" in i for op in report["ops"] for i in op["inputs"])
