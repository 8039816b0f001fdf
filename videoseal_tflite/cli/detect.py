"""`videoseal-tflite detect`: read the bits of an image or a video, and decide (message, or payload)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videoseal_tflite.cli.options import model_path, positive_int, print_json, probability, runtime_options
from videoseal_tflite.cli.reading import (
    detection_json,
    detection_logit_note,
    frame_accuracy_json,
    message_of,
    payload_lines,
    payload_report,
    synced_json,
    synced_line,
    tracking_json,
    tracking_line,
    verdict_lines,
)


def _detect_video(args: argparse.Namespace, detector, message, detector_path: Path) -> int:
    import numpy as np

    from videoseal_tflite.runtime.image import bits_to_text
    from videoseal_tflite.runtime.verdict import decide
    from videoseal_tflite.runtime.video import detect_video

    detection = detect_video(
        args.input, detector, every=args.every, aggregation=args.aggregation, progress=sys.stderr.isatty()
    )
    note = detection_logit_note(detector.model.meta)
    report = {
        "input": str(args.input),
        "detector": str(detector_path),
        "bits": bits_to_text(detection.bits),
        "frames_decoded": detection.frames_decoded,
        "frames_read": int(detection.bit_logits.shape[0]),
        "every": args.every,
        "aggregation": args.aggregation,
        "soft_bits": [round(float(v), 6) for v in detection.soft_bits],
        "detection_logit": None if note else float(np.mean(detection.detection_logits)),
        "detection_logit_note": note or "mean over the frames read",
    }
    if detection.tracked:
        report["tile_tracking"] = tracking_json(detection)
    if message is not None:
        verdict = decide(detection.bits, message, args.fpr)
        report |= {
            "bit_accuracy": detection.bit_accuracy(message),
            **verdict.to_json(),
            "frame_bit_accuracy": frame_accuracy_json(detection, message),
        }
    payload = None if message is not None else payload_report(detection.bits, detector.model.meta, args.fpr)
    if payload is not None:
        report |= {"payload": payload, "watermarked": payload["watermarked"]}
    if args.json:
        print_json(report)
        return 0
    print(f"bits: {report['bits']}")
    print(
        f"frames read: {report['frames_read']} of {report['frames_decoded']} (every {args.every}), "
        f"aggregation {args.aggregation}"
    )
    if not note:
        print(f"detection logit: {report['detection_logit']:.3f} (mean over frames)")
    if detection.tracked:
        print(tracking_line(report["tile_tracking"]))
    if message is not None:
        spread = report["frame_bit_accuracy"]
        print(
            f"bit accuracy: {report['bit_accuracy']:.4f} (per frame: mean {spread['mean']:.4f}, "
            f"std {spread['std']:.4f}, min {spread['min']:.4f})"
        )
        for line in verdict_lines(verdict):
            print(line)
    for line in payload_lines(payload, args.fpr) if payload is not None else ():
        print(line)
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from videoseal_tflite.runtime.image import Detector
    from videoseal_tflite.runtime.image_io import read_pixels
    from videoseal_tflite.runtime.verdict import decide
    from videoseal_tflite.runtime.video import is_video_path

    detector_path = args.detector or model_path(args, "detector", args.variant)
    detector = Detector(detector_path, args.threads, resync=not args.no_resync)
    message = message_of(args, detector.model.meta)
    if is_video_path(args.input):
        return _detect_video(args, detector, message, Path(detector_path))
    detection = detector.detect(read_pixels(args.input))
    report = {
        "input": str(args.input),
        "detector": str(detector_path),
        **detection_json(detection, message, detector.model.meta),
    }
    if detection.searched:
        report["resynchronised"] = synced_json(detection)
    verdict = decide(detection.bits, message, args.fpr, detection.hypotheses) if message is not None else None
    if verdict is not None:
        report |= verdict.to_json()
    payload = None if message is not None else payload_report(detection.bits, detector.model.meta, args.fpr,
                                                                 detection.hypotheses)  # fmt: skip
    if payload is not None:
        report |= {"payload": payload, "watermarked": payload["watermarked"]}
    if args.json:
        print_json(report)
    else:
        if detection.searched:
            print(synced_line(detection))
        print(f"bits: {report['bits']}")
        if report["detection_logit"] is not None:  # a card whose detection logit was not trained prints nothing
            print(f"detection logit: {report['detection_logit']:.3f}")
        if verdict is not None:
            print(f"bit accuracy: {report['bit_accuracy']:.4f}")
            for line in verdict_lines(verdict):
                print(line)
        for line in payload_lines(payload, args.fpr) if payload is not None else ():
            print(line)
    return 0


def _add_detect(sub) -> None:
    detect = sub.add_parser("detect", help="read the message bits from an image or a video with the .tflite detector")
    detect.add_argument("input", type=Path)
    runtime_options(detect, with_detector_variant=False)
    detect.add_argument(
        "--every", type=positive_int, default=1, metavar="N", help="video: read every N-th frame (default 1: all)"
    )
    detect.add_argument(
        "--aggregation",
        choices=("avg", "squared_avg", "l1norm_avg", "l2norm_avg"),
        default="avg",
        help="video: how per-frame soft bits are combined, as videoseal's extract_message (default avg)",
    )
    detect.add_argument(
        "--no-resync",
        action="store_true",
        help="read as is only. By default a card that declares its watermark tile re-finds it: in an image crop "
        "when the as-is reading is unsure (p-values then count every reading tried), and in every video frame "
        "the codec may have dragged it (3 x 3 half-pixel shifts around the last frame's)",
    )
    detect.add_argument(
        "--fpr",
        type=probability,
        default=1e-6,
        help="with --message: false-positive rate, 0 < F < 1, at which the verdict is decided (default 1e-6); the "
        "p-value is P(Binomial(nbits, 1/2) >= matching bits)",
    )
    detect.set_defaults(func=_cmd_detect)


def register(sub) -> None:
    """Add this module's subcommands to the CLI's parser."""
    _add_detect(sub)
