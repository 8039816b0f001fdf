#!/usr/bin/env python
"""Can the tile's phase be ranked without the detector? (issue #28: an unmarked image's search, 1,537 reads)

    .venv/bin/python experiments/phase_proxy.py --artifacts artifacts [--card compact64]

Two cheap rankings of the tile x tile phases, tried against the full search's first canvas on the held-out photos'
50 % centre crops (FP32 files, one message each, read at the true extent 0.707):

  - patch energy: the crop resized so the tile is `tile` px again, folded (the mean of all its tile x tile blocks),
    each cyclic shift of the fold put through the detector's patch embedding (its first CONV_2D filter, read from the
    .tflite file) and scored by the energy of the result; `--high-pass` subtracts a 5 x 5 local mean first;
  - tile profile: how the watermark's energy is spread over the tile's positions, over 16 images x 4 messages (a
    phase could be told from a profile that is not flat).

Prints, per crop, the rank of the phase that reads the most bits among the 256 in each ranking (the first canvas's
own confidence beside it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from scipy.ndimage import uniform_filter

from videoseal_tflite.build.images import fullres_evaluation_images
from videoseal_tflite.runtime.image import Detector, Embedder, _as_float, _resize_any
from videoseal_tflite.runtime.resync import confidence, read_extent
from videoseal_tflite.store.artifact import DEFAULT_CARD
from videoseal_tflite.validate.attacks import ATTACKS
from videoseal_tflite.validate.robustness import sample_messages, saved_watermarked


def patch_filter(path: Path) -> np.ndarray:
    """The detector's first CONV_2D filter (the ViT patch embedding), [out, tile * tile * 3] in HWC order."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    conv = next(op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D")
    weights = interpreter.get_tensor(int(conv["inputs"][1])).astype(np.float64)
    return weights.reshape(weights.shape[0], -1)


def energy_ranking(planes: np.ndarray, weights: np.ndarray, tile: int, high_pass: bool) -> np.ndarray:
    """[tile, tile] score of each phase (oy, ox): the patch embedding's energy on the shifted fold."""
    if high_pass:
        planes = planes - uniform_filter(planes, size=(1, 5, 5), mode="reflect")
    c, h, w = planes.shape
    hh, ww = h // tile * tile, w // tile * tile
    fold = planes[:, :hh, :ww].reshape(c, hh // tile, tile, ww // tile, tile).mean(axis=(1, 3))
    fold = fold - fold.mean(axis=(1, 2), keepdims=True)
    scores = np.zeros((tile, tile))
    for oy in range(tile):
        for ox in range(tile):
            shifted = np.roll(fold, (-oy, -ox), axis=(1, 2)).transpose(1, 2, 0).ravel()
            scores[oy, ox] = float(((weights @ shifted) ** 2).sum())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--card", default=DEFAULT_CARD)
    args = parser.parse_args()
    folder = args.artifacts / args.card
    embedder = Embedder(folder / "embedder_128_fp32.tflite")
    detector = Detector(folder / "detector_128_fp32.tflite")
    tile, size = detector.tile_period, detector.size
    weights = patch_filter(folder / "detector_128_fp32.tflite")
    images = fullres_evaluation_images()
    messages = sample_messages(len(images) * 4, embedder.nbits)
    profile = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, named in enumerate(images):
            small = _resize_any(named.pixels, size, size)
            for message in messages[4 * k : 4 * k + 4]:
                w = embedder.model(image=small[None], message=message[None])["watermark"][0]
                blocks = w.reshape(3, size // tile, tile, size // tile, tile).mean(axis=(1, 3))
                profile.append((blocks**2).sum(axis=0))
            message = messages[4 * k]
            saved = saved_watermarked(embedder, named.pixels, message, Path(tmp))
            image = _as_float(ATTACKS["crop_50pct_area"](saved))
            planes = _resize_any(image, round(size * 0.7071), round(size * 0.7071))
            first = read_extent(image, (0.7071, 0.7071), detector.read_all, tile, size, _resize_any).first
            accuracy = {phase: float(((lg > 0) == message.astype(bool)).mean()) for phase, lg in first.items()}
            best = max(accuracy, key=lambda phase: accuracy[phase])
            ranks = []
            for high_pass in (False, True):
                scores = energy_ranking(planes, weights, tile, high_pass)
                ranks.append(sorted(accuracy, key=lambda p: -scores[p[1], p[0]]).index(best))
            by_confidence = sorted(accuracy, key=lambda p: -confidence(first[p])).index(best)
            print(
                f"{named.name}: best phase {best} reads {accuracy[best]:.2f}; its rank of {tile * tile}: "
                f"patch energy {ranks[0]}, high-passed {ranks[1]}, first canvas's confidence {by_confidence}",
                flush=True,
            )
    mean = np.mean(profile, axis=0)
    print(
        f"tile profile (energy by position / its mean): min {mean.min() / mean.mean():.2f}, "
        f"max {mean.max() / mean.mean():.2f}"
    )


if __name__ == "__main__":
    main()
