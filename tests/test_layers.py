"""The package is layered (issue #27): one folder per role, each importing only the layers below it, no cycle,
and every third-party import declared in the install of the layer that makes it. Fast: reads source only."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "videoseal_tflite"

# layer -> the layers it may import (besides itself). Lowest first; the runtime needs no build code, the build no
# validation, and only the CLI sees everything.
ALLOWED = {
    "errors": set(),
    "console": set(),
    "store": {"errors", "console"},
    "tflite": {"errors", "console", "store"},
    "runtime": {"errors", "console", "store", "tflite"},
    "build": {"errors", "console", "store", "tflite", "runtime"},
    "validate": {"errors", "console", "store", "tflite", "runtime", "build"},
    "training": {"errors", "console", "store", "tflite", "runtime", "build"},
    "bench": {"errors", "console", "store", "tflite", "runtime", "build", "validate"},
    "cli": {"errors", "console", "store", "tflite", "runtime", "build", "validate", "bench"},
    "__init__": {"runtime", "build"},
}
# the install each layer belongs to (pyproject: the base dependencies, or an extra)
INSTALL = {
    "errors": "base",
    "console": "base",
    "store": "base",
    "tflite": "base",
    "runtime": "base",
    "cli": "base",
    "__init__": "base",
    "build": "convert",
    "validate": "convert",
    "training": "train",
    "bench": "bench",
}
# import name -> distribution name, where they differ
DISTRIBUTION = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "tensorflow": "tensorflow-cpu",
    "cv2": "opencv-python-headless",
    "imwatermark": "invisible-watermark",
}
# heavy imports that a base layer makes only inside the function that needs them, named here with their extra
OPTIONAL_IN_BASE = {"tensorflow": "convert"}  # tflite.load_check: tf.lite as a second opinion, asked for by name


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at top level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` and try/except blocks at the top count as top level
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from package import module` imports that module (its package's __init__ only on the way)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (ROOT / sub.replace(".", "/")).with_suffix(".py").is_file()
                found.append((sub if is_module else node.module, node.lineno, id(node) in top))
        elif isinstance(node, ast.ImportFrom):
            found.append((f"relative:{node.module}", node.lineno, id(node) in top))
    return found


def _package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_sits_in_a_known_layer():
    assert {_layer(_module_name(p)) for p in _package_files()} <= set(ALLOWED)


def test_imports_follow_the_layer_table():
    wrong = []
    for path in _package_files():
        module = _module_name(path)
        for target, line, _ in _imports(path):
            if target.startswith("relative:"):
                wrong.append(f"{module}:{line} uses a relative import (absolute names keep the graph readable)")
            elif target.startswith("videoseal_tflite."):
                src, dst = _layer(module), _layer(target)
                if dst != src and dst not in ALLOWED[src]:
                    wrong.append(f"{module}:{line} ({src}) imports {target} ({dst})")
    assert wrong == []


def test_no_import_cycle_between_modules():
    graph = defaultdict(set)
    names = {_module_name(p) for p in _package_files()}
    for path in _package_files():
        for target, _, _ in _imports(path):
            if target in names and target != _module_name(path):
                graph[_module_name(path)].add(target)

    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [node, nxt]) if nxt in stack else nxt)
            elif nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = "done"

    for name in sorted(names):
        if name not in state:
            visit(name, [])
    # a package's __init__ re-exporting its own submodules is not a cycle of logic
    assert [c for c in cycles if not c.startswith("videoseal_tflite ->")] == []


def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        out = set()
        for req in requirements:
            name = req.split("==")[0].split("[")[0].strip().lower()
            if name == "videoseal-tflite":  # an extra that builds on others: videoseal-tflite[convert,peers]
                for extra in req.split("[")[1].rstrip("]").split(","):
                    out |= names(project["optional-dependencies"][extra.strip()])
            else:
                out.add(name)
        return out

    declared = {"base": names(project["dependencies"])}
    for extra, reqs in project["optional-dependencies"].items():
        declared[extra] = declared["base"] | names(reqs)
    return declared


def test_every_third_party_import_is_declared_in_its_install():
    declared, missing = _declared(), []
    stdlib = set(sys.stdlib_module_names)
    for path in _package_files():
        module = _module_name(path)
        install = INSTALL[_layer(module)]
        for target, line, at_top in _imports(path):
            top = target.split(".")[0]
            if top in stdlib or top in ("videoseal_tflite", "__future__") or top.startswith("relative:"):
                continue
            dist = DISTRIBUTION.get(top, top).replace("_", "-").lower()
            if install == "base" and top in OPTIONAL_IN_BASE:
                assert not at_top, f"{module}:{line}: {top} is optional in the base install; import it where used"
                dist_install = OPTIONAL_IN_BASE[top]
            else:
                dist_install = install
            if dist not in declared[dist_install]:
                missing.append(f"{module}:{line} imports {top} ({dist}), not declared for [{dist_install}]")
    assert missing == []


def test_base_layers_load_without_torch_or_build_code():
    """What `pip install videoseal-tflite` runs (the CLI's embed/detect/inspect/verify) never imports torch."""
    code = (
        "import sys, videoseal_tflite, videoseal_tflite.cli.main, videoseal_tflite.runtime.video, "
        "videoseal_tflite.tflite.inspect, videoseal_tflite.validate.verify; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'videoseal', 'yaml', 'skimage')"
        " or m.startswith('videoseal_tflite.build')]; print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
