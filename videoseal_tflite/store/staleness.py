"""Redo only what is missing or stale: every artifact records the hash of everything it was built from.

`input_hash` covers the step's own inputs (card file, weights, part, variant, recipe, calibration set, ...),
the tool versions and the source of the layers that write the files (`build/`, `tflite/`, `store/`), so a
changed card, weight file, library or line of build code makes the file stale; an edit to the runtime, the
validation, the bench or the CLI does not. A file is reused only when the manifest has it with the same
input hash *and* its bytes still match the manifest's sha256 (a tampered or truncated file is rebuilt).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from videoseal_tflite.store.manifest import read_manifest, tool_versions

PACKAGE_DIR = Path(__file__).resolve().parents[1]
BUILD_LAYERS = ("build", "tflite", "store")  # what decides a built file's bytes


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over the build layers' .py and .yaml sources (not the bundled weights: they are an input of their own)."""
    digest = hashlib.sha256()
    sources = (p for layer in BUILD_LAYERS for p in (PACKAGE_DIR / layer).rglob("*"))
    for path in sorted(p for p in sources if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def input_hash(step: str, **inputs: Any) -> str:
    record = {"step": step, "inputs": inputs, "tools": tool_versions(), "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def up_to_date(root: Path, target: Path, expected: str) -> dict[str, Any] | None:
    """The manifest entry of `target` when it can be reused as is, else None."""
    entry = read_manifest(root)["files"].get(Path(target).relative_to(root).as_posix())
    if not entry or entry.get("input_hash") != expected or not Path(target).is_file():
        return None
    return entry if file_sha256(target) == entry.get("sha256") else None
