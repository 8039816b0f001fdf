"""`videoseal-tflite bench`: the benchmark records (`make bench`): variants, video, validation at scale, image
sizes, peers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videoseal_tflite.cli.options import artifacts_option, positive_int, say, variant_choice, variants_of
from videoseal_tflite.errors import ArtifactsMissing


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
    say(markdown)
    return 0


def _bench_validate_scale(args: argparse.Namespace) -> int:
    from videoseal_tflite.bench.scale import bench_validate_scale, write_scale

    record = bench_validate_scale(Path(args.artifacts) / args.card, (16, args.scale_images), say=say)
    written = write_scale(record, Path(args.artifacts) / "bench")
    say(written[1].read_text())
    return 0


def _bench_sizes(args: argparse.Namespace) -> int:
    from videoseal_tflite.bench.sizes import bench_sizes, write_sizes

    record = bench_sizes(Path(args.artifacts), args.card, say=say)
    for path in write_sizes(record, Path(args.artifacts) / "bench"):
        say(f"wrote {path}")
    return 0


def _bench_peers(args: argparse.Namespace) -> int:
    from videoseal_tflite.bench.peers import bench_peers, write_peers

    record = bench_peers(Path(args.artifacts), args.card)
    json_path, md_path = write_peers(record, Path(args.artifacts) / "bench")
    say(md_path.read_text())
    say(f"wrote {json_path}\nwrote {md_path}")
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
    if args.peers:
        return _bench_peers(args)
    source = WeightSource(checkpoint=args.checkpoint, random_init_seed=args.random_init)
    out = Path(args.artifacts) / "bench"
    record = bench_card(
        args.card,
        source,
        out,
        variants=variants_of(args),
        invokes=args.invokes,
        rounds=args.rounds,
        scaling=not args.no_scaling,
    )
    for path in write_bench(record, out):
        say(f"wrote {path}")
    say((out / f"{record['card']}.md").read_text())
    return 0


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="conversion cost, size and latency per variant beside PyTorch eager")
    bench.add_argument("--card", required=True)
    bench_weights = bench.add_mutually_exclusive_group()
    bench_weights.add_argument("--checkpoint", type=Path)
    bench_weights.add_argument("--random-init", type=int, metavar="SEED")
    artifacts_option(bench)  # the record goes to <artifacts>/bench/<card>.json + .md
    variant_choice(bench, "only this variant (repeatable; default: all)")
    bench.add_argument(
        "--invokes", type=positive_int, default=20, help="timed invokes per variant and thread count (default 20)"
    )
    bench.add_argument("--rounds", type=positive_int, default=4, help="interleaved timing rounds (default 4)")
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
    bench.add_argument("--scale-images", type=positive_int, default=10_000, help="the large set (default 10000)")
    bench.add_argument(
        "--sizes",
        action="store_true",
        help="instead: embed and detect with <artifacts>/<card>'s FP32 files, 0.3 to 100 megapixels: time, peak RSS",
    )
    bench.add_argument(
        "--peers",
        action="store_true",
        help="instead: <artifacts>/<card>'s FP32 files beside invisible-watermark 0.2.0 (dwtDct, dwtDctSvd, rivaGan) "
        "on the held-out images, same attacks, TPR at FPR 1e-6, PSNR, ms at 1080p (the [peers] extra)",
    )
    bench.set_defaults(func=_cmd_bench, quiet_step="bench")


def register(sub) -> None:
    """Add this module's subcommands to the CLI's parser."""
    _add_bench(sub)
