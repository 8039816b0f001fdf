"""scripts/litert_gpu_check.py: LiteRT CompiledModel on the GPU accelerator vs. the CPU, and its Markdown record.

The run uses the compact card's files from the shared `compact_artifacts` fixture (no conversion of its own)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "litert_gpu_check.py"
H100_RECORD = ROOT / "artifacts" / "bench" / "litert_gpu_h100.json"


def _has_gpu() -> bool:
    return bool(shutil.which("nvidia-smi")) or Path("/dev/dri").exists() or any(Path("/dev").glob("nvidia*"))


def _script(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def test_cpu_is_the_reference_and_a_failed_gpu_load_keeps_the_runtime_error(compact_artifacts, tmp_path):
    model = next(compact_artifacts.out_dir.glob("detector_128_int8*.tflite"))
    out = tmp_path / "gpu.json"
    _script("--out", out, "--settings", "CPU,GPU", "--runs", 2, "--warmup", 0, model)
    cpu, gpu = json.loads(out.read_text())["results"]
    assert (cpu["accelerator"], gpu["accelerator"]) == ("CPU", "GPU")
    assert cpu["loaded"] and cpu["ran"] and cpu["outputs_finite"] and cpu["max_abs_diff_vs_cpu"] == 0.0
    if _has_gpu():  # a GPU machine: the GPU run must load and run, or this test fails with the runtime's text
        assert gpu["loaded"] and gpu["ran"] and gpu["outputs_finite"], gpu.get("error")
    else:  # CPU-only machine: the GPU accelerator cannot load, and the runtime's own text says so
        assert gpu["loaded"] is False and gpu["error_stage"] == "load"
        assert isinstance(gpu["error"], str) and gpu["error"].strip()


@pytest.mark.fast
def test_markdown_record_has_a_row_per_result(tmp_path):
    record = json.loads(H100_RECORD.read_text())
    md_path = tmp_path / "gpu.md"
    _script("--render", H100_RECORD, "--markdown", md_path, "--title", "T")
    lines = md_path.read_text().splitlines()
    assert lines[0] == "# T" and "ai_edge_litert 2.3.0" in lines[2] and "nvidia_icd.json" in lines[2]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| file |")]
    assert len(rows) == len(record["results"])
    for row, result in zip(rows, record["results"]):
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        assert len(cells) == 7 and cells[:2] == [result["file"], result["accelerator"]]
        assert (cells[-1] == "-") == (not result.get("error")) and "\n" not in cells[-1] and len(cells[-1]) <= 160


@pytest.mark.fast
def test_script_imports_neither_torch_nor_the_package():
    tree = ast.parse(SCRIPT.read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots - set(sys.stdlib_module_names) == {"numpy", "ml_dtypes", "ai_edge_litert"}
