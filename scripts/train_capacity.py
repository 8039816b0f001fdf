#!/usr/bin/env python
"""Train a many-bit compact card (issue #26: `compact64`) from scratch, then fine-tune it for robustness: one command,
resumable after a kill (run it again), on the CPU or a GPU.

    .venv/bin/python scripts/train_capacity.py --card compact64                      # CPU, 1 thread, ~2.5 h
    .venv/bin/python scripts/train_capacity.py --card compact64 --device cuda --batch 64 --robust-batch 32
    setsid nohup .venv/bin/python scripts/train_capacity.py --card compact64 >> runs/compact64/train.log 2>&1 &

Stage 1, the curriculum of training/curriculum.py (A: detector reads a synthetic code of one 16-px tile per bit,
B: embedder regressed onto it, C: joint), into runs/<name>/curriculum/ (last.pt, summary.json, best.pth: the best
held-out bit accuracy of stage C). Stage 2, the robust fine-tuning of training/robust.py from that best.pth, into
runs/<name>/robust/ (last.pt, summary.json, best.pth: the best validation score at PSNR >= 38 dB). Both write
last.pt every --checkpoint-every steps and go on from it when the same command runs again; a finished stage is
skipped. The recipe per card is RECIPES below; every field can be overridden (`--steps-joint 4000`,
`--robust-steps 5000`, `--robust-target-psnr 41`). `--device` and `--threads` may differ between runs of the same
recipe (a CPU run resumed on a GPU lend and back); the other fields may not, once a stage has written its last.pt.

Copy runs/<name>/robust/best.pth to videoseal_tflite/build/weights/<card>.pth only when it meets the card's bars on
the held-out table: `videoseal-tflite convert --card <card> --checkpoint runs/<name>/robust/best.pth`, then
`scripts/heldout_table.py --card <card>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from videoseal_tflite.training.curriculum import TrainConfig, train
from videoseal_tflite.training.robust import RobustConfig, finetune_robust

# step times measured on the 2-core CPU, one thread: stage A ~0.2-0.3 s, B ~0.9 s at batch 16; the robust stage
# ~0.9 s at batch 8 (full sizes 256-640)
_CURRICULUM_64 = {
    "steps_detector": 1200,
    "steps_embedder": 800,
    "steps_joint": 3000,
    "batch": 16,
    "lr_embedder": 1e-3,
    "lr_detector": 4e-4,
    "detector_warmup": 50,
    "tile": 0,  # the card's watermark_tile_period (16)
    "code": "linear",
    "code_gain": 1.5,
    "init_patch_embed": 10.0,
    "joint_lr_schedule": "cosine",
    "tensor_data": True,
    "eval_every": 250,
    "eval_all_stages": True,
    "checkpoint_every": 50,
}
_ROBUST_64 = {
    "steps": 3000,
    "batch": 8,
    "lr_embedder": 1e-4,
    "lr_detector": 2e-4,
    "full_sizes": (256, 384, 512, 640),
    "target_psnr": 40.0,
    "lambda_psnr": 0.05,
    "ramp_fraction": 0.3,
    "attacks": "identity,identity,jpeg,resize,h264,h264_motion,resize_jpeg,brightness,contrast,blur",
    "lr_schedule": "cosine",
    "later_wins_ties": True,
    "eval_every": 250,
    "checkpoint_every": 50,
}
RECIPES = {"compact64": (_CURRICULUM_64, _ROBUST_64)}  # card name -> (curriculum, robust fine-tuning)


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str, skip: tuple[str, ...]) -> None:
    """One option per dataclass field (`--<prefix><field>`), default None: the recipe's value, else the field's."""
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = f"--{prefix}{field.name.replace('_', '-')}"
        if field.name == "full_sizes":
            parser.add_argument(flag, type=int, nargs="+")
        elif isinstance(field.default, bool):
            parser.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), metavar="{true,false}")
        else:
            parser.add_argument(flag, type=type(field.default))


def _config(cls: type, recipe: dict, args: argparse.Namespace, prefix: str, fixed: dict):
    values = dict(recipe) | fixed
    for field in dataclasses.fields(cls):
        given = getattr(args, f"{prefix}{field.name}", None)
        if given is not None and field.name not in fixed:
            values[field.name] = tuple(given) if field.name == "full_sizes" else given
    return cls(**values)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", default="compact64", help="card name or yaml path (default compact64)")
    parser.add_argument("--name", help="run name: runs/<name>/ (default: the card's name)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder of runs (default runs/)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both stages)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both stages; default 1)")
    parser.add_argument("--log-every", type=int, default=25, help="a JSON line of batch stats every N steps")
    parser.add_argument("--only", choices=("curriculum", "robust"), help="run one stage only")
    parser.add_argument("--no-resume", action="store_true", help="start both stages afresh (overwrites last.pt)")
    parser.add_argument("--robust-from", type=Path, help="start the robust stage from these weights (a .pth, its "
                        "sha256 logged), not from the curriculum's best")  # fmt: skip
    _add_fields(parser, TrainConfig, "", ("card", "threads", "device"))
    _add_fields(parser, RobustConfig, "robust-", ("card", "threads", "device", "init"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    card_name = Path(args.card).stem
    if card_name not in RECIPES:
        parser.error(f"no recipe for card {card_name!r}; known: {', '.join(RECIPES)}")
    curriculum_recipe, robust_recipe = RECIPES[card_name]
    root = args.runs / (args.name or card_name)
    placement = {"card": args.card, "threads": args.threads, "device": args.device}
    cfg = _config(TrainConfig, curriculum_recipe, args, "", placement)
    curriculum_best = root / "curriculum" / "best.pth"
    robust_start = args.robust_from or curriculum_best
    robust_cfg = _config(RobustConfig, robust_recipe, args, "robust_", placement | {"init": str(robust_start)})
    if args.robust_from and not args.robust_from.is_file():
        parser.error(f"--robust-from: {args.robust_from} is not a file")
    root.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"event": "start", "time": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid(),
                      "argv": sys.argv[1:], "curriculum": dataclasses.asdict(cfg),
                      "robust": dataclasses.asdict(robust_cfg),
                      "robust_from_sha256": _sha256(robust_start) if robust_start.is_file() else None}),
          flush=True)  # fmt: skip

    if args.only != "robust":
        summary = train(cfg, root / "curriculum", curriculum_best, resume=not args.no_resume, progress=False,
                        log_every=args.log_every)  # fmt: skip
        print(json.dumps({"event": "curriculum done", "best": summary["best"]}), flush=True)
    if args.only != "curriculum":
        if not robust_start.is_file():
            raise SystemExit(f"{robust_start} is missing: run the curriculum first")
        summary = finetune_robust(robust_cfg, root / "robust", root / "robust" / "best.pth",
                                  resume=not args.no_resume, progress=False, log_every=args.log_every)  # fmt: skip
        print(json.dumps({"event": "robust done", "best": summary["best"]}), flush=True)


if __name__ == "__main__":
    main()
