#!/usr/bin/env python
"""Can the re-synchronisation stop at the first sure reading? (`resync.SURE_ABOVE`; issues #27 and #28, speed)

    .venv/bin/python experiments/sure_reading.py --artifacts artifacts [--card compact64] [--out record.json]

The 16 held-out photos and procedural images at full resolution (`fullres_evaluation_images`), one message each,
marked with the card's FP32 embedder and saved as PNG, then cropped to 50 % of the area (centred, and at the top-left
corner). Every candidate extent of the comb is read as the search reads it (`resync.read_extent`), and the best
agreement at each extent is recorded with its bit accuracy. `--analyse` replays thresholds on a record: which
reading a search that stops at the first agreement >= tau keeps, against the full search, and how many extents it
skips.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from videoseal_tflite.build.images import fullres_evaluation_images
from videoseal_tflite.runtime.image import Detector, Embedder, _as_float, _resize_any
from videoseal_tflite.runtime.resync import comb_of, read_extent
from videoseal_tflite.store.artifact import DEFAULT_CARD
from videoseal_tflite.validate.attacks import ATTACKS
from videoseal_tflite.validate.robustness import sample_messages, saved_watermarked

CROPS = ("crop_50pct_area", "crop_50pct_area_corner")
TAUS = (0.72, 0.75, 0.8, 0.85, 0.9)


def read(artifacts: Path, card: str) -> dict:
    folder = artifacts / card
    embedder = Embedder(folder / f"embedder_{128}_fp32.tflite")
    detector = Detector(folder / f"detector_{128}_fp32.tflite")
    tile, size = detector.tile_period, detector.size
    if tile is None:
        raise SystemExit(f"sure_reading: {card} declares no watermark tile: nothing is re-synchronised")
    images = fullres_evaluation_images()
    messages = sample_messages(len(images), embedder.nbits)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for named, message in zip(images, messages):
            saved = saved_watermarked(embedder, named.pixels, message, Path(tmp))
            for attack in CROPS:
                image = _as_float(ATTACKS[attack](saved))
                extents = []
                for extent in comb_of(image, tile, size, _resize_any).extents:
                    kept = read_extent(image, extent, detector.read_all, tile, size, _resize_any).kept
                    score, soft, _ = max(kept, key=lambda reading: reading[0])
                    extents.append([score, float(((soft > 0) == message.astype(bool)).mean())])
                rows.append({"image": named.name, "attack": attack, "extents": extents})
                print(named.name, attack, " ".join(f"{s:.3f}/{a:.2f}" for s, a in extents), flush=True)
    return {"card": card, "tile_period": tile, "crops": rows}


def analyse(record: dict) -> list[dict]:
    """Per tau: crops whose kept reading equals the full search's, extents skipped, mean bit accuracy of both."""
    out = []
    for tau in TAUS:
        same = skipped = total = 0
        full_acc, early_acc = [], []
        for row in record["crops"]:
            per = row["extents"]
            total += len(per)
            best = max(range(len(per)), key=lambda i: per[i][0])
            stop = next((i for i in range(len(per)) if per[i][0] >= tau), len(per) - 1)
            kept = max(range(stop + 1), key=lambda i: per[i][0])
            same += kept == best
            skipped += len(per) - 1 - stop
            full_acc.append(per[best][1])
            early_acc.append(per[kept][1])
        out.append(
            {
                "tau": tau,
                "same_reading": same,
                "crops": len(record["crops"]),
                "extents_skipped": skipped,
                "extents": total,
                "bit_accuracy_full": round(float(np.mean(full_acc)), 4),
                "bit_accuracy_stopped": round(float(np.mean(early_acc)), 4),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--card", default=DEFAULT_CARD)
    parser.add_argument("--out", type=Path, help="write the record (readings and analysis) as JSON")
    parser.add_argument("--analyse", type=Path, help="replay the thresholds on a record instead of reading")
    args = parser.parse_args()
    record = json.loads(args.analyse.read_text()) if args.analyse else read(args.artifacts, args.card)
    record["analysis"] = analyse(record)
    for row in record["analysis"]:
        print(
            f"tau {row['tau']}: same reading {row['same_reading']}/{row['crops']}, extents skipped "
            f"{row['extents_skipped']}/{row['extents']}, bit accuracy {row['bit_accuracy_full']} -> "
            f"{row['bit_accuracy_stopped']}"
        )
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
