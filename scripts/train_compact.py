#!/usr/bin/env python
"""Train the `compact` card's weights (videoseal_tflite/build/weights/compact.pth) on CPU.

.venv/bin/python scripts/train_compact.py --workdir runs/compact        # resumes if interrupted
"""

import argparse
from pathlib import Path

from videoseal_tflite.training.curriculum import TrainConfig, train


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--workdir", type=Path, default=Path("runs/compact"), help="checkpoints and summary (resumable)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("videoseal_tflite/build/weights/compact.pth"), help="best weights"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps-detector", type=int, default=defaults.steps_detector)
    parser.add_argument("--steps-embedder", type=int, default=defaults.steps_embedder)
    parser.add_argument("--steps-joint", type=int, default=defaults.steps_joint)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args()
    cfg = TrainConfig(
        seed=args.seed,
        steps_detector=args.steps_detector,
        steps_embedder=args.steps_embedder,
        steps_joint=args.steps_joint,
        batch=args.batch,
        threads=args.threads,
        eval_every=args.eval_every,
    )
    summary = train(cfg, args.workdir, args.out, resume=not args.no_resume)
    print(f"best held-out: {summary['best']}")


if __name__ == "__main__":
    main()
