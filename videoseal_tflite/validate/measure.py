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

from .. import console
from ..artifact import PARTS, Artifact
from ..errors import InvalidImage, InvalidModelFile, VsTfliteError
from ..images import (
    NamedImage,
    random_messages,
)
from ..manifest import tool_versions
from ..robustness import TABLE_ATTACKS, evaluate_samples, evaluate_video, evaluation_clip, psnr_db, sample_messages
from ..runtime import attenuation_of, blend, round_8bit
from ..tflite_metadata import read_metadata
from ..variants import order
from ..weights import load_model_for_metadata
from .coverage import xnnpack_coverage
from .gpu import gpu_static_check
from .inspect_model import inspect_model
from .load_check import run_isolated
from .npu import npu_block
from .stream import MESSAGE_SEED, ImageSource, Job, no_readable_image, stream

LATENCY_REPEATS = 20


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over channels, Gaussian window sigma 1.5 (Wang et al. 2004), images in [0,1]."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2
    values = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        mx, my = gaussian_filter(x, 1.5), gaussian_filter(y, 1.5)
        vx = gaussian_filter(x * x, 1.5) - mx**2
        vy = gaussian_filter(y * y, 1.5) - my**2
        cov = gaussian_filter(x * y, 1.5) - mx * my
        values.append(np.mean(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))
    return float(np.mean(values))


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


@dataclasses.dataclass
class Reference:
    """The PyTorch model's view of the evaluation batch: its watermarked images (8-bit), raw watermark, logits."""

    images: np.ndarray
    msgs: np.ndarray
    imgs_w: np.ndarray
    watermark: np.ndarray
    logits: np.ndarray


def _reference(loaded, images: np.ndarray, msgs: np.ndarray) -> Reference:
    """Watermark with videoseal's own embed, round to 8 bits, detect."""
    card, model = loaded.card, loaded.model
    with torch.no_grad():
        imgs_w = round_8bit(
            model.embed(torch.from_numpy(images), torch.from_numpy(msgs), is_video=False)["imgs_w"].numpy()
        )
        x = torch.from_numpy(images)
        watermark = model.embedder(model.rgb2yuv(x)[:, 0:1] if card.yuv else x, torch.from_numpy(msgs)).numpy()
    logits = torch_detect(model, imgs_w)
    return Reference(images, msgs, imgs_w, watermark, logits)


def torch_detect(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    """Bit logits of videoseal's own `detect` (image mode) on a batch [N,3,S,S]."""
    with torch.no_grad():
        return model.detect(torch.from_numpy(batch), is_video=False)["preds"][:, 1:].numpy()


def _accuracy(logits: np.ndarray, msgs: np.ndarray) -> float:
    return float(((logits > 0) == (msgs > 0.5)).mean())


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


def _hits(logits: np.ndarray, msgs: np.ndarray) -> int:
    return int(((logits > 0) == (msgs > 0.5)).sum())


def chunk_processing(models, images: np.ndarray, msgs: np.ndarray) -> dict[str, Any]:
    """A chunk at the processing size: the PyTorch reference, every file against it, every embedder x detector
    pair (both .tflite). Counts and sums only (`stream.Totals` adds them up; `max_*` keys take the maximum)."""
    loaded = models.loaded
    ref = _reference(loaded, images, msgs)
    bits = int(msgs.size)
    out: dict[str, Any] = {
        "reference": {"hits": _hits(ref.logits, msgs), "bits": bits, "psnr_sum": _psnr_sum(ref.imgs_w, images)},
        "records": {},
        "pairs": {},
    }
    embedded = {}
    for (part, variant), model in models.signature.items():
        if part == "embedder":
            watermark = np.concatenate(
                [model(image=images[i : i + 1], message=msgs[i : i + 1])["watermark"] for i in range(len(images))]
            )
            imgs_w = np.stack(
                [
                    round_8bit(blend(img, w, loaded.card.scaling_w, loaded.card.scaling_i, models.attenuation[variant]))
                    for img, w in zip(images, watermark)
                ]
            )
            embedded[variant] = imgs_w
            logits, max_diff = torch_detect(loaded.model, imgs_w), float(np.abs(watermark - ref.watermark).max())
            extra = {"psnr_sum": _psnr_sum(imgs_w, images), "ssim_sum": sum(ssim(w, o) for w, o in zip(imgs_w, images))}
        else:
            logits = _detect(model, ref.imgs_w)
            max_diff, extra = float(np.abs(logits - ref.logits).max()), {}
        out["records"][f"{part}/{variant}"] = {
            "hits": _hits(logits, msgs),
            "agree": int(((logits > 0) == (ref.logits > 0)).sum()),
            "bits": bits,
            "images": len(images),
            "max_abs_diff": max_diff,
            **extra,
        }
    for (part, det), model in models.signature.items():
        if part == "detector":
            for emb, imgs_w in embedded.items():
                out["pairs"][f"{emb}/{det}"] = {"hits": _hits(_detect(model, imgs_w), msgs), "bits": bits}
    return out


def _detect(model, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([model(image=batch[i : i + 1])["bit_logits"] for i in range(len(batch))])


def _psnr_sum(marked: np.ndarray, originals: np.ndarray) -> float:
    return float(sum(psnr_db(w, o) for w, o in zip(marked, originals)))


def chunk_fullres(models, job, images: list[NamedImage], slots: list[int]) -> dict[str, Any]:
    """A chunk at full resolution through the runtime (`robustness.evaluate_samples`): every file with the FP32
    file of the other part; the attacks of `job.attacks`."""
    mpi = job.messages_per_image
    msgs = sample_messages(job.source.slots * mpi, models.loaded.card.nbits)
    samples = [(image.pixels, msgs[slot * mpi + m]) for image, slot in zip(images, slots) for m in range(mpi)]
    out = {}
    for (part, variant), runtime in models.runtime.items():
        pair = {"embedder": models.runtime[("embedder", "fp32")], "detector": models.runtime[("detector", "fp32")]}
        pair[part] = runtime
        out[f"{part}/{variant}"] = evaluate_samples(pair["embedder"], pair["detector"], samples, job.attacks)
    return out


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
                "psnr_db": full["psnr_sum"] / full["samples"],
                "samples": full["samples"],
            }
            if attacks:
                rec["attacks"] = {a: full["hits"][a] / bits for a in TABLE_ATTACKS if a != "clean"}
    pairs = []
    for key, got in sorted(sums.get("pairs", {}).items(), key=lambda kv: (order(kv[0].split("/")[1]), kv[0])):
        emb, det = key.split("/")
        pairs.append({"embedder": emb, "detector": det, "bit_accuracy": got["hits"] / got["bits"]})
    return pairs


def measure_video(records: list[dict], candidates: list[_Candidate], threads: int, step_size: int) -> None:
    """With `--attacks`, every loading file marks the generated clip (with the FP32 file of the other part), which
    is re-encoded and read back (`robustness.evaluate_video`) into `video`."""
    from ..runtime import Detector, Embedder

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
        raise VsTfliteError(f"no .tflite artifacts in {card_dir}; run `make convert` first")
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
) -> dict[str, Any]:
    """Validate every artifact of one card; returns the report dict (see README for the schema).
    Per file: static facts, load and latency (`measure_record`); then the images stream through every loading file
    in chunks (`stream.stream`, `workers` processes, same numbers for any count): accuracy against PyTorch at the
    processing size and, unless `fullres` is off, at full resolution; with `attacks`, under each attack of
    `robustness.TABLE_ATTACKS` on the saved full-size image, and on a generated video clip."""
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
        "pairs": fill_accuracy(records, totals, attacks, card.nbits),
        "workers": workers,
        "peak_rss_mb_workers": sums.get("max_worker_rss_mb"),  # with workers > 1: the largest worker's VmHWM
        # AOT compile of the int8 files per NPU target; None unless the NPU extra is installed (make setup-npu)
        "npu": npu_block([c.path for c in candidates if c.path and c.variant == "int8"]),
    }


def _latency_feeds(loaded, source: ImageSource) -> dict[str, dict[str, np.ndarray]]:
    """The one input each part is timed on: the first readable image (and its PyTorch-watermarked version)."""
    card = loaded.card
    for slot in range(source.slots):
        try:
            image = source.load(slot, card.img_size, fullres=False)[0].pixels[None]
        except InvalidImage:
            continue
        msg = random_messages(1, card.nbits, MESSAGE_SEED)
        ref = _reference(loaded, image, msg)
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
    import torch

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
