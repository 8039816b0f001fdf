"""artifacts/manifest.json: every file with its hash, provenance, recipe and repairs. Written atomically."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from videoseal_tflite.store.artifact import DEFAULT_CARD
from videoseal_tflite.store.atomic import write_text_atomic
from videoseal_tflite.store.lock import updating

MANIFEST_NAME = "manifest.json"
_TOOLS = ("torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert", "videoseal", "videoseal-tflite")


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return {"files": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"files": {}}
    return data if isinstance(data.get("files"), dict) else {"files": {}}


def recorded_sha256(path: Path) -> tuple[Path, str] | None:
    """(manifest, sha256) that the release manifest records for a file laid out as `<root>/<card>/<file>`, or None
    when no manifest beside it lists the file (a file used on its own is not checked)."""
    path = Path(path).resolve()
    root = path.parent.parent
    entry = read_manifest(root)["files"].get(path.relative_to(root).as_posix())
    if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
        return root / MANIFEST_NAME, entry["sha256"]
    return None


def update_manifest(root: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Merge `entries` (keyed by path relative to `root`) into the manifest; drop entries whose file is gone.
    One process at a time (`updating`): the parts of a card are built in processes of their own."""
    root = Path(root)
    with updating(root):
        manifest = read_manifest(root)
        files = {k: v for k, v in manifest["files"].items() if (root / k).is_file()}
        files.update(entries)
        return write_manifest(root, files)


def write_manifest(root: Path, files: dict[str, dict[str, Any]], tools: dict[str, str] | None = None) -> Path:
    """The manifest with exactly `files`, entries sorted (the same bytes whichever order they were built in), and
    `default_card`: the card a reader shows first when the release holds several (the web page; `make convert`'s
    default, store.artifact.DEFAULT_CARD, so the page does not keep its own copy of that fact)."""
    manifest = {
        "schema": 1,
        "default_card": DEFAULT_CARD,
        "tool_versions": tools or tool_versions(),
        "files": dict(sorted(files.items())),
    }
    target = Path(root) / MANIFEST_NAME
    write_text_atomic(target, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target
