"""`videoseal-tflite verify`: every file the manifest lists is there, unchanged, and loads; nothing extra."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from videoseal_tflite.store.artifact import PARTS, Artifact
from videoseal_tflite.store.manifest import MANIFEST_NAME, read_manifest
from videoseal_tflite.tflite.load_check import load_check


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # missing | tampered | size | extra | load | no_manifest | corrupt_manifest | missing_part
    detail: str

    def line(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


def _missing_parts(root: Path, files: dict) -> list[Problem]:
    """A card whose manifest lists one part but not the other: a shard that never arrived (or never ran)."""
    parts: dict[str, set[str]] = {}
    for rel in files:
        art = Artifact.parse(root / rel)
        if art is not None:
            parts.setdefault(art.card, set()).add(art.part)
    return [
        Problem(
            f"{card}/", "missing_part", f"no {part} in the manifest (card {card} has only its {' and '.join(have)})"
        )
        for card, have in sorted(parts.items())
        for part in PARTS
        if part not in have
    ]


def verify_artifacts(root: Path, load: bool = True) -> tuple[int, list[Problem]]:
    """Returns (files checked, problems). Loads run in child processes."""
    root = Path(root)
    if not (root / MANIFEST_NAME).is_file():
        return 0, [Problem(str(root / MANIFEST_NAME), "no_manifest", "no manifest.json: run `make convert` first")]
    try:
        parsed = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        if not isinstance(parsed, dict) or not isinstance(parsed.get("files"), dict):
            raise ValueError("no 'files' mapping")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        return 0, [
            Problem(str(root / MANIFEST_NAME), "corrupt_manifest", f"manifest.json is not a readable manifest ({exc})")
        ]
    files = read_manifest(root)["files"]
    problems: list[Problem] = []
    for rel, entry in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            problems.append(Problem(rel, "missing", "listed in the manifest but not on disk"))
            continue
        data = path.read_bytes()
        if entry.get("bytes") is not None and len(data) != entry["bytes"]:
            problems.append(Problem(rel, "size", f"{len(data)} bytes, manifest says {entry['bytes']}"))
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.get("sha256"):
            problems.append(
                Problem(rel, "tampered", f"sha256 {digest[:16]}..., manifest says {str(entry.get('sha256'))[:16]}...")
            )
            continue
        if load:
            result = load_check(path)
            if not result.loads:
                problems.append(Problem(rel, "load", f"does not load: {result.error}"))
    problems += _missing_parts(root, files)
    listed = set(files)
    for path in sorted(root.rglob("*.tflite")):
        rel = str(path.relative_to(root))
        if rel not in listed and ".tmp-" not in path.name:
            problems.append(Problem(rel, "extra", "not in the manifest"))
    return len(files), problems
