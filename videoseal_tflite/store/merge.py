"""Merge artifact shards (one `convert --card C --part P --artifacts SHARD` each, e.g. a CI matrix job) into one
release whose files and manifest are byte-identical to a single `convert` of the same cards (issue #15).

- every shard's files are checked against the shard's own manifest first (a damaged shard stops the merge);
- two shards holding the same file with different hashes stop the merge, naming the file;
- nothing is written until every check passed; files are copied atomically, the manifest written last;
- each card's `quantize_log.json` (which variants failed, and why) is merged too, so `validate` still
  reports a variant that failed to build in its shard.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from videoseal_tflite.errors import EXIT_CHECK_FAILED, InvalidShard, VsTfliteError
from videoseal_tflite.store.atomic import atomic_path, ensure_writable_dir, write_text_atomic
from videoseal_tflite.store.lock import output_lock
from videoseal_tflite.store.manifest import MANIFEST_NAME, write_manifest
from videoseal_tflite.store.staleness import file_sha256

QUANTIZE_LOG = "quantize_log.json"


class MergeConflict(VsTfliteError):
    """Two shards disagree about one file, or a shard does not match its own manifest."""

    exit_code = EXIT_CHECK_FAILED


def _read_shard(shard: Path) -> dict:
    path = Path(shard) / MANIFEST_NAME
    if not path.is_file():
        raise InvalidShard(f"{shard} is not an artifact shard: no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidShard(f"{path} is not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise InvalidShard(f"{path} is not a readable manifest (no 'files' mapping)")
    return manifest


def plan_merge(shards: list[Path]) -> tuple[dict[str, dict], dict[str, Path], dict[str, str]]:
    """(merged manifest entries, where each file comes from, tool versions); raises MergeConflict."""
    entries: dict[str, dict] = {}
    sources: dict[str, Path] = {}
    tools: dict[str, str] = {}
    for shard in shards:
        manifest = _read_shard(shard)
        tools = tools or manifest.get("tool_versions", {})
        for rel, entry in manifest["files"].items():
            path = Path(shard) / rel
            if not path.is_file() or file_sha256(path) != entry.get("sha256"):
                raise MergeConflict(f"{path} is missing or does not match its shard's manifest")
            if rel in entries and entries[rel]["sha256"] != entry["sha256"]:
                a, b = entries[rel]["sha256"][:12], entry["sha256"][:12]
                raise MergeConflict(f"{rel} differs between {sources[rel]} and {shard} (sha256 {a}... vs {b}...)")
            entries[rel], sources[rel] = entry, path
    if not entries:
        raise InvalidShard("the shards hold no files")
    return entries, sources, tools


def _merged_logs(shards: list[Path], cards: set[str]) -> dict[str, dict]:
    logs: dict[str, dict] = {}
    for card in sorted(cards):
        merged: dict = {}
        for shard in shards:
            path = Path(shard) / card / QUANTIZE_LOG
            if path.is_file():
                merged.update(json.loads(path.read_text(encoding="utf-8")))
        if merged:
            logs[card] = merged
    return logs


def merge_shards(shards: list[Path], out_root: Path) -> list[str]:
    """Merge `shards` into `out_root` (a release already there counts as one more shard); returns the merged
    files (relative paths), sorted."""
    root = Path(out_root)
    shards = [Path(s) for s in shards] + ([root] if (root / MANIFEST_NAME).is_file() else [])
    entries, sources, tools = plan_merge(shards)
    ensure_writable_dir(root)
    with output_lock(root):
        for rel in sorted(entries):
            target = root / rel
            if sources[rel].resolve() == target.resolve():
                continue
            ensure_writable_dir(target.parent)
            with atomic_path(target) as tmp:
                shutil.copyfile(sources[rel], tmp)
        for card, log in _merged_logs(shards, {Path(rel).parts[0] for rel in entries}).items():
            write_text_atomic(root / card / QUANTIZE_LOG, json.dumps(log, indent=2, sort_keys=True) + "\n")
        write_manifest(root, entries, tools)
    return sorted(entries)
