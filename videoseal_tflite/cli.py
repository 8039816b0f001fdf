"""`videoseal-tflite`: one command, one subcommand per verb; each calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from .errors import VsTfliteError

PROG = "videoseal-tflite"


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
    for card in cards:
        for result in convert_card(card, source, args.out, parts=parts, rewrites=not args.no_rewrites):
            parity = result.parity
            bits = f", bit agreement {parity.bit_agreement:.3f}" if parity.bit_agreement is not None else ""
            print(f"{result.path}  {result.bytes / 1e6:.1f} MB  {result.convert_seconds:.1f} s  "
                  f"parity max|diff| {parity.max_abs_diff:.2g}{bits}  [{result.weights}]")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="VideoSeal -> LiteRT/TFLite: convert, inspect.")
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
    convert.set_defaults(func=_cmd_convert)

    inspect = sub.add_parser("inspect", help="ops, operand dtypes, flags and a load check of a .tflite")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true", help="machine-readable output, every op included")
    inspect.add_argument("--no-load", action="store_true", help="static inspection only")
    inspect.add_argument("--runtime", choices=("litert", "tflite"), default="litert", help="interpreter for the load check")
    inspect.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    if not args.verbose:
        # torch/timm/torchao deprecation chatter would bury the one line a user needs
        warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("videoseal_tflite").setLevel(logging.INFO)
    try:
        return args.func(args)
    except VsTfliteError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no partial file was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
