"""The whole job for one card: weights -> FP32 .tflite per part -> quantized variants -> manifest.

`convert_card` is what `videoseal-tflite convert` and `make convert` call; `quantize_card` is
`videoseal-tflite quantize` (variants from FP32 files already on disk).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from videoseal_tflite import console
from videoseal_tflite.build.cards import Card, load_card
from videoseal_tflite.build.convert.export import ConvertedModel, convert_part
from videoseal_tflite.build.images import calibration_images, calibration_names, evaluation_images, random_messages
from videoseal_tflite.build.quantize.variant import CheckSet, VariantResult, make_check_set, quantize_variant
from videoseal_tflite.build.weights import LoadedModel, WeightSource, load_model, load_model_for_metadata
from videoseal_tflite.errors import ArtifactsMissing, ConversionFailed, InvalidModelFile, UnknownVariant
from videoseal_tflite.runtime.image import round_8bit
from videoseal_tflite.store.artifact import PARTS, Artifact, Provenance
from videoseal_tflite.store.atomic import ensure_writable_dir, write_text_atomic
from videoseal_tflite.store.lock import output_lock, updating
from videoseal_tflite.store.manifest import update_manifest
from videoseal_tflite.store.staleness import input_hash, up_to_date
from videoseal_tflite.store.variants import spec, variant_names
from videoseal_tflite.tflite.metadata import read_metadata

log = logging.getLogger(__name__)

OFFICIAL_CARDS = ("videoseal_0.0", "videoseal_1.0")
CALIBRATION_MESSAGE_SEED = 5
CHECK_MESSAGE_SEED = 7
QUANTIZE_LOG = "quantize_log.json"
PART_PROCESS = "videoseal_tflite.build.part_process"  # the module a part built aside runs in


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
    calib_names = calibration_names()
    results: list[VariantResult] = []
    steps = [(part, path, variant) for part in parts for path in fp32_files[part] for variant in variants]
    bar = tqdm(
        steps, desc=f"quantize {card.name}", unit="variant", disable=not progress, leave=False, file=console.stream()
    )
    checks: dict[Path, CheckSet] = {}
    previous_log = _read_quantize_log(out_dir)
    for part, fp32_path, variant in bar:
        bar.set_postfix_str(f"{part} {variant}")
        parent, target, reused = _earlier_variant(
            out_root, fp32_path, variant, int8_io, calib_names, previous_log, force
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


def _earlier_variant(
    out_root: Path, fp32_path: Path, variant: str, int8_io: bool, calib_names: list[str], log: dict, force: bool
) -> tuple[Provenance, Path, VariantResult | None]:
    """The variant's provenance before its build, its path, and the earlier result for the same inputs (else None)."""
    parent = _variant_parent(fp32_path, variant, int8_io, calib_names if variant == "int8" else None)
    target = parent.artifact.with_variant(variant).path(out_root)
    part = parent.artifact.part
    return (
        parent,
        target,
        None if force else _reusable(out_root, target, parent.input_hash, log.get(f"{part}/{variant}")),
    )


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
    with updating(out_dir):  # the other part's process may be writing its own results
        merged = {**_read_quantize_log(out_dir), **{f"{r.part}/{r.variant}": r.to_json() for r in results}}
        write_text_atomic(out_dir / QUANTIZE_LOG, json.dumps(merged, indent=2, sort_keys=True) + "\n")


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
    workers: int | None = None,
) -> CardArtifacts:
    """Convert `parts` of a card to FLOAT32 .tflite under `out_root/<card>/`, then build `variants` of each.
    Files that are up to date (same input hash, bytes as in the manifest) are reused unless `force`.
    `workers` processes build the parts at once (default: one per part, up to the machine's cores); the parts
    share nothing (a CI shard builds one alone, byte-identical), so the files do not depend on it."""
    card: Card = load_card(card_name)
    workers = default_workers(parts) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ensure_writable_dir(Path(out_root))
    with output_lock(out_root):
        return _convert_card(card, source, out_root, parts, rewrites, variants, int8_io, progress, force, workers)


def default_workers(parts: tuple[str, ...]) -> int:
    """One process per part, no more than the machine's cores."""
    return max(1, min(len(parts), os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class PartJob:
    """One part's whole build (FP32 file, then its variants): what a second process needs to run it."""

    card: Card
    source: WeightSource
    out_root: Path
    part: str
    rewrites: bool
    variants: tuple[str, ...]
    int8_io: bool
    force: bool


def _convert_card(card, source, out_root, parts, rewrites, variants, int8_io, progress, force, workers):
    out_dir = ensure_writable_dir(Path(out_root) / card.name)
    variants = variant_names(quantized_only=True) if variants is None else variants
    loaded = load_model(card, source)
    jobs = [PartJob(card, source, Path(out_root), part, rewrites, tuple(variants), int8_io, force) for part in parts]
    # the first part to build is built here, the next ones (up to `workers`) in processes of their own; a part with
    # nothing to build is only read back, here (a second Python would take longer to start)
    pending = [job for job in jobs if not _nothing_to_build(job, loaded)]
    aside = pending[1:workers]
    here = [job for job in jobs if job.part not in {other.part for other in aside}]
    built: dict[str, tuple[ConvertedModel, list[VariantResult]]] = {}
    with _PartProcesses(aside) as others:
        for job in here:
            built[job.part] = build_part(job, progress, loaded)
        built.update(others.results(progress, card.name))
    converted = [built[part][0] for part in parts]
    return CardArtifacts(card.name, out_dir, converted, [v for part in parts for v in built[part][1]])


def build_part(
    job: PartJob, progress: bool = False, loaded: LoadedModel | None = None
) -> tuple[ConvertedModel, list[VariantResult]]:
    """The part's FP32 .tflite (reused when up to date), then its quantized variants. `loaded`: the card's model
    with `job.source`'s weights, when the caller has it."""
    card, out_root = job.card, job.out_root
    loaded = loaded or load_model(card, job.source)
    log.info("converting %s %s", loaded.describe(), job.part)
    wanted = fp32_input_hash(card, loaded, job.part, job.rewrites)
    target = _fp32_target(card, loaded, job.part, out_root)
    entry = None if job.force else up_to_date(out_root, target, wanted)
    if entry is not None:
        log.info("%s is up to date (same inputs); not rebuilt", target)
        converted = ConvertedModel.from_manifest(target, entry)
    else:
        with _step_bar(f"convert {card.name} {job.part}", progress):
            converted = convert_part(loaded, job.part, out_root / card.name, rewrites=job.rewrites, input_hash=wanted)
        update_manifest(
            out_root,
            {str(converted.path.relative_to(out_root)): converted.provenance.manifest_entry(converted.sha256,
                                                                                          converted.bytes)},
        )  # fmt: skip
    if not job.variants:
        return converted, []
    return converted, _quantize_card(card, out_root, job.variants, (job.part,), job.int8_io, progress, job.force)


def _fp32_target(card: Card, loaded: LoadedModel, part: str, out_root: Path) -> Path:
    return Artifact(card.name, part, card.img_size, "fp32", loaded.label).path(out_root)


def _nothing_to_build(job: PartJob, loaded: LoadedModel) -> bool:
    """Whether the part's FP32 file and each variant asked for are up to date (would be reused as they are)."""
    card, out_root = job.card, job.out_root
    fp32 = _fp32_target(card, loaded, job.part, out_root)
    if job.force or up_to_date(out_root, fp32, fp32_input_hash(card, loaded, job.part, job.rewrites)) is None:
        return False
    earlier, names = _read_quantize_log(out_root / card.name), calibration_names()
    return all(
        _earlier_variant(out_root, fp32, v, job.int8_io, names, earlier, False)[2] is not None for v in job.variants
    )


class _PartProcesses:
    """Parts built in child Pythons (`python -m videoseal_tflite.build.part_process`, the job and its result as
    pickles in a temporary folder) while this process builds its own. A child of its own, not a multiprocessing
    spawn: that re-runs the caller's main script, which a user's script need not guard. Leaving the block early (an
    error, Ctrl-C, SIGTERM) stops them the same way (SIGTERM), so each removes its temp files as this one does."""

    def __init__(self, jobs: list[PartJob]) -> None:
        self.jobs = jobs
        self.running: list[tuple[PartJob, subprocess.Popen, Path]] = []
        self.folder: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> "_PartProcesses":
        if not self.jobs:
            return self
        self.folder = tempfile.TemporaryDirectory(prefix="videoseal-tflite-parts-")
        for job in self.jobs:
            handoff = Path(self.folder.name) / job.part
            handoff.mkdir()
            (handoff / "job.pickle").write_bytes(pickle.dumps(job))
            command = [sys.executable, "-m", PART_PROCESS, str(handoff)]
            self.running.append((job, subprocess.Popen(command, stdin=subprocess.DEVNULL), handoff))
        return self

    def results(self, progress: bool, card_name: str) -> dict[str, tuple[ConvertedModel, list[VariantResult]]]:
        """Wait for every child (a bar shows the time so far) and return its part's results, or raise its error."""
        out = {}
        for job, process, handoff in self.running:
            with _step_bar(f"convert {card_name} {job.part} (second process)", progress) as tick:
                while process.poll() is None:
                    tick()
                    time.sleep(0.5)
            result = handoff / "result.pickle"
            if not result.is_file():
                raise ConversionFailed(
                    f"the process building the {job.part} of {card_name} stopped (exit code {process.returncode}) "
                    f"before it finished; run convert again with --workers 1 to see why"
                )
            status, value = pickle.loads(result.read_bytes())
            if status == "error":
                raise value
            out[job.part] = value
        return out

    def __exit__(self, kind, error, trace) -> None:
        for _, process, _ in self.running:
            if process.poll() is None:
                process.terminate()  # SIGTERM: the child unwinds like Ctrl-C (temp files removed)
        for _, process, _ in self.running:
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.folder is not None:
            self.folder.cleanup()


@contextlib.contextmanager
def _step_bar(description: str, enabled: bool) -> Iterator[Callable[[], None]]:
    """A one-step bar for a long call: yields `tick()`, which redraws it with the time so far."""
    bar = tqdm(total=1, desc=description, unit="part", disable=not enabled, leave=False, file=console.stream())
    try:
        yield bar.refresh
        bar.update(1)
    finally:
        bar.close()


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
