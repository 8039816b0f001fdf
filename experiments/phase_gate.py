#!/usr/bin/env python
"""Can a coarse phase grid tell, before the full search, that an extent holds no tile? (issue #28, unmarked speed)

    .venv/bin/python experiments/phase_gate.py --artifacts artifacts [--unmarked 200] [--out record.json]

The inputs of `resync_separation.py` (marked crops, strips, tiny and huge images; unmarked procedural images). For
each input whose as-is reading is unsure and whose comb passes `resync.COMB_ABOVE`, every candidate extent is read
as the search reads it (`resync.read_extent`), and the first canvas's confidence map over all tile x tile phases is
recorded beside where the full search found its best reading, with that reading's agreement and bit accuracy.
`--analyse` replays gates (grid stride, threshold) on a record without reading.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from resync_separation import marked_inputs, unmarked_inputs

from videoseal_tflite.runtime import bands
from videoseal_tflite.runtime.image import Detector, Embedder, _resize_any
from videoseal_tflite.runtime.resync import comb_of, confidence, read_extent, unsure
from videoseal_tflite.store.artifact import DEFAULT_CARD


def _maps(detector: Detector, rgb8: np.ndarray, message: np.ndarray) -> dict | None:
    as_is = detector.logits(bands.downscale(rgb8, detector.size, detector.size))[0]
    if not unsure(as_is):
        return None
    tile, size = detector.tile_period, detector.size
    comb = comb_of(rgb8, tile, size, _resize_any)
    if not comb.periodic:
        return None
    floats = bands.as_float_planes(rgb8)
    maps, best = [], (-1.0, 0, (0, 0), 0.0)  # agreement, extent index, phase, accuracy
    for e, extent in enumerate(comb.extents):
        reading = read_extent(floats, extent, detector.read_all, tile, size, _resize_any)
        maps.append([[round(confidence(reading.first[(ox, oy)]), 2) for ox in range(tile)] for oy in range(tile)])
        for score, soft, phase in reading.kept:
            if score > best[0]:
                best = (score, e, phase, float(((soft > 0) == message.astype(bool)).mean()))
    score, e, phase, accuracy = best
    return {"comb": comb.strength, "maps": maps, "best_extent": e, "best_phase": list(phase), "agreement": score,
            "accuracy": accuracy}  # fmt: skip


def _coarse_max(maps: np.ndarray, stride: int, offset: int = 0) -> np.ndarray:
    """[extents, t, t] -> [extents]: the best confidence on the stride grid."""
    return maps[:, offset::stride, offset::stride].max(axis=(1, 2))


def _neighbours(maps: np.ndarray, stride: int, keep: int) -> list[set]:
    """Per extent, the phases a coarse-to-fine search reads: the grid, and the (wrapping) neighbours within
    stride // 2 ... stride - 1 of its best `keep` points."""
    tile = maps.shape[1]
    out = []
    for m in maps:
        grid = [(ox, oy) for oy in range(0, tile, stride) for ox in range(0, tile, stride)]
        top = sorted(grid, key=lambda p: -m[p[1], p[0]])[:keep]
        reach = range(-(stride - 1), stride)
        out.append(set(grid) | {((ox + dx) % tile, (oy + dy) % tile) for ox, oy in top for dx in reach for dy in reach})
    return out


def analyse(record: dict) -> None:
    right = [r for r in record["marked"] if r["accuracy"] >= 0.9]
    unmarked = record["unmarked"]
    print(f"marked searched {len(record['marked'])}, read right {len(right)}; unmarked searched {len(unmarked)} "
          f"of {record['unmarked_total']}")  # fmt: skip
    for stride in (2, 3, 4):
        for keep in (1, 2):
            kept = []
            for r in right:
                maps = np.array(r["maps"])
                phases = _neighbours(maps, stride, keep)[r["best_extent"]]
                kept.append(tuple(r["best_phase"]) in phases)
            print(f"stride {stride} keep {keep}: the best phase among those read for {np.mean(kept):.3f} of right")
        m = np.array([_coarse_max(np.array(r["maps"]), stride)[r["best_extent"]] for r in right])
        u = np.array([_coarse_max(np.array(r["maps"]), stride).max() for r in unmarked])
        for q in (0.0, 0.02, 0.05):
            t = float(np.quantile(m, q))
            print(
                f"  gate at marked {q:.0%} quantile {t:.3f}: unmarked passing {np.mean(u >= t):.3f} "
                f"(extents passing per unmarked: "
                f"{np.mean([(_coarse_max(np.array(r['maps']), stride) >= t).sum() for r in unmarked]):.2f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--unmarked", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("experiments/phase_gate.json"))
    parser.add_argument("--analyse", action="store_true", help="replay gates on --out without reading")
    args = parser.parse_args()
    if args.analyse:
        analyse(json.loads(args.out.read_text()))
        return
    folder = args.artifacts / DEFAULT_CARD
    embedder = Embedder(folder / "embedder_128_fp32.tflite")
    detector = Detector(folder / "detector_128_fp32.tflite")
    marked = [{**meta, **r} for meta, rgb8, msg in marked_inputs(embedder) if (r := _maps(detector, rgb8, msg))]
    unmarked = [{**meta, **r} for meta, rgb8, msg in unmarked_inputs(args.unmarked, embedder.nbits)
                if (r := _maps(detector, rgb8, msg))]  # fmt: skip
    record = {"card": DEFAULT_CARD, "unmarked_total": args.unmarked, "marked": marked, "unmarked": unmarked}
    args.out.write_text(json.dumps(record) + "\n")
    analyse(record)


if __name__ == "__main__":
    main()
