"""What every verb shares: output helpers, argparse types that check ranges at parse time (exit 2, one usage
line, before any work), and the options several verbs take."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from videoseal_tflite.store.artifact import DEFAULT_CARD, find_model

PROG = "videoseal-tflite"


def say(*args, err: bool = False) -> None:
    """A line for the user on the terminal's stdout (stderr with `err`), also while third-party output goes to
    the step's log (`console.quiet`)."""
    from videoseal_tflite import console

    print(*args, file=console.stream() if err else console.out())


def variants_of(args: argparse.Namespace) -> tuple[str, ...]:
    from videoseal_tflite.store.variants import variant_names

    chosen = args.variant or variant_names()
    return tuple(v for v in chosen if v != "fp32")


def model_path(args: argparse.Namespace, part: str, variant: str) -> Path:
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


def print_json(report: dict) -> None:
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


def runtime_options(parser: argparse.ArgumentParser, with_detector_variant: bool) -> None:
    from videoseal_tflite.store.variants import variant_names

    parser.add_argument("--card", help=f"card whose artifacts to use (default: the one present, else {DEFAULT_CARD})")
    # checked against the table by find_model: an unknown name is one UnknownVariant line, not a usage dump
    parser.add_argument("--variant", default="fp32", help=f"which file of the card: {', '.join(variant_names())}")
    artifacts_option(parser)
    message = parser.add_mutually_exclusive_group()
    message.add_argument("--message", help="message bits, e.g. 0101... (as many as the card's nbits)")
    message.add_argument("--message-hex", help="message as hexadecimal")
    message.add_argument(
        "--payload",
        metavar="TEXT|0xHEX",
        help="data to carry with the card's error-correcting code (cards with a payload_code): text, or 0x + hex",
    )
    parser.add_argument("--threads", type=positive_int, default=2, help="LiteRT interpreter threads (default 2)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--detector", type=Path, help="explicit detector .tflite (overrides --card/--variant)")
    if with_detector_variant:
        parser.add_argument("--embedder", type=Path, help="explicit embedder .tflite (overrides --card/--variant)")
        parser.add_argument("--detector-variant", default="fp32", help="variant of the detector that checks the result")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the error into one usage line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bounded(cast: type, low: float | None = None, high: float | None = None, open_low: bool = False,
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


probability = bounded(float, 0, 1, open_low=True, open_high=True)  # --fpr: 0 and 1 decide nothing


fraction = bounded(float, 0, 1)


def strength(text: str) -> float:
    """argparse type of `embed --strength`: a number in (0, runtime.MAX_STRENGTH]."""
    from videoseal_tflite.runtime.image import MAX_STRENGTH

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= MAX_STRENGTH:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_STRENGTH:g}], got {value:g}")
    return value


def artifacts_option(parser: argparse.ArgumentParser) -> None:
    """`--artifacts DIR`, the one spelling of the artifact root in every command."""
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="artifact root (default: artifacts)")


def part_option(parser: argparse.ArgumentParser, **kwargs) -> None:
    from videoseal_tflite.store.artifact import PARTS

    parser.add_argument("--part", choices=PARTS, **kwargs)


def variant_choice(parser: argparse.ArgumentParser, help_text: str) -> None:
    from videoseal_tflite.store.variants import variant_names

    parser.add_argument("--variant", action="append", choices=variant_names(), help=help_text)


def variant_options(parser: argparse.ArgumentParser) -> None:
    from videoseal_tflite.store.variants import variant_names

    variant_choice(parser, "build only this variant (repeatable; default: all of " + ", ".join(variant_names()) + ")")
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
