"""The Python runtime's side of `make bench`'s browser row: ms per embed and detect of the same synthetic pictures
the browser bench uses (web/test/browser.mjs `synthetic`), at the same sizes, threads and variants.

    python web/test/bench_python.py --release DIR --card C --variants fp32,int8 --sizes 512x512,1920x1080
        --threads 1,2 --repeats 5

Each time covers what the page's embed/detect cover, through the calls the CLI makes: 8-bit RGB in, the
downscale, the model, the watermark added, 8-bit out (`Embedder.embed_rgb8`, the 8-bit path the page's `addLevels`
mirrors); 8-bit RGB in, the downscale, the detector (`Detector.detect`, read as is). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from videoseal_tflite.runtime import Detector, Embedder


def synthetic(width: int, height: int) -> np.ndarray:
    """HxWx3 uint8: the browser bench's picture (x and y gradients, 32-px checks in blue)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, np.where(((x >> 5) + (y >> 5)) % 2, 200, 60)], axis=-1)
    return rgb.astype(np.uint8)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--release", type=Path, required=True)
    parser.add_argument("--card", default="compact_robust")
    parser.add_argument("--variants", default="fp32")
    parser.add_argument("--sizes", default="512x512,1920x1080")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for variant in args.variants.split(","):
        card_dir = args.release / args.card
        embedder_path = next(card_dir.glob(f"embedder_*_{variant}.tflite"))
        detector_path = next(card_dir.glob(f"detector_*_{variant}.tflite"))
        for threads in (int(t) for t in args.threads.split(",")):
            embedder = Embedder(embedder_path, threads=threads)
            detector = Detector(detector_path, threads=threads, resync=False)
            message = (np.arange(embedder.nbits) % 3 == 0).astype(np.float32)
            for size in args.sizes.split(","):
                width, height = (int(v) for v in size.split("x"))
                rgb = synthetic(width, height)

                def embed(rgb=rgb, message=message, embedder=embedder):
                    return embedder.embed_rgb8(rgb, message)

                marked = embed()  # HxWx3 uint8, what the page's detect is given
                embed_ms = timed(embed, args.repeats)
                detect_ms = timed(lambda marked=marked, detector=detector: detector.detect(marked), args.repeats)
                rows.append(
                    {
                        "runtime": "python",
                        "variant": variant,
                        "threads": threads,
                        "width": width,
                        "height": height,
                        "embed_ms": round(embed_ms, 2),
                        "detect_ms": round(detect_ms, 2),
                    }
                )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
