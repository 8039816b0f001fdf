"""The README is the front page and docs/ the rest (issue #27): the README stays short, every relative link in
README.md, docs/ and experiments/ resolves (to a file, and to a heading where it names one), the error table names
every error class with its exit code, the performance page is what the bench records give, and the README's Python
example runs on real .tflite files and reads back its message."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 250
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "experiments").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = ("http://", "https://", "mailto:")


def _prose(text: str) -> str:
    """The page without its fenced code blocks and inline code spans (links inside them are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


@pytest.mark.fast
def test_readme_is_at_most_250_lines():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move the rest to docs/"


@pytest.mark.fast
def test_readme_links_every_docs_page():
    linked = {target.split("#")[0] for target in LINK.findall(_prose(README.read_text(encoding="utf-8")))}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} | {"experiments/README.md"}
    assert pages - linked == set()


@pytest.mark.fast
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if target.startswith(EXTERNAL):
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert broken == []


# `tests/test_x.py::test_y`, or `::test_z` of the file named before it
TEST_REFERENCE = re.compile(r"`(tests/test_\w+\.py)?::(\w+)")


def _test_names(path: Path) -> set[str]:
    return {
        node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.FunctionDef)
    }


@pytest.mark.fast
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_a_page_names_exists(page):
    """A promise names the test behind it (docs/validation.md's guarantees table and others): that test exists."""
    missing, current = [], None
    for file, name in TEST_REFERENCE.findall(page.read_text(encoding="utf-8")):
        current = file or current
        if current is None or not (ROOT / current).is_file() or name not in _test_names(ROOT / current):
            missing.append(f"{current}::{name}")
    assert missing == []


def _error_classes() -> dict[str, type]:
    """Every VsTfliteError subclass defined in the package, found in the source, then imported."""
    bases, where = {"VsTfliteError"}, {"VsTfliteError": "videoseal_tflite.errors"}
    sources = {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "videoseal_tflite").rglob("*.py"))}
    grown = True
    while grown:
        grown = False
        for path, tree in sources.items():
            for node in ast.walk(tree):
                names = {getattr(b, "id", getattr(b, "attr", None)) for b in getattr(node, "bases", ())}
                if isinstance(node, ast.ClassDef) and node.name not in where and names & bases:
                    where[node.name] = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                    bases.add(node.name)
                    grown = True
    return {name: getattr(importlib.import_module(module), name) for name, module in where.items()}


@pytest.mark.fast
def test_error_table_names_every_error_class_with_its_exit_code():
    table = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", table, re.MULTILINE))
    classes = _error_classes()
    assert len(classes) >= 15
    assert {name: str(cls.exit_code) for name, cls in classes.items()} == rows


@pytest.mark.fast
def test_performance_page_is_what_the_bench_records_give():
    spec = importlib.util.spec_from_file_location("readme_performance", ROOT / "scripts" / "readme_performance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0


def _python_example() -> str:
    match = re.search(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert match, "README.md has no ```python block"
    return match.group(1)


def test_readme_python_example_runs(default_fp32, tmp_path):
    """The example verbatim, in a folder holding the default card's FP32 files where it names them and a photo."""
    from PIL import Image
    from skimage import data

    code = _python_example()
    assert 5 <= len(code.strip().splitlines()) <= 15
    models = re.findall(r"\"(artifacts/[^\"]+\.tflite)\"", code)
    assert sorted(Path(m).name.split("_")[0] for m in models) == ["detector", "embedder"]
    for model in models:
        (tmp_path / model).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / model).symlink_to(default_fp32[Path(model).name.split("_")[0]])
    photo = re.findall(r"load_image\(\"([^\"]+)\"\)", code)[0]
    Image.fromarray(data.astronaut()).save(tmp_path / photo)
    assert re.search(r"parse_message\(hex_text=\"[0-9a-f]{16}\", nbits=64\)", code), "the card's 64 bits"

    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    matching, verdict = run.stdout.strip().splitlines()[-2:]
    assert re.fullmatch(r"\d+ of 64 bits match", matching) and int(matching.split()[0]) >= 56, matching
    assert verdict.startswith("watermarked (p-value"), verdict
