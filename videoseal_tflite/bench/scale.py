"""`videoseal-tflite bench --validate-scale`: does `validate --images DIR` keep its memory flat as the set grows?

The card's FP32 embedder and detector (the files do not matter here, the number of images does) are validated on
generated folders of 16 and of `large` PNGs (160x120; 64 distinct procedural images, copied under new names),
one message per image, processing size and full resolution, with 1 and 2 worker processes. Each run is
a child process; its peak RSS is its own VmHWM (`peak_rss.py`), the workers' is the largest VmHWM that a
worker reported (`report.json`, `peak_rss_mb_workers`). Writes `artifacts/bench/validate_scale.json` and `.md`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from videoseal_tflite.errors import ArtifactsMissing, BenchFailed
from videoseal_tflite.store.artifact import Artifact
from videoseal_tflite.store.atomic import write_text_atomic

DISTINCT = 64
SIZE = (160, 120)


def _image_folder(folder: Path, count: int) -> Path:
    from PIL import Image

    from videoseal_tflite.build.images import procedural_image
    from videoseal_tflite.runtime.image import to_uint8

    folder.mkdir(parents=True)
    width, height = SIZE
    for k in range(min(count, DISTINCT)):
        pixels = procedural_image(7000 + k, width).pixels[:, :height]
        Image.fromarray(to_uint8(pixels)).save(folder / f"{k:05d}.png")
    for k in range(DISTINCT, count):
        shutil.copyfile(folder / f"{k % DISTINCT:05d}.png", folder / f"{k:05d}.png")
    return folder


def _fp32_card(card_dir: Path, into: Path) -> Path:
    target = into / card_dir.name
    target.mkdir(parents=True)
    found = [path for art, path in Artifact.find(card_dir) if art.variant == "fp32"]
    if len(found) != 2:
        raise ArtifactsMissing(f"no FP32 embedder and detector in {card_dir}; run `make convert` first")
    for path in found:
        shutil.copy(path, target)
    return target


def bench_validate_scale(
    card_dir: Path, counts: tuple[int, ...] = (16, 10_000), workers: tuple[int, ...] = (1, 2), say: Callable = print
) -> dict[str, Any]:
    """One row per (images, workers): wall seconds, the main process's and the workers' peak RSS."""
    from videoseal_tflite.bench.models import cli_command, machine_facts, timed_child

    rows = []
    with tempfile.TemporaryDirectory(prefix="vst-scale-") as tmp:
        root = Path(tmp)
        card = _fp32_card(Path(card_dir), root / "artifacts")
        for count in counts:
            images = _image_folder(root / f"images{count}", count)
            for n in workers:
                say(f"validate {card.name}: {count} images, {n} worker(s) ...")
                args = ["validate", "--artifacts", str(card.parent), "--card", card.name, "--images", str(images)]
                run = timed_child(cli_command(*args, "--messages", "1", "--workers", str(n)))
                if not run["ok"]:
                    raise BenchFailed(f"validate on {count} images failed: {run['error']}")
                report = json.loads((card / "report.json").read_text())
                rows.append(
                    {
                        "images": report["images"]["count"],
                        "workers": n,
                        "seconds": run["seconds"],
                        "peak_rss_mb": run["peak_rss_mb"],
                        "peak_rss_mb_workers": report.get("peak_rss_mb_workers"),
                        "bit_accuracy_fp32_detector": _fp32_detector(report),
                    }
                )
    return {"card": Path(card_dir).name, "image_size": list(SIZE), "messages_per_image": 1, "rows": rows,
            "machine": machine_facts()}  # fmt: skip


def _fp32_detector(report: dict) -> float | None:
    return next((r["bit_accuracy"] for r in report["records"] if r["part"] == "detector"), None)


def scale_markdown(record: dict[str, Any]) -> str:
    width, height = record["image_size"]
    lines = [
        f"### validate --images: memory against the number of images ({record['card']}, FP32 pair)",
        "",
        f"{width}x{height} PNGs, {record['messages_per_image']} message per image, processing size + full resolution."
        " Peak RSS is each process's own VmHWM. Command: `videoseal-tflite bench --validate-scale`.",
        "",
        "| images | workers | wall s | peak RSS MB (main) | peak RSS MB (largest worker) | detector bit accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        worker = "-" if row["peak_rss_mb_workers"] is None else f"{row['peak_rss_mb_workers']:.0f}"
        lines.append(
            f"| {row['images']} | {row['workers']} | {row['seconds']:.0f} | {row['peak_rss_mb']:.0f} | {worker} "
            f"| {row['bit_accuracy_fp32_detector']:.4f} |"
        )
    machine = record["machine"]
    lines += ["", f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores."]
    return "\n".join(lines) + "\n"


def write_scale(record: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "validate_scale.json", out_dir / "validate_scale.md"]
    write_text_atomic(paths[0], json.dumps(record, indent=2) + "\n")
    write_text_atomic(paths[1], scale_markdown(record))
    return paths
