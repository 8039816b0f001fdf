"""Load a .tflite in a LiteRT interpreter (allocate + one invoke on random data), in a child process.

A model that crashes the runtime (segfault, abort) takes down only the child. Run directly:
`python -m videoseal_tflite.tflite.load_check FILE [FILE ...] [--runtime litert|tflite]` prints one JSON line
per file, in order (`load_check_many`: tf.lite's import alone costs ~4 s a child, so several files share one).
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

from videoseal_tflite.tflite.interpreter import RUNTIMES, SignatureModel, interpreter_class

_NODE_RE = re.compile(r"Node number (\d+) \((\w+)\) failed to (prepare|invoke)")


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
    Interpreter = interpreter_class(runtime)
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


def run_in_process(
    path: Path,
    inputs: list[dict[str, np.ndarray]],
    runtime: str = "litert",
    threads: int = 2,
    convert_io: bool = False,
    timing: list[float] | None = None,
    repeats: int = 0,
) -> tuple[LoadResult, list[dict[str, np.ndarray]]]:
    """Run the default signature on each input dict. Only for the child process (may crash).
    With `repeats`, afterwards time that many invokes of the first input (ms, appended to `timing`)."""
    stage, outputs = "load", []
    try:
        model = SignatureModel(path, runtime=runtime, threads=threads, convert_io=convert_io, prepare=False)
        stage = "allocate"
        model.prepare()
        stage = "invoke"
        for feed in inputs:
            outputs.append(model(**feed))
        if repeats and inputs:
            times = model.time_ms(inputs[0], repeats)
            if timing is not None:
                timing.extend(times)
    except Exception as exc:  # the runtime's own text is the diagnosis
        text = " ".join(str(exc).split())
        node, op = _parse_node(text)
        return LoadResult(runtime, False, stage, text, node, op), outputs
    return LoadResult(runtime, True, "ok"), outputs


def load_check_many(paths: list[Path], runtime: str = "litert", timeout_s: float = 600.0) -> list[LoadResult]:
    """`load_check` for each path, in as few children as it takes: one child loads the files in turn; a file that
    crashes or hangs its child gets that `crash` result, and the files after it go on in a new child."""
    results: list[LoadResult] = []
    while len(results) < len(paths):
        rest = [str(p) for p in paths[len(results) :]]
        command = [sys.executable, "-m", "videoseal_tflite.tflite.load_check", *rest, "--runtime", runtime]
        results += _child_results(command, runtime, timeout_s * len(rest), len(rest))
    return results


def _child(command: list[str], runtime: str, timeout_s: float) -> LoadResult:
    return _child_results(command, runtime, timeout_s, 1)[0]


def _child_results(command: list[str], runtime: str, timeout_s: float, count: int) -> list[LoadResult]:
    """The results the child printed (one JSON line per file, in order), then, if it stopped short of `count`,
    one `crash` result for the file it was on."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=_child_env())
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        hung = LoadResult(runtime, False, "crash", f"the runtime did not finish loading within {timeout_s:.0f} s")
        return _printed(out)[: count - 1] + [hung]
    done = _printed(proc.stdout)[:count]
    if proc.returncode == 0 and len(done) == count:
        return done
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return done + [
            LoadResult(runtime, False, "crash", f"the {runtime} runtime crashed ({name}) while loading the model")
        ]
    tail = " ".join(proc.stderr.strip().splitlines()[-1:]) or f"exit code {proc.returncode}"
    return done + [LoadResult(runtime, False, "crash", f"the load check failed: {tail[:300]}")]


def _printed(stdout: str) -> list[LoadResult]:
    results = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            fields = json.loads(line)
            fields.pop("latency_ms", None)
            results.append(LoadResult(**fields))
    return results


def _child_env() -> dict[str, str]:
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


def load_check(path: Path, runtime: str = "litert", timeout_s: float = 600.0) -> LoadResult:
    """Run `load_in_process` in a child Python; a crash or hang becomes a LoadResult, never an exception."""
    return load_check_many([path], runtime, timeout_s)[0]


def run_isolated(
    path: Path,
    inputs: list[dict[str, np.ndarray]],
    runtime: str = "litert",
    threads: int = 2,
    convert_io: bool = False,
    timeout_s: float = 900.0,
    repeats: int = 0,
    timing: list[float] | None = None,
) -> tuple[LoadResult, list[dict[str, np.ndarray]]]:
    """`run_in_process` in a child Python: a crashing model yields a LoadResult with stage `crash`.
    With `repeats`, the child also times that many invokes (after 2 warm-ups) into `timing` (ms)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vst-run-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **{f"{i}/{k}": v for i, feed in enumerate(inputs) for k, v in feed.items()})
        command = [
            sys.executable,
            "-m",
            "videoseal_tflite.tflite.load_check",
            str(path),
            "--runtime",
            runtime,
            "--inputs",
            str(src),
            "--outputs",
            str(dst),
            "--threads",
            str(threads),
        ]
        if convert_io:
            command.append("--convert-io")
        if repeats:
            command += ["--repeats", str(repeats)]
        result = _child(command, runtime, timeout_s)
        outputs: list[dict[str, np.ndarray]] = [{} for _ in inputs]
        if dst.is_file():
            with np.load(dst) as data:
                for key in data.files:
                    if key == "latency_ms":
                        if timing is not None:
                            timing.extend(float(x) for x in data[key])
                        continue
                    index, name = key.split("/", 1)
                    outputs[int(index)][name] = data[key]
        return result, [o for o in outputs if o]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, nargs="+")
    parser.add_argument("--runtime", choices=RUNTIMES, default="litert")
    parser.add_argument("--inputs", type=Path, help="npz of '<i>/<name>' arrays to run instead of random data")
    parser.add_argument("--outputs", type=Path, help="where to write the outputs npz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--convert-io", action="store_true", help="quantize/dequantize int8 model I/O")
    parser.add_argument("--repeats", type=int, default=0, help="also time this many invokes of the first input")
    args = parser.parse_args(argv)
    if args.inputs is None:
        for path in args.path:  # one line per file as soon as it is known: a crash keeps the lines before it
            print(json.dumps(load_in_process(path, args.runtime, args.threads).to_json()), flush=True)
        return 0
    if len(args.path) != 1:
        parser.error("--inputs runs one file")
    with np.load(args.inputs) as data:
        feeds: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            index, name = key.split("/", 1)
            feeds.setdefault(int(index), {})[name] = data[key]
    timing: list[float] = []
    inputs = [feeds[i] for i in sorted(feeds)]
    result, outputs = run_in_process(
        args.path[0], inputs, args.runtime, args.threads, args.convert_io, timing, args.repeats
    )
    if outputs:
        arrays = {f"{i}/{k}": v for i, out in enumerate(outputs) for k, v in out.items()}
        if timing:
            arrays["latency_ms"] = np.array(timing)
        np.savez(args.outputs, **arrays)
    print(json.dumps(result.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
