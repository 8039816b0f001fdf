"""`inspect` on real conversions: BATCH_MATMUL census, the seed bug reproduced, and load checks."""

from __future__ import annotations

import json

from videoseal_tflite.build.quantize.recipes import base_recipe
from videoseal_tflite.cli.main import main
from videoseal_tflite.tflite.inspect import inspect_model


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

    # our recipe data is the library's recipe, plus one rule that keeps depthwise convs float (XNNPACK has no
    # hybrid depthwise kernel)
    library = json.loads(json.dumps(recipe.dynamic_wi8_afp32(), default=lambda e: e.value))
    ours = base_recipe("dynamic_int8")
    assert ours[: len(library)] == library
    assert ours[len(library) :] == [{"regex": ".*", "operation": "DEPTHWISE_CONV_2D", "algorithm_key": "no_quantize"}]
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
    from videoseal_tflite.tflite.load_check import load_check

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


def test_xnnpack_coverage_adds_up_and_names_reference_kernels(compact_artifacts, unrewritten_detector_00):
    """Read from the interpreter's node list after delegation: N of M, the ops XNNPACK left, Q/DQ crossings."""
    from videoseal_tflite.tflite.coverage import xnnpack_coverage

    files = {(p.name.split("_")[0], p.name.split("_", 2)[2].split(".")[0]): p
             for p in compact_artifacts.out_dir.glob("*.tflite")}  # fmt: skip
    for (part, variant), path in sorted(files.items()):
        cov = xnnpack_coverage(path)
        static = inspect_model(path, load=False)
        assert cov.nodes == len(static.ops), path.name
        assert cov.delegated + len(cov.reference_ops) == cov.nodes and cov.partitions >= 1
        print(path.name, cov.line())
    detector = xnnpack_coverage(files[("detector", "fp32")])
    # the pixel decoder's reflection pad is the reflect_pad_concat rewrite's slices + concatenation: all XNNPACK
    assert detector.reference_ops == () and detector.partitions == 1 and detector.delegated == detector.nodes
    assert detector.quantize == detector.dequantize == 0
    int8 = xnnpack_coverage(files[("detector", "int8")])
    assert int8.quantize > 0 and int8.dequantize > 0 and int8.crossings == int8.quantize + int8.dequantize
    # known reference-kernel ops: the norms' int8 ADD/SUB of a constant (epsilon) whose scale is ~1e-5 of the
    # activation's, a rescale XNNPACK's int8 add does not take; named with their node ids
    ops = {op.node: op for op in inspect_model(files[("detector", "int8")], load=False).ops}
    assert int8.reference_ops and {op for _, op in int8.reference_ops} <= {"ADD", "SUB"}
    for node, op in int8.reference_ops:
        assert ops[node].op == op and any(i.const for i in ops[node].inputs), (node, op)
        assert {i.dtype for i in ops[node].inputs} == {"INT8"}, (node, op)
    # without the rewrites, the MIRROR_PAD is back on the built-in kernel, named with its node
    unrewritten = xnnpack_coverage(unrewritten_detector_00.path)
    pads = [op.node for op in inspect_model(unrewritten_detector_00.path, load=False).ops if op.op == "MIRROR_PAD"]
    assert pads and set(pads) <= {node for node, op in unrewritten.reference_ops if op == "MIRROR_PAD"}


def test_inspect_prints_coverage(compact_artifacts, capsys):
    path = next(compact_artifacts.out_dir.glob("detector_128_int8*.tflite"))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "XNNPACK:" in out and "ADD (node" in out


def test_gpu_static_check_is_labelled_and_parsed(compact_artifacts):
    from videoseal_tflite.tflite.gpu import gpu_static_check, parse_analyzer

    path = next(compact_artifacts.out_dir.glob("detector_128_int8*.tflite"))
    result = gpu_static_check(path)
    assert result["check"].startswith("static check") and result["verdict"] == "compatible"
    # the analyzer's own format (tensorflow/lite/python/analyzer_wrapper/model_analyzer.cc)
    text = ("Subgraph#0 main(T#0) -> [T#3]\n  Op#0 CUMSUM(T#0, T#1) -> [T#2]\n"
            "GPU COMPATIBILITY WARNING: Not supported op CUMSUM\n  Op#1 ADD(T#2, T#0) -> [T#3]\n"
            "\nGPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 0\n")  # fmt: skip
    parsed = parse_analyzer(text)
    assert parsed == {"verdict": "incompatible", "blocking_ops": [{"node": 0, "op": "CUMSUM",
                                                                   "why": "Not supported op CUMSUM"}]}  # fmt: skip


def test_op_profile_agrees_with_the_execution_plan(compact_artifacts):
    """LiteRT's own profiler (ctypes on libLiteRt.so): every profiled run recorded, the operators' time a real part
    of the run's, and the built-in-kernel nodes it timed are exactly the ones `xnnpack_coverage` found undelegated
    (two readings of the runtime that share no code); int8 files run int8 XNNPACK kernels, FP32 files none."""
    from videoseal_tflite.tflite.coverage import xnnpack_coverage
    from videoseal_tflite.tflite.op_profile import profile_ops

    for variant in ("fp32", "int8"):
        path = next(compact_artifacts.out_dir.glob(f"detector_128_{variant}.tflite"))
        profile = profile_ops(path, threads=2, warmup=2, runs=6)
        assert profile.runs == 6 and profile.run_ms > 0
        assert 0.3 * profile.run_ms < profile.op_ms < 1.5 * profile.run_ms, (profile.op_ms, profile.run_ms)
        builtin = {(o.node, o.op) for o in profile.ops if o.kernel == "builtin"}
        assert builtin == set(xnnpack_coverage(path).reference_ops), variant
        builtin_types = {r["op"] for r in profile.by_type() if r["kernel"] == "builtin"}
        assert builtin_types == ({"ADD", "SUB"} if variant == "int8" else set()), builtin_types
        quantized_kernels = [o for o in profile.ops if "QS8" in o.op or "QC8" in o.op]
        assert bool(quantized_kernels) == (variant == "int8"), variant


def test_inspect_profile_prints_shares_and_refuses_other_runtimes(compact_artifacts, capsys, monkeypatch):
    import importlib.metadata

    path = next(compact_artifacts.out_dir.glob("embedder_128_int8.tflite"))
    assert main(["inspect", str(path), "--no-load", "--profile", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert "op profile:" in out and "Convolution (NHWC, QC8) IGEMM  [xnnpack]" in out
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "9.9.0" if n == "ai-edge-litert" else real(n))
    assert main(["inspect", str(path), "--no-load", "--profile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ai-edge-litert 9.9.0 is installed" in err[0]
