"""`videoseal-tflite convert` and `quantize`: card -> FP32 .tflite -> variants (the [convert] extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

from videoseal_tflite.cli.options import (
    artifacts_option,
    part_option,
    positive_int,
    say,
    variant_options,
    variants_of,
)
from videoseal_tflite.errors import InvalidOption
from videoseal_tflite.store.artifact import DEFAULT_CARD, default_card


def _print_variants(results) -> None:
    for r in results:
        if r.status == "failed":
            again = (
                " (same inputs as the failed run recorded in quantize_log.json; --force retries)" if r.reused else ""
            )
            say(f"{r.part} {r.variant}: FAILED after {r.attempts} build(s): {r.error}{again}")
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
        say(f"{r.path}  {r.bytes / 1e6:.1f} MB  {r.status}  {metric}{repairs}")


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
            variants=variants_of(args),
            int8_io=args.int8_io,
            force=args.force,
            workers=args.workers,
        )
        for result in artifacts.converted:
            parity = result.parity
            bits = f", bit agreement {parity.bit_agreement:.3f}" if parity.bit_agreement is not None else ""
            took = "up to date, not rebuilt" if result.reused else f"{result.convert_seconds:.1f} s"
            say(
                f"{result.path}  {result.bytes / 1e6:.1f} MB  fp32  {took}  "
                f"parity vs PyTorch max|diff| {parity.max_abs_diff:.2g}{bits}  [{result.weights}]"
            )
        _print_variants(artifacts.variants)
        failed += sum(v.status == "failed" for v in artifacts.variants)
    if failed:
        say(f"{failed} variant(s) failed and were not written; see quantize_log.json", err=True)
    return 1 if failed else 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from videoseal_tflite.build.pipeline import quantize_card

    variants = variants_of(args)
    if not variants:
        from videoseal_tflite.store.variants import variant_names

        raise InvalidOption(f"nothing to do: give --variant {'|'.join(variant_names(quantized_only=True))}")
    from videoseal_tflite.store.artifact import PARTS

    card = args.card or default_card(args.artifacts)
    parts = tuple(args.part) if args.part else PARTS
    results = quantize_card(card, args.artifacts, variants, parts=parts, int8_io=args.int8_io, force=args.force)
    _print_variants(results)
    return 1 if any(r.status == "failed" for r in results) else 0


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
    part_option(convert, action="append", help="only this part (repeatable)")
    artifacts_option(convert)
    convert.add_argument(
        "--no-rewrites", action="store_true", help="export the original graph, without TFLite-friendly rewrites"
    )
    variant_options(convert)
    convert.add_argument(
        "--workers",
        type=positive_int,
        help="build the parts in N processes at once (default: one per part, up to the machine's cores; "
        "the files do not depend on N)",
    )
    convert.set_defaults(func=_cmd_convert, quiet_step="convert")


def _add_quantize(sub) -> None:
    quantize = sub.add_parser("quantize", help="build quantized variants from a card's FP32 .tflite files")
    quantize.add_argument(
        "--card", help="card whose <artifacts>/<card>/*_fp32*.tflite to quantize (default: the one present)"
    )
    artifacts_option(quantize)
    part_option(quantize, action="append", help="only this part (repeatable)")
    variant_options(quantize)
    quantize.set_defaults(func=_cmd_quantize, quiet_step="quantize")


def register(sub) -> None:
    """Add this module's subcommands to the CLI's parser."""
    _add_convert(sub)
    _add_quantize(sub)
