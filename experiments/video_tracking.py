#!/usr/bin/env python
"""What tile tracking (`video.TileTracker`, issue #14) changes in `detect`: a 48-frame 720p pan over chelsea and
each held-out full-resolution photo, marked by `video.embed_video` at the CLI defaults (CRF 23, preset medium,
step 4) with two messages, then attacked (`clips.VIDEO_ATTACKS`: CRF 23 / 30 / 40, half resolution, 25 % of the
frames dropped) and read by `video.detect_video` with the tile tracked and as is (`--no-resync`). Prints, per
attack, how many clips give back the exact message each way, the bit accuracy and the read speed (decode included);
then the unmarked pans, read both ways, against 50 random messages (chance is 8 of 16 bits). The FP32 files of the
default card (`make convert`).

    .venv/bin/python experiments/video_tracking.py [--artifacts artifacts] [--card compact_robust] [--variant fp32]
        [--size 1280x720]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from videoseal_tflite.build.images import EVAL_FULLRES_PHOTOS
from videoseal_tflite.runtime.image import Detector, Embedder
from videoseal_tflite.runtime.video import detect_video, embed_video
from videoseal_tflite.store.artifact import Artifact
from videoseal_tflite.validate.clips import VIDEO_ATTACKS, photo_pan_clip, reencode_clip

PHOTOS = ("chelsea", *EVAL_FULLRES_PHOTOS)
MESSAGES = ("0110100110010110", "1100011010110001")  # scripts/video_user_flow.py's


def marked_versions(source: Path, embedder: Embedder, tmp: Path) -> list[tuple[np.ndarray, dict[str, Path]]]:
    """Per message: (message, {"as_written" and each attack: the file})."""
    name = source.stem
    out = []
    for k, text in enumerate(MESSAGES):
        message = np.array([int(c) for c in text], np.float32)
        marked = embed_video(source, tmp / f"{name}_{k}.mp4", embedder, message, progress=False).output
        versions = {"as_written": marked}
        for attack, (crf, scale, drop) in VIDEO_ATTACKS.items():
            versions[attack] = reencode_clip(marked, tmp / f"{name}_{k}_{attack}.mp4", crf, scale, drop)
        out.append((message, versions))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--card", default="compact_robust")
    parser.add_argument("--variant", default="fp32", help="the detector's variant (the embedder is FP32)")
    parser.add_argument("--size", default="1280x720", help="the pans' WIDTHxHEIGHT (default 1280x720)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    files = {(a.part, a.variant): p for a, p in Artifact.find(args.artifacts / args.card)}
    embedder = Embedder(files[("embedder", "fp32")])
    readers = {
        "tracked": Detector(files[("detector", args.variant)]),
        "as is": Detector(files[("detector", args.variant)], resync=False),
    }
    exact, bits, seconds, frames = {}, {}, dict.fromkeys(readers, 0.0), 0
    chance = {how: [] for how in readers}
    random = np.random.default_rng(0).integers(0, 2, (50, 16)).astype(bool)
    with tempfile.TemporaryDirectory(prefix="vst-tracking-") as tmp:
        for photo in PHOTOS:
            source = photo_pan_clip(Path(tmp), photo, width, height, 48, crf=18)
            for how, detector in readers.items():
                chance[how].append((detect_video(source, detector).bits[None] == random).sum(axis=1))
            for message, versions in marked_versions(source, embedder, Path(tmp)):
                for attack, path in versions.items():
                    for how, detector in readers.items():
                        started = time.perf_counter()
                        read = detect_video(path, detector)
                        seconds[how] += time.perf_counter() - started
                        frames += read.frames_decoded if how == "tracked" else 0
                        matching = int((read.bits == message.astype(bool)).sum())
                        exact[attack, how] = exact.get((attack, how), 0) + (matching == message.size)
                        bits[attack, how] = bits.get((attack, how), 0) + matching
            print(f"{photo} done", flush=True)
    clips = len(PHOTOS) * len(MESSAGES)
    print(f"\n{args.card} {args.variant} detector, {clips} clips of 48 frames at {width}x{height}")
    print("| attack | exact message, tracked | exact message, as is | bit accuracy, tracked | bit accuracy, as is |")
    print("|---|---|---|---|---|")
    for attack in ("as_written", *VIDEO_ATTACKS):
        t, a = ((exact[attack, h], bits[attack, h] / (16 * clips)) for h in readers)
        print(f"| {attack} | {t[0]} of {clips} | {a[0]} of {clips} | {t[1]:.3f} | {a[1]:.3f} |")
    print("read speed (decode included): " + ", ".join(f"{h} {frames / s:.0f} fps" for h, s in seconds.items()))
    for how, matches in chance.items():
        means = [m.mean() for m in matches]
        print(
            f"unmarked pans read {how}: matching bits of 50 random messages, mean per clip "
            f"{min(means):.1f}-{max(means):.1f}, most {max(m.max() for m in matches)} of 16"
        )


if __name__ == "__main__":
    main()
