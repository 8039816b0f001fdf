"""`videoseal-tflite inspect`: ops, operand dtypes, flags, a load check and XNNPACK's coverage of one .tflite."""

from __future__ import annotations

import argparse
from pathlib import Path

from videoseal_tflite.cli.options import positive_int, print_json


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
        print_json(result.to_json(with_ops=True) | extra)
    else:
        print(format_inspection(result))
        if profile:
            from videoseal_tflite.tflite.op_profile import format_profile

            print(format_profile(profile))
    if result.load is not None and not result.load.loads:
        return 1
    return 0


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
    inspect.add_argument("--threads", type=positive_int, default=2, help="--profile: XNNPACK threads (default 2)")
    inspect.add_argument("--runs", type=positive_int, default=30, help="--profile: profiled runs (default 30)")
    inspect.set_defaults(func=_cmd_inspect)


def register(sub) -> None:
    """Add this module's subcommands to the CLI's parser."""
    _add_inspect(sub)
