#!/usr/bin/env python
"""Does a re-synchronised reading's agreement separate marked crops from unmarked images? (issue #28)

    .venv/bin/python experiments/resync_separation.py --artifacts artifacts [--card C] [--unmarked 200] [--out F]

Marked: the full-resolution held-out photos and procedural images, marked with the card (FP32; the default card
unless --card), saved as 8-bit, then cropped to 80 %, 50 % (centred and corner) and 30 % of their area, or left
whole; tall and wide strips and a tiny image too. Unmarked: procedural images of unseen seeds at several sizes and
shapes, and the bundled photos. For every image whose as-is reading is unsure, the best re-found reading's
agreement (mean |soft bit|) and comb strength are recorded, beside the as-is confidence. The thresholds
`resync.FOUND_ABOVE` and `resync.COMB_ABOVE` are chosen from these records (resync_separation.json: the default
card; resync_separation_compact64.json: compact64's 16-px tile).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from videoseal_tflite.build.images import fullres_evaluation_images, procedural_image, random_messages
from videoseal_tflite.runtime import bands
from videoseal_tflite.runtime.image import Detector, Embedder, _resize_any, to_uint8
from videoseal_tflite.runtime.resync import comb_of, confidence, resynchronise, unsure
from videoseal_tflite.store.artifact import DEFAULT_CARD
from videoseal_tflite.validate.attacks import crop_area


def _reading(detector: Detector, rgb8: np.ndarray, message: np.ndarray | None) -> dict | None:
    """For an input whose as-is reading is unsure: the comb strength `detect` gates the search on, and the full
    search's result whatever the gate says (so the record shows what the gate gives away)."""
    as_is = detector.logits(bands.downscale(rgb8, detector.size, detector.size))[0]
    if not unsure(as_is):
        return None  # sure as is: no search
    comb = comb_of(rgb8, detector.tile_period, detector.size, _resize_any)
    floats = bands.as_float_planes(rgb8)
    searched = resynchronise(floats, detector.read_all, detector.tile_period, detector.size, _resize_any, comb)
    out = {"comb": comb.strength, "agreement": searched.agreement, "as_is_confidence": confidence(as_is)}
    if message is not None:
        out["searched_accuracy"] = float(((searched.bit_logits > 0) == message.astype(bool)).mean())
        out["as_is_accuracy"] = float(((as_is > 0) == message.astype(bool)).mean())
    return out


def _resized(rgb8: np.ndarray, height: int, width: int) -> np.ndarray:
    if (height, width) == rgb8.shape[:2]:
        return rgb8
    return np.asarray(Image.fromarray(rgb8).resize((width, height), Image.Resampling.BILINEAR))


def marked_inputs(embedder: Embedder) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """(description, HxWx3 uint8, message) for every marked input: the held-out photos at their size, and the first
    four also as tall, wide, tiny and huge images, each whole or cropped to 80 %, 50 % (centred and at a corner) and
    30 % of its area."""
    images = fullres_evaluation_images()
    messages = random_messages(len(images), embedder.nbits, seed=5)
    crops = (("whole", 1.0, False), ("crop80", 0.8, False), ("crop50", 0.5, False), ("crop50c", 0.5, True),
             ("crop30", 0.3, False))  # fmt: skip
    shapes = {"as_is": None, "tall": (2000, 300), "wide": (300, 2000), "tiny": (96, 96), "huge": (3000, 4000)}
    jobs = [(i, shape) for i in range(len(images)) for shape in shapes if shape == "as_is" or i < 4]
    for n, (i, shape) in enumerate(jobs):
        rgb8 = to_uint8(images[i].pixels)
        if shapes[shape]:
            rgb8 = _resized(rgb8, *shapes[shape])
        marked_rgb8 = embedder.embed_rgb8(rgb8, messages[i])
        floats = bands.as_float_planes(marked_rgb8)
        for name, area, corner in crops:
            crop = marked_rgb8 if area == 1.0 else to_uint8(crop_area(floats, area, corner))
            yield {"image": images[i].name, "shape": shape, "attack": name}, crop, messages[i]
        print(f"marked {n + 1}/{len(jobs)}", end="\r", flush=True)


def unmarked_inputs(count: int, nbits: int) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """(description, HxWx3 uint8, random message) for `count` procedural images of unseen seeds in seven shapes, a
    quarter of them cropped to 50 % of their area as the marked ones are."""
    rng = np.random.default_rng(7)
    shapes = [(512, 512), (1200, 1920), (2000, 300), (300, 2000), (64, 64), (40, 2000), (3000, 3000)]
    for i in range(count):
        h, w = shapes[i % len(shapes)]
        rgb8 = _resized(to_uint8(procedural_image(50_000 + i, min(max(h, w), 1024)).pixels), h, w)
        if i % 4 == 3:
            rgb8 = to_uint8(crop_area(bands.as_float_planes(rgb8), 0.5, False))
        yield {"seed": 50_000 + i, "shape": [h, w]}, rgb8, rng.integers(0, 2, nbits)
        print(f"unmarked {i + 1}/{count}", end="\r", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--card", default=DEFAULT_CARD)
    parser.add_argument("--unmarked", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("experiments/resync_separation.json"))
    args = parser.parse_args()
    folder = args.artifacts / args.card
    embedder = Embedder(folder / "embedder_128_fp32.tflite")
    detector = Detector(folder / "detector_128_fp32.tflite")
    marked, unmarked = [], []
    for meta, rgb8, message in marked_inputs(embedder):
        reading = _reading(detector, rgb8, message)
        if reading:
            marked.append({**meta, **reading})
    for meta, rgb8, message in unmarked_inputs(args.unmarked, embedder.nbits):
        reading = _reading(detector, rgb8, message)
        if reading:
            unmarked.append({**meta, **reading})
    record = {"card": args.card, "marked": marked, "unmarked": unmarked}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    right = [r for r in marked if r["searched_accuracy"] >= 0.9]
    m, u = np.array([r["agreement"] for r in right]), np.array([r["agreement"] for r in unmarked])
    print(f"\nmarked inputs searched: {len(marked)}, read right by the search (>= 0.9 bits): {len(right)}")
    print(f"  agreement min {m.min():.3f} median {np.median(m):.3f}; comb min {min(r['comb'] for r in right):.2f}")
    print(f"unmarked searched: {len(u)}, agreement max {u.max():.3f} median {np.median(u):.3f}")
    combs = np.array([r["comb"] for r in unmarked])
    print(f"  comb max {combs.max():.2f} median {np.median(combs):.2f}")


if __name__ == "__main__":
    main()
