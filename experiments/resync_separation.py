#!/usr/bin/env python
"""Does a re-synchronised reading's agreement separate marked crops from unmarked images? (issue #28)

    .venv/bin/python experiments/resync_separation.py --artifacts artifacts [--unmarked 200] [--out record.json]

Marked: the full-resolution held-out photos and procedural images, marked with the default card (FP32), saved as
8-bit, then cropped to 80 %, 50 % (centred and corner) and 30 % of their area, or left whole; tall and wide strips
and a tiny image too. Unmarked: procedural images of unseen seeds at several sizes and shapes, and the bundled
photos. For every image whose as-is reading is unsure, the best re-found reading's agreement (mean |soft bit|) is
recorded, beside the as-is confidence. The threshold `resync.FOUND_ABOVE` is chosen from this record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from videoseal_tflite.build.images import fullres_evaluation_images, procedural_image, random_messages
from videoseal_tflite.runtime.image import Detector, Embedder, to_uint8
from videoseal_tflite.runtime.resync import confidence
from videoseal_tflite.store.artifact import DEFAULT_CARD
from videoseal_tflite.validate.attacks import crop_area


def _reading(detector: Detector, rgb8: np.ndarray, message: np.ndarray | None) -> dict | None:
    detection = detector.detect(rgb8)
    if detection.searched is None:
        return None  # sure as is: no search
    as_is = Detector.logits(detector, _small(detector, rgb8))[0]
    out = {"agreement": detection.searched.agreement, "as_is_confidence": confidence(as_is)}
    if message is not None:
        out["searched_accuracy"] = float(((detection.searched.bit_logits > 0) == message.astype(bool)).mean())
        out["as_is_accuracy"] = float(((as_is > 0) == message.astype(bool)).mean())
    return out


def _small(detector: Detector, rgb8: np.ndarray) -> np.ndarray:
    from videoseal_tflite.runtime import bands

    return bands.downscale(rgb8, detector.size, detector.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--unmarked", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("experiments/resync_separation.json"))
    args = parser.parse_args()
    folder = args.artifacts / DEFAULT_CARD
    embedder = Embedder(folder / "embedder_128_fp32.tflite")
    detector = Detector(folder / "detector_128_fp32.tflite")
    marked, unmarked = [], []
    images = fullres_evaluation_images()
    messages = random_messages(len(images), embedder.nbits, seed=5)
    for image, message in zip(images, messages):
        rgb8 = to_uint8(embedder.embed(image.pixels, message))
        floats = rgb8.transpose(2, 0, 1).astype(np.float32) / 255
        for name, area, corner in (("crop80", 0.8, False), ("crop50", 0.5, False), ("crop50c", 0.5, True),
                                   ("crop30", 0.3, False)):  # fmt: skip
            crop = to_uint8(crop_area(floats, area, corner))
            reading = _reading(detector, crop, message)
            if reading:
                marked.append({"image": image.name, "attack": name, **reading})
    rng = np.random.default_rng(7)
    shapes = [(512, 512), (1200, 1920), (2000, 300), (300, 2000), (64, 64), (40, 2000), (3000, 3000)]
    for i in range(args.unmarked):
        h, w = shapes[i % len(shapes)]
        side = max(h, w)
        pixels = procedural_image(50_000 + i, min(side, 1024)).pixels
        rgb8 = to_uint8(pixels)
        if (h, w) != rgb8.shape[:2]:
            from PIL import Image

            rgb8 = np.asarray(Image.fromarray(rgb8).resize((w, h)))
        reading = _reading(detector, rgb8, rng.integers(0, 2, embedder.nbits))
        if reading:
            unmarked.append({"seed": 50_000 + i, "shape": [h, w], **reading})
        print(f"unmarked {i + 1}/{args.unmarked}", end="\r", flush=True)
    record = {"card": DEFAULT_CARD, "marked": marked, "unmarked": unmarked}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    m = np.array([r["agreement"] for r in marked if r["searched_accuracy"] >= 0.9])
    u = np.array([r["agreement"] for r in unmarked])
    print(f"\nmarked crops re-found (>= 0.9 bits): {len(m)}, agreement min {m.min():.3f} median {np.median(m):.3f}")
    print(f"unmarked searched: {len(u)}, agreement max {u.max():.3f} median {np.median(u):.3f}")


if __name__ == "__main__":
    main()
