"""`videoseal-tflite`: one command, one subcommand per verb; each calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from .errors import InvalidMessage, InvalidModelFile, UnknownVariant, VsTfliteError

PROG = "videoseal-tflite"


def _print_variants(results) -> None:
    for r in results:
        if r.status == "failed":
            again = " (same inputs as the failed run recorded in quantize_log.json; --force retries)" if r.reused else ""
            print(f"{r.part} {r.variant}: FAILED after {r.attempts} build(s): {r.error}{again}")
            continue
        agree = r.agreement
        metric = (f"bit agreement vs fp32 {agree.bit_agreement:.4f}" if agree.bit_agreement is not None
                  else f"watermark rel. err vs fp32 {agree.watermark_rel_err:.4f}")
        repairs = f"  repairs: {', '.join(x.name for x in r.repairs_applied)}" if r.repairs_applied else ""
        repairs += "  (up to date, not rebuilt)" if r.reused else ""
        if r.repairs_rejected:
            repairs += f"  (tried, no better: {', '.join(x['name'] for x in r.repairs_rejected)})"
        print(f"{r.path}  {r.bytes / 1e6:.1f} MB  {r.status}  {metric}{repairs}")


def _variants(args: argparse.Namespace) -> tuple[str, ...]:
    from .quantize.recipes import VARIANTS

    chosen = args.variant or ["fp32", *VARIANTS]
    return tuple(v for v in chosen if v != "fp32")


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert.wrappers import PARTS
    from .pipeline import OFFICIAL_CARDS, convert_card
    from .weights import WeightSource

    cards = list(args.card or [])
    if args.all_official:
        cards += [c for c in OFFICIAL_CARDS if c not in cards]
    if not cards:
        raise VsTfliteError("name a card with --card NAME (or --all-official)")
    if args.checkpoint and len(cards) > 1:
        raise VsTfliteError("--checkpoint applies to one card; give exactly one --card")
    source = WeightSource(checkpoint=args.checkpoint, random_init_seed=args.random_init)
    parts = tuple(args.part) if args.part else PARTS
    failed = 0
    for card in cards:
        artifacts = convert_card(card, source, args.out, parts=parts, rewrites=not args.no_rewrites,
                                 variants=_variants(args), int8_io=args.int8_io, force=args.force)
        for result in artifacts.converted:
            parity = result.parity
            bits = f", bit agreement {parity.bit_agreement:.3f}" if parity.bit_agreement is not None else ""
            took = "up to date, not rebuilt" if result.reused else f"{result.convert_seconds:.1f} s"
            print(f"{result.path}  {result.bytes / 1e6:.1f} MB  fp32  {took}  "
                  f"parity vs PyTorch max|diff| {parity.max_abs_diff:.2g}{bits}  [{result.weights}]")
        _print_variants(artifacts.variants)
        failed += sum(v.status == "failed" for v in artifacts.variants)
    if failed:
        print(f"{failed} variant(s) failed and were not written; see quantize_log.json", file=sys.stderr)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .pipeline import quantize_card

    variants = _variants(args)
    if not variants:
        raise VsTfliteError("nothing to do: give --variant fp16|weight_only_int8|dynamic_int8|int8")
    from .convert.wrappers import PARTS

    parts = tuple(args.part) if args.part else PARTS
    results = quantize_card(args.card, args.out, variants, parts=parts, int8_io=args.int8_io, force=args.force)
    _print_variants(results)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .validate.inspect_model import format_inspection, inspect_model

    result = inspect_model(args.file, load=not args.no_load, runtime=args.runtime)
    if args.json:
        print(json.dumps(result.to_json(with_ops=True), indent=2))
    else:
        print(format_inspection(result))
    if result.load is not None and not result.load.loads:
        return 1
    return 0


DEFAULT_CARD = "videoseal_1.0"  # videoseal's own default card


def find_model(artifacts: Path, card: str, part: str, variant: str) -> Path:
    """artifacts/<card>/<part>_<size>_<variant>[.label].tflite; real weights are preferred over random-init."""
    from .quantize.recipes import ALL_VARIANTS

    if variant not in ALL_VARIANTS:
        raise UnknownVariant(f"unknown variant '{variant}'; known: {', '.join(ALL_VARIANTS)}")
    folder = Path(artifacts) / card
    found = sorted(folder.glob(f"{part}_*_{variant}.tflite")) + sorted(folder.glob(f"{part}_*_{variant}.*.tflite"))
    if not found:
        raise InvalidModelFile(f"no {variant} {part} for card {card} in {folder}; run `make convert` (or videoseal-tflite convert --card {card})")
    return found[0]


def _message(args: argparse.Namespace, nbits: int):
    from .runtime import parse_message

    if args.message is None and args.message_hex is None:
        return None
    return parse_message(args.message, args.message_hex, nbits)


def _detection_json(detection, message) -> dict:
    from .runtime import bits_to_text

    out = {"bits": bits_to_text(detection.bits), "detection_logit": detection.detection_logit}
    if message is not None:
        out["bit_accuracy"] = detection.bit_accuracy(message)
    return out


def _cmd_embed(args: argparse.Namespace) -> int:
    from PIL import Image

    from .atomic import atomic_path
    from .runtime import Detector, Embedder, load_image, to_uint8

    embedder_path = args.embedder or find_model(args.artifacts, args.card, "embedder", args.variant)
    detector_path = args.detector or find_model(args.artifacts, args.card, "detector", args.detector_variant)
    embedder = Embedder(embedder_path, args.threads)
    message = _message(args, embedder.nbits)
    if message is None:
        raise InvalidMessage("give the message to embed with --message BITS or --message-hex HEX")
    image = load_image(args.input)
    if args.output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"):
        raise VsTfliteError(f"output {args.output} needs an image extension (.png recommended: lossless)")
    watermarked = to_uint8(embedder.embed(image, message))
    with atomic_path(args.output) as tmp:
        Image.fromarray(watermarked).save(tmp, format=Image.registered_extensions()[args.output.suffix.lower()])
    detection = Detector(detector_path, args.threads).detect(load_image(args.output))
    report = {"output": str(args.output), "embedder": str(embedder_path), "detector": str(detector_path),
              **_detection_json(detection, message)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"wrote {args.output} ({embedder_path.name})")
        print(f"recovered bits: {report['bits']}")
        print(f"bit accuracy:   {report['bit_accuracy']:.4f} ({detector_path.name})")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from .runtime import Detector, load_image

    detector_path = args.detector or find_model(args.artifacts, args.card, "detector", args.variant)
    detector = Detector(detector_path, args.threads)
    message = _message(args, detector.nbits)
    detection = detector.detect(load_image(args.input))
    report = {"input": str(args.input), "detector": str(detector_path), **_detection_json(detection, message)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"bits: {report['bits']}")
        print(f"detection logit: {detection.detection_logit:.3f}")
        if message is not None:
            print(f"bit accuracy: {report['bit_accuracy']:.4f}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate.report import below_floor, validate_card, write_report

    root = Path(args.artifacts)
    cards = [args.card] if args.card else sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.tflite"))) if root.is_dir() else []
    if not cards:
        raise VsTfliteError(f"no card artifacts under {root}; run `make convert` first")
    problems, reports = [], []
    for card in cards:
        card_dir = root / card
        if not card_dir.is_dir():
            raise VsTfliteError(f"no artifacts for card {card} in {root}")
        report = validate_card(card_dir, args.images, args.messages, args.threads, attacks=args.attacks)
        written = write_report(report, card_dir)
        reports.append(report)
        problems += below_floor(report, args.min_bit_acc, args.max_psnr_drop)
        if not args.json:
            print(f"{card}: wrote {', '.join(str(p) for p in written)}")
            print((card_dir / "report.md").read_text())
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    for line in problems:
        print(f"below floor: {line}", file=sys.stderr)
    return 1 if problems else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .validate.verify import verify_artifacts

    checked, problems = verify_artifacts(args.artifacts, load=not args.no_load)
    for problem in problems:
        print(problem.line(), file=sys.stderr)
    if problems:
        return 1
    print(f"{checked} files verified in {args.artifacts}: hashes match the manifest" + ("" if args.no_load else " and every file loads"))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_card, write_bench
    from .quantize.recipes import VARIANTS
    from .weights import WeightSource

    source = WeightSource(checkpoint=args.checkpoint, random_init_seed=args.random_init)
    variants = tuple(v for v in (args.variant or VARIANTS) if v != "fp32")
    record = bench_card(args.card, source, args.out, variants=variants, invokes=args.invokes, rounds=args.rounds,
                        scaling=not args.no_scaling)
    for path in write_bench(record, args.out):
        print(f"wrote {path}")
    print((Path(args.out) / f"{record['card']}.md").read_text())
    return 0


def _cmd_pick(args: argparse.Namespace) -> int:
    from .validate.report import pick

    path = Path(args.report) if args.report else Path(args.artifacts) / (args.card or DEFAULT_CARD) / "report.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise VsTfliteError(f"no report at {path}; run `make validate` (or videoseal-tflite validate) first") from None
    except json.JSONDecodeError as exc:
        raise VsTfliteError(f"{path} is not valid JSON ({exc.msg})") from None
    best, why = pick(report, args.part, args.max_mb, args.min_bit_acc, args.max_ms)
    if best is None:
        print(why, file=sys.stderr)
        return 1
    print(best["path"])
    print(why)
    return 0


def _runtime_options(parser: argparse.ArgumentParser, with_detector_variant: bool) -> None:
    parser.add_argument("--card", default=DEFAULT_CARD, help=f"card whose artifacts to use (default {DEFAULT_CARD})")
    parser.add_argument("--variant", default="fp32", help="fp32, fp16, weight_only_int8, dynamic_int8 or int8")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="artifact root (default: artifacts)")
    parser.add_argument("--message", help="message bits, e.g. 0101... (as many as the card's nbits)")
    parser.add_argument("--message-hex", help="message as hexadecimal")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--detector", type=Path, help="explicit detector .tflite (overrides --card/--variant)")
    if with_detector_variant:
        parser.add_argument("--embedder", type=Path, help="explicit embedder .tflite (overrides --card/--variant)")
        parser.add_argument("--detector-variant", default="fp32", help="variant of the detector that checks the result")


def _variant_options(parser: argparse.ArgumentParser) -> None:
    from .quantize.recipes import ALL_VARIANTS

    parser.add_argument("--variant", action="append", choices=ALL_VARIANTS,
                        help="build only this variant (repeatable; default: all of " + ", ".join(ALL_VARIANTS) + ")")
    parser.add_argument("--int8-io", action="store_true",
                        help="int8 variant: keep int8 model inputs/outputs (scale and zero point: manifest / metadata "
                             "'io_quantization', real = (q - zero_point) * scale)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild everything (default: reuse files whose inputs are unchanged and whose bytes match the manifest)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="VideoSeal -> LiteRT/TFLite: convert, quantize, inspect, embed, detect.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="convert a card's embedder and detector to FLOAT32 .tflite")
    convert.add_argument("--card", action="append", help="card name (videoseal_0.0, videoseal_1.0) or card yaml path; repeatable")
    convert.add_argument("--all-official", action="store_true", help="both official cards")
    weights = convert.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", type=Path, help="checkpoint file in videoseal's layout ({'model': state_dict})")
    weights.add_argument("--random-init", type=int, metavar="SEED", help="untrained, seeded random weights (labelled random-init)")
    convert.add_argument("--part", action="append", choices=("embedder", "detector"), help="only this part (repeatable)")
    convert.add_argument("--out", type=Path, default=Path("artifacts"), help="artifact root (default: artifacts)")
    convert.add_argument("--no-rewrites", action="store_true", help="export the original graph, without TFLite-friendly rewrites")
    _variant_options(convert)
    convert.set_defaults(func=_cmd_convert)

    quantize = sub.add_parser("quantize", help="build quantized variants from a card's FP32 .tflite files")
    quantize.add_argument("--card", required=True, help="card name whose artifacts/<card>/*_fp32*.tflite to quantize")
    quantize.add_argument("--out", type=Path, default=Path("artifacts"), help="artifact root (default: artifacts)")
    quantize.add_argument("--part", action="append", choices=("embedder", "detector"), help="only this part (repeatable)")
    _variant_options(quantize)
    quantize.set_defaults(func=_cmd_quantize)

    inspect = sub.add_parser("inspect", help="ops, operand dtypes, flags and a load check of a .tflite")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true", help="machine-readable output, every op included")
    inspect.add_argument("--no-load", action="store_true", help="static inspection only")
    inspect.add_argument("--runtime", choices=("litert", "tflite"), default="litert", help="interpreter for the load check")
    inspect.set_defaults(func=_cmd_inspect)

    embed = sub.add_parser("embed", help="watermark an image of any size with the .tflite embedder")
    embed.add_argument("input", type=Path)
    embed.add_argument("output", type=Path)
    _runtime_options(embed, with_detector_variant=True)
    embed.set_defaults(func=_cmd_embed)

    detect = sub.add_parser("detect", help="read the message bits from an image with the .tflite detector")
    detect.add_argument("input", type=Path)
    _runtime_options(detect, with_detector_variant=False)
    detect.set_defaults(func=_cmd_detect)

    validate = sub.add_parser("validate", help="report size, load status, bit accuracy, PSNR and latency of every artifact")
    validate.add_argument("--card", help="one card (default: every card folder in --artifacts)")
    validate.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    validate.add_argument("--images", type=Path, help="folder of PNG/JPEG images of any size (default: the evaluation set)")
    validate.add_argument("--messages", type=int, default=2, help="random messages per image (default 2)")
    validate.add_argument("--threads", type=int, default=2)
    validate.add_argument("--json", action="store_true", help="print the report JSON")
    validate.add_argument("--attacks", action="store_true",
                          help="also bit accuracy under JPEG 50/80, 50%%-area crop, 0.5x resize, brightness x1.5, Gaussian blur")
    validate.add_argument("--min-bit-acc", type=float, help="exit 1 listing every record below this bit accuracy")
    validate.add_argument("--max-psnr-drop", type=float, help="exit 1 listing every embedder more than D dB below FP32")
    validate.set_defaults(func=_cmd_validate)

    verify = sub.add_parser("verify", help="check every artifact against manifest.json (hash, size, loads, no extras)")
    verify.add_argument("artifacts", type=Path, nargs="?", default=Path("artifacts"))
    verify.add_argument("--no-load", action="store_true", help="hashes only")
    verify.set_defaults(func=_cmd_verify)

    bench = sub.add_parser("bench", help="conversion cost, size and latency per variant beside PyTorch eager")
    bench.add_argument("--card", required=True)
    bench_weights = bench.add_mutually_exclusive_group()
    bench_weights.add_argument("--checkpoint", type=Path)
    bench_weights.add_argument("--random-init", type=int, metavar="SEED")
    bench.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    bench.add_argument("--variant", action="append", help="only these variants (repeatable)")
    bench.add_argument("--invokes", type=int, default=20, help="timed invokes per variant and thread count (default 20)")
    bench.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds (default 4)")
    bench.add_argument("--no-scaling", action="store_true", help="skip the 128/256/512 detector re-exports")
    bench.set_defaults(func=_cmd_bench)

    pick = sub.add_parser("pick", help="the best variant that meets size/accuracy/latency constraints, from report.json")
    pick.add_argument("--part", choices=("embedder", "detector"), required=True)
    pick.add_argument("--card", help=f"card whose report to read (default {DEFAULT_CARD})")
    pick.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    pick.add_argument("--report", type=Path, help="explicit report.json")
    pick.add_argument("--max-mb", type=float)
    pick.add_argument("--min-bit-acc", type=float)
    pick.add_argument("--max-ms", type=float)
    pick.set_defaults(func=_cmd_pick)
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    if not args.verbose:
        # torch/timm/torchao deprecation chatter would bury the one line a user needs
        warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("videoseal_tflite").setLevel(logging.INFO)
    # SIGTERM (CI cancel, kill) unwinds like Ctrl-C, so temp files are removed and locks released
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except VsTfliteError as exc:
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the file system said no (permissions, full disk, ...) somewhere we did not foresee
        print(f"{PROG}: error: {type(exc).__name__}: {exc.strerror or exc}"
              f"{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no partial file was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
