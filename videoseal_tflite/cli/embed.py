"""`videoseal-tflite embed`: watermark an image (in row bands, runtime/bands.py) or a video, then read the saved
file back."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from videoseal_tflite.cli.options import (
    PROG,
    bounded,
    model_path,
    positive_int,
    print_json,
    probability,
    runtime_options,
    strength,
)
from videoseal_tflite.cli.reading import detection_json, message_of, verdict_lines
from videoseal_tflite.errors import InvalidMessage, OutputIsInput
from videoseal_tflite.runtime.image_io import QUALITY_RANGE
from videoseal_tflite.runtime.video import CRF_RANGE, X264_PRESETS


def _embed_video(args: argparse.Namespace, embedder, message, embedder_path: Path, detector) -> int:
    from videoseal_tflite.runtime.image import bits_to_text
    from videoseal_tflite.runtime.verdict import decide
    from videoseal_tflite.runtime.video import card_step_size, detect_video, embed_video, output_format

    output_format(args.output)  # a bad extension fails before any work
    step_size = args.step_size if args.step_size is not None else card_step_size(embedder.model.meta)
    result = embed_video(
        args.input,
        args.output,
        embedder,
        message,
        step_size,
        crf=args.crf,
        preset=args.preset,
        progress=sys.stderr.isatty(),
    )
    # the saved file must read back as is, as for an image
    detection = detect_video(args.output, detector)
    verdict = decide(detection.bits, message, args.fpr)
    report = {
        "output": str(args.output),
        "embedder": str(embedder_path),
        "detector": str(detector.model.path),
        "strength": embedder.strength,
        **result.to_json(),
        "bits": bits_to_text(detection.bits),
        "bit_accuracy": detection.bit_accuracy(message),
        **verdict.to_json(),
    }
    if args.json:
        print_json(report)
    else:
        speed = result.frames / max(result.seconds_total, 1e-9)
        print(
            f"wrote {args.output} ({result.frames} frames, {result.width}x{result.height}, embedder on every "
            f"{step_size}th frame, {speed:.1f} frames/s; {embedder_path.name})"
        )
        for note in result.notes:
            print(f"note: {note}")
        if embedder.strength != 1:
            print(f"note: --strength {embedder.strength:g}: the card's watermark scale x {embedder.strength:g}")
        print(f"recovered bits: {report['bits']}")
        frames_read = detection.bit_logits.shape[0]
        print(f"bit accuracy:   {report['bit_accuracy']:.4f} ({detector.model.path.name}, {frames_read} frames)")
        for line in verdict_lines(verdict):
            print(line)
    return 0


def _saved_warning(accuracy: float, unsaved: float, written, quality: int) -> str:
    """The one stderr line when the saved file does not read back every bit, and the likely cause."""
    if accuracy < unsaved and written.format in ("JPEG", "WEBP"):
        why = f"saving as {written.format} at --quality {quality} lost bits; raise --quality or write a .png"
    elif accuracy < unsaved:
        why = "rounding to 8 bits lost bits"
    else:
        why = "the embedder did not carry every bit on this image (before saving too)"
    return f"{PROG}: warning: the saved file reads back with bit accuracy {accuracy:.4f} < 1: {why}"


def _embed_image(args: argparse.Namespace, embedder, message, embedder_path: Path, detector) -> int:
    """Watermark the RGB; keep alpha, EXIF (orientation applied, tag set to 1), ICC profile and, where the
    output format and the watermark allow it, the mode (see `image_io`); then read the saved file back."""
    from videoseal_tflite.runtime.image_io import check_quality, output_format, read_image, read_pixels, write_image
    from videoseal_tflite.runtime.verdict import decide

    check_quality(args.quality)
    output_format(args.output)  # a bad extension fails before any work
    source = read_image(args.input)
    # 8-bit inputs in row bands (memory grows with the width); 16-bit ones keep their precision in float
    if source.rgb8 is not None:
        watermarked = embedder.embed_rgb8(source.rgb8, message)
    else:
        watermarked = embedder.embed(source.pixels, message)
    written = write_image(args.output, watermarked, source, args.quality)
    detection = detector.detect(read_pixels(args.output))
    # the saved file judged as `detect --message` judges it: a 64-bit card decides at --fpr without every bit
    verdict = decide(detection.bits, message, args.fpr, detection.hypotheses)
    report = {
        "output": str(args.output),
        "embedder": str(embedder_path),
        "detector": str(detector.model.path),
        "strength": embedder.strength,
        "mode": written.mode,
        **({"quality": args.quality} if written.format in ("JPEG", "WEBP") else {}),
        "kept": list(written.kept),
        "notes": list(written.notes),
        **detection_json(detection, message, detector.model.meta),
        **verdict.to_json(),
    }
    if args.json:
        print_json(report)
    else:
        print(f"wrote {args.output} ({written.mode}; {embedder_path.name})")
        if embedder.strength != 1:
            print(f"note: --strength {embedder.strength:g}: the card's watermark scale x {embedder.strength:g}")
        if written.kept:
            print(f"kept: {', '.join(written.kept)}")
        for note in written.notes:
            print(f"note: {note}")
        print(f"recovered bits: {report['bits']}")
        print(f"bit accuracy:   {report['bit_accuracy']:.4f} ({detector.model.path.name})")
        for line in verdict_lines(verdict):
            print(line)
    # a bit lost matters when the verdict is not reached (a 16-bit card never decides at 1e-6: every bit counts)
    if report["bit_accuracy"] < 1.0 and not verdict.watermarked:
        unsaved = detector.detect(watermarked).bit_accuracy(message)  # uint8 HxWx3 or float [3,H,W]: both read
        print(_saved_warning(report["bit_accuracy"], unsaved, written, args.quality), file=sys.stderr)
    return 0


def _refuse_replacing_input(source: Path, output: Path, force: bool) -> None:
    """The input is never lost: an output that is the input file (the same inode, whatever the path says) is refused
    unless --force; the write is atomic either way, so the original stays whole until the new file is complete."""
    if force or not (source.exists() and output.exists()):
        return
    if os.path.samefile(source, output):
        raise OutputIsInput(
            f"{output} is the input file {source}; writing would replace the original: "
            "give another output path, or --force to replace it"
        )


def _cmd_embed(args: argparse.Namespace) -> int:
    from videoseal_tflite.runtime.image import Detector, Embedder
    from videoseal_tflite.runtime.video import is_video_path

    _refuse_replacing_input(args.input, args.output, args.force)
    embedder_path = args.embedder or model_path(args, "embedder", args.variant)
    detector_path = args.detector or model_path(args, "detector", args.detector_variant)
    embedder = Embedder(embedder_path, args.threads, args.strength)
    # both models are checked (manifest hash, metadata, load) before a byte is written: the read-back's too
    detector = Detector(detector_path, args.threads, resync=False)  # the saved file must read back as is
    message = message_of(args, embedder.model.meta)
    if message is None:
        raise InvalidMessage("give the message to embed with --message BITS, --message-hex HEX or --payload TEXT")
    if is_video_path(args.input):
        return _embed_video(args, embedder, message, Path(embedder_path), detector)
    return _embed_image(args, embedder, message, Path(embedder_path), detector)


_EMBED_DESCRIPTION = (
    "Watermark an image or a video. Images keep what they carry: alpha (put back unchanged), EXIF and ICC "
    "profile, DPI, PNG text, and grayscale where the card's watermark stays gray (else RGB, with a note). An "
    "EXIF orientation is applied to the pixels and the tag set to 1, so the file stores the watermarked "
    "orientation and `detect` reads it whether or not a viewer applies EXIF rotation. The saved file is read "
    "back with the detector; a warning goes to stderr when it does not give every bit (exit code stays 0)."
)


def _video_embed_options(embed: argparse.ArgumentParser) -> None:
    """`embed`'s video-only options: step size, and libx264's CRF and preset."""
    embed.add_argument(
        "--step-size",
        type=positive_int,
        metavar="K",
        help="video: run the embedder on every K-th frame and reuse its watermark for the K-1 after it "
        "(default: the card's videoseal_step_size, 4)",
    )
    embed.add_argument(
        "--crf",
        type=bounded(int, *CRF_RANGE),
        default=23,
        help="video: libx264 constant rate factor, 0-51, lower is better (default 23)",
    )
    embed.add_argument(
        "--preset", default="medium", choices=X264_PRESETS, help="video: libx264 preset (default medium)"
    )


def _add_embed(sub) -> None:
    """The `embed` subcommand: images, and videos (.mp4 .m4v .mov .mkv .webm .avi, or probed)."""
    embed = sub.add_parser(
        "embed", help="watermark an image or a video with the .tflite embedder", description=_EMBED_DESCRIPTION
    )
    embed.add_argument("input", type=Path, help="image, or video (.mp4 .m4v .mov .mkv .webm .avi; other names probed)")
    embed.add_argument(
        "output", type=Path, help="image (.png recommended) or video (.mp4 .m4v .mov .mkv: H.264 yuv420p, audio copied)"
    )
    runtime_options(embed, with_detector_variant=True)
    _video_embed_options(embed)
    embed.add_argument(
        "--fpr", type=probability, default=1e-6, help="false-positive rate of the verdict, 0 < F < 1 (default 1e-6)"
    )
    embed.add_argument(
        "--force", action="store_true", help="replace the output even when it is the input file (still atomic)"
    )
    embed.add_argument(
        "--strength",
        type=strength,
        default=1.0,
        metavar="S",
        help="multiply the card's watermark scale (videoseal's scaling_w) by S, 0 < S <= 10 (default 1, as trained): "
        "more robust to compression, less invisible (PSNR -20*log10(S) dB)",
    )
    embed.add_argument(
        "--quality",
        type=bounded(int, *QUALITY_RANGE),
        default=95,
        metavar="Q",
        help="image: JPEG/WebP output quality, 1-100 (default 95); low values can lose watermark bits",
    )
    embed.set_defaults(func=_cmd_embed)


def register(sub) -> None:
    """Add this module's subcommands to the CLI's parser."""
    _add_embed(sub)
