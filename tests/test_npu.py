"""The NPU extra (validate/npu.py): works without it (no targets, `inspect --npu` says `make setup-npu`, exit 2),
parses the compiler's own text, and, where .venv-npu exists, compiles a real int8 file through LiteRT's AOT path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from videoseal_tflite.cli.main import main
from videoseal_tflite.tflite import npu

# apply_plugin_main's output, trimmed, as ai-edge-litert 2.3.0 printed it here (README, "NPU (offline AOT compile)")
QUALCOMM_TEXT = """apply_plugin failed to apply plugin. See /tmp/tmpx.error for details.
[LITERT_TOOLS:APPLY] Loading plugins from: /v/ai_edge_litert/vendors/qualcomm/compiler
WARNING: [compiler_plugin.cc:312] Failed to load plugin at: /v/libLiteRtCompilerPlugin_Qualcomm.so with error: \
ERROR: [litert/compiler/plugin/compiler_plugin.cc:259]
└ Could not load shared library /v/libLiteRtCompilerPlugin_Qualcomm.so: libQnnHtp.so: cannot open shared object \
file: No such file or directory.
[LITERT_TOOLS:APPLY] Loaded 0 plugins
[LITERT_TOOLS:APPLY] \tFailed
"""
MEDIATEK_TEXT = """[LITERT_TOOLS:APPLY] Starting Applying plugin...
INFO: [neuron_adapter_api.cc:309] libneuron_sys_util.mtk.so not found
ERROR: [neuron_adapter_api.cc:65] Failed to load NeuronAdapter shared library: Failed to load NeuronAdapter shared \
library
ERROR: [apply_plugin.cc:455] ERROR: [litert/compiler/plugin/compiler_plugin.cc:483]
"""
INTEL_NPU_TEXT = """INFO: [compiler_plugin.cc:524] Partition strategy: 0
INFO: [compiler_plugin.cc:742] Partitioned subgraph<0>, selected 470 ops, from a total of 470 ops. resulted in 1 \
partitions.
INFO: [compiler_plugin.cc:742] Partitioned subgraph<1>, selected 7 ops, from a total of 10 ops. resulted in 2 \
partitions.
INFO: [openvino_compile_context.cc:77] Using Intel OpenVINO device: NPU
ERROR: [openvino_compiler_plugin.cc:714] Exception in compilation: Exception from src/inference/src/cpp/core.cpp:117:
VCL compiler loading failed, aborting. Error: Exception from src/plugins/intel_npu/src/utils/src/vcl/vcl_api.cpp:22:
Cannot load library "/v/openvino/libs/libopenvino_intel_npu_compiler_loader.so": /v/openvino/libs/\
libopenvino_intel_npu_compiler_loader.so: cannot open shared object file: No such file or directory
ERROR: [apply_plugin.cc:455] ERROR: [litert/compiler/plugin/compiler_plugin.cc:504]
"""

HAS_EXTRA = npu.NPU_PYTHON.exists()
NO_EXTRA_REASON = ".venv-npu absent: the NPU extra is optional (`make setup-npu`); CI does not install it"


@pytest.fixture
def no_extra(monkeypatch):
    """NPU_PYTHON pointed at this interpreter: the main venv, which must never hold an SDK package."""
    monkeypatch.setenv(npu.NPU_PYTHON_ENV, sys.executable)


@pytest.fixture
def some_file(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"\x00" * 64)
    return path


@pytest.mark.fast
def test_main_venv_has_no_sdk_and_offers_no_target(no_extra):
    assert npu.local_targets() == []  # the SDK packages live in .venv-npu only
    assert npu.npu_targets() == []
    assert npu.npu_block([]) is None
    info = npu.npu_info()
    assert info is not None and info["targets"] == [] and info["python"] == sys.executable
    assert not any(s["installed"] for s in info["sdks"].values())


@pytest.mark.fast
@pytest.mark.parametrize("python", ["self", "missing"])
def test_inspect_npu_without_the_extra_is_one_line_and_exit_2(monkeypatch, capsys, some_file, tmp_path, python):
    monkeypatch.setenv(npu.NPU_PYTHON_ENV, sys.executable if python == "self" else str(tmp_path / "no" / "python"))
    assert main(["inspect", str(some_file), "--npu", "qualcomm"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().count("\n") == 0
    assert "make setup-npu" in err and "NpuUnavailable" in err


@pytest.mark.fast
def test_inspect_npu_unknown_target_and_missing_file(no_extra, capsys, some_file, tmp_path):
    assert main(["inspect", str(some_file), "--npu", "snapdragon"]) == 2
    assert "unknown NPU target 'snapdragon'" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "absent.tflite"), "--npu", "qualcomm"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.fast
def test_child_without_the_extra_says_setup_npu(some_file):
    cmd = [sys.executable, "-m", "videoseal_tflite.tflite.npu", str(some_file), "--target", "qualcomm", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == npu.SETUP_HINT


@pytest.mark.fast
def test_partition_lines_and_op_split():
    stats = npu.parse_partitions(INTEL_NPU_TEXT)
    assert stats == [
        {"subgraph": 0, "offloaded_ops": 470, "total_ops": 470, "partitions": 1},
        {"subgraph": 1, "offloaded_ops": 7, "total_ops": 10, "partitions": 2},
    ]
    assert npu.op_split(stats) == {"offloaded_ops": 477, "cpu_fallback_ops": 3, "total_ops": 480, "partitions": 3}
    assert npu.op_split([]) == {"offloaded_ops": None, "cpu_fallback_ops": None, "total_ops": None, "partitions": None}
    assert npu.parse_partitions(QUALCOMM_TEXT) == []


@pytest.mark.fast
def test_headline_is_the_compilers_most_specific_line():
    assert npu.headline(QUALCOMM_TEXT).startswith("Could not load shared library")
    assert "libQnnHtp.so: cannot open shared object file" in npu.headline(QUALCOMM_TEXT)
    assert npu.headline(MEDIATEK_TEXT).startswith("ERROR: [neuron_adapter_api.cc:65] Failed to load NeuronAdapter")
    assert "libopenvino_intel_npu_compiler_loader.so: cannot open" in npu.headline(INTEL_NPU_TEXT)
    assert npu.headline("ERROR: [apply_plugin.cc:455] ERROR: [litert/compiler/plugin/compiler_plugin.cc:483]\nlast")
    assert npu.headline("") == "no output"


@pytest.mark.fast
def test_compiler_text_reads_and_removes_the_error_file(tmp_path):
    log = tmp_path / "tmpab12.error"
    log.write_text(MEDIATEK_TEXT)
    message = f"apply_plugin failed to apply plugin. See {log} for details."
    text = npu.compiler_text(message)
    assert text.startswith(message) and "NeuronAdapter" in text
    assert not log.exists()
    assert npu.compiler_text("something else") == "something else"


@pytest.mark.fast
def test_record_lines_round_trip_and_format():
    rec = {
        "file": "d.tflite",
        "input_bytes": 10,
        "target": "intel_npu",
        "target_id": "IntelOpenVINO_LNL",
        "device": "NPU",
        "compiled": False,
        "error": npu.headline(INTEL_NPU_TEXT),
        **npu.op_split(npu.parse_partitions(INTEL_NPU_TEXT)),
        "compiled_bytes": None,
        "run": None,
    }
    stdout = "INFO: noise\n" + json.dumps(rec) + "\n{not json\n" + json.dumps(rec | {"target": "qualcomm"}) + "\n"
    got = npu.parse_record_line(stdout)
    assert [r["target"] for r in got] == ["intel_npu", "qualcomm"] and got[0] == rec
    text = npu.format_record(rec)
    assert "compiled: no" in text and "477/480 to the vendor in 3 partition(s), 3 left to the CPU fallback" in text
    assert "before the compile failed" in text and "libopenvino_intel_npu_compiler_loader.so" in text


def _int8(compact_artifacts, part):
    return compact_artifacts.variant(part, "int8").path


@pytest.mark.skipif(not HAS_EXTRA, reason=NO_EXTRA_REASON)
def test_aot_compile_compact_int8_with_the_extra(compact_artifacts, monkeypatch):
    monkeypatch.delenv(npu.NPU_PYTHON_ENV, raising=False)
    info = npu.npu_info()
    assert info and "intel_cpu" in info["targets"]
    path = _int8(compact_artifacts, "detector")
    wanted = [t for t in ("qualcomm", "intel_npu", "intel_cpu") if t in info["targets"]]
    records = {r["target"]: r for r in npu.compile_in_child([path], wanted)}
    cpu = records["intel_cpu"]  # OpenVINO's CPU device: compiles and runs on any x86 machine
    assert cpu["compiled"] and cpu["compiled_bytes"] > 0 and cpu["error"] is None
    assert cpu["total_ops"] > 0 and cpu["offloaded_ops"] + cpu["cpu_fallback_ops"] == cpu["total_ops"]
    assert cpu["run"]["ran"] and cpu["run"]["fully_accelerated"]
    assert cpu["run"]["vs_tflite"]["bit_logits"]["rel_l2_err"] < 0.25
    sdks = info["sdks"]
    for target, dist in (("qualcomm", "ai-edge-litert-sdk-qualcomm"), ("intel_npu", "ai-edge-litert-sdk-intel")):
        if target in records and not sdks[dist].get("sdk_libs"):  # the vendor download did not happen at install
            rec = records[target]
            assert not rec["compiled"] and "cannot open shared object file" in rec["error"]
