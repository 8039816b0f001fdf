"""The code holds each fact in one place (issue #17): the variants table, the artifact type, the layering,
and the housekeeping rules. Fast: no conversion."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import videoseal_tflite
from videoseal_tflite.errors import UnknownVariant
from videoseal_tflite.store import variants
from videoseal_tflite.store.artifact import Artifact, Provenance

pytestmark = pytest.mark.fast
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "videoseal_tflite"


def test_variant_table_is_what_every_listing_reads(monkeypatch):
    from videoseal_tflite.build.quantize import recipes, repairs
    from videoseal_tflite.cli.main import build_parser

    extra = variants.VariantSpec("int8_copy", "int8_copy", 1, 0.5, 0.9, repairs=("batch_matmul_float",))
    monkeypatch.setattr(variants, "VARIANT_TABLE", [*variants.VARIANT_TABLE, extra])
    monkeypatch.setitem(recipes.BASE_RECIPES, "int8_copy", recipes.BASE_RECIPES["weight_only_int8"])
    assert variants.variant_names()[-1] == "int8_copy" and "fp32" not in variants.variant_names(quantized_only=True)
    assert variants.order("int8_copy") == len(variants.VARIANT_TABLE) - 1
    assert recipes.base_recipe("int8_copy") == recipes.BASE_RECIPES["weight_only_int8"]
    # the CLI's choices come from the table
    args = build_parser().parse_args(["convert", "--variant", "int8_copy"])
    assert args.variant == ["int8_copy"]
    # repairs that apply are the row's, not the repair's
    failure = "Node number 3 (BATCH_MATMUL) failed to prepare"
    assert repairs.find_repair(failure, "int8_copy", set())[0].name == "batch_matmul_float"
    assert repairs.find_repair("quantized_div", "int8_copy", set()) is None
    with pytest.raises(UnknownVariant, match="known: fp32, fp16"):
        variants.spec("int3")


def test_quality_bars_and_second_opinion_come_from_the_table():
    from videoseal_tflite.build.quantize.variant import Agreement, quality_gap

    int8 = variants.spec("int8")
    assert quality_gap("int8", Agreement(1, 0.0, bit_agreement=int8.detector_min_bit_agreement)) == 0
    assert quality_gap("fp16", Agreement(1, 0.0, watermark_rel_err=0.02)) == pytest.approx(0.01)
    assert {v.name for v in variants.VARIANT_TABLE if v.second_opinion} == {"dynamic_int8", "int8"}


@pytest.mark.parametrize(
    "name,expected",
    [
        ("detector_256_int8.tflite", Artifact("videoseal_0.0", "detector", 256, "int8")),
        (
            "embedder_128_weight_only_int8.random-init-seed0.tflite",
            Artifact("videoseal_0.0", "embedder", 128, "weight_only_int8", "random-init-seed0"),
        ),
    ],
)
def test_artifact_name_both_ways(name, expected, tmp_path):
    parsed = Artifact.parse(Path("videoseal_0.0") / name)
    assert parsed == expected and parsed.filename == name
    assert expected.path(tmp_path) == tmp_path / "videoseal_0.0" / name


@pytest.mark.parametrize(
    "name", ["report.json", "detector_x_int8.tflite", "encoder_256_fp32.tflite", "detector_256_.tflite"]
)
def test_other_files_are_not_artifacts(name):
    assert Artifact.parse(Path("c") / name) is None


def test_find_prefers_real_weights(tmp_path):
    for name in (
        "detector_256_fp32.random-init-seed0.tflite",
        "detector_256_fp32.tflite",
        "embedder_256_fp32.tflite",
        "notes.txt",
    ):
        (tmp_path / name).write_bytes(b"x")
    found = Artifact.find(tmp_path, "detector", "fp32")
    assert [p.name for _, p in found] == ["detector_256_fp32.tflite", "detector_256_fp32.random-init-seed0.tflite"]


def test_provenance_round_trips_and_reads_old_records():
    record = Provenance(
        card="compact",
        part="detector",
        size=128,
        nbits=16,
        variant="int8",
        weights="compact",
        rewrites=({"name": "r", "what": "w", "why": "y"},),
        recipe=[{"regex": ".*"}],
    )
    assert Provenance.from_json(record.to_json()) == record
    assert record.manifest_entry("ab", 3)["sha256"] == "ab"
    old = {**record.to_json(), "rewrites": ["r"], "repairs_applied": ["float_io"], "unknown_field": 1}
    assert Provenance.from_json(old).rewrites == ({"name": "r"},)


def test_runtime_imports_neither_torch_nor_validate():
    code = (
        "import sys, videoseal_tflite.runtime.image, videoseal_tflite.tflite.interpreter, "
        "videoseal_tflite.runtime.video; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('videoseal_tflite.validate')]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_over_60_lines_and_no_line_over_120():
    long_functions, long_lines = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for fn in _functions(ast.parse(text)):
            if fn.end_lineno - fn.lineno + 1 > 60:
                long_functions.append(
                    f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1})"
                )
        long_lines += [
            f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(text.splitlines(), 1) if len(line) > 120
        ]
    assert long_functions == []
    assert long_lines == []


def test_package_docstring_names_functions_that_exist():
    names = re.findall(r"\b([a-z_]+(?:\.[a-z_]+)*\.[A-Za-z_]+)\b", videoseal_tflite.__doc__)
    assert len(names) >= 8
    for dotted in names:
        module_name, _, attr = dotted.rpartition(".")
        module = importlib.import_module(f"videoseal_tflite.{module_name}")
        assert hasattr(module, attr), dotted


def test_no_reference_to_files_outside_the_repository():
    offenders = []
    for path in [
        *PACKAGE.rglob("*.py"),
        *(p for p in (ROOT / "scripts").glob("*") if p.is_file()),
        *(ROOT / "tests").glob("*.py"),
        ROOT / "Makefile",
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(p for p in (ROOT / "experiments").rglob("*") if p.is_file() and "__pycache__" not in p.parts),
    ]:
        if path.name == "test_structure.py":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.name}: {m}" for m in re.findall(r"\.\./shared|FINDINGS(?:\.md)?", text)]
    assert offenders == []


def test_version_is_single_sourced():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert videoseal_tflite.__version__ == pyproject["project"]["version"]
    assert not hasattr(importlib.import_module("videoseal_tflite.build.cards").Card, "watermark_channels")
