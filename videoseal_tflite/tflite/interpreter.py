"""Running a .tflite: loading it in an interpreter, its signature runner, feeding by tensor name, int8 I/O
and timing. The one place both the shipped runtime and validation go through (issue #17): numpy and the
interpreter only, no torch, nothing from `validate/`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

RUNTIMES = ("litert", "tflite")


def interpreter_class(runtime: str = "litert"):
    """ai_edge_litert's Interpreter, or tf.lite's as the second opinion."""
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    if runtime == "tflite":
        import tensorflow as tf

        return tf.lite.Interpreter
    raise ValueError(f"unknown runtime '{runtime}' (expected one of {', '.join(RUNTIMES)})")


@contextlib.contextmanager
def native_info_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null while an interpreter is built: LiteRT's native code prints "INFO: Created
    TensorFlow Lite XNNPACK delegate for CPU." there, and no flag or variable turns it off. The runtime's errors
    still arrive, as the Python exception's text."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def to_input(value: np.ndarray, detail: dict, convert_io: bool) -> np.ndarray:
    """With `convert_io`, float values are quantized for an int8/int16 input (scale/zero-point from the model)."""
    if convert_io and detail["dtype"] in (np.int8, np.int16, np.uint8) and np.issubdtype(value.dtype, np.floating):
        scale, zero = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(detail["dtype"])
    return value


def from_output(value: np.ndarray, detail: dict, convert_io: bool) -> np.ndarray:
    """With `convert_io`, an int8/int16 output is dequantized: real = (q - zero_point) * scale."""
    if convert_io and detail["dtype"] in (np.int8, np.int16, np.uint8):
        scale, zero = detail["quantization"]
        return (value.astype(np.float32) - zero) * scale
    return value


class SignatureModel:
    """A loaded model's default signature, called with numpy arrays by tensor name.

    Raises what the interpreter raises (RuntimeError / ValueError with the runtime's own text): callers decide
    whether that is a user error (the runtime) or a finding (validation)."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        content: bytes | None = None,
        runtime: str = "litert",
        threads: int = 2,
        convert_io: bool = True,
        prepare: bool = True,
    ) -> None:
        cls = interpreter_class(runtime)
        with native_info_silenced():  # the terminal shows our results, not the runtime's INFO line
            if content is not None:
                self.interpreter = cls(model_content=content, num_threads=threads)
            else:
                self.interpreter = cls(model_path=str(path), num_threads=threads)
            self.convert_io = convert_io
            if prepare:
                self.prepare()

    def prepare(self) -> None:
        """Allocate tensors (where a kernel rejects its operands: 'failed to prepare') and open the signature."""
        self.interpreter.allocate_tensors()
        self.runner = self.interpreter.get_signature_runner()
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()

    def feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The arrays the runner takes: float inputs quantized where the model's interface is integer."""
        return {k: to_input(v, self.input_details[k], self.convert_io) for k, v in inputs.items()}

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        out = self.runner(**self.feed(inputs))
        return {k: from_output(np.asarray(v), self.output_details[k], self.convert_io) for k, v in out.items()}

    def time_ms(self, inputs: dict[str, np.ndarray], repeats: int, warmup: int = 2) -> list[float]:
        """Milliseconds of `repeats` invokes of the same input, after `warmup` uncounted ones."""
        feed = self.feed(inputs)
        times = []
        for i in range(repeats + warmup):
            start = time.perf_counter()
            self.runner(**feed)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
        return times
