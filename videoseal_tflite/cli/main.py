"""`videoseal-tflite`: one command, one subcommand per verb; each calls one library function."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from videoseal_tflite.cli import bench, convert, detect, embed, inspect, release
from videoseal_tflite.cli.options import PROG
from videoseal_tflite.errors import (
    VsTfliteError,
)
from videoseal_tflite.store.artifact import default_card


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="VideoSeal -> LiteRT/TFLite: convert, quantize, inspect, embed, detect."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in (convert, inspect, embed, detect, release, bench):  # the order of `--help`
        verb.register(sub)
    return parser


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
