"""`videoseal-tflite`: one command, one subcommand per verb; each calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import warnings
from pathlib import Path

from videoseal_tflite.errors import (
    ArtifactsMissing,
    InvalidMessage,
    InvalidOption,
    InvalidReport,
    OutputIsInput,
    VsTfliteError,
)
from videoseal_tflite.runtime.video import X264_PRESETS
from videoseal_tflite.store.artifact import DEFAULT_CARD, cards_present, default_card, find_model

PROG = "videoseal-tflite"


def _say(*args, err: bool = False) -> None:
    """A line for the user on the terminal's stdout (stderr with `err`), also while third-party output goes to
    the step's log (`console.quiet`)."""
    from videoseal_tflite import console

    print(*args, file=console.stream() if err else console.out())


def _print_variants(results) -> None:
    for r in results:
        if r.status == "failed":
            again = (
                " (same inputs as the failed run recorded in quantize_log.json; --force retries)" if r.reused else ""
            )
            _say(f"{r.part} {r.variant}: FAILED after {r.attempts} build(s): {r.error}{again}")
            continue
        agree = r.agreement
        metric = (
            f"bit agreement vs fp32 {agree.bit_agreement:.4f}"
            if agree.bit_agreement is not None
            else f"watermark rel. err vs fp32 {agree.watermark_rel_err:.4f}"
        )
        repairs = f"  repairs: {', '.join(x.name for x in r.repairs_applied)}" if r.repairs_applied else ""
        repairs += "  (up to date, not rebuilt)" if r.reused else ""
        if r.repairs_rejected:
            repairs += f"  (tried, no better: {', '.join(x['name'] for x in r.repairs_rejected)})"
        _say(f"{r.path}  {r.bytes / 1e6:.1f} MB  {r.status}  {metric}{repairs}")


def _variants(args: argparse.Namespace) -> tuple[str, ...]:
    from videoseal_tflite.store.variants import variant_names

    chosen = args.variant or variant_names()
    return tuple(v for v in chosen if v != "fp32")


def _cmd_convert(args: argparse.Namespace) -> int:
    from videoseal_tflite.build.pipeline import OFFICIAL_CARDS, convert_card
    from videoseal_tflite.build.weights import WeightSource
    from videoseal_tflite.store.artifact import PARTS

    cards = list(args.card or [])
    if args.all_official:
        cards += [c for c in OFFICIAL_CARDS if c not in cards]
    if not cards:
        cards = [DEFAULT_CARD]
    if args.checkpoint and len(cards) > 1:
        raise InvalidOption("--checkpoint applies to one card; give exactly one --card")
    source = WeightSource(checkpoint=args.checkpoint, random_init_seed=args.random_init)
    parts = tuple(args.part) if args.part else PARTS
    failed = 0
    for card in cards:
        artifacts = convert_card(
            card,
            source,
            args.artifacts,
            parts=parts,
            rewrites=not args.no_rewrites,
            variants=_variants(args),
            int8_io=args.int8_io,
            force=args.force,
        )
        for result in artifacts.converted:
            parity = result.parity
            bits = f", bit agreement {parity.bit_agreement:.3f}" if parity.bit_agreement is not None else ""
            took = "up to date, not rebuilt" if result.reused else f"{result.convert_seconds:.1f} s"
            _say(
                f"{result.path}  {result.bytes / 1e6:.1f} MB  fp32  {took}  "
                f"parity vs PyTorch max|diff| {parity.max_abs_diff:.2g}{bits}  [{result.weights}]"
            )
        _print_variants(artifacts.variants)
        failed += sum(v.status == "failed" for v in artifacts.variants)
    if failed:
        _say(f"{failed} variant(s) failed and were not written; see quantize_log.json", err=True)
    return 1 if failed else 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from videoseal_tflite.build.pipeline import quantize_card

    variants = _variants(args)
    if not variants:
        from videoseal_tflite.store.variants import variant_names

        raise InvalidOption(f"nothing to do: give --variant {'|'.join(variant_names(quantized_only=True))}")
    from videoseal_tflite.store.artifact import PARTS

    card = args.card or default_card(args.artifacts)
    parts = tuple(args.part) if args.part else PARTS
    results = quantize_card(card, args.artifacts, variants, parts=parts, int8_io=args.int8_io, force=args.force)
    _print_variants(results)
    return 1 if any(r.status == "failed" for r in results) else 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from videoseal_tflite.tflite.coverage import inspect_with_coverage
    from videoseal_tflite.tflite.inspect import format_inspection

    if args.npu:  # the NPU extra's AOT compile record instead (validate/npu.py; exit 2 without `make setup-npu`)
        from videoseal_tflite.tflite.npu import inspect_npu

        return inspect_npu(args.file, args.npu, as_json=args.json)
    result = inspect_with_coverage(args.file, load=not args.no_load, runtime=args.runtime)
    profile = None
    # LiteRT's own per-operator profile (validate/op_profile.py), in this process: only for a file that loads
    if args.profile and (result.load is None or result.load.loads):
        from videoseal_tflite.tflite.op_profile import profile_ops

        profile = profile_ops(args.file, threads=args.threads, runs=args.runs)
    if args.json:
        extra = {"op_profile": profile.to_json()} if profile else {}
        _print_json(result.to_json(with_ops=True) | extra)
    else:
        print(format_inspection(result))
        if profile:
            from videoseal_tflite.tflite.op_profile import format_profile

            print(format_profile(profile))
    if result.load is not None and not result.load.loads:
        return 1
    return 0


def _message(args: argparse.Namespace, meta: dict):
    """The message bits from --message / --message-hex, or --payload encoded with the card's code; None if none."""
    from videoseal_tflite.runtime.image import parse_message
    from videoseal_tflite.runtime.payload import PayloadCode, payload_bits

    if args.payload is not None:
        code = PayloadCode.from_meta(meta)
        if code is None:
            raise InvalidMessage(
                f"card {meta.get('card')} declares no payload code: give its {meta.get('nbits')} bits with --message"
            )
        return code.encode(payload_bits(args.payload, code.data_bits))
    if args.message is None and args.message_hex is None:
        return None
    return parse_message(args.message, args.message_hex, int(meta["nbits"]))


def _payload_report(bits, meta: dict, fpr: float, hypotheses: int = 1) -> dict | None:
    """Without a message: the payload decoded with the card's code, and its verdict at `fpr` (None: no code)."""
    from videoseal_tflite.runtime.payload import PayloadCode, payload_text

    code = PayloadCode.from_meta(meta)
    if code is None:
        return None
    decoded = code.decode(bits)
    pvalue = min(1.0, decoded.pvalue * hypotheses)
    out = {"code": code.to_json(), "check_passed": decoded.ok, "corrected_bits": decoded.corrected, "pvalue": pvalue}
    if decoded.ok:
        out |= payload_text(decoded.data)
    best = min(1.0, code.pvalue(0) * hypotheses)
    if best > fpr:  # the code cannot decide at this rate even from a perfect reading
        return out | {
            "watermarked": None,
            "reason": f"a clean payload reaches at best p-value {best:.2g} > FPR {fpr:.0e}",
        }
    return out | {"watermarked": decoded.ok and pvalue <= fpr}


def _payload_lines(payload: dict, fpr: float) -> list[str]:
    if not payload["check_passed"]:
        return ["payload: the code's check failed (more flipped bits than it corrects): no payload read",
                f"verdict: not shown to be watermarked at FPR {fpr:.0e}"]  # fmt: skip
    shown = payload["text"] if payload["text"] is not None else payload["hex"]
    decided = {True: "watermarked", False: "not shown to be watermarked", None: "undecided"}[payload["watermarked"]]
    return [
        f"payload: {shown!r} ({payload['hex']}; check passed, {payload['corrected_bits']} bits corrected)",
        f"verdict: {decided} (p-value {payload['pvalue']:.3g}, FPR {fpr:.0e})",
    ]


def _detection_json(detection, message, meta: dict) -> dict:
    """Bits, and the detection logit only where the card trained it (else null, with the reason): embed's and
    detect's JSON say the same."""
    from videoseal_tflite.runtime.image import bits_to_text

    note = _detection_logit_note(meta)
    out = {"bits": bits_to_text(detection.bits), "detection_logit": None if note else detection.detection_logit}
    if note:
        out["detection_logit_note"] = note
    if message is not None:
        out["bit_accuracy"] = detection.bit_accuracy(message)
    return out


def _synced_json(detection) -> dict:
    """The re-synchronisation's record; `kept` says whether its reading replaced the as-is one."""
    synced = detection.searched
    return {
        "kept": detection.synced is not None,
        "extent": list(synced.extent),
        "phase": list(synced.phase),
        "agreement": synced.agreement,
        "hypotheses": synced.hypotheses,
    }


def _synced_line(detection) -> str:
    synced = detection.searched
    if detection.synced is None:
        return (
            f"re-synchronisation: the reading as is was unsure; no re-found tile read more surely, so the reading "
            f"as is was kept (chosen among {synced.hypotheses} readings: p-values x {synced.hypotheses})"
        )
    cx, cy = synced.extent
    return (
        f"re-synchronised: the reading as is was unsure; the mark's tile was found at {cx:.3f} x {cy:.3f} of the "
        f"marked image's width x height (a crop?), the best of {synced.hypotheses} readings (p-values x "
        f"{synced.hypotheses}; --no-resync reads as is only)"
    )


def _frame_accuracy_json(detection, message) -> dict:
    per_frame = detection.frame_bit_accuracies(message)
    return {
        "mean": float(per_frame.mean()),
        "std": float(per_frame.std()),
        "min": float(per_frame.min()),
        "max": float(per_frame.max()),
        "per_frame": [float(v) for v in per_frame],
        "frame_indices": [int(i) for i in detection.frame_indices],
    }


def _tracking_json(detection) -> dict:
    import numpy as np

    from videoseal_tflite.runtime.video import DRIFT_REACH, DRIFT_STEP

    shifts = detection.frame_shifts
    return {
        "frames_moved": int((np.abs(shifts).max(axis=1) > 0).sum()),
        "largest_shift": float(np.abs(shifts).max()),
        "step": DRIFT_STEP,
        "reach": DRIFT_REACH,
        "per_frame_shift": [[float(dx), float(dy)] for dx, dy in shifts],
    }


def _tracking_line(tracking: dict) -> str:
    return (
        f"tile tracked: {tracking['frames_moved']} of {len(tracking['per_frame_shift'])} frames read with the grid "
        f"moved (up to {tracking['largest_shift']:g} px at the processing size: the codec drags the mark with the "
        "picture; --no-resync reads as is)"
    )


def _detection_logit_note(meta: dict) -> str | None:
    """Why the detector's column 0 (detection logit) says nothing, or None when it was trained with the weights."""
    if "random-init" in str(meta.get("weights_label", "")):
        return "random-init weights: not a trained detection score"
    if meta.get("detection_logit_trained") is False:
        return "not trained with these weights (the card says so): not a detection score"
    return None


def _verdict_lines(verdict) -> list[str]:
    return [
        f"matching bits: {verdict.matching_bits}/{verdict.nbits}",
        f"p-value: {verdict.pvalue:.3g}",
        f"verdict: {verdict.sentence()}",
    ]


def _embed_video(args: argparse.Namespace, embedder, message, embedder_path: Path, detector_path: Path) -> int:
    from videoseal_tflite.runtime.image import Detector, bits_to_text
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
    detection = detect_video(args.output, Detector(detector_path, args.threads, resync=False))
    verdict = decide(detection.bits, message, args.fpr)
    report = {
        "output": str(args.output),
        "embedder": str(embedder_path),
        "detector": str(detector_path),
        "strength": embedder.strength,
        **result.to_json(),
        "bits": bits_to_text(detection.bits),
        "bit_accuracy": detection.bit_accuracy(message),
        **verdict.to_json(),
    }
    if args.json:
        _print_json(report)
    else:
        speed = result.frames / max(result.seconds_total, 1e-9)
        print(
            f"wrote {args.output} ({result.frames} frames, {result.width}x{result.height}, embedder on every "
            f"{step_size}th frame, {speed:.1f} frames/s; {embedder_path.name})"
        )
        if result.padded:
            print("note: odd frame size; one edge row/column was repeated to make it even (H.264 yuv420p)")
        if embedder.strength != 1:
            print(f"note: --strength {embedder.strength:g}: the card's watermark scale x {embedder.strength:g}")
        print(f"recovered bits: {report['bits']}")
        frames_read = detection.bit_logits.shape[0]
        print(f"bit accuracy:   {report['bit_accuracy']:.4f} ({detector_path.name}, {frames_read} frames)")
        for line in _verdict_lines(verdict):
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


def _embed_image(args: argparse.Namespace, embedder, message, embedder_path: Path, detector_path: Path) -> int:
    """Watermark the RGB; keep alpha, EXIF (orientation applied, tag set to 1), ICC profile and, where the
    output format and the watermark allow it, the mode (see `image_io`); then read the saved file back."""
    from videoseal_tflite.runtime.image import Detector
    from videoseal_tflite.runtime.image_io import check_quality, output_format, read_image, read_pixels, write_image

    check_quality(args.quality)
    output_format(args.output)  # a bad extension fails before any work
    source = read_image(args.input)
    # 8-bit inputs in row bands (memory grows with the width); 16-bit ones keep their precision in float
    if source.rgb8 is not None:
        watermarked = embedder.embed_rgb8(source.rgb8, message)
    else:
        watermarked = embedder.embed(source.pixels, message)
    written = write_image(args.output, watermarked, source, args.quality)
    detector = Detector(detector_path, args.threads, resync=False)  # the saved file must read back as is
    detection = detector.detect(read_pixels(args.output))
    report = {
        "output": str(args.output),
        "embedder": str(embedder_path),
        "detector": str(detector_path),
        "strength": embedder.strength,
        "mode": written.mode,
        **({"quality": args.quality} if written.format in ("JPEG", "WEBP") else {}),
        "kept": list(written.kept),
        "notes": list(written.notes),
        **_detection_json(detection, message, detector.model.meta),
    }
    if args.json:
        _print_json(report)
    else:
        print(f"wrote {args.output} ({written.mode}; {embedder_path.name})")
        if embedder.strength != 1:
            print(f"note: --strength {embedder.strength:g}: the card's watermark scale x {embedder.strength:g}")
        if written.kept:
            print(f"kept: {', '.join(written.kept)}")
        for note in written.notes:
            print(f"note: {note}")
        print(f"recovered bits: {report['bits']}")
        print(f"bit accuracy:   {report['bit_accuracy']:.4f} ({detector_path.name})")
    if report["bit_accuracy"] < 1.0:
        unsaved = detector.detect(watermarked).bit_accuracy(message)  # uint8 HxWx3 or float [3,H,W]: both read
        print(_saved_warning(report["bit_accuracy"], unsaved, written, args.quality), file=sys.stderr)
    return 0


def _find_model(args: argparse.Namespace, part: str, variant: str) -> Path:
    """The artifact for --card/--variant; a --card that is no card at all is `UnknownCard` naming the known ones
    (not advice to convert a card that does not exist)."""
    if args.card and not (Path(args.artifacts) / args.card).is_dir():
        try:  # optional heavy dependency: the card files are read with PyYAML, in the [convert] extra
            from videoseal_tflite.build.cards import resolve_card_path
        except ImportError:
            pass
        else:
            resolve_card_path(args.card)
    return find_model(args.artifacts, args.card, part, variant)


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


def _print_json(report: dict) -> None:
    """JSON on stdout that every parser reads: a non-finite number (which no model output may carry; see
    runtime.image._Model) becomes null rather than the bare NaN that json.dumps writes by default."""

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    print(json.dumps(finite(report), indent=2, allow_nan=False))


def _cmd_embed(args: argparse.Namespace) -> int:
    from videoseal_tflite.runtime.image import Embedder
    from videoseal_tflite.runtime.video import is_video_path

    _refuse_replacing_input(args.input, args.output, args.force)
    embedder_path = args.embedder or _find_model(args, "embedder", args.variant)
    detector_path = args.detector or _find_model(args, "detector", args.detector_variant)
    embedder = Embedder(embedder_path, args.threads, args.strength)
    message = _message(args, embedder.model.meta)
    if message is None:
        raise InvalidMessage("give the message to embed with --message BITS, --message-hex HEX or --payload TEXT")
    if is_video_path(args.input):
        return _embed_video(args, embedder, message, Path(embedder_path), Path(detector_path))
    return _embed_image(args, embedder, message, Path(embedder_path), Path(detector_path))


def _detect_video(args: argparse.Namespace, detector, message, detector_path: Path) -> int:
    import numpy as np

    from videoseal_tflite.runtime.image import bits_to_text
    from videoseal_tflite.runtime.verdict import decide
    from videoseal_tflite.runtime.video import detect_video

    detection = detect_video(
        args.input, detector, every=args.every, aggregation=args.aggregation, progress=sys.stderr.isatty()
    )
    note = _detection_logit_note(detector.model.meta)
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
        report["tile_tracking"] = _tracking_json(detection)
    if message is not None:
        verdict = decide(detection.bits, message, args.fpr)
        report |= {
            "bit_accuracy": detection.bit_accuracy(message),
            **verdict.to_json(),
            "frame_bit_accuracy": _frame_accuracy_json(detection, message),
        }
    payload = None if message is not None else _payload_report(detection.bits, detector.model.meta, args.fpr)
    if payload is not None:
        report |= {"payload": payload, "watermarked": payload["watermarked"]}
    if args.json:
        _print_json(report)
        return 0
    print(f"bits: {report['bits']}")
    print(
        f"frames read: {report['frames_read']} of {report['frames_decoded']} (every {args.every}), "
        f"aggregation {args.aggregation}"
    )
    if not note:
        print(f"detection logit: {report['detection_logit']:.3f} (mean over frames)")
    if detection.tracked:
        print(_tracking_line(report["tile_tracking"]))
    if message is not None:
        spread = report["frame_bit_accuracy"]
        print(
            f"bit accuracy: {report['bit_accuracy']:.4f} (per frame: mean {spread['mean']:.4f}, "
            f"std {spread['std']:.4f}, min {spread['min']:.4f})"
        )
        for line in _verdict_lines(verdict):
            print(line)
    for line in _payload_lines(payload, args.fpr) if payload is not None else ():
        print(line)
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from videoseal_tflite.runtime.image import Detector
    from videoseal_tflite.runtime.image_io import read_pixels
    from videoseal_tflite.runtime.verdict import decide
    from videoseal_tflite.runtime.video import is_video_path

    detector_path = args.detector or _find_model(args, "detector", args.variant)
    detector = Detector(detector_path, args.threads, resync=not args.no_resync)
    message = _message(args, detector.model.meta)
    if is_video_path(args.input):
        return _detect_video(args, detector, message, Path(detector_path))
    detection = detector.detect(read_pixels(args.input))
    report = {
        "input": str(args.input),
        "detector": str(detector_path),
        **_detection_json(detection, message, detector.model.meta),
    }
    if detection.searched:
        report["resynchronised"] = _synced_json(detection)
    verdict = decide(detection.bits, message, args.fpr, detection.hypotheses) if message is not None else None
    if verdict is not None:
        report |= verdict.to_json()
    payload = None if message is not None else _payload_report(detection.bits, detector.model.meta, args.fpr,
                                                                 detection.hypotheses)  # fmt: skip
    if payload is not None:
        report |= {"payload": payload, "watermarked": payload["watermarked"]}
    if args.json:
        _print_json(report)
    else:
        if detection.searched:
            print(_synced_line(detection))
        print(f"bits: {report['bits']}")
        if report["detection_logit"] is not None:  # a card whose detection logit was not trained prints nothing
            print(f"detection logit: {report['detection_logit']:.3f}")
        if verdict is not None:
            print(f"bit accuracy: {report['bit_accuracy']:.4f}")
            for line in _verdict_lines(verdict):
                print(line)
        for line in _payload_lines(payload, args.fpr) if payload is not None else ():
            print(line)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from videoseal_tflite.validate.render import attack_losses
    from videoseal_tflite.validate.report import below_floor, validate_card, write_report

    root = Path(args.artifacts)
    cards = [args.card] if args.card else cards_present(root)
    if not cards:
        raise ArtifactsMissing(f"no card artifacts under {root}; run `make convert` first")
    problems, reports = [], []
    for card in cards:
        card_dir = root / card
        if not card_dir.is_dir():
            raise ArtifactsMissing(f"no artifacts for card {card} in {root}")
        report = validate_card(
            card_dir,
            args.images,
            args.messages,
            args.threads,
            attacks=args.attacks,
            fullres=not args.no_fullres,
            workers=args.workers,
        )
        written = write_report(report, card_dir)
        reports.append(report)
        problems += below_floor(report, args.min_bit_acc, args.max_psnr_drop)
        problems += [f"{card}: no {part} file (missing part)" for part in report["missing_parts"]]
        if args.max_attack_loss is not None:
            problems += attack_losses(report, args.max_attack_loss / 100)
        if not args.json:
            _say(f"{card}: wrote {', '.join(str(p) for p in written)}")
            _say((card_dir / "report.md").read_text())
    if args.json:
        _say(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    for line in problems:
        _say(f"below floor: {line}", err=True)
    return 1 if problems else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from videoseal_tflite.validate.verify import verify_artifacts

    root = args.artifacts
    checked, problems = verify_artifacts(root, load=not args.no_load)
    for problem in problems:
        print(problem.line(), file=sys.stderr)
    if problems:
        return 1
    print(
        f"{checked} files verified in {root}: hashes match the manifest"
        + ("" if args.no_load else " and every file loads")
    )
    return 0


def _bench_video(args: argparse.Namespace) -> int:
    from videoseal_tflite.bench.video import bench_video, bench_video_markdown
    from videoseal_tflite.store.atomic import write_text_atomic

    card_dir = Path(args.artifacts) / args.card
    if not any(card_dir.glob("*.tflite")):
        raise ArtifactsMissing(f"no .tflite files for {args.card} in {args.artifacts}; run `make convert` first")
    record = bench_video(card_dir, variants=tuple(args.variant) if args.variant else None, preset=args.preset)
    out = Path(args.artifacts) / "bench"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"video_{args.card}.json", json.dumps(record, indent=2) + "\n")
    markdown = bench_video_markdown(record)
    write_text_atomic(out / f"video_{args.card}.md", markdown)
    _say(markdown)
    return 0


def _bench_validate_scale(args: argparse.Namespace) -> int:
    from videoseal_tflite.bench.scale import bench_validate_scale, write_scale

    record = bench_validate_scale(Path(args.artifacts) / args.card, (16, args.scale_images), say=_say)
    written = write_scale(record, Path(args.artifacts) / "bench")
    _say(written[1].read_text())
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from videoseal_tflite.store.merge import merge_shards

    merged = merge_shards(args.shards, args.artifacts)
    cards = sorted({Path(rel).parts[0] for rel in merged})
    _say(f"merged {len(merged)} files of {', '.join(cards)} from {len(args.shards)} shard(s) into {args.artifacts}")
    return 0


def _bench_sizes(args: argparse.Namespace) -> int:
    from videoseal_tflite.bench.sizes import bench_sizes, write_sizes

    record = bench_sizes(Path(args.artifacts), args.card, say=_say)
    for path in write_sizes(record, Path(args.artifacts) / "bench"):
        _say(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from videoseal_tflite.bench.models import bench_card, write_bench
    from videoseal_tflite.build.weights import WeightSource

    if args.video:
        return _bench_video(args)
    if args.validate_scale:
        return _bench_validate_scale(args)
    if args.sizes:
        return _bench_sizes(args)
    source = WeightSource(checkpoint=args.checkpoint, random_init_seed=args.random_init)
    out = Path(args.artifacts) / "bench"
    record = bench_card(
        args.card,
        source,
        out,
        variants=_variants(args),
        invokes=args.invokes,
        rounds=args.rounds,
        scaling=not args.no_scaling,
    )
    for path in write_bench(record, out):
        _say(f"wrote {path}")
    _say((out / f"{record['card']}.md").read_text())
    return 0


def _cmd_pick(args: argparse.Namespace) -> int:
    from videoseal_tflite.validate.report import pick

    path = (
        Path(args.report)
        if args.report
        else Path(args.artifacts) / (args.card or default_card(args.artifacts)) / "report.json"
    )
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactsMissing(f"no report at {path}; run `videoseal-tflite validate` first") from None
    except json.JSONDecodeError as exc:
        raise InvalidReport(f"{path} is not valid JSON ({exc.msg})") from None
    best, why = pick(report, args.part, args.max_mb, args.min_bit_acc, args.max_ms)
    if best is None:
        print(why, file=sys.stderr)
        return 1
    print(best["path"])
    print(why)
    return 0


def _runtime_options(parser: argparse.ArgumentParser, with_detector_variant: bool) -> None:
    from videoseal_tflite.store.variants import variant_names

    parser.add_argument("--card", help=f"card whose artifacts to use (default: the one present, else {DEFAULT_CARD})")
    # checked against the table by find_model: an unknown name is one UnknownVariant line, not a usage dump
    parser.add_argument("--variant", default="fp32", help=f"which file of the card: {', '.join(variant_names())}")
    _artifacts_option(parser)
    message = parser.add_mutually_exclusive_group()
    message.add_argument("--message", help="message bits, e.g. 0101... (as many as the card's nbits)")
    message.add_argument("--message-hex", help="message as hexadecimal")
    message.add_argument(
        "--payload",
        metavar="TEXT|0xHEX",
        help="data to carry with the card's error-correcting code (cards with a payload_code): text, or 0x + hex",
    )
    parser.add_argument("--threads", type=_positive_int, default=2, help="LiteRT interpreter threads (default 2)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--detector", type=Path, help="explicit detector .tflite (overrides --card/--variant)")
    if with_detector_variant:
        parser.add_argument("--embedder", type=Path, help="explicit embedder .tflite (overrides --card/--variant)")
        parser.add_argument("--detector-variant", default="fp32", help="variant of the detector that checks the result")


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the error into one usage line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _bounded(cast: type, low: float | None = None, high: float | None = None, open_low: bool = False,
             open_high: bool = False):  # fmt: skip
    """argparse type: `cast(text)` within [low, high] (an open end excludes its bound); argparse turns the
    error into one usage line and exit 2, before any work."""
    left, right = "(" if open_low else "[", ")" if open_high else "]"
    span = f"{left}{'-inf' if low is None else format(low, 'g')}, {'inf' if high is None else format(high, 'g')}{right}"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if cast is int else 'number'}"
            ) from None
        too_low = low is not None and (value < low or (open_low and value == low))
        too_high = high is not None and (value > high or (open_high and value == high))
        if too_low or too_high or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be in {span}, got {text}")
        return value

    parse.__name__ = cast.__name__  # argparse names the type in some messages
    return parse


_probability = _bounded(float, 0, 1, open_low=True, open_high=True)  # --fpr: 0 and 1 decide nothing
_fraction = _bounded(float, 0, 1)


def _strength(text: str) -> float:
    """argparse type of `embed --strength`: a number in (0, runtime.MAX_STRENGTH]."""
    from videoseal_tflite.runtime.image import MAX_STRENGTH

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= MAX_STRENGTH:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_STRENGTH:g}], got {value:g}")
    return value


def _artifacts_option(parser: argparse.ArgumentParser) -> None:
    """`--artifacts DIR`, the one spelling of the artifact root in every command."""
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="artifact root (default: artifacts)")


def _part_option(parser: argparse.ArgumentParser, **kwargs) -> None:
    from videoseal_tflite.store.artifact import PARTS

    parser.add_argument("--part", choices=PARTS, **kwargs)


def _variant_choice(parser: argparse.ArgumentParser, help_text: str) -> None:
    from videoseal_tflite.store.variants import variant_names

    parser.add_argument("--variant", action="append", choices=variant_names(), help=help_text)


def _variant_options(parser: argparse.ArgumentParser) -> None:
    from videoseal_tflite.store.variants import variant_names

    _variant_choice(parser, "build only this variant (repeatable; default: all of " + ", ".join(variant_names()) + ")")
    parser.add_argument(
        "--int8-io",
        action="store_true",
        help="int8 variant: keep int8 model inputs/outputs (scale and zero point: manifest / metadata "
        "'io_quantization', real = (q - zero_point) * scale)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rebuild everything (default: reuse files whose inputs are unchanged and whose bytes match the manifest)",
    )


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
        type=_positive_int,
        metavar="K",
        help="video: run the embedder on every K-th frame and reuse its watermark for the K-1 after it "
        "(default: the card's videoseal_step_size, 4)",
    )
    embed.add_argument(
        "--crf",
        type=_bounded(int, 0, 51),
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
    _runtime_options(embed, with_detector_variant=True)
    _video_embed_options(embed)
    embed.add_argument(
        "--fpr", type=_probability, default=1e-6, help="false-positive rate of the verdict, 0 < F < 1 (default 1e-6)"
    )
    embed.add_argument(
        "--force", action="store_true", help="replace the output even when it is the input file (still atomic)"
    )
    embed.add_argument(
        "--strength",
        type=_strength,
        default=1.0,
        metavar="S",
        help="multiply the card's watermark scale (videoseal's scaling_w) by S, 0 < S <= 10 (default 1, as trained): "
        "more robust to compression, less invisible (PSNR -20*log10(S) dB)",
    )
    embed.add_argument(
        "--quality",
        type=_bounded(int, 1, 100),
        default=95,
        metavar="Q",
        help="image: JPEG/WebP output quality, 1-100 (default 95); low values can lose watermark bits",
    )
    embed.set_defaults(func=_cmd_embed)


def _add_detect(sub) -> None:
    detect = sub.add_parser("detect", help="read the message bits from an image or a video with the .tflite detector")
    detect.add_argument("input", type=Path)
    _runtime_options(detect, with_detector_variant=False)
    detect.add_argument(
        "--every", type=_positive_int, default=1, metavar="N", help="video: read every N-th frame (default 1: all)"
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
        type=_probability,
        default=1e-6,
        help="with --message: false-positive rate, 0 < F < 1, at which the verdict is decided (default 1e-6); the "
        "p-value is P(Binomial(nbits, 1/2) >= matching bits)",
    )
    detect.set_defaults(func=_cmd_detect)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="VideoSeal -> LiteRT/TFLite: convert, quantize, inspect, embed, detect."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_convert(sub)
    _add_quantize(sub)
    _add_inspect(sub)
    _add_embed(sub)
    _add_detect(sub)
    _add_validate(sub)
    _add_verify(sub)
    _add_merge(sub)
    _add_bench(sub)
    _add_pick(sub)
    return parser


def _add_convert(sub) -> None:

    convert = sub.add_parser("convert", help="convert a card's embedder and detector to FLOAT32 .tflite")
    convert.add_argument(
        "--card",
        action="append",
        help=f"card name (compact, videoseal_0.0, videoseal_1.0) or card yaml path; repeatable "
        f"(default {DEFAULT_CARD})",
    )
    convert.add_argument("--all-official", action="store_true", help="both official cards")
    weights = convert.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint", type=Path, help="checkpoint file in videoseal's layout ({'model': state_dict})"
    )
    weights.add_argument(
        "--random-init", type=int, metavar="SEED", help="untrained, seeded random weights (labelled random-init)"
    )
    _part_option(convert, action="append", help="only this part (repeatable)")
    _artifacts_option(convert)
    convert.add_argument(
        "--no-rewrites", action="store_true", help="export the original graph, without TFLite-friendly rewrites"
    )
    _variant_options(convert)
    convert.set_defaults(func=_cmd_convert, quiet_step="convert")


def _add_quantize(sub) -> None:
    quantize = sub.add_parser("quantize", help="build quantized variants from a card's FP32 .tflite files")
    quantize.add_argument(
        "--card", help="card whose <artifacts>/<card>/*_fp32*.tflite to quantize (default: the one present)"
    )
    _artifacts_option(quantize)
    _part_option(quantize, action="append", help="only this part (repeatable)")
    _variant_options(quantize)
    quantize.set_defaults(func=_cmd_quantize, quiet_step="quantize")


def _add_inspect(sub) -> None:
    inspect = sub.add_parser("inspect", help="ops, operand dtypes, flags and a load check of a .tflite")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true", help="machine-readable output, every op included")
    inspect.add_argument("--no-load", action="store_true", help="static inspection only")
    inspect.add_argument(
        "--runtime", choices=("litert", "tflite"), default="litert", help="interpreter for the load check"
    )
    inspect.add_argument(
        "--npu",
        metavar="TARGET",
        help="instead: LiteRT AOT-compile for TARGET (qualcomm, mediatek, intel_npu, intel_cpu; NAME:SOC) and print"
        " the compiler's record; needs `make setup-npu`",
    )
    inspect.add_argument(
        "--profile", action="store_true", help="also time every operator with LiteRT's own profiler (CPU, XNNPACK)"
    )
    inspect.add_argument("--threads", type=_positive_int, default=2, help="--profile: XNNPACK threads (default 2)")
    inspect.add_argument("--runs", type=_positive_int, default=30, help="--profile: profiled runs (default 30)")
    inspect.set_defaults(func=_cmd_inspect)


def _add_validate(sub) -> None:
    validate = sub.add_parser(
        "validate", help="report size, load status, bit accuracy, PSNR and latency of every artifact"
    )
    validate.add_argument("--card", help="one card (default: every card folder in --artifacts)")
    _artifacts_option(validate)
    validate.add_argument(
        "--images", type=Path, help="folder of PNG/JPEG images of any size (default: the evaluation set)"
    )
    validate.add_argument("--messages", type=_positive_int, default=2, help="random messages per image (default 2)")
    validate.add_argument("--threads", type=_positive_int, default=2)
    validate.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="evaluate the images in N processes (the numbers do not depend on N; default 1)",
    )
    validate.add_argument("--json", action="store_true", help="print the report JSON")
    validate.add_argument(
        "--attacks",
        action="store_true",
        help="also bit accuracy at full resolution on the saved image under JPEG 80/50, 0.5x resize, "
        "50%%-area crop read as is, H.264 CRF 23/30 (a clip of the image)",
    )
    validate.add_argument(
        "--no-fullres", action="store_true", help="skip the full-resolution pass (processing-size numbers only; faster)"
    )
    validate.add_argument(
        "--max-attack-loss",
        type=float,
        metavar="POINTS",
        help="with --attacks: exit 1 naming every quantized file more than POINTS below FP32 under an attack",
    )
    validate.add_argument("--min-bit-acc", type=_fraction, help="exit 1 listing every record below this bit accuracy")
    validate.add_argument(
        "--max-psnr-drop", type=_bounded(float, 0), help="exit 1 listing every embedder more than D dB below FP32"
    )
    validate.set_defaults(func=_cmd_validate, quiet_step="validate")


def _add_verify(sub) -> None:
    verify = sub.add_parser("verify", help="check every artifact against manifest.json (hash, size, loads, no extras)")
    _artifacts_option(verify)
    verify.add_argument("--no-load", action="store_true", help="hashes only")
    verify.set_defaults(func=_cmd_verify)


def _add_merge(sub) -> None:
    merge = sub.add_parser(
        "merge", help="combine artifact shards (one `convert --card C --part P` each) into one release"
    )
    merge.add_argument("shards", type=Path, nargs="+", metavar="SHARD", help="artifact roots written by convert")
    _artifacts_option(merge)
    merge.set_defaults(func=_cmd_merge)


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="conversion cost, size and latency per variant beside PyTorch eager")
    bench.add_argument("--card", required=True)
    bench_weights = bench.add_mutually_exclusive_group()
    bench_weights.add_argument("--checkpoint", type=Path)
    bench_weights.add_argument("--random-init", type=int, metavar="SEED")
    _artifacts_option(bench)  # the record goes to <artifacts>/bench/<card>.json + .md
    _variant_choice(bench, "only this variant (repeatable; default: all)")
    bench.add_argument(
        "--invokes", type=_positive_int, default=20, help="timed invokes per variant and thread count (default 20)"
    )
    bench.add_argument("--rounds", type=_positive_int, default=4, help="interleaved timing rounds (default 4)")
    bench.add_argument("--no-scaling", action="store_true", help="skip the 128/256/512 detector re-exports")
    bench.add_argument(
        "--video",
        action="store_true",
        help="video fps of <artifacts>/<card>'s files at 720p/1080p beside videoseal's PyTorch video mode",
    )
    bench.add_argument("--preset", default="veryfast", help="libx264 preset of the video bench (default veryfast)")
    bench.add_argument(
        "--validate-scale",
        action="store_true",
        help="instead: peak RSS of `validate --images` on 16 and --scale-images generated images, 1 and 2 workers",
    )
    bench.add_argument("--scale-images", type=_positive_int, default=10_000, help="the large set (default 10000)")
    bench.add_argument(
        "--sizes",
        action="store_true",
        help="instead: embed and detect with <artifacts>/<card>'s FP32 files, 0.3 to 100 megapixels: time, peak RSS",
    )
    bench.set_defaults(func=_cmd_bench, quiet_step="bench")


def _add_pick(sub) -> None:
    pick = sub.add_parser(
        "pick", help="the best variant that meets size/accuracy/latency constraints, from report.json"
    )
    _part_option(pick, required=True)
    pick.add_argument("--card", help=f"card whose report to read (default: the one present, else {DEFAULT_CARD})")
    _artifacts_option(pick)
    pick.add_argument("--report", type=Path, help="explicit report.json")
    pick.add_argument("--max-mb", type=_bounded(float, 0, open_low=True))
    pick.add_argument("--min-bit-acc", type=_fraction)
    pick.add_argument("--max-ms", type=_bounded(float, 0, open_low=True))
    pick.set_defaults(func=_cmd_pick)


def _log_dir(args: argparse.Namespace) -> Path:
    """Where a long step's third-party output is kept: `<artifacts>/<card>/logs/` (the root's when several cards)."""
    root = Path(getattr(args, "artifacts", None) or "artifacts")
    card = getattr(args, "card", None)
    cards = card if isinstance(card, list) else ([card] if card else [])
    if getattr(args, "all_official", False) or len(cards) > 1:
        return root
    name = cards[0] if cards else default_card(root)
    return root / (Path(name).stem if name.endswith((".yaml", ".yml")) else name)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    if not args.verbose:
        # torch/timm/torchao deprecation chatter would bury the one line a user needs
        warnings.filterwarnings("ignore")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("videoseal_tflite").setLevel(logging.INFO)
    # SIGTERM (CI cancel, kill) unwinds like Ctrl-C, so temp files are removed and locks released
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from videoseal_tflite import console

        step = getattr(args, "quiet_step", None)
        with console.quiet(_log_dir(args), step or "", enabled=bool(step) and not args.verbose):
            return args.func(args)
    except VsTfliteError as exc:
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the file system said no (permissions, full disk, ...) somewhere we did not foresee
        print(
            f"{PROG}: error: {type(exc).__name__}: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no partial file was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
