"""`videoseal-tflite bench --sizes`: embed and detect from 0.3 to 100 megapixels, time and peak RSS (issue #28).

Two tables, written to `artifacts/bench/sizes.json` and `.md`:
- the CLI as a user runs it (`embed IN.jpg OUT.jpg`, `detect OUT.jpg`), one child process a run, on generated
  JPEGs of each size in the ladder: wall seconds (file decode and encode included) and the child's own peak RSS
  (`validate/peak_rss.py`);
- the runtime alone at 1920 x 1200 (file decode and encode excluded): `Embedder.embed_rgb8` and `Detector.detect`
  of a marked and of an unmarked image, median of 20 calls, the three cases taking turns.
Every row names the runtime (LiteRT CPU), its delegate (XNNPACK, LiteRT's default) and the thread count.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from videoseal_tflite.bench.models import cli_command, machine_facts, timed_child
from videoseal_tflite.build.images import procedural_image, random_messages
from videoseal_tflite.errors import ArtifactsMissing
from videoseal_tflite.runtime.image import Detector, Embedder, bits_to_text
from videoseal_tflite.store.artifact import find_model
from videoseal_tflite.store.atomic import write_text_atomic

LADDER = ((480, 640), (1200, 1920), (3000, 4000), (6000, 8000), (10000, 10000))  # 0.3 ... 100 megapixels
RUNTIME = {"runtime": "LiteRT CPU", "delegate": "XNNPACK"}


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """HxWx3 uint8 with the texture of a photo at every scale: a procedural image upsampled, plus fine grain."""
    base = Image.fromarray((procedural_image(seed, 512).pixels.transpose(1, 2, 0) * 255).astype(np.uint8))
    big = np.asarray(base.resize((width, height), Image.Resampling.BILINEAR))
    grain = np.random.default_rng(seed).integers(-6, 7, (height, width, 1), dtype=np.int16)
    return np.clip(big.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def _cli_rows(artifacts: Path, card: str, message: str, threads: int, say: Callable) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="vst-sizes-") as tmp:
        for height, width in LADDER:
            source, marked = Path(tmp) / "in.jpg", Path(tmp) / "out.jpg"
            Image.fromarray(_photo(height, width, 1)).save(source, quality=90)
            common = ["--artifacts", str(artifacts), "--card", card, "--threads", str(threads)]
            embed = timed_child(cli_command("embed", str(source), str(marked), "--message", message, *common))
            detect = timed_child(cli_command("detect", str(marked), "--message", message, *common))
            for verb, run in (("embed", embed), ("detect", detect)):
                size = {"height": height, "width": width, "megapixels": round(height * width / 1e6, 2)}
                rows.append({"verb": verb, **size, "threads": threads, **RUNTIME, **run})
            say(f"{width}x{height}: embed {embed['seconds']} s {embed['peak_rss_mb']} MB, "
                f"detect {detect['seconds']} s {detect['peak_rss_mb']} MB")  # fmt: skip
            source.unlink()
            marked.unlink(missing_ok=True)
    return rows


ROUNDS = 5  # the cases take turns, `repeats` / ROUNDS calls each a turn: a busy spell of the machine is shared out


def _interleaved_medians(cases: tuple[tuple[str, Callable[[], Any]], ...], repeats: int) -> dict[str, float]:
    """name -> median ms of `repeats` calls of each case, the cases taking turns over ROUNDS rounds (after one
    warm-up call each: the first invoke allocates)."""
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _, fn in cases:
        fn()
    for turn in range(ROUNDS):
        for name, fn in cases:
            for _ in range(repeats // ROUNDS + (turn < repeats % ROUNDS)):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(t), 2) for name, t in times.items()}


def _runtime_rows(artifacts: Path, card: str, threads: int, repeats: int) -> list[dict[str, Any]]:
    embedder = Embedder(find_model(artifacts, card, "embedder", "fp32"), threads)
    detector = Detector(find_model(artifacts, card, "detector", "fp32"), threads)
    message = random_messages(1, embedder.nbits, seed=3)[0]
    unmarked = _photo(1200, 1920, 2)
    marked = embedder.embed_rgb8(unmarked, message)
    found = detector.detect(marked)
    cases = (
        ("embed", lambda: embedder.embed_rgb8(unmarked, message)),
        ("detect (marked)", lambda: detector.detect(marked)),
        ("detect (unmarked)", lambda: detector.detect(unmarked)),
    )
    medians = _interleaved_medians(cases, repeats)
    rows = [{"step": name, "height": 1200, "width": 1920, "threads": threads, **RUNTIME,
             "median_ms": medians[name]} for name, _ in cases]  # fmt: skip
    rows[1]["bits_read"] = bits_to_text(found.bits) == bits_to_text(message.astype(bool))
    return rows


def bench_sizes(artifacts: Path, card: str, threads: int = 2, repeats: int = 20, say: Callable = print) -> dict:
    """The record (see the module docstring)."""
    try:
        find_model(artifacts, card, "embedder", "fp32")
    except Exception as exc:
        raise ArtifactsMissing(f"bench --sizes needs the FP32 files of {card}: {exc}") from None
    message = bits_to_text(random_messages(1, Embedder(find_model(artifacts, card, "embedder", "fp32")).nbits, 4)[0])
    return {
        "card": card,
        "machine": machine_facts(),
        "cli": _cli_rows(Path(artifacts), card, message, threads, say),
        "runtime_1920x1200": _runtime_rows(Path(artifacts), card, threads, repeats),
    }


def sizes_markdown(record: dict) -> str:
    lines = [
        f"# Image sizes: time and peak memory ({record['card']}, FP32 files)",
        "",
        f"Measured {record['machine']['date']} on {record['machine']['cpu']} ({record['machine']['cores']} cores, "
        f"load {record['machine']['load_average_before']}). `videoseal-tflite bench --sizes`.",
        "",
        "| command | size | megapixels | runtime | delegate | threads | seconds | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in record["cli"]:
        status = "" if row["ok"] else f" (failed: {row['error']})"
        cells = (row["verb"], f"{row['width']}x{row['height']}", row["megapixels"], row["runtime"], row["delegate"],
                 row["threads"], f"{row['seconds']}{status}", row["peak_rss_mb"])  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Runtime alone at 1920 x 1200 (file decode and encode excluded):", "",
              "| step | runtime | delegate | threads | median ms |", "|---|---|---|---|---|"]  # fmt: skip
    for row in record["runtime_1920x1200"]:
        lines.append(
            f"| {row['step']} | {row['runtime']} | {row['delegate']} | {row['threads']} | {row['median_ms']} |"
        )
    return "\n".join(lines) + "\n"


def write_sizes(record: dict, out: Path) -> list[Path]:
    json_path, md_path = Path(out) / "sizes.json", Path(out) / "sizes.md"
    write_text_atomic(json_path, json.dumps(record, indent=2) + "\n")
    write_text_atomic(md_path, sizes_markdown(record))
    return [json_path, md_path]
