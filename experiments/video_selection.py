#!/usr/bin/env python
"""How a card's FP32 files read video re-encoded at CRF 30 (issues #13/#14: how run 5's robust lanes were chosen).

1280x720 pans over photos (24 frames; `--frames`), marked by `video.embed_video` at the CLI defaults (CRF 23,
preset medium, strength 1) with 3 messages, re-encoded at CRF 30 (`clips.reencode_clip`), read by
`video.detect_video` (avg).
The `train` set (training photos) chooses among candidates; the `heldout` set is reported, never chosen on.

    .venv/bin/python experiments/video_selection.py --artifacts runs/cand5/e_motion --json runs/e_motion.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from videoseal_tflite.build.images import bundled_image, fullres_photo
from videoseal_tflite.runtime.image import Detector, Embedder, to_uint8
from videoseal_tflite.store.artifact import DEFAULT_CARD, Artifact
from videoseal_tflite.validate.clips import pan_frames, write_clip
from videoseal_tflite.validate.robustness import reads_after_reencode

PHOTOS = {
    "train": [bundled_image(n) for n in ("hubble_deep_field", "retina", "clock", "brick")],
    "heldout": [fullres_photo(n) for n in ("chelsea", "coffee", "astronaut", "rocket")],
}


def reads(embedder: Embedder, detector: Detector, photo: np.ndarray, frames: int, tmp: Path) -> list[float]:
    """Bit accuracy after CRF 30 of a pan over `photo` (3xHxW float) in `frames` frames, one per message."""
    clip = write_clip(tmp / "source.mp4", pan_frames(to_uint8(photo), 1280, 720, frames))
    return reads_after_reencode(embedder, detector, clip, tmp)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--card", default=DEFAULT_CARD)
    parser.add_argument("--frames", type=int, default=24, help="frames per clip (the same pan: more = slower)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args()
    folder = args.artifacts / args.card
    files = {part: Artifact.find(folder, part, "fp32") for part in ("embedder", "detector")}
    if not all(files.values()):
        raise SystemExit(f"video_selection: no fp32 embedder and detector in {folder} (videoseal-tflite convert "
                         f"--card {args.card} --variant fp32 --artifacts {args.artifacts} builds them)")  # fmt: skip
    embedder, detector = Embedder(files["embedder"][0][1]), Detector(files["detector"][0][1])
    result = {}
    with tempfile.TemporaryDirectory(prefix="vst-select-") as tmp:
        with tqdm(total=sum(map(len, PHOTOS.values())), desc="CRF 30 pans", unit="clip") as bar:
            for name, photos in PHOTOS.items():
                per_clip = {}
                for photo in photos:
                    per_clip[photo.name] = reads(embedder, detector, photo.pixels, args.frames, Path(tmp))
                    bar.update(1)
                every = sum(per_clip.values(), [])
                exact = sum(a == 1.0 for a in every)
                result[name] = {"mean": float(np.mean(every)), "exact": exact, "n": len(every), "per_clip": per_clip}
    for name, r in result.items():
        print(f"{name}: mean bit accuracy {r['mean']:.4f}, exact message {r['exact']}/{r['n']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
