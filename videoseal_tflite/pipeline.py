"""The whole job for one card: weights -> FP32 .tflite per part -> quantized variants -> manifest.

`convert_card` is what `videoseal-tflite convert` and `make convert` call; `quantize_card` is
`videoseal-tflite quantize` (variants from FP32 files already on disk).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .atomic import ensure_writable_dir, write_text_atomic
from .cards import Card, load_card
from .convert.export import ConvertedModel, artifact_name, convert_part
from .convert.wrappers import PARTS
from .errors import UnknownVariant, VsTfliteError
from .lock import output_lock
from .images import calibration_images, evaluation_images, random_messages
from .manifest import update_manifest
from .runtime import attenuation_of, blend, round_8bit
from .validate.load_check import run_isolated
from .quantize.build import CheckSet, VariantResult, build_variant, make_check_set
from .quantize.recipes import VARIANTS
from .tflite_metadata import read_metadata
from .weights import LoadedModel, WeightSource, load_model

log = logging.getLogger(__name__)

OFFICIAL_CARDS = ("videoseal_0.0", "videoseal_1.0")
CALIBRATION_MESSAGE_SEED = 5
CHECK_MESSAGE_SEED = 7
QUANTIZE_LOG = "quantize_log.json"


@dataclasses.dataclass
class CardArtifacts:
    card: str
    out_dir: Path
    converted: list[ConvertedModel]
    variants: list[VariantResult]

    def variant(self, part: str, variant: str) -> VariantResult:
        return next(v for v in self.variants if v.part == part and v.variant == variant)


def _feeds(part: str, images: list, nbits: int, seed: int) -> list[dict[str, np.ndarray]]:
    messages = random_messages(len(images), nbits, seed)
    return [{"image": img.pixels[None]} | ({"message": msg[None]} if part == "embedder" else {})
            for img, msg in zip(images, messages)]


def _watermarked_check_images(out_dir: Path, card: Card, images: list, seed: int) -> list[dict[str, np.ndarray]] | None:
    """Detector check inputs: the evaluation images watermarked by the FP32 embedder .tflite (8-bit), so that
    variant-vs-FP32 agreement is measured on logits that carry a message, not on noise around zero."""
    embedders = sorted(out_dir.glob(f"embedder_{card.img_size}_fp32*.tflite"))
    if not embedders:
        return None
    feeds = _feeds("embedder", images, card.nbits, seed)
    result, outputs = run_isolated(embedders[0], feeds)
    if not result.loads:
        return None
    meta = read_metadata(embedders[0].read_bytes()) or {}
    return [{"image": round_8bit(blend(feed["image"][0], out["watermark"][0], card.scaling_w, card.scaling_i,
                                       attenuation_of(meta)))[None]}
            for feed, out in zip(feeds, outputs)]


def _fp32_entry(result: ConvertedModel, loaded: LoadedModel) -> dict:
    return {
        "sha256": result.sha256, "bytes": result.bytes, "card": result.card, "part": result.part,
        "size": result.size, "variant": "fp32", "weights": loaded.weights, "weights_label": loaded.label or None,
        "weights_path": loaded.weights_path, "weights_sha256": loaded.weights_sha256,
        "rewrites": [dataclasses.asdict(r) for r in result.rewrites], "recipe": None, "repairs_applied": [],
        "calibration_set": None, "parity_vs_pytorch": dataclasses.asdict(result.parity),
    }


def _variant_entry(result: VariantResult, fp32_meta: dict, calibration: list[str] | None) -> dict:
    return {
        "sha256": result.sha256, "bytes": result.bytes, "card": fp32_meta.get("card"), "part": result.part,
        "size": fp32_meta.get("size"), "variant": result.variant, "weights": fp32_meta.get("weights"),
        "weights_label": fp32_meta.get("weights_label") or None, "weights_sha256": fp32_meta.get("weights_sha256"),
        "rewrites": fp32_meta.get("rewrites", []), "recipe": result.recipe,
        "repairs_applied": [dataclasses.asdict(r) for r in result.repairs_applied],
        "calibration_set": calibration, "status": result.status,
        "agreement_vs_fp32": dataclasses.asdict(result.agreement) if result.agreement else None,
    }


def quantize_card(
    card_name: str,
    out_root: Path,
    variants: tuple[str, ...] = VARIANTS,
    parts: tuple[str, ...] = PARTS,
    int8_io: bool = False,
    progress: bool = True,
) -> list[VariantResult]:
    """Build `variants` of every FP32 .tflite of the card under `out_root/<card>/`; failures are recorded, not raised."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UnknownVariant(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    with output_lock(out_root):
        return _quantize_card(card_name, out_root, variants, parts, int8_io, progress)


def _quantize_card(card_name, out_root, variants, parts, int8_io, progress) -> list[VariantResult]:
    card = load_card(card_name)
    out_dir = ensure_writable_dir(Path(out_root) / card.name)
    fp32_files = {part: sorted(out_dir.glob(f"{part}_{card.img_size}_fp32*.tflite")) for part in parts}
    missing = [part for part, files in fp32_files.items() if not files]
    if missing:
        raise VsTfliteError(f"no FP32 {' / '.join(missing)} .tflite in {out_dir}; run `videoseal-tflite convert --card {card.name}` first")
    calib_images, check_images = calibration_images(card.img_size), evaluation_images(card.img_size)
    calib_names = [img.name for img in calib_images]
    results: list[VariantResult] = []
    steps = [(part, path, variant) for part in parts for path in fp32_files[part] for variant in variants]
    bar = tqdm(steps, desc=f"quantize {card.name}", unit="variant", disable=not progress, leave=False)
    checks: dict[Path, CheckSet] = {}
    for part, fp32_path, variant in bar:
        bar.set_postfix_str(f"{part} {variant}")
        meta = read_metadata(fp32_path.read_bytes()) or {}
        label = meta.get("weights_label") or ""
        if fp32_path not in checks:
            feeds = _feeds(part, check_images, card.nbits, CHECK_MESSAGE_SEED)
            if part == "detector":
                feeds = _watermarked_check_images(out_dir, card, check_images, CHECK_MESSAGE_SEED) or feeds
            checks[fp32_path] = make_check_set(fp32_path, feeds)
        calibration = _feeds(part, calib_images, card.nbits, CALIBRATION_MESSAGE_SEED) if variant == "int8" else None
        target = out_dir / artifact_name(part, card.img_size, variant, label)
        result = build_variant(fp32_path, variant, target, checks[fp32_path], calibration, repair=True, int8_io=int8_io)
        results.append(result)
        if result.status == "failed":
            tqdm.write(f"{card.name} {part} {variant}: FAILED ({result.error})")
            continue
        entry = _variant_entry(result, meta, calib_names if variant == "int8" else None)
        update_manifest(out_root, {str(target.relative_to(out_root)): entry})
    _write_quantize_log(out_dir, results)
    return results


def _write_quantize_log(out_dir: Path, results: list[VariantResult]) -> None:
    path = out_dir / QUANTIZE_LOG
    previous = json.loads(path.read_text()) if path.is_file() else {}
    merged = {**previous, **{f"{r.part}/{r.variant}": r.to_json() for r in results}}
    write_text_atomic(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")


def convert_card(
    card_name: str,
    source: WeightSource,
    out_root: Path,
    parts: tuple[str, ...] = PARTS,
    rewrites: bool = True,
    variants: tuple[str, ...] = VARIANTS,
    int8_io: bool = False,
    progress: bool = True,
) -> CardArtifacts:
    """Convert `parts` of a card to FLOAT32 .tflite under `out_root/<card>/`, then build `variants` of each."""
    card: Card = load_card(card_name)
    ensure_writable_dir(Path(out_root))
    with output_lock(out_root):
        return _convert_card(card, source, out_root, parts, rewrites, variants, int8_io, progress)


def _convert_card(card, source, out_root, parts, rewrites, variants, int8_io, progress) -> CardArtifacts:
    out_dir = ensure_writable_dir(Path(out_root) / card.name)
    loaded = load_model(card, source)
    log.info("converting %s", loaded.describe())
    converted = []
    for part in tqdm(parts, desc=f"convert {card.name}", unit="part", disable=not progress, leave=False):
        result = convert_part(loaded, part, out_dir, rewrites=rewrites)
        converted.append(result)
        update_manifest(out_root, {str(result.path.relative_to(out_root)): _fp32_entry(result, loaded)})
    quantized = quantize_card(str(card.path), out_root, variants, parts, int8_io, progress) if variants else []
    return CardArtifacts(card.name, out_dir, converted, quantized)
