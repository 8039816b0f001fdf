"""Load a .tflite in a LiteRT interpreter (allocate + one invoke on random data), in a child process.

A model that crashes the runtime (segfault, abort) takes down only the child. Run directly:
`python -m videoseal_tflite.validate.load_check FILE [--runtime litert|tflite]` prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

_NODE_RE = re.compile(r"Node number (\d+) \((\w+)\) failed to (prepare|invoke)")
RUNTIMES = ("litert", "tflite")


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """`stage` is where it stopped: `ok`, `load`, `allocate`, `invoke`, or `crash` (the child died)."""

    runtime: str
    loads: bool
    stage: str
    error: str | None = None
    node: int | None = None
    op: str | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _parse_node(error: str) -> tuple[int | None, str | None]:
    match = _NODE_RE.search(error)
    return (int(match.group(1)), match.group(2)) if match else (None, None)


def _random_input(detail: dict, rng: np.random.Generator) -> np.ndarray:
    shape, dtype = tuple(detail["shape"]), detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        if "message" in detail["name"]:
            return rng.integers(0, 2, size=shape).astype(dtype)
        return rng.random(shape, dtype=np.float32).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def load_in_process(path: Path, runtime: str = "litert", threads: int = 2) -> LoadResult:
    """Only for the child process: may crash the interpreter it runs in."""
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    stage = "load"
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        stage = "allocate"
        interpreter.allocate_tensors()
        stage = "invoke"
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], _random_input(detail, rng))
        interpreter.invoke()
    except Exception as exc:  # the runtime reports everything as RuntimeError/ValueError with its own text
        text = " ".join(str(exc).split())
        node, op = _parse_node(text)
        return LoadResult(runtime, False, stage, text, node, op)
    return LoadResult(runtime, True, "ok")


def load_check(path: Path, runtime: str = "litert", timeout_s: float = 600.0) -> LoadResult:
    """Run `load_in_process` in a child Python; a crash or hang becomes a LoadResult, never an exception."""
    command = [sys.executable, "-m", "videoseal_tflite.validate.load_check", str(path), "--runtime", runtime]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return LoadResult(runtime, False, "crash", f"the runtime did not finish loading within {timeout_s:.0f} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return LoadResult(**json.loads(lines[-1]))
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return LoadResult(runtime, False, "crash", f"the {runtime} runtime crashed ({name}) while loading the model")
    tail = " ".join(proc.stderr.strip().splitlines()[-1:]) or f"exit code {proc.returncode}"
    return LoadResult(runtime, False, "crash", f"the load check failed: {tail[:300]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--runtime", choices=RUNTIMES, default="litert")
    args = parser.parse_args(argv)
    print(json.dumps(load_in_process(args.path, args.runtime).to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
