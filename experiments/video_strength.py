#!/usr/bin/env python
"""What `embed --strength S` buys on video (issue #14): a generated pan across a held-out photo at 1280x720 and
640x360 (24 frames), marked by `video.embed_video` (CRF 23, preset medium, the CLI defaults), re-encoded at CRF 30
(`clips.reencode_clip`), read by `video.detect_video`; 3 messages per clip. PSNR is of the marked (CRF 23) file
against the source clip, all frames. Needs each card's FP32 files in --artifacts (`videoseal-tflite convert
--card C --variant fp32`). Writes artifacts/bench/video_strength.{json,md}.

    .venv/bin/python experiments/video_strength.py --cards compact compact_robust
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from videoseal_tflite.runtime.image import Detector, Embedder
from videoseal_tflite.store.artifact import Artifact
from videoseal_tflite.store.atomic import write_text_atomic
from videoseal_tflite.validate.clips import photo_pan_frames, write_clip
from videoseal_tflite.validate.robustness import reads_after_reencode

STRENGTHS = (1.0, 1.5, 2.0, 3.0)
SIZES = ((1280, 720), (640, 360))


def fp32_files(card_dir: Path) -> dict[str, Path]:
    return {a.part: p for a, p in Artifact.find(card_dir) if a.variant == "fp32"}


def measure(card_dir: Path, clip: Path, strength: float, tmp: Path) -> dict:
    files = fp32_files(card_dir)
    embedder, detector = Embedder(files["embedder"], strength=strength), Detector(files["detector"])
    accuracies, psnrs = reads_after_reencode(embedder, detector, clip, tmp)
    return {"bit_accuracy_after_crf30": accuracies, "psnr_db_marked_vs_source": float(np.mean(psnrs))}


def markdown(rows: list[dict]) -> str:
    lines = [
        "| weights | strength | size | bit accuracy after CRF 30 (3 messages) | PSNR dB (CRF 23 file vs source) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        acc = ", ".join(f"{a:.3f}" for a in r["bit_accuracy_after_crf30"])
        lines.append(f"| {r['card']} | {r['strength']:g} | {r['size']} | {acc} | {r['psnr_db_marked_vs_source']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--cards", nargs="+", default=["compact"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vst-strength-") as tmp:
        clips = {
            f"{h}p": write_clip(Path(tmp) / f"clip{h}.mp4", photo_pan_frames("stereo_motorcycle", w, h, 24), crf=12)
            for w, h in SIZES
        }
        for card in args.cards:
            for strength in STRENGTHS:
                for size, clip in clips.items():
                    row = {"card": card, "strength": strength, "size": size}
                    row |= measure(args.artifacts / card, clip, strength, Path(tmp))
                    print(markdown([row]).splitlines()[-1], flush=True)
                    rows.append(row)
    out = args.artifacts / "bench"
    write_text_atomic(out / "video_strength.json", json.dumps({"rows": rows}, indent=2) + "\n")
    write_text_atomic(out / "video_strength.md", markdown(rows))
    print(f"wrote {out / 'video_strength.md'}")


if __name__ == "__main__":
    main()
