"""The release engineer's verbs: `validate` (the report), `verify` (the manifest), `merge` (CI shards) and `pick`
(the file to ship)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from videoseal_tflite.cli.options import artifacts_option, bounded, fraction, part_option, positive_int, say
from videoseal_tflite.errors import ArtifactsMissing, InvalidReport
from videoseal_tflite.store.artifact import DEFAULT_CARD, cards_present, default_card


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
            unmarked=args.unmarked,
        )
        written = write_report(report, card_dir)
        reports.append(report)
        problems += below_floor(report, args.min_bit_acc, args.max_psnr_drop)
        problems += [f"{card}: no {part} file (missing part)" for part in report["missing_parts"]]
        if args.max_attack_loss is not None:
            problems += attack_losses(report, args.max_attack_loss / 100)
        if not args.json:
            say(f"{card}: wrote {', '.join(str(p) for p in written)}")
            say((card_dir / "report.md").read_text())
    if args.json:
        say(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    for line in problems:
        say(f"below floor: {line}", err=True)
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


def _cmd_merge(args: argparse.Namespace) -> int:
    from videoseal_tflite.store.merge import merge_shards

    merged = merge_shards(args.shards, args.artifacts)
    cards = sorted({Path(rel).parts[0] for rel in merged})
    say(f"merged {len(merged)} files of {', '.join(cards)} from {len(args.shards)} shard(s) into {args.artifacts}")
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
    best, why = pick(report, args.part, args.max_mb, args.min_bit_acc, args.max_ms, args.allow_below_bar)
    if best is None:
        print(why, file=sys.stderr)
        return 1
    print(best["path"])
    print(why)
    return 0


def _add_validate(sub) -> None:
    validate = sub.add_parser(
        "validate", help="report size, load status, bit accuracy, PSNR and latency of every artifact"
    )
    validate.add_argument("--card", help="one card (default: every card folder in --artifacts)")
    artifacts_option(validate)
    validate.add_argument(
        "--images", type=Path, help="folder of PNG/JPEG images of any size (default: the evaluation set)"
    )
    validate.add_argument("--messages", type=positive_int, default=2, help="random messages per image (default 2)")
    validate.add_argument("--threads", type=positive_int, default=2)
    validate.add_argument(
        "--workers",
        type=positive_int,
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
        "--unmarked",
        type=bounded(int, 0),
        default=0,
        metavar="N",
        help="also read N unmarked images with the FP32 detector and count the false positives (make validate: 2000)",
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
    validate.add_argument("--min-bit-acc", type=fraction, help="exit 1 listing every record below this bit accuracy")
    validate.add_argument(
        "--max-psnr-drop", type=bounded(float, 0), help="exit 1 listing every embedder more than D dB below FP32"
    )
    validate.set_defaults(func=_cmd_validate, quiet_step="validate")


def _add_verify(sub) -> None:
    verify = sub.add_parser("verify", help="check every artifact against manifest.json (hash, size, loads, no extras)")
    artifacts_option(verify)
    verify.add_argument("--no-load", action="store_true", help="hashes only")
    verify.set_defaults(func=_cmd_verify)


def _add_merge(sub) -> None:
    merge = sub.add_parser(
        "merge", help="combine artifact shards (one `convert --card C --part P` each) into one release"
    )
    merge.add_argument("shards", type=Path, nargs="+", metavar="SHARD", help="artifact roots written by convert")
    artifacts_option(merge)
    merge.set_defaults(func=_cmd_merge)


def _add_pick(sub) -> None:
    pick = sub.add_parser(
        "pick", help="the best variant that meets size/accuracy/latency constraints, from report.json"
    )
    part_option(pick, required=True)
    pick.add_argument("--card", help=f"card whose report to read (default: the one present, else {DEFAULT_CARD})")
    artifacts_option(pick)
    pick.add_argument("--report", type=Path, help="explicit report.json")
    pick.add_argument("--max-mb", type=bounded(float, 0, open_low=True))
    pick.add_argument("--min-bit-acc", type=fraction)
    pick.add_argument("--max-ms", type=bounded(float, 0, open_low=True))
    pick.add_argument(
        "--allow-below-bar",
        action="store_true",
        help="also consider variants left below their quality bar against FP32 (report.md names them)",
    )
    pick.set_defaults(func=_cmd_pick)


def register(sub) -> None:
    """Add this module's subcommands to the CLI's parser."""
    _add_validate(sub)
    _add_verify(sub)
    _add_merge(sub)
    _add_pick(sub)
