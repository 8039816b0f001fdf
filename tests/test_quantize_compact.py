"""The trained compact card through the repair loop: every variant of both parts is built, loads on LiteRT *and*
tf.lite, and keeps the watermark; the failures the repairs remove are reproduced with the runtime's own text."""

from __future__ import annotations

import numpy as np
import pytest

from videoseal_tflite.build.cards import load_card
from videoseal_tflite.build.images import evaluation_images
from videoseal_tflite.build.pipeline import calibration_feeds, check_set
from videoseal_tflite.build.quantize.recipes import base_recipe, keep_float
from videoseal_tflite.build.quantize.variant import calibrate_min_max, compare, quantize_bytes, quantize_variant
from videoseal_tflite.store.variants import variant_names
from videoseal_tflite.tflite.inspect import inspect_model
from videoseal_tflite.tflite.load_check import load_check, load_check_many, run_isolated
from videoseal_tflite.tflite.metadata import io_quantization, read_metadata

VARIANTS = variant_names(quantized_only=True)


def test_every_compact_variant_is_built(compact_artifacts):
    built = {(v.part, v.variant): v for v in compact_artifacts.variants}
    assert set(built) == {(p, v) for p in ("embedder", "detector") for v in VARIANTS}
    failed = {k: v.error for k, v in built.items() if v.status == "failed"}
    assert failed == {}


@pytest.mark.parametrize("runtime", ["litert", "tflite"])
def test_compact_variants_load_on_both_runtimes(runtime, compact_artifacts):
    variants = compact_artifacts.variants
    for v, result in zip(variants, load_check_many([v.path for v in variants], runtime), strict=True):
        assert result.loads, f"{v.part} {v.variant} on {runtime}: {result.error}"


def test_naive_int8_detector_divides_by_zero_on_tflite_and_the_repair_removes_it(compact_artifacts, tmp_path):
    """Full int8 with float I/O only: LayerNorm's divisor is an int8 activation; on some held-out images it
    rounds to zero and tf.lite stops. The repaired file runs every evaluation image on both runtimes."""
    card = load_card("compact")
    fp32 = compact_artifacts.out_dir / "detector_128_fp32.tflite"
    recipe = base_recipe("int8") + keep_float(["INPUT", "OUTPUT"])
    naive = tmp_path / "naive_int8.tflite"
    naive.write_bytes(quantize_bytes(fp32, recipe, calibration_feeds(card, "detector"), {}))
    assert "quantized_div" in {f.kind for f in inspect_model(naive, load=False).errors}
    feeds = [{"image": img.pixels[None]} for img in evaluation_images(card.img_size)]
    result, outputs = run_isolated(naive, feeds, runtime="tflite")  # stops at the first image that hits it
    assert not result.loads and "(DIV) failed to invoke" in result.error and result.op == "DIV"
    assert len(outputs) < len(feeds)
    assert load_check(naive, "litert").loads  # LiteRT runs on: the failure is silent there

    repaired = compact_artifacts.variant("detector", "int8")
    assert [r.name for r in repaired.repairs_applied][:2] == ["float_io", "norm_float_islands"]
    assert "quantized_div" in repaired.repairs_applied[1].removed_error
    for runtime in ("litert", "tflite"):
        result, outputs = run_isolated(repaired.path, feeds, runtime=runtime)
        assert result.loads and len(outputs) == len(feeds), (runtime, result.error)


@pytest.mark.parametrize("part", ["embedder", "detector"])
def test_litert_calibration_gives_the_numpy_calibrations_int8_file(compact_artifacts, part):
    """`calibrate_min_max` tracks ranges with LiteRT's profiler in C++ (2.5-3x faster) instead of ai-edge-quantizer's
    numpy pass over every kept tensor: the int8 file built from either is the same, byte for byte, with the built
    variant's own recipe (its repairs included). The quantizer's scales follow the ranges' dtype: given the
    profiler's float64 as is, the detector's bytes differed."""
    card = load_card("compact")
    fp32 = compact_artifacts.out_dir / f"{part}_128_fp32.tflite"
    feeds = calibration_feeds(card, part)
    base = base_recipe("int8") + keep_float(["INPUT", "OUTPUT"])
    recipe = read_metadata(compact_artifacts.variant(part, "int8").path.read_bytes())["recipe"]
    built = {
        by: quantize_bytes(fp32, recipe, feeds, {"qsv": calibrate_min_max(fp32, base, feeds, tracked_by=by)})
        for by in ("litert", "numpy")
    }
    assert built["litert"] == built["numpy"]


def test_int8_embedder_is_built_and_keeps_the_watermark(compact_report):
    """The full-int8 embedder (not buildable before min-max calibration) carries a message the FP32 detector reads."""
    record = next(r for r in compact_report["records"] if r["part"] == "embedder" and r["variant"] == "int8")
    assert record["loads"] and record["bit_accuracy"] >= 0.99 and record["psnr_db"] >= 35.0, record


def test_int8_io_model_has_raw_int8_interface_and_documents_it(compact_artifacts, tmp_path):
    """--int8-io: int8 tensors at the interface, scale/zero point in the metadata (real = (q - zp) * scale),
    and the bits agree with FP32 when the caller quantizes with them."""
    card = load_card("compact")
    fp32 = compact_artifacts.out_dir / "detector_128_fp32.tflite"
    checks = check_set(card, compact_artifacts.out_dir, "detector", fp32)
    target = tmp_path / "detector_128_int8.tflite"
    result = quantize_variant(fp32, "int8", target, checks, calibration_feeds(card, "detector"), int8_io=True)
    assert result.status == "repaired" and "float_io" not in [r.name for r in result.repairs_applied]
    data = target.read_bytes()
    io = io_quantization(data)
    assert set(io) == {"image", "bit_logits", "detection_logit"} and all(t["dtype"] == "int8" for t in io.values())
    assert read_metadata(data)["io_quantization"] == io == result.io_quantization
    image = io["image"]
    assert image["zero_point"] == -128 and abs(image["scale"] * 255 - 1.0) < 1e-3  # [0, 1] maps onto the int8 range
    # the caller's side, written out: quantize the image, run, dequantize the logits
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(target), num_threads=2).get_signature_runner()
    q = np.clip(np.round(checks.inputs[0]["image"] / image["scale"]) + image["zero_point"], -128, 127).astype(np.int8)
    raw = runner(image=q)["bit_logits"]
    assert raw.dtype == np.int8
    logits = (raw.astype(np.float32) - io["bit_logits"]["zero_point"]) * io["bit_logits"]["scale"]
    assert ((logits > 0) == (checks.fp32_outputs[0]["bit_logits"] > 0)).mean() >= 0.98
    ok, outputs = run_isolated(target, checks.inputs, convert_io=True)
    assert ok.loads and compare("detector", outputs, checks.fp32_outputs).bit_agreement >= 0.98


def test_a_new_variant_is_one_row_plus_its_recipe(compact_artifacts, tmp_path, monkeypatch):
    """Adding a variant: a row in variants.VARIANT_TABLE and its base recipe; nothing else is touched."""
    import shutil

    from videoseal_tflite.build.pipeline import quantize_card
    from videoseal_tflite.build.quantize import recipes
    from videoseal_tflite.store import variants
    from videoseal_tflite.store.artifact import Artifact
    from videoseal_tflite.tflite.metadata import read_metadata

    row = variants.VariantSpec("int8_weights_copy", "int8_weights_copy", 1, 0.9, 0.9, repairs=())
    monkeypatch.setattr(variants, "VARIANT_TABLE", [*variants.VARIANT_TABLE, row])
    monkeypatch.setitem(recipes.BASE_RECIPES, "int8_weights_copy", recipes.BASE_RECIPES["weight_only_int8"])
    root = tmp_path / "art"
    shutil.copytree(compact_artifacts.out_dir, root / "compact", ignore=shutil.ignore_patterns("*_int8*", "*fp16*"))
    results = quantize_card("compact", root, ("int8_weights_copy",), progress=False)
    assert {(r.part, r.status) for r in results} == {("embedder", "ok"), ("detector", "ok")}
    for part in ("embedder", "detector"):
        ((art, path),) = Artifact.find(root / "compact", part, "int8_weights_copy")
        assert path.name == f"{part}_128_int8_weights_copy.tflite" and load_check(path).loads
        assert read_metadata(path.read_bytes())["variant"] == "int8_weights_copy"
