"""Measuring a card's artifacts, per part: size, load status in a child process, flags and repairs, accuracy
against the PyTorch reference with the same weights, latency. Definitions (as in the README):
- detector `bit_accuracy`: over N images x M messages watermarked by the PyTorch reference embedder
  (rounded to 8 bits);
- embedder `bit_accuracy`: the PyTorch reference detector on the variant's watermarked images (8-bit);
  `psnr_db` / `ssim` against the original image;
- `pairs`: bit accuracy of every embedder variant x detector variant, both .tflite.
Images are fitted to the card's processing size (centre crop + resize), so every record sees the same pixels.
They stream through in chunks (`stream.py`): memory does not grow with the set, `workers` split the chunks.
Rendering is `render.py`, choosing a file `select.py`.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from videoseal_tflite import console
from videoseal_tflite.build.images import random_messages
from videoseal_tflite.build.quantize.variant import Agreement, quality_gap
from videoseal_tflite.build.weights import load_model_for_metadata
from videoseal_tflite.errors import ArtifactsMissing, InvalidImage, InvalidModelFile
from videoseal_tflite.runtime.image import Detector, attenuation_of
from videoseal_tflite.store.artifact import PARTS, Artifact
from videoseal_tflite.store.manifest import tool_versions
from videoseal_tflite.store.variants import order, spec
from videoseal_tflite.tflite.coverage import xnnpack_coverage
from videoseal_tflite.tflite.gpu import gpu_static_check
from videoseal_tflite.tflite.inspect import inspect_model
from videoseal_tflite.tflite.load_check import run_isolated
from videoseal_tflite.tflite.metadata import read_metadata
from videoseal_tflite.tflite.npu import npu_block
from videoseal_tflite.validate.chunks import pytorch_reference
from videoseal_tflite.validate.false_positives import false_positives
from videoseal_tflite.validate.robustness import (
    TABLE_ATTACKS,
    evaluate_video,
    evaluation_clip,
)
from videoseal_tflite.validate.stream import MESSAGE_SEED, ImageSource, Job, no_readable_image, stream

LATENCY_REPEATS = 20


@dataclasses.dataclass
class _Candidate:
    path: Path | None
    part: str
    variant: str
    meta: dict
    build: dict | None  # quantize_log entry


def _candidates(card_dir: Path) -> list[_Candidate]:
    log_path = card_dir / "quantize_log.json"
    try:
        qlog = json.loads(log_path.read_text()) if log_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        qlog = {}
    found: list[_Candidate] = []
    for art, path in Artifact.find(card_dir):
        try:
            meta = read_metadata(path.read_bytes()) or {}
        except Exception:  # a corrupt file is still a record (loads: false)
            meta = {}
        found.append(_Candidate(path, art.part, art.variant, meta, qlog.get(f"{art.part}/{art.variant}")))
    built = {(c.part, c.variant) for c in found}
    for entry in qlog.values():
        if entry.get("status") == "failed" and (entry["part"], entry["variant"]) not in built:
            found.append(_Candidate(None, entry["part"], entry["variant"], {}, entry))
    return sorted(found, key=lambda c: (c.part != "embedder", order(c.variant), str(c.path)))


def _record_skeleton(c: _Candidate, threads: int) -> dict[str, Any]:
    repairs = (c.build or {}).get("repairs_applied") or []
    rec: dict[str, Any] = {
        "part": c.part,
        "variant": c.variant,
        "path": str(c.path) if c.path else None,
        "bytes": c.path.stat().st_size if c.path else None,
        "size_ratio_vs_fp32": None,
        "status": "failed" if c.path is None else ("repaired" if repairs else "loads"),
        "loads": False,
        "load_error": (c.build or {}).get("error") if c.path is None else None,
        "flags": [],
        "repairs_applied": repairs,
        "below_bar": _below_bar(c),
        "ops": {},
        "bit_accuracy": None,
        "bit_agreement_vs_pytorch": None,
        "max_abs_diff_vs_pytorch": None,
        "latency_ms_median": None,
        "xnnpack": None,
        "gpu": None,
        "latency_ms_p90": None,
        "threads": threads,
    }
    if c.part == "embedder":
        rec.update({"psnr_db": None, "ssim": None})
    return rec


def _below_bar(c: _Candidate) -> str | None:
    """The quality bar against FP32 (store.variants) that a built variant still missed after every repair, from its
    quantize log entry: the search keeps the best build it found, so the file exists and is measured like any
    other, and the report says so instead of showing only `repaired`. None when the bar is met or not known."""
    found, row = (c.build or {}).get("agreement"), spec(c.variant)
    if c.path is None or not found or not row.quantized:
        return None
    agreement = Agreement(**found)  # the log entry is VariantResult.to_json: as VariantResult.from_json reads it
    if quality_gap(c.variant, agreement) <= 0:
        return None
    if agreement.bit_agreement is not None:
        return f"bit agreement vs FP32 {agreement.bit_agreement:.4f} < {row.detector_min_bit_agreement}"
    error = agreement.watermark_rel_err
    return f"watermark max |error| / max |watermark| vs FP32 {error:.4f} > {row.embedder_max_rel_err}"


def _inspect_into(rec: dict[str, Any], path: Path) -> bool:
    """Static facts of the file into the record; False when the file cannot even be parsed."""
    try:
        inspection = inspect_model(path, load=False)
    except InvalidModelFile as exc:
        rec.update(status="failed", load_error=str(exc))
        return False
    rec["ops"] = inspection.op_histogram
    rec["flags"] = [{"op": f.op, "node": f.node, "kind": f.kind, "detail": f.detail} for f in inspection.flags]
    return True


def measure_record(c: _Candidate, feed: dict[str, dict[str, np.ndarray]], threads: int, latency_repeats: int) -> dict:
    """One file's static facts, its load in a child process (a crash is a record, not our crash) and its latency
    on `feed[part]` (one image); accuracy comes from the streamed pass (`stream`, `fill_accuracy`)."""
    rec = _record_skeleton(c, threads)
    if c.path is None or not _inspect_into(rec, c.path):
        return rec
    timing: list[float] = []
    result, _ = run_isolated(c.path, [feed[c.part]], threads=threads, repeats=latency_repeats, timing=timing)
    rec["loads"] = result.loads
    if not result.loads:
        rec.update(status="failed", load_error=result.error)
        return rec
    rec["xnnpack"] = xnnpack_coverage(c.path, threads).to_json()  # in-process: the child just ran it
    rec["gpu"] = gpu_static_check(c.path)
    if timing:
        rec["latency_ms_median"] = float(np.median(timing))
        rec["latency_ms_p90"] = float(np.percentile(timing, 90))
    return rec


def _after_attacks(counts: dict[str, int], total: int) -> dict[str, float]:
    """Per attack of TABLE_ATTACKS (clean aside): its count as a share of `total`."""
    return {a: counts[a] / total for a in TABLE_ATTACKS if a != "clean"}


def fill_accuracy(records: list[dict], totals, attacks: bool, nbits: int) -> list[dict[str, Any]]:
    """The streamed sums into the records (bit accuracy, agreement, PSNR/SSIM, full resolution, attacks);
    returns the pairs."""
    sums = totals.sums
    for rec in records:
        key = f"{rec['part']}/{rec['variant']}"
        if key not in sums.get("records", {}):
            continue
        got = sums["records"][key]
        rec["bit_accuracy"] = got["hits"] / got["bits"]
        rec["bit_agreement_vs_pytorch"] = got["agree"] / got["bits"]
        rec["max_abs_diff_vs_pytorch"] = got["max_abs_diff"]
        if rec["part"] == "embedder":
            rec["psnr_db"], rec["ssim"] = got["psnr_sum"] / got["images"], got["ssim_sum"] / got["images"]
        full = sums.get("fullres", {}).get(key)
        if full:
            bits = full["samples"] * nbits
            rec["fullres"] = {
                "bit_accuracy": full["hits"]["clean"] / bits,
                "decided": full["decided"]["clean"] / full["samples"],
                "exact": full["exact"]["clean"] / full["samples"],
                "payload": full["payload"]["clean"] / full["samples"] if "payload" in full else None,
                "psnr_db": full["psnr_sum"] / full["samples"],
                "samples": full["samples"],
            }
            if attacks:
                rec["attacks"] = _after_attacks(full["hits"], bits)
                # the share of marked samples decided at verdict.DEFAULT_FPR after each attack
                rec["attacks_decided"] = _after_attacks(full["decided"], full["samples"])
                if "payload" in full:  # cards with a payload code: the share whose payload reads back as embedded
                    rec["attacks_payload"] = _after_attacks(full["payload"], full["samples"])
    pairs = []
    for key, got in sorted(sums.get("pairs", {}).items(), key=lambda kv: (order(kv[0].split("/")[1]), kv[0])):
        emb, det = key.split("/")
        pairs.append({"embedder": emb, "detector": det, "bit_accuracy": got["hits"] / got["bits"]})
    return pairs


def measure_video(records: list[dict], candidates: list[_Candidate], threads: int, step_size: int) -> None:
    """With `--attacks`, every loading file marks the generated clip (with the FP32 file of the other part), which
    is re-encoded and read back (`robustness.evaluate_video`) into `video`."""
    from videoseal_tflite.runtime.image import Detector, Embedder

    fp32 = {c.part: c.path for c, r in zip(candidates, records) if c.variant == "fp32" and r["loads"]}
    if len(fp32) < 2:
        return
    with tempfile.TemporaryDirectory(prefix="vst-clip-") as tmp:
        clip = evaluation_clip(Path(tmp))
        for c, rec in zip(candidates, records):
            if rec["loads"]:
                paths = {**fp32, c.part: c.path}
                embedder, detector = Embedder(paths["embedder"], threads), Detector(paths["detector"], threads)
                rec["video"] = evaluate_video(embedder, detector, clip, step_size)


def _card_files(card_dir: Path) -> tuple[list[_Candidate], dict]:
    """The card's files (and failed builds) plus the metadata that names its weights (the FP32 file's first)."""
    candidates = _candidates(card_dir)
    if not candidates:
        raise ArtifactsMissing(f"no .tflite artifacts in {card_dir}; run `make convert` first")
    meta = next((c.meta for c in candidates if c.meta.get("variant") == "fp32"), None) or next(
        (c.meta for c in candidates if c.meta), None
    )
    if not meta:
        raise InvalidModelFile(f"no readable videoseal-tflite model in {card_dir}")
    return candidates, meta


def validate_card(
    card_dir: Path,
    image_folder: Path | None = None,
    messages_per_image: int = 2,
    threads: int = 2,
    progress: bool = True,
    latency_repeats: int = LATENCY_REPEATS,
    attacks: bool = False,
    fullres: bool = True,
    workers: int = 1,
    unmarked: int = 0,
) -> dict[str, Any]:
    """Validate every artifact of one card; returns the report dict (see README for the schema).
    Per file: static facts, load and latency (`measure_record`); then the images stream through every loading file
    in chunks (`stream.stream`, `workers` processes, same numbers for any count): accuracy against PyTorch at the
    processing size and, unless `fullres` is off, at full resolution; with `attacks`, under each attack of
    `robustness.TABLE_ATTACKS` on the saved full-size image, and on a generated video clip; with `unmarked` > 0, the
    false positives of the FP32 detector on that many unmarked images (`false_positives`)."""
    card_dir = Path(card_dir)
    candidates, meta = _card_files(card_dir)
    loaded = load_model_for_metadata(meta, card_dir.name)
    card = loaded.card
    source = ImageSource.of(image_folder)
    records = _static_records(candidates, _latency_feeds(loaded, source), threads, latency_repeats, progress)
    job = _job(card_dir, meta, candidates, records, source, messages_per_image, threads, fullres or attacks, attacks)
    totals = _stream_with_bar(job, workers, progress, card.name)
    if attacks:
        measure_video(records, candidates, threads, card.step_size)
    sums = totals.sums
    return {
        "card": card.name,
        "nbits": card.nbits,
        "weights": loaded.weights,
        "weights_label": loaded.label or None,
        "images": {
            "source": source.source,
            "count": len(totals.names),
            "fullres": f"{len(totals.names)} images at full size x {messages_per_image} messages"
            if job.fullres
            else None,
            "names": totals.names,
            "skipped": totals.skipped,
            "size": card.img_size,
        },
        "messages": {"per_image": messages_per_image, "total": int(sums["samples"]), "seed": MESSAGE_SEED},
        "tool_versions": tool_versions(),
        "pytorch_reference": {
            "bit_accuracy": sums["reference"]["hits"] / sums["reference"]["bits"],
            "psnr_db": sums["reference"]["psnr_sum"] / sums["samples"],
        },
        "attacks": [a for a in TABLE_ATTACKS if a != "clean"] if attacks else [],
        "missing_parts": [part for part in PARTS if not any(c.part == part for c in candidates)],
        "records": records,
        "false_positives": _false_positives(candidates, records, unmarked, threads, progress) if unmarked else None,
        "pairs": fill_accuracy(records, totals, attacks, card.nbits),
        "workers": workers,
        "peak_rss_mb_workers": sums.get("max_worker_rss_mb"),  # with workers > 1: the largest worker's VmHWM
        # AOT compile of the int8 files per NPU target; None unless the NPU extra is installed (make setup-npu)
        "npu": npu_block([c.path for c in candidates if c.path and c.variant == "int8"]),
    }


def _false_positives(candidates, records, count: int, threads: int, progress: bool) -> dict[str, Any] | None:
    """`false_positives.false_positives` of the card's FP32 detector on `count` unmarked images, with the file's
    name (None when no FP32 detector loads)."""
    path = next((c.path for c, r in zip(candidates, records) if c.part == "detector" and c.variant == "fp32"
                 and r["loads"]), None)  # fmt: skip
    if path is None:
        return None
    bar = tqdm(total=count, desc="unmarked images", unit="image", disable=not progress, leave=False,
               file=console.stream())  # fmt: skip
    with bar:
        record = false_positives(Detector(path, threads), count, bar.update).to_json()
    return record | {"detector": path.name}


def _latency_feeds(loaded, source: ImageSource) -> dict[str, dict[str, np.ndarray]]:
    """The one input each part is timed on: the first readable image (and its PyTorch-watermarked version)."""
    card = loaded.card
    for slot in range(source.slots):
        try:
            image = source.load(slot, card.img_size, fullres=False)[0].pixels[None]
        except InvalidImage:
            continue
        msg = random_messages(1, card.nbits, MESSAGE_SEED)
        ref = pytorch_reference(loaded, image, msg)
        return {"embedder": {"image": image, "message": msg}, "detector": {"image": ref.imgs_w}}
    raise no_readable_image(source.folder, source.slots)


def _static_records(candidates, feeds, threads: int, latency_repeats: int, progress: bool) -> list[dict]:
    records = []
    fp32_bytes = {c.part: c.path.stat().st_size for c in candidates if c.variant == "fp32" and c.path}
    bar = tqdm(candidates, desc="load + latency", unit="file", disable=not progress, leave=False, file=console.stream())
    for c in bar:
        rec = measure_record(c, feeds, threads, latency_repeats)
        if rec["bytes"] is not None and c.part in fp32_bytes:
            rec["size_ratio_vs_fp32"] = rec["bytes"] / fp32_bytes[c.part]
        records.append(rec)
    return records


def _job(card_dir, meta, candidates, records, source, messages_per_image, threads, fullres, attacks) -> Job:

    files = tuple((c.part, c.variant, str(c.path)) for c, r in zip(candidates, records) if r["loads"])
    fp32_loads = {part for part, variant, _ in files if variant == "fp32"} == set(PARTS)
    attenuation = {c.variant: attenuation_of(c.meta or meta) for c in candidates if c.part == "embedder"}
    return Job(
        meta,
        Path(card_dir).name,
        files,
        attenuation,
        source,
        messages_per_image,
        threads,
        fullres and fp32_loads,
        TABLE_ATTACKS if attacks else ("clean",),
        torch.get_num_threads(),
    )


def _stream_with_bar(job: Job, workers: int, progress: bool, card_name: str):
    total = job.source.slots * job.messages_per_image
    with tqdm(
        total=total, desc=f"validate {card_name}", unit="sample", disable=not progress, file=console.stream()
    ) as bar:
        return stream(job, workers, bar.update)
