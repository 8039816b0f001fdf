#!/usr/bin/env python
"""Issue #26's H.264 rows on 720p clips: the share of marked clips decided at FPR 1e-6 after CRF 23 and CRF 30.

    .venv/bin/python experiments/video_decided.py --artifacts artifacts [--card compact64] [--messages 2]
        [--out experiments/video_decided_compact64.json]

Each held-out photo (`build.images.EVAL_FULLRES_PHOTOS`) becomes a 1 s pan at 1280x720 (24 frames,
`validate.clips.photo_pan_frames`, near-lossless), marked by `runtime.video.embed_video` at the CLI defaults (the
card's step size, CRF 23, preset medium), then re-encoded at CRF 30 (`validate.clips.reencode_clip`). Both files
are read by `detect_video` (tile tracked where the card declares one) and decided against the message at 1e-6
(`runtime.verdict.decide`, as `detect --message` does).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from videoseal_tflite.build.images import EVAL_FULLRES_PHOTOS, random_messages
from videoseal_tflite.runtime.image import Detector, Embedder
from videoseal_tflite.runtime.verdict import DEFAULT_FPR, decide
from videoseal_tflite.runtime.video import detect_video, embed_video
from videoseal_tflite.store.artifact import DEFAULT_CARD, find_model
from videoseal_tflite.validate.clips import photo_pan_frames, reencode_clip, write_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--card", default=DEFAULT_CARD)
    parser.add_argument("--messages", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    embedder = Embedder(find_model(args.artifacts, args.card, "embedder", "fp32"))
    detector = Detector(find_model(args.artifacts, args.card, "detector", "fp32"))
    messages = random_messages(len(EVAL_FULLRES_PHOTOS) * args.messages, embedder.nbits, 26)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vst-720p-") as tmp, tqdm(total=len(messages), unit="clip") as bar:
        folder = Path(tmp)
        for i, photo in enumerate(EVAL_FULLRES_PHOTOS):
            clip = write_clip(folder / f"{photo}.mp4", photo_pan_frames(photo, 1280, 720, 24))
            for message in messages[i * args.messages : (i + 1) * args.messages]:
                marked = embed_video(clip, folder / "marked.mp4", embedder, message, progress=False).output
                again = reencode_clip(marked, folder / "crf30.mp4", 30)
                row = {"photo": photo}
                for name, path in (("h264_crf23", marked), ("h264_crf30", again)):
                    verdict = decide(detect_video(path, detector).bits, message, DEFAULT_FPR)
                    row[name] = {"matching_bits": verdict.matching_bits, "decided": verdict.watermarked}
                rows.append(row)
                bar.update(1)
    summary = {
        name: {
            "decided": float(np.mean([r[name]["decided"] for r in rows])),
            "bit_accuracy": float(np.mean([r[name]["matching_bits"] for r in rows]) / embedder.nbits),
        }
        for name in ("h264_crf23", "h264_crf30")
    }
    record = {"card": args.card, "fpr": DEFAULT_FPR, "clips": len(rows), "size": "1280x720", "frames": 24}
    record |= {"summary": summary, "rows": rows}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
