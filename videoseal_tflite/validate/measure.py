"""Measuring a card's artifacts, per part: size, load status in a child process, flags and repairs, accuracy
against the PyTorch reference with the same weights, latency. Definitions (as in the README):
- detector `bit_accuracy`: over N images x M messages watermarked by the PyTorch reference embedder
  (rounded to 8 bits);
- embedder `bit_accuracy`: the PyTorch reference detector on the variant's watermarked images (8-bit);
  `psnr_db` / `ssim` against the original image;
- `pairs`: bit accuracy of every embedder variant x detector variant, both .tflite.
Images are fitted to the card's processing size (centre crop + resize), so every record sees the same pixels.
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
    IMAGE_SUFFIXES,
    NamedImage,
    evaluation_images,
    fit_square,
    fullres_evaluation_images,
    load_image_file,
    random_messages,
)
from ..manifest import tool_versions
from ..robustness import TABLE_ATTACKS, evaluate, evaluate_video, evaluation_clip, psnr_db
from ..runtime import attenuation_of, blend, round_8bit
from ..tflite_metadata import read_metadata
from ..variants import order
from ..weights import load_model_for_metadata
from .coverage import xnnpack_coverage
from .gpu import gpu_static_check
from .inspect_model import inspect_model
from .load_check import run_isolated
from .npu import npu_block

MESSAGE_SEED = 11
LATENCY_REPEATS = 20


@dataclasses.dataclass
class ImageSet:
    source: str
    images: list[NamedImage]
    skipped: list[str]


def load_image_set(folder: Path | None, size: int) -> ImageSet:
    """`--images DIR` (any size; non-images are reported and skipped) or the project's evaluation set."""
    if folder is None:
        return ImageSet(
            "videoseal_tflite.images.evaluation_images (held out from training and calibration)",
            evaluation_images(size),
            [],
        )
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidImage(f"--images {folder} is not a folder")
    images, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            image = load_image_file(path)
        except InvalidImage as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        images.append(NamedImage(image.name, fit_square(image.pixels, size)))
    if not images:
        raise InvalidImage(
            f"--images {folder} holds no readable image ({len(skipped)} other file(s)); "
            f"supported: {', '.join(IMAGE_SUFFIXES)}"
        )
    return ImageSet(str(folder), images, skipped)


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


def _measure_detector(rec: dict, outputs: list[dict], ref: Reference) -> None:
    logits = np.concatenate([o["bit_logits"] for o in outputs])
    rec["bit_accuracy"] = _accuracy(logits, ref.msgs)
    rec["bit_agreement_vs_pytorch"] = float(((logits > 0) == (ref.logits > 0)).mean())
    rec["max_abs_diff_vs_pytorch"] = float(np.abs(logits - ref.logits).max())


def _measure_embedder(rec: dict, outputs: list[dict], ref: Reference, loaded, meta: dict) -> np.ndarray:
    """Fills the record; returns the variant's watermarked images (8-bit) for the embedder x detector pairs."""
    card = loaded.card
    watermark = np.concatenate([o["watermark"] for o in outputs])
    imgs_w = np.stack(
        [
            round_8bit(blend(img, w, card.scaling_w, card.scaling_i, attenuation_of(meta)))
            for img, w in zip(ref.images, watermark)
        ]
    )
    logits = torch_detect(loaded.model, imgs_w)
    rec["bit_accuracy"] = _accuracy(logits, ref.msgs)
    rec["bit_agreement_vs_pytorch"] = float(((logits > 0) == (ref.logits > 0)).mean())
    rec["max_abs_diff_vs_pytorch"] = float(np.abs(watermark - ref.watermark).max())
    rec["psnr_db"] = float(np.mean([psnr_db(w, o) for w, o in zip(imgs_w, ref.images)]))
    rec["ssim"] = float(np.mean([ssim(w, o) for w, o in zip(imgs_w, ref.images)]))
    return imgs_w


def measure_record(
    c: _Candidate,
    ref: Reference,
    loaded,
    meta: dict,
    threads: int,
    latency_repeats: int,
    embedded: dict[str, np.ndarray],
) -> dict[str, Any]:
    """One file's record: static facts, load in a child process, latency, accuracy against PyTorch."""
    rec = _record_skeleton(c, threads)
    if c.path is None or not _inspect_into(rec, c.path):
        return rec
    n = len(ref.images)
    feeds = (
        [{"image": ref.images[i : i + 1], "message": ref.msgs[i : i + 1]} for i in range(n)]
        if c.part == "embedder"
        else [{"image": ref.imgs_w[i : i + 1]} for i in range(n)]
    )
    timing: list[float] = []
    result, outputs = run_isolated(c.path, feeds, threads=threads, repeats=latency_repeats, timing=timing)
    rec["loads"] = result.loads
    if not result.loads:
        rec.update(status="failed", load_error=result.error)
        return rec
    rec["xnnpack"] = xnnpack_coverage(c.path, threads).to_json()  # in-process: the child just ran it
    rec["gpu"] = gpu_static_check(c.path)
    if timing:
        rec["latency_ms_median"] = float(np.median(timing))
        rec["latency_ms_p90"] = float(np.percentile(timing, 90))
    if c.part == "detector":
        _measure_detector(rec, outputs, ref)
    else:
        embedded[c.variant] = _measure_embedder(rec, outputs, ref, loaded, c.meta or meta)
    return rec


def measure_pairs(
    detectors: list[_Candidate], embedded: dict[str, np.ndarray], msgs: np.ndarray, threads: int
) -> list[dict[str, Any]]:
    """Bit accuracy of every embedder variant's images read by every detector variant (both .tflite)."""
    pairs, variants = [], sorted(embedded)
    for det in detectors if variants else []:
        n = len(msgs)
        feeds = [{"image": embedded[v][i : i + 1]} for v in variants for i in range(n)]
        result, outputs = run_isolated(det.path, feeds, threads=threads)
        if not result.loads:
            continue
        for k, v in enumerate(variants):
            logits = np.concatenate([o["bit_logits"] for o in outputs[k * n : (k + 1) * n]])
            pairs.append({"embedder": v, "detector": det.variant, "bit_accuracy": _accuracy(logits, msgs)})
    return pairs


def fullres_images(folder: Path | None) -> list[NamedImage]:
    """`--images DIR` at the images' own sizes, or the full-resolution held-out set."""
    if folder is None:
        return fullres_evaluation_images()
    images = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            images.append(load_image_file(path))
        except InvalidImage:
            continue  # reported by load_image_set
    return images


def measure_fullres(
    records: list[dict],
    candidates: list[_Candidate],
    images: list[NamedImage],
    messages_per_image: int,
    attacks: bool,
    threads: int,
    progress: bool,
    step_size: int,
) -> str:
    """Every loading file through the runtime at full resolution (`robustness.evaluate`): an embedder with the
    FP32 detector, a detector with the FP32 embedder. Fills `fullres`; with `attacks` also `attacks` (images)
    and `video` (the generated clip marked, re-encoded, read back: `robustness.evaluate_video`)."""
    with tempfile.TemporaryDirectory(prefix="vst-clip-") as tmp:
        clip = evaluation_clip(Path(tmp)) if attacks else None
        _measure_pairs_fullres(records, candidates, images, messages_per_image, clip, threads, progress, step_size)
    return f"{len(images)} images at full size x {messages_per_image} messages"


def _measure_pairs_fullres(records, candidates, images, messages_per_image, clip, threads, progress, step_size):
    from ..runtime import Detector, Embedder

    attacks = clip is not None
    fp32 = {c.part: c.path for c, r in zip(candidates, records) if c.variant == "fp32" and r["loads"]}
    todo = [(c, r) for c, r in zip(candidates, records) if r["loads"] and len(fp32) == 2]
    names = TABLE_ATTACKS if attacks else ("clean",)
    bar = tqdm(
        total=len(todo) * len(images) * messages_per_image,
        desc="full resolution",
        unit="sample",
        disable=not progress,
        leave=False,
        file=console.stream(),
    )
    for c, rec in todo:
        paths = {**fp32, c.part: c.path}
        embedder, detector = Embedder(paths["embedder"], threads), Detector(paths["detector"], threads)
        result = evaluate(
            embedder,
            detector,
            images,
            messages_per_image,
            names,
            progress=lambda: bar.update(1),
        )
        rec["fullres"] = {
            "bit_accuracy": result.bit_accuracy["clean"],
            "psnr_db": result.psnr_db,
            "samples": result.samples,
        }
        if attacks:
            rec["attacks"] = {a: result.bit_accuracy[a] for a in names if a != "clean"}
            rec["video"] = evaluate_video(embedder, detector, clip, step_size)
    bar.close()


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
) -> dict[str, Any]:
    """Validate every artifact of one card; returns the report dict (see README for the schema).
    Unless `fullres` is off, every loading file is also run at full resolution (`fullres`); with `attacks`, each
    gets `attacks`: bit accuracy under each attack of `robustness.TABLE_ATTACKS`, on the saved full-size image."""
    card_dir = Path(card_dir)
    candidates, meta = _card_files(card_dir)
    loaded = load_model_for_metadata(meta, card_dir.name)
    card = loaded.card
    image_set = load_image_set(image_folder, card.img_size)
    images = np.stack([i.pixels for i in image_set.images]).repeat(messages_per_image, axis=0)
    ref = _reference(loaded, images, random_messages(len(images), card.nbits, MESSAGE_SEED))
    records, embedded = [], {}
    fp32_bytes = {c.part: c.path.stat().st_size for c in candidates if c.variant == "fp32" and c.path}
    for c in tqdm(
        candidates, desc=f"validate {card.name}", unit="file", disable=not progress, leave=False, file=console.stream()
    ):
        rec = measure_record(c, ref, loaded, meta, threads, latency_repeats, embedded)
        if rec["bytes"] is not None and c.part in fp32_bytes:
            rec["size_ratio_vs_fp32"] = rec["bytes"] / fp32_bytes[c.part]
        records.append(rec)
    fullres_set = None
    if fullres or attacks:
        images_fullres = fullres_images(image_folder)
        args = (messages_per_image, attacks, threads, progress, card.step_size)
        fullres_set = measure_fullres(records, candidates, images_fullres, *args)
    detectors = [c for c, r in zip(candidates, records) if c.part == "detector" and r["loads"]]
    psnr = float(np.mean([psnr_db(w, o) for w, o in zip(ref.imgs_w, images)]))
    return {
        "card": card.name,
        "nbits": card.nbits,
        "weights": loaded.weights,
        "weights_label": loaded.label or None,
        "images": {
            "source": image_set.source,
            "count": len(image_set.images),
            "fullres": fullres_set,
            "names": [i.name for i in image_set.images],
            "skipped": image_set.skipped,
            "size": card.img_size,
        },
        "messages": {"per_image": messages_per_image, "total": int(len(ref.msgs)), "seed": MESSAGE_SEED},
        "tool_versions": tool_versions(),
        "pytorch_reference": {"bit_accuracy": _accuracy(ref.logits, ref.msgs), "psnr_db": psnr},
        "attacks": [a for a in TABLE_ATTACKS if a != "clean"] if attacks else [],
        "missing_parts": [part for part in PARTS if not any(c.part == part for c in candidates)],
        "records": records,
        "pairs": measure_pairs(detectors, embedded, ref.msgs, threads),
        # AOT compile of the int8 files per NPU target; None unless the NPU extra is installed (make setup-npu)
        "npu": npu_block([c.path for c in candidates if c.path and c.variant == "int8"]),
    }
