"""The image set streamed in fixed chunks (issue #15): memory stays flat from 16 to 10,000 images, and
`validate --workers N` evaluates chunks in N processes with numbers that do not depend on N.

- `ImageSource`: slots (the sorted files of `--images DIR`, or the bundled evaluation set), read `CHUNK` at a time;
  a slot's messages are fixed by its index, so a chunk's work is the same whoever does it;
- `chunk_stats`: one chunk through the PyTorch reference and every loading file: processing size, the
  embedder x detector pairs and, unless off, full resolution (`robustness.evaluate_samples`);
- `Totals`: counts, sums and maxima, added in chunk order (N=1 and N=2 add the same numbers in the same order).
Chunks are whole: the chunk size is a constant, never derived from N.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from videoseal_tflite.build.images import (
    EVAL_BUNDLED,
    EVAL_PROCEDURAL_SEEDS,
    evaluation_image,
    fit_square,
    fullres_evaluation_image,
    random_messages,
)
from videoseal_tflite.errors import InvalidImage
from videoseal_tflite.runtime.image_io import IMAGE_SUFFIXES, NamedImage, load_image_file
from videoseal_tflite.validate.chunks import chunk_fullres, chunk_processing

CHUNK = 8
MESSAGE_SEED = 11  # processing size (as before streaming); full resolution uses robustness.MESSAGE_SEED


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Where the images come from: `folder` (every file in it, sorted by name) or the bundled evaluation set,
    whose processing-size images (`images.evaluation_images`) and full-resolution ones
    (`images.fullres_evaluation_images`) are two lists of the same length."""

    folder: Path | None
    paths: tuple[Path, ...] = ()

    @classmethod
    def of(cls, folder: Path | None) -> "ImageSource":
        if folder is None:
            return cls(None)
        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidImage(f"--images {folder} is not a folder")
        return cls(folder, tuple(sorted(p for p in folder.iterdir() if p.is_file())))

    @property
    def slots(self) -> int:
        return len(self.paths) if self.folder else len(EVAL_BUNDLED) + len(EVAL_PROCEDURAL_SEEDS)

    @property
    def source(self) -> str:
        default = "videoseal_tflite.build.images.evaluation_images (held out from training and calibration)"
        return str(self.folder) if self.folder else default

    def chunks(self) -> list[range]:
        return [range(i, min(i + CHUNK, self.slots)) for i in range(0, self.slots, CHUNK)]

    def load(self, slot: int, size: int, fullres: bool) -> tuple[NamedImage, NamedImage | None]:
        """Slot `slot` at the processing size (centre crop + resize) and, with `fullres`, at its own size.
        Raises InvalidImage for a file that is not an image."""
        if self.folder:
            image = load_image_file(self.paths[slot])
            return NamedImage(image.name, fit_square(image.pixels, size)), image if fullres else None
        return evaluation_image(slot, size), fullres_evaluation_image(slot) if fullres else None


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a worker needs, picklable: the card's weights (by metadata), the loading files, the settings."""

    meta: dict
    card_name: str
    files: tuple[tuple[str, str, str], ...]  # (part, variant, path) of every file that loaded
    attenuation: dict[str, Any]  # embedder variant -> runtime.attenuation_of its metadata
    source: ImageSource
    messages_per_image: int
    threads: int
    fullres: bool
    attacks: tuple[str, ...]
    torch_threads: int


class _Models:
    """Per process: the PyTorch reference and one interpreter per file, loaded once."""

    def __init__(self, job: Job) -> None:
        import torch

        from videoseal_tflite.build.weights import load_model_for_metadata
        from videoseal_tflite.runtime.image import Detector, Embedder
        from videoseal_tflite.tflite.interpreter import SignatureModel

        torch.set_num_threads(job.torch_threads)
        self.loaded = load_model_for_metadata(job.meta, job.card_name)
        self.attenuation = job.attenuation
        self.signature = {
            (p, v): SignatureModel(Path(path), threads=job.threads, convert_io=False) for p, v, path in job.files
        }
        self.runtime: dict[tuple[str, str], Any] = {}
        if job.fullres:
            for part, variant, path in job.files:
                cls = Embedder if part == "embedder" else Detector
                self.runtime[(part, variant)] = cls(Path(path), job.threads)


def chunk_stats(models: _Models, job: Job, chunk: range) -> dict[str, Any]:
    """One chunk's counts and sums (see `Totals.add`)."""
    card = models.loaded.card
    mpi = job.messages_per_image
    msgs_all = random_messages(job.source.slots * mpi, card.nbits, MESSAGE_SEED)
    names, skipped, small, big, slots = [], [], [], [], []
    for slot in chunk:
        try:
            s, b = job.source.load(slot, card.img_size, job.fullres)
        except InvalidImage as exc:
            skipped.append(f"{job.source.paths[slot].name}: {exc}")
            continue
        names.append(s.name)
        small.append(s.pixels)
        big.append(b)
        slots.append(slot)
    stats: dict[str, Any] = {"names": names, "skipped": skipped, "samples": len(slots) * mpi}
    if not slots:
        return stats
    sample_slots = [slot * mpi + m for slot in slots for m in range(mpi)]
    images = np.stack(small).repeat(mpi, axis=0)
    stats.update(chunk_processing(models, images, msgs_all[sample_slots]))
    if job.fullres:
        stats["fullres"] = chunk_fullres(models, job, big, slots)
    return stats


def _add(into: dict, key, value) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _add(into.setdefault(key, {}), k, v)
    elif key.startswith("max_"):
        into[key] = max(into.get(key, value), value)
    elif key.startswith("min_"):
        into[key] = min(into.get(key, value), value)
    else:
        into[key] = into.get(key, 0) + value


@dataclasses.dataclass
class Totals:
    """The reduction of every chunk's stats, in chunk order: names and skipped files listed, numbers summed
    (keys `max_*` / `min_*` take the extreme)."""

    names: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    sums: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, stats: dict[str, Any]) -> None:
        self.names += stats["names"]
        self.skipped += stats["skipped"]
        for key, value in stats.items():
            if key not in ("names", "skipped"):
                _add(self.sums, key, value)


_WORKER: tuple[_Models, Job] | None = None  # a worker process's models, loaded once by `_start_worker`


def _start_worker(job: Job) -> None:
    global _WORKER
    _WORKER = (_Models(job), job)


def _run_chunk(chunk: range) -> dict[str, Any]:
    from videoseal_tflite.validate.peak_rss import own_peak_rss_mb

    assert _WORKER is not None
    models, job = _WORKER
    # a measurement of the machine, not of the images: kept out of every report number
    return chunk_stats(models, job, chunk) | {"max_worker_rss_mb": own_peak_rss_mb() or 0.0}


def _in_order(job: Job, workers: int) -> Iterator[dict[str, Any]]:
    chunks = job.source.chunks()
    if workers <= 1:
        models = _Models(job)
        yield from (chunk_stats(models, job, c) for c in chunks)
        return
    context = multiprocessing.get_context("spawn")  # torch and TensorFlow threads do not survive a fork
    # LiteRT's threads are shared out: N workers x the full count oversubscribe the cores (measured on 2 cores:
    # 2 workers x 2 threads took 1.9x as long as 1 worker), and its numbers were equal at 1 and 2 threads (the
    # N=1 vs N=2 test checks it on every run). torch keeps its count: its reference moved in the last float bit.
    shared = dataclasses.replace(job, threads=max(1, job.threads // workers))
    with concurrent.futures.ProcessPoolExecutor(
        min(workers, len(chunks)), mp_context=context, initializer=_start_worker, initargs=(shared,)
    ) as pool:
        try:
            # map yields in submission order: the reduction is the same sequence as with one worker
            yield from pool.map(_run_chunk, chunks)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def no_readable_image(folder: Path | None, others: int) -> InvalidImage:
    """The one error for an `--images` folder without a single image in it."""
    return InvalidImage(
        f"--images {folder} holds no readable image ({others} other file(s)); supported: {', '.join(IMAGE_SUFFIXES)}"
    )


def stream(job: Job, workers: int = 1, progress: Callable[[int], None] | None = None) -> Totals:
    """Every chunk of `job.source` through `chunk_stats`, reduced in chunk order; `progress(samples)` per chunk."""
    totals = Totals()
    for stats in _in_order(job, workers):
        totals.add(stats)
        if progress:
            progress(stats["samples"])
    if not totals.names:
        raise no_readable_image(job.source.folder, len(totals.skipped))
    return totals
