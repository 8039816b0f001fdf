"""The whole job for one card: weights -> FP32 .tflite per part -> quantized variants -> manifest.

`convert_card` is what `videoseal-tflite convert` and `make convert` call; `quantize_card` is
`videoseal-tflite quantize` (variants from FP32 files already on disk).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from videoseal_tflite import console
from videoseal_tflite.build.cards import Card, load_card
from videoseal_tflite.build.convert.export import ConvertedModel, convert_part
from videoseal_tflite.build.images import calibration_images, evaluation_images, random_messages
from videoseal_tflite.build.quantize.variant import CheckSet, VariantResult, make_check_set, quantize_variant
from videoseal_tflite.build.weights import LoadedModel, WeightSource, load_model, load_model_for_metadata
from videoseal_tflite.errors import ArtifactsMissing, InvalidModelFile, UnknownVariant
from videoseal_tflite.runtime.image import round_8bit
from videoseal_tflite.store.artifact import PARTS, Artifact, Provenance
from videoseal_tflite.store.atomic import ensure_writable_dir, write_text_atomic
from videoseal_tflite.store.lock import output_lock
from videoseal_tflite.store.manifest import update_manifest
from videoseal_tflite.store.staleness import input_hash, up_to_date
from videoseal_tflite.store.variants import spec, variant_names
from videoseal_tflite.tflite.metadata import read_metadata

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
    return [
        {"image": img.pixels[None]} | ({"message": msg[None]} if part == "embedder" else {})
        for img, msg in zip(images, messages)
    ]


def _watermarked_check_images(card: Card, fp32_meta: dict, images: list, seed: int) -> list[dict[str, np.ndarray]]:
    """Detector check inputs: the evaluation images watermarked by videoseal's own PyTorch embed with the same
    weights (8-bit), so that variant-vs-FP32 agreement is measured on logits that carry a message, not on noise
    around zero. From the weights, not from an embedder file on disk, so a detector built alone (a CI shard)
    comes out byte-identical to one built beside its embedder."""
    import torch

    model = load_model_for_metadata(fp32_meta, card.name).model
    pixels = np.stack([img.pixels for img in images])
    messages = random_messages(len(images), card.nbits, seed)
    with torch.no_grad():
        marked = model.embed(torch.from_numpy(pixels), torch.from_numpy(messages), is_video=False)["imgs_w"].numpy()
    return [{"image": round_8bit(img)[None]} for img in marked]


def check_set(card: Card, out_dir: Path, part: str, fp32_path: Path, images: list | None = None) -> CheckSet:
    """The inputs every quantized build of `part` is checked on (evaluation images; detectors: watermarked by
    the FP32 embedder) and the FP32 .tflite's outputs for them."""
    images = images if images is not None else evaluation_images(card.img_size)
    feeds = _feeds(part, images, card.nbits, CHECK_MESSAGE_SEED)
    if part == "detector":
        feeds = _watermarked_check_images(card, read_metadata(fp32_path.read_bytes()) or {}, images, CHECK_MESSAGE_SEED)
    return make_check_set(fp32_path, feeds)


def calibration_feeds(card: Card, part: str, images: list | None = None) -> list[dict[str, np.ndarray]]:
    """Full-int8 calibration inputs: the calibration images with random message bits."""
    images = images if images is not None else calibration_images(card.img_size)
    return _feeds(part, images, card.nbits, CALIBRATION_MESSAGE_SEED)


def quantize_card(
    card_name: str,
    out_root: Path,
    variants: tuple[str, ...] | None = None,
    parts: tuple[str, ...] = PARTS,
    int8_io: bool = False,
    progress: bool = True,
    force: bool = False,
) -> list[VariantResult]:
    """Build `variants` of every FP32 .tflite of the card under `out_root/<card>/`; failures are recorded, not raised.
    Variants that are up to date (or failed before on the same inputs) are reused unless `force`."""
    card = load_card(card_name)
    with output_lock(out_root):
        return _quantize_card(card, out_root, variants, parts, int8_io, progress, force)


def _quantize_card(card, out_root, variants, parts, int8_io, progress, force) -> list[VariantResult]:
    variants = variant_names(quantized_only=True) if variants is None else variants
    for name in variants:
        if not spec(name).quantized:
            raise UnknownVariant(f"'{name}' is not a quantized variant; known: {', '.join(variant_names(True))}")
    out_dir = ensure_writable_dir(Path(out_root) / card.name)
    fp32_files = {
        part: [p for a, p in Artifact.find(out_dir, part, "fp32") if a.size == card.img_size] for part in parts
    }
    missing = [part for part, files in fp32_files.items() if not files]
    if missing:
        raise ArtifactsMissing(
            f"no FP32 {' / '.join(missing)} .tflite in {out_dir}; "
            f"run `videoseal-tflite convert --card {card.name}` first"
        )
    calib_images, check_images = calibration_images(card.img_size), evaluation_images(card.img_size)
    calib_names = [img.name for img in calib_images]
    results: list[VariantResult] = []
    steps = [(part, path, variant) for part in parts for path in fp32_files[part] for variant in variants]
    bar = tqdm(
        steps, desc=f"quantize {card.name}", unit="variant", disable=not progress, leave=False, file=console.stream()
    )
    checks: dict[Path, CheckSet] = {}
    previous_log = _read_quantize_log(out_dir)
    for part, fp32_path, variant in bar:
        bar.set_postfix_str(f"{part} {variant}")
        parent = _variant_parent(fp32_path, variant, int8_io, calib_names if variant == "int8" else None)
        target = parent.artifact.with_variant(variant).path(out_root)
        reused = (
            None if force else _reusable(out_root, target, parent.input_hash, previous_log.get(f"{part}/{variant}"))
        )
        if reused is not None:
            log.info("%s %s %s is up to date (same inputs); not rebuilt", card.name, part, variant)
            results.append(reused)
            continue
        if fp32_path not in checks:
            checks[fp32_path] = check_set(card, out_dir, part, fp32_path, check_images)
        calibration = calibration_feeds(card, part, calib_images) if variant == "int8" else None
        result = quantize_variant(
            fp32_path, variant, target, checks[fp32_path], calibration, int8_io=int8_io, provenance=parent
        )
        result = dataclasses.replace(result, input_hash=parent.input_hash)
        results.append(result)
        if result.status == "failed":
            tqdm.write(f"{card.name} {part} {variant}: FAILED ({result.error})", file=console.stream())
            continue
        update_manifest(
            out_root, {str(target.relative_to(out_root)): result.provenance.manifest_entry(result.sha256, result.bytes)}
        )
    _write_quantize_log(out_dir, results)
    return results


def _variant_parent(fp32_path: Path, variant: str, int8_io: bool, calibrated: list[str] | None) -> Provenance:
    """The FP32 file's provenance with what this variant's build adds before it starts: calibration set, input hash."""
    fp32_bytes = fp32_path.read_bytes()
    meta = read_metadata(fp32_bytes)
    if not meta:
        raise InvalidModelFile(f"{fp32_path} carries no videoseal_tflite metadata; convert it with videoseal-tflite")
    return dataclasses.replace(
        Provenance.from_json(meta),
        calibration_set=calibrated,
        input_hash=variant_input_hash(hashlib.sha256(fp32_bytes).hexdigest(), variant, int8_io, calibrated),
    )


def _reusable(out_root: Path, target: Path, wanted: str, logged: dict | None) -> VariantResult | None:
    """The earlier result for these exact inputs: a file whose bytes still match, or a failure (no file)."""
    if not logged or logged.get("input_hash") != wanted:
        return None
    if logged.get("status") == "failed":
        return VariantResult.from_json(logged) if not target.exists() else None
    if up_to_date(Path(out_root), target, wanted) is None:
        return None
    return dataclasses.replace(VariantResult.from_json(logged), path=target)


def _read_quantize_log(out_dir: Path) -> dict:
    path = out_dir / QUANTIZE_LOG
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # a damaged log only means nothing is reused
    return data if isinstance(data, dict) else {}


def _write_quantize_log(out_dir: Path, results: list[VariantResult]) -> None:
    path = out_dir / QUANTIZE_LOG
    previous = _read_quantize_log(out_dir)
    merged = {**previous, **{f"{r.part}/{r.variant}": r.to_json() for r in results}}
    write_text_atomic(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")


def convert_card(
    card_name: str,
    source: WeightSource,
    out_root: Path,
    parts: tuple[str, ...] = PARTS,
    rewrites: bool = True,
    variants: tuple[str, ...] | None = None,
    int8_io: bool = False,
    progress: bool = True,
    force: bool = False,
) -> CardArtifacts:
    """Convert `parts` of a card to FLOAT32 .tflite under `out_root/<card>/`, then build `variants` of each.
    Files that are up to date (same input hash, bytes as in the manifest) are reused unless `force`."""
    card: Card = load_card(card_name)
    ensure_writable_dir(Path(out_root))
    with output_lock(out_root):
        return _convert_card(card, source, out_root, parts, rewrites, variants, int8_io, progress, force)


def _convert_card(card, source, out_root, parts, rewrites, variants, int8_io, progress, force) -> CardArtifacts:
    out_dir = ensure_writable_dir(Path(out_root) / card.name)
    loaded = load_model(card, source)
    log.info("converting %s", loaded.describe())
    converted = []
    for part in tqdm(
        parts, desc=f"convert {card.name}", unit="part", disable=not progress, leave=False, file=console.stream()
    ):
        wanted = fp32_input_hash(card, loaded, part, rewrites)
        target = Artifact(card.name, part, card.img_size, "fp32", loaded.label).path(out_root)
        entry = None if force else up_to_date(Path(out_root), target, wanted)
        if entry is not None:
            log.info("%s is up to date (same inputs); not rebuilt", target)
            converted.append(ConvertedModel.from_manifest(target, entry))
            continue
        result = convert_part(loaded, part, out_dir, rewrites=rewrites, input_hash=wanted)
        converted.append(result)
        update_manifest(
            out_root,
            {str(result.path.relative_to(out_root)): result.provenance.manifest_entry(result.sha256, result.bytes)},
        )
    variants = variant_names(quantized_only=True) if variants is None else variants
    quantized = _quantize_card(card, out_root, variants, parts, int8_io, progress, force) if variants else []
    return CardArtifacts(card.name, out_dir, converted, quantized)


def fp32_input_hash(card: Card, loaded: LoadedModel, part: str, rewrites: bool) -> str:
    """Everything an FP32 .tflite is built from: the card file, the weights, the part, the rewrites."""
    return input_hash(
        "convert",
        card=Path(card.path).read_text(encoding="utf-8"),
        part=part,
        rewrites=rewrites,
        weights=loaded.weights,
        weights_sha256=loaded.weights_sha256,
        seed=loaded.random_init_seed,
    )


def variant_input_hash(fp32_sha256: str, variant: str, int8_io: bool, calibration: list[str] | None) -> str:
    """Everything a quantized variant is built from: the FP32 file, the recipe and repairs (code), the
    calibration set."""
    return input_hash("quantize", fp32_sha256=fp32_sha256, variant=variant, int8_io=int8_io, calibration=calibration)
