"""Validation of a card's artifacts -> report.json, report.md, tradeoff.png: which file to ship.

For every .tflite in `artifacts/<card>/` (and every variant that failed to build, from quantize_log.json):
size, load status in a child process, flags and repairs, accuracy against the PyTorch reference with the
same weights, latency. Definitions (as in the README):
- detector `bit_accuracy`: over N images x M messages watermarked by the PyTorch reference embedder
  (rounded to 8 bits);
- embedder `bit_accuracy`: the PyTorch reference detector on the variant's watermarked images (8-bit);
  `psnr_db` / `ssim` against the original image;
- `pairs`: bit accuracy of every embedder variant x detector variant, both .tflite.
Images are fitted to the card's processing size (centre crop + resize), so every record sees the same pixels.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_path, write_text_atomic
from ..cards import load_card
from ..errors import InvalidImage, InvalidModelFile, VsTfliteError
from ..images import IMAGE_SUFFIXES, NamedImage, evaluation_images, fit_square, load_image_file, random_messages
from ..manifest import tool_versions
from ..runtime import attenuation_of, blend, round_8bit
from ..tflite_metadata import read_metadata
from ..weights import WeightSource, load_model
from .inspect_model import inspect_model
from .load_check import run_isolated

VARIANT_ORDER = ("fp32", "fp16", "weight_only_int8", "dynamic_int8", "int8")
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
        return ImageSet("videoseal_tflite.images.evaluation_images (held out from training and calibration)",
                        evaluation_images(size), [])
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
        raise InvalidImage(f"--images {folder} holds no readable image ({len(skipped)} other file(s)); "
                           f"supported: {', '.join(IMAGE_SUFFIXES)}")
    return ImageSet(str(folder), images, skipped)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * math.log10(1 / max(mse, 1e-12))


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


def parse_artifact_name(path: Path) -> tuple[str, int, str] | None:
    """`detector_256_int8.random-init-seed0.tflite` -> ('detector', 256, 'int8'); None for other files."""
    stem = path.name.split(".")[0]
    parts = stem.split("_", 2)
    if len(parts) != 3 or parts[0] not in ("embedder", "detector") or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def _reference_model(meta: dict, card_name: str):
    """The PyTorch model with the same weights as the artifacts, from their metadata."""
    card = load_card(meta.get("card_path") or card_name)
    if meta.get("weights") == "random-init":
        source = WeightSource(random_init_seed=int(meta.get("random_init_seed") or 0))
    elif meta.get("weights") in ("checkpoint", "official") and meta.get("weights_path"):
        source = WeightSource(checkpoint=Path(meta["weights_path"]))
    else:
        source = WeightSource()
    return load_model(card, source)


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
    for path in sorted(card_dir.glob("*.tflite")):
        parsed = parse_artifact_name(path)
        if parsed is None:
            continue
        part, _, variant = parsed
        try:
            meta = read_metadata(path.read_bytes()) or {}
        except Exception:  # a corrupt file is still a record (loads: false)
            meta = {}
        found.append(_Candidate(path, part, variant, meta, qlog.get(f"{part}/{variant}")))
    built = {(c.part, c.variant) for c in found}
    for entry in qlog.values():
        if entry.get("status") == "failed" and (entry["part"], entry["variant"]) not in built:
            found.append(_Candidate(None, entry["part"], entry["variant"], {}, entry))
    order = {v: i for i, v in enumerate(VARIANT_ORDER)}
    return sorted(found, key=lambda c: (c.part != "embedder", order.get(c.variant, 99), str(c.path)))


def _record_skeleton(c: _Candidate, threads: int) -> dict[str, Any]:
    repairs = (c.build or {}).get("repairs_applied") or []
    rec: dict[str, Any] = {
        "part": c.part, "variant": c.variant, "path": str(c.path) if c.path else None,
        "bytes": c.path.stat().st_size if c.path else None, "size_ratio_vs_fp32": None,
        "status": "failed" if c.path is None else ("repaired" if repairs else "loads"),
        "loads": False, "load_error": (c.build or {}).get("error") if c.path is None else None,
        "flags": [], "repairs_applied": repairs, "ops": {},
        "bit_accuracy": None, "bit_agreement_vs_pytorch": None, "max_abs_diff_vs_pytorch": None,
        "latency_ms_median": None, "latency_ms_p90": None, "threads": threads,
    }
    if c.part == "embedder":
        rec.update({"psnr_db": None, "ssim": None})
    return rec


def _attacked(images: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Every attack applied to every image, then brought back to the processing size as the runtime would."""
    from ..attacks import ATTACKS
    from ..runtime import resize_bilinear

    return {name: np.stack([resize_bilinear(attack(img), size, size) for img in images]) for name, attack in ATTACKS.items()}


def validate_card(card_dir: Path, image_folder: Path | None = None, messages_per_image: int = 2, threads: int = 2,
                  progress: bool = True, latency_repeats: int = LATENCY_REPEATS, attacks: bool = False) -> dict[str, Any]:
    """Validate every artifact of one card; returns the report dict (see README for the schema).
    With `attacks`, each record that loads gets `attacks`: bit accuracy under each of `attacks.ATTACKS`."""
    card_dir = Path(card_dir)
    candidates = _candidates(card_dir)
    if not candidates:
        raise VsTfliteError(f"no .tflite artifacts in {card_dir}; run `make convert` first")
    meta = next((c.meta for c in candidates if c.meta.get("variant") == "fp32"), None) or next((c.meta for c in candidates if c.meta), None)
    if not meta:
        raise InvalidModelFile(f"no readable videoseal-tflite model in {card_dir}")
    loaded = _reference_model(meta, card_dir.name)
    card, model = loaded.card, loaded.model
    image_set = load_image_set(image_folder, card.img_size)
    images = np.stack([i.pixels for i in image_set.images]).repeat(messages_per_image, axis=0)
    msgs = random_messages(len(images), card.nbits, MESSAGE_SEED)
    # PyTorch reference: watermark with videoseal's own embed, round to 8 bits, detect
    with torch.no_grad():
        ref_w = model.embed(torch.from_numpy(images), torch.from_numpy(msgs), is_video=False)
        ref_imgs_w = round_8bit(ref_w["imgs_w"].numpy())
        ref_watermark = model.embedder(model.rgb2yuv(torch.from_numpy(images))[:, 0:1] if card.yuv else torch.from_numpy(images),
                                       torch.from_numpy(msgs)).numpy()
        ref_logits = model.detect(torch.from_numpy(ref_imgs_w), is_video=False)["preds"][:, 1:].numpy()

    def torch_detect(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.detect(torch.from_numpy(batch), is_video=False)["preds"][:, 1:].numpy()

    ref_attacked = _attacked(ref_imgs_w, card.img_size) if attacks else {}
    records, embedded = [], {}
    fp32_bytes = {c.part: c.path.stat().st_size for c in candidates if c.variant == "fp32" and c.path}
    bar = tqdm(total=len(candidates) * len(images), desc=f"validate {card.name}", unit="img", disable=not progress, leave=False)
    for c in candidates:
        rec = _record_skeleton(c, threads)
        records.append(rec)
        if c.path is None:
            bar.update(len(images))
            continue
        rec["size_ratio_vs_fp32"] = rec["bytes"] / fp32_bytes[c.part] if c.part in fp32_bytes else None
        try:
            inspection = inspect_model(c.path, load=False)
            rec["ops"] = inspection.op_histogram
            rec["flags"] = [{"op": f.op, "node": f.node, "kind": f.kind, "detail": f.detail} for f in inspection.flags]
        except InvalidModelFile as exc:
            rec.update(status="failed", load_error=str(exc))
            bar.update(len(images))
            continue
        if c.part == "embedder":
            feeds = [{"image": images[i:i + 1], "message": msgs[i:i + 1]} for i in range(len(images))]
        else:
            feeds = [{"image": ref_imgs_w[i:i + 1]} for i in range(len(images))]
        timing: list[float] = []
        result, outputs = run_isolated(c.path, feeds, threads=threads, repeats=latency_repeats, timing=timing)
        bar.update(len(images))
        rec["loads"] = result.loads
        if not result.loads:
            rec.update(status="failed", load_error=result.error)
            continue
        if timing:
            rec["latency_ms_median"] = float(np.median(timing))
            rec["latency_ms_p90"] = float(np.percentile(timing, 90))
        if c.part == "detector":
            logits = np.concatenate([o["bit_logits"] for o in outputs])
            rec["bit_accuracy"] = float(((logits > 0) == (msgs > 0.5)).mean())
            rec["bit_agreement_vs_pytorch"] = float(((logits > 0) == (ref_logits > 0)).mean())
            rec["max_abs_diff_vs_pytorch"] = float(np.abs(logits - ref_logits).max())
            if attacks:
                names = list(ref_attacked)
                feeds = [{"image": ref_attacked[n][i:i + 1]} for n in names for i in range(len(images))]
                attacked_result, attacked_out = run_isolated(c.path, feeds, threads=threads)
                if attacked_result.loads:
                    rec["attacks"] = {}
                    for k, n in enumerate(names):
                        got = np.concatenate([o["bit_logits"] for o in attacked_out[k * len(images):(k + 1) * len(images)]])
                        rec["attacks"][n] = float(((got > 0) == (msgs > 0.5)).mean())
        else:
            watermark = np.concatenate([o["watermark"] for o in outputs])
            imgs_w = np.stack([round_8bit(blend(img, w, card.scaling_w, card.scaling_i, attenuation_of(c.meta or meta)))
                               for img, w in zip(images, watermark)])
            embedded[c.variant] = imgs_w
            logits = torch_detect(imgs_w)
            rec["bit_accuracy"] = float(((logits > 0) == (msgs > 0.5)).mean())
            rec["bit_agreement_vs_pytorch"] = float(((logits > 0) == (ref_logits > 0)).mean())
            rec["max_abs_diff_vs_pytorch"] = float(np.abs(watermark - ref_watermark).max())
            rec["psnr_db"] = float(np.mean([psnr_db(w, o) for w, o in zip(imgs_w, images)]))
            if attacks:
                rec["attacks"] = {n: float(((torch_detect(batch) > 0) == (msgs > 0.5)).mean())
                                  for n, batch in _attacked(imgs_w, card.img_size).items()}
            rec["ssim"] = float(np.mean([ssim(w, o) for w, o in zip(imgs_w, images)]))
    bar.close()
    pairs = []
    detectors = [c for c, r in zip(candidates, records) if c.part == "detector" and r["loads"]]
    for det in detectors:
        variants = sorted(embedded)
        if not variants:
            break
        feeds = [{"image": embedded[v][i:i + 1]} for v in variants for i in range(len(images))]
        result, outputs = run_isolated(det.path, feeds, threads=threads)
        if not result.loads:
            continue
        for k, v in enumerate(variants):
            logits = np.concatenate([o["bit_logits"] for o in outputs[k * len(images):(k + 1) * len(images)]])
            pairs.append({"embedder": v, "detector": det.variant, "bit_accuracy": float(((logits > 0) == (msgs > 0.5)).mean())})
    with torch.no_grad():
        pytorch_reference = {"bit_accuracy": float(((ref_logits > 0) == (msgs > 0.5)).mean()),
                             "psnr_db": float(np.mean([psnr_db(w, o) for w, o in zip(ref_imgs_w, images)]))}
    return {
        "card": card.name,
        "nbits": card.nbits,
        "weights": loaded.weights,
        "weights_label": loaded.label or None,
        "images": {"source": image_set.source, "count": len(image_set.images),
                   "names": [i.name for i in image_set.images], "skipped": image_set.skipped, "size": card.img_size},
        "messages": {"per_image": messages_per_image, "total": int(len(msgs)), "seed": MESSAGE_SEED},
        "tool_versions": tool_versions(),
        "pytorch_reference": pytorch_reference,
        "attacks": sorted(ref_attacked) if attacks else [],
        "records": records,
        "pairs": pairs,
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['card']} ({report['nbits']} bits, weights: {report['weights_label'] or report['weights']})", ""]
    if report["weights"] == "random-init":
        lines += ["**Random-init weights: bit accuracy is meaningless here (about 50 %); agreement with PyTorch is what counts.**", ""]
    ref = report["pytorch_reference"]
    lines += [f"Images: {report['images']['count']} from {report['images']['source']}, {report['messages']['per_image']} "
              f"random messages each. PyTorch reference: bit acc {ref['bit_accuracy']:.4f}, PSNR {ref['psnr_db']:.2f} dB.", "",
              "| part | variant | status | MB | xFP32 | bit acc | vs PyTorch | PSNR dB | ms (median) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report["records"]:
        mb = _fmt(r["bytes"] / 1e6 if r["bytes"] else None, ".2f")
        lines.append(f"| {r['part']} | {r['variant']} | {r['status']} | {mb} | {_fmt(r['size_ratio_vs_fp32'], '.2f')} | "
                     f"{_fmt(r['bit_accuracy'], '.4f')} | {_fmt(r['bit_agreement_vs_pytorch'], '.4f')} | "
                     f"{_fmt(r.get('psnr_db'), '.2f')} | {_fmt(r['latency_ms_median'], '.1f')} |")
    if report["pairs"]:
        lines += ["", "Embedder x detector (bit accuracy, both .tflite):", "",
                  "| embedder \\ detector | " + " | ".join(sorted({p['detector'] for p in report['pairs']}, key=VARIANT_ORDER.index)) + " |"]
        dets = sorted({p["detector"] for p in report["pairs"]}, key=VARIANT_ORDER.index)
        lines.append("|---" * (len(dets) + 1) + "|")
        for emb in sorted({p["embedder"] for p in report["pairs"]}, key=VARIANT_ORDER.index):
            row = {p["detector"]: p["bit_accuracy"] for p in report["pairs"] if p["embedder"] == emb}
            lines.append(f"| {emb} | " + " | ".join(_fmt(row.get(d), ".4f") for d in dets) + " |")
    if report.get("attacks"):
        names = report["attacks"]
        lines += ["", "Bit accuracy under attacks (detector rows: PyTorch-watermarked images; embedder rows: PyTorch detector):", "",
                  "| part | variant | " + " | ".join(names) + " |", "|---|---" + "|---" * len(names) + "|"]
        for r in report["records"]:
            if r.get("attacks"):
                lines.append(f"| {r['part']} | {r['variant']} | " + " | ".join(_fmt(r["attacks"].get(n), ".3f") for n in names) + " |")
    notes = []
    for r in report["records"]:
        for rep in r["repairs_applied"]:
            verb = "Tried against" if r["status"] == "failed" else "Removed"
            notes.append(f"- {r['part']} {r['variant']}: repair `{rep['name']}`: {rep['what']}. {verb}: `{rep['removed_error'][:200]}`")
        if r["load_error"]:
            notes.append(f"- {r['part']} {r['variant']}: **failed**: `{r['load_error'][:300]}`")
        errors = [f for f in r["flags"] if f["kind"] in ("batch_matmul_dtypes", "broadcast_to_shape", "custom_op", "flex_op")]
        if errors:
            notes.append(f"- {r['part']} {r['variant']}: {len(errors)} flag(s) {errors[0]['kind']}: {errors[0]['detail'][:160]}")
    if notes:
        lines += ["", "## Repairs, failures and flags", ""] + notes
    return "\n".join(lines) + "\n"


def tradeoff_plot(report: dict[str, Any], target: Path) -> None:
    """Size vs bit accuracy per part; one colour per variant, the legend gives each one's numbers, marker area ~ latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {v: f"C{i}" for i, v in enumerate(VARIANT_ORDER)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, part in zip(axes, ("embedder", "detector")):
        rows = [r for r in report["records"] if r["part"] == part and r["bit_accuracy"] is not None]
        for r in rows:
            mb, acc, ms = r["bytes"] / 1e6, r["bit_accuracy"] * 100, r["latency_ms_median"] or 1.0
            ax.scatter(mb, acc, s=50 + 10 * math.sqrt(ms), color=colours.get(r["variant"], "k"), alpha=0.75,
                       edgecolors="k", linewidths=0.5, label=f"{r['variant']}: {mb:.2f} MB, {acc:.2f} %, {ms:.1f} ms")
        failed = [r["variant"] for r in report["records"] if r["part"] == part and r["bit_accuracy"] is None]
        title = f"{report['card']} {part}" + (f"  (not built / not loading: {', '.join(failed)})" if failed else "")
        ax.set_title(title, fontsize=10)
        if rows:
            low = min(r["bit_accuracy"] for r in rows) * 100
            ax.set_ylim(max(0.0, min(low - 1.0, 99.0)), 100.6)
            ax.set_xlim(0, max(r["bytes"] for r in rows) / 1e6 * 1.35)
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel("bit accuracy (%)")
        ax.grid(alpha=0.3)
        if rows:
            ax.legend(fontsize=8, loc="lower right", title="variant: size, bit accuracy, median latency", title_fontsize=8)
    fig.suptitle("Which file to ship: size vs bit accuracy (marker area grows with latency)", fontsize=10)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], card_dir: Path) -> list[Path]:
    card_dir = Path(card_dir)
    json_path, md_path, png_path = card_dir / "report.json", card_dir / "report.md", card_dir / "tradeoff.png"
    write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_text_atomic(md_path, report_markdown(report))
    tradeoff_plot(report, png_path)
    return [json_path, md_path, png_path]


def below_floor(report: dict[str, Any], min_bit_acc: float | None, max_psnr_drop: float | None) -> list[str]:
    """Every record under a floor, one line each. A file that does not load is below any floor; a variant
    whose build failed (no file was written, nothing can be shipped) is in the report but not a floor breach."""
    problems = []
    fp32_psnr = next((r.get("psnr_db") for r in report["records"] if r["part"] == "embedder" and r["variant"] == "fp32"), None)
    for r in report["records"]:
        if r["path"] is None:
            continue
        name = f"{report['card']} {r['part']} {r['variant']}"
        if (min_bit_acc is not None or max_psnr_drop is not None) and not r["loads"]:
            problems.append(f"{name}: does not load ({(r['load_error'] or '')[:120]})")
            continue
        if min_bit_acc is not None and r["bit_accuracy"] is not None and r["bit_accuracy"] < min_bit_acc:
            problems.append(f"{name}: bit accuracy {r['bit_accuracy']:.4f} < {min_bit_acc}")
        if max_psnr_drop is not None and r.get("psnr_db") is not None and fp32_psnr is not None:
            drop = fp32_psnr - r["psnr_db"]
            if drop > max_psnr_drop:
                problems.append(f"{name}: PSNR {r['psnr_db']:.2f} dB is {drop:.2f} dB below FP32 (> {max_psnr_drop})")
    return problems


def pick(report: dict[str, Any], part: str, max_mb: float | None, min_bit_acc: float | None,
         max_ms: float | None) -> tuple[dict | None, str]:
    """The fastest loading record of `part` meeting every constraint (ties: smaller, then more accurate)."""
    rows = [r for r in report["records"] if r["part"] == part and r["loads"]]
    checks = {"loads": lambda r: True}
    if max_mb is not None:
        checks[f"size <= {max_mb} MB"] = lambda r: r["bytes"] / 1e6 <= max_mb
    if min_bit_acc is not None:
        checks[f"bit accuracy >= {min_bit_acc}"] = lambda r: (r["bit_accuracy"] or 0) >= min_bit_acc
    if max_ms is not None:
        checks[f"latency <= {max_ms} ms"] = lambda r: r["latency_ms_median"] is not None and r["latency_ms_median"] <= max_ms
    ok = [r for r in rows if all(check(r) for check in checks.values())]
    if not ok:
        unmet = [name for name, check in checks.items() if not any(check(r) for r in rows)] or \
                [name for name, check in checks.items() if not all(check(r) for r in rows)]
        return None, f"no {part} meets all constraints; unmet by every file: {', '.join(unmet) or 'the combination'}"
    best = min(ok, key=lambda r: (r["latency_ms_median"] or float("inf"), r["bytes"], -(r["bit_accuracy"] or 0)))
    why = (f"{best['variant']}: {best['bytes'] / 1e6:.2f} MB, bit accuracy {best['bit_accuracy']:.4f}, "
           f"{_fmt(best['latency_ms_median'], '.1f')} ms median; fastest of {len(ok)} {part} file(s) meeting "
           + (", ".join(name for name in checks if name != "loads") or "no constraint (all files)"))
    return best, why
