#!/usr/bin/env python
"""Robust fine-tuning of the `compact` card's weights through the full-resolution path (issue #13).

    .venv/bin/python scripts/train_robust.py --workdir runs/robust                 # CPU, resumes if interrupted
    .venv/bin/python scripts/train_robust.py --workdir runs/robust --device cuda   # same script on a GPU
    ... --time-budget 420      # stop after 7 minutes of training, validated and resumable

The best validation checkpoint goes to --out; copy it over videoseal_tflite/build/weights/compact.pth only when it beats
the shipped weights on the held-out table (scripts/heldout_table.py).
"""

import argparse
import dataclasses
from pathlib import Path

from videoseal_tflite.training.robust import RobustConfig, finetune_robust


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/robust"), help="checkpoints and summary (resumable)")
    parser.add_argument("--out", type=Path, default=Path("runs/robust/best.pth"), help="best weights")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--stop-after", type=int, help="end this run at that step (checkpoint written)")
    parser.add_argument("--time-budget", type=float, help="end this run after that many seconds (checkpoint written)")
    for field in dataclasses.fields(RobustConfig):
        if field.name == "full_sizes":
            parser.add_argument("--full-sizes", type=int, nargs="+", default=list(field.default))
            continue
        if isinstance(field.default, bool):  # a switch: `--later-wins-ties`
            parser.add_argument(f"--{field.name.replace('_', '-')}", action="store_true")
            continue
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default)
    args = parser.parse_args()
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RobustConfig)}
    values["full_sizes"] = tuple(values["full_sizes"])
    summary = finetune_robust(
        RobustConfig(**values),
        args.workdir,
        args.out,
        resume=not args.no_resume,
        stop_after=args.stop_after,
        time_budget=args.time_budget,
    )
    print(f"best validation: {summary['best']}")


if __name__ == "__main__":
    main()
