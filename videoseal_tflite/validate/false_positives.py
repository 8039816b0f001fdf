"""How often does `detect` call an unmarked image watermarked? (issue #26: a detector is judged by its TPR at a
false-positive rate that is measured, not assumed.)

Each of `count` unmarked images (`unmarked_image`: procedural scenes and crops of the held-out photos, of many
shapes, never marked) is read as `detect` reads it (`runtime.Detector.detect` on the 8-bit pixels,
re-synchronisation on) and decided three ways:
  - against a random message of its own (`verdict.decide`, the search's readings counted by Bonferroni): the
    false positives the verdict promises to keep under its FPR. The p-values are also tested against the uniform
    distribution, one-sided (scipy's `kstest`, alternative "greater": are they ever smaller than uniform?). They
    cannot be uniform: a binomial tail is discrete and Bonferroni multiplies it, both of which only make them larger;
  - against one fixed message for every image, the per-bit majority of the unmarked readings themselves: the
    message a detector's bias favours most, the worst case for a user whose key happens to look like it;
  - for cards that declare a payload code, decoded with it (`detect` without `--message`): a false positive is a
    reading whose code check passes with a p-value at or under the FPR.
Counts are kept at FPR 1e-6 (the default) and 1e-3.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import numpy as np
from PIL import Image
from scipy import stats

from videoseal_tflite.build.images import EVAL_FULLRES_PHOTOS, fullres_photo, procedural_image, random_messages
from videoseal_tflite.runtime.image import Detector, to_uint8
from videoseal_tflite.runtime.payload import PayloadCode
from videoseal_tflite.runtime.verdict import DEFAULT_FPR, decide

FPR_LEVELS = (DEFAULT_FPR, 1e-3)
UNMARKED_SEED = 500_000  # procedural seeds from here: outside training (build.images.TRAIN_PROCEDURAL_SEEDS)
MESSAGE_SEED = 23
KS_ALPHA = 0.01  # the one-sided KS test fails below this p-value


@dataclasses.dataclass(frozen=True)
class FalsePositives:
    """Counts over `images` unmarked images: decided at each FPR in FPR_LEVELS (keys as "1e-06")."""

    images: int
    nbits: int
    random_message: dict[str, int]  # decided against each image's own random message
    fixed_message: dict[str, int]  # decided against the majority message (the detector's bias)
    fixed_message_bits: str
    payload: dict[str, int] | None  # payload decoded and decided (cards with a code), else None
    searched: int  # readings where the re-synchronisation ran (its hypotheses counted in the p-value)
    mean_hypotheses: float
    ks_statistic: float  # one-sided: max over x of (share of p-values <= x) - x
    ks_pvalue: float
    seconds: float

    @property
    def ks_passed(self) -> bool:
        return self.ks_pvalue >= KS_ALPHA

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"ks_passed": self.ks_passed, "ks_alpha": KS_ALPHA}


def _key(fpr: float) -> str:
    return f"{fpr:.0e}"


def _tally(counts: dict[str, int], pvalue: float) -> None:
    """Count a reading as decided at every FPR in FPR_LEVELS that `pvalue` reaches."""
    for fpr in FPR_LEVELS:
        counts[_key(fpr)] += int(pvalue <= fpr)


_photo = functools.lru_cache(maxsize=None)(fullres_photo)  # one in four images crops one of 8 photos: read each once


def unmarked_image(index: int) -> np.ndarray:
    """Unmarked image `index` as HxWx3 uint8: three in four a procedural scene (seed UNMARKED_SEED + index) cut to
    a random shape, one in four a random crop of a held-out photo at a random scale; 64 to 1024 px a side."""
    rng = np.random.default_rng(UNMARKED_SEED + index)
    if index % 4 == 3:
        photo = _photo(EVAL_FULLRES_PHOTOS[(index // 4) % len(EVAL_FULLRES_PHOTOS)]).pixels
    else:
        photo = procedural_image(UNMARKED_SEED + index, int(rng.integers(256, 513))).pixels
    _, h, w = photo.shape
    ch, cw = (max(32, int(side * rng.uniform(0.4, 1.0))) for side in (h, w))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = to_uint8(photo[:, top : top + ch, left : left + cw])
    scale = rng.uniform(0.5, 2.0)
    size = (int(np.clip(cw * scale, 64, 1024)), int(np.clip(ch * scale, 64, 1024)))
    return np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC))


def false_positives(detector: Detector, count: int, progress: Callable[[], None] | None = None) -> FalsePositives:
    """Read `count` unmarked images (`unmarked_image`) with `detector` as `detect` does and count the false
    positives at each FPR in FPR_LEVELS (module docstring)."""
    start = time.perf_counter()
    messages = random_messages(count, detector.nbits, MESSAGE_SEED)
    code = PayloadCode.from_meta(detector.model.meta)
    readings: list[tuple[np.ndarray, int]] = []  # (bits, hypotheses)
    pvalues, random_counts = [], dict.fromkeys(map(_key, FPR_LEVELS), 0)
    payload_counts = dict.fromkeys(map(_key, FPR_LEVELS), 0) if code else None
    for index, message in enumerate(messages):
        found = detector.detect(unmarked_image(index))
        readings.append((found.bits, found.hypotheses))
        verdict = decide(found.bits, message, DEFAULT_FPR, found.hypotheses)
        pvalues.append(verdict.pvalue)
        _tally(random_counts, verdict.pvalue)
        if code and payload_counts is not None:
            decoded = code.decode(found.bits)
            _tally(payload_counts, decoded.pvalue_among(found.hypotheses) if decoded.ok else 1.0)
        if progress:
            progress()
    majority = np.mean([bits for bits, _ in readings], axis=0) >= 0.5
    fixed_counts = dict.fromkeys(map(_key, FPR_LEVELS), 0)
    for bits, hypotheses in readings:
        _tally(fixed_counts, decide(bits, majority, DEFAULT_FPR, hypotheses).pvalue)
    ks = stats.kstest(pvalues, "uniform", alternative="greater")
    return FalsePositives(
        images=count,
        nbits=detector.nbits,
        random_message=random_counts,
        fixed_message=fixed_counts,
        fixed_message_bits="".join("1" if b else "0" for b in majority),
        payload=payload_counts,
        searched=sum(h > 1 for _, h in readings),
        mean_hypotheses=float(np.mean([h for _, h in readings])),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        seconds=round(time.perf_counter() - start, 1),
    )
