#!/usr/bin/env python
"""Does LiteRT's profiler-based calibration give the same full-int8 file as ai-edge-quantizer's numpy pass?

    .venv/bin/python experiments/calibration_check.py --card videoseal_0.0 --artifacts DIR

For both parts of the card (FP32 files in DIR/<card>, e.g. from `videoseal-tflite convert --card C --random-init 0
--variant fp32 --artifacts DIR`): the base full-int8 recipe (float I/O), calibrated both ways
(`quantize.variant.calibrate_min_max`, tracked_by "numpy" and "litert") on the calibration set, quantized, the
bytes compared and both times printed. tests/test_quantize_compact.py makes the same check on the compact card.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from videoseal_tflite.build.cards import load_card
from videoseal_tflite.build.pipeline import calibration_feeds
from videoseal_tflite.build.quantize.recipes import base_recipe, keep_float
from videoseal_tflite.build.quantize.variant import calibrate_min_max, quantize_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", required=True)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args()
    card = load_card(args.card)
    recipe = base_recipe("int8") + keep_float(["INPUT", "OUTPUT"])
    for part in ("embedder", "detector"):
        found = sorted((args.artifacts / args.card).glob(f"{part}_*_fp32*.tflite"))
        if not found:
            raise SystemExit(f"no FP32 {part} in {args.artifacts / args.card}: convert the card with --variant fp32")
        feeds = calibration_feeds(card, part)
        built, seconds = {}, {}
        for by in ("numpy", "litert"):
            start = time.perf_counter()
            ranges = calibrate_min_max(found[0], recipe, feeds, tracked_by=by)
            built[by] = quantize_bytes(found[0], recipe, feeds, {"qsv": ranges})
            seconds[by] = time.perf_counter() - start
        same = built["numpy"] == built["litert"]
        print(f"{args.card} {part}: numpy {seconds['numpy']:.1f} s, litert {seconds['litert']:.1f} s "
              f"(calibrate + quantize); same bytes: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
