"""Where a .tflite's time goes, operator by operator, from LiteRT's own profiler (issue #16, item 4).

ai-edge-litert 2.3's Python classes expose no profiler, but the `libLiteRt.so` inside the same wheel exports
LiteRT's C profiler API (`litert/c/litert_profiler.h`, `litert_compiled_model.h`), which this module calls
through ctypes:
  1. a CompiledModel on the CPU accelerator, with the two opaque options LiteRT's C++ helpers build:
     `runtime_options_string` = "enable_profiling = true" and `xnnpack` = "num_threads = N";
  2. its input buffers filled (float inputs with a fixed ramp in [0, 1], others with zeros), `warmup` runs;
  3. the profiler reset and started, `runs` runs, stopped, and its events read:
       - type 1 "Invoke": one whole run;
       - type 2 (OPERATOR_INVOKE): a TFLite node that XNNPACK did not take, on a built-in kernel (`meta1` = node id);
       - type 8 (DELEGATE_PROFILED_OPERATOR_INVOKE): one XNNPACK operator inside a delegated partition, named by
         XNNPACK ("Fully Connected (NC, QS8, QC8W) GEMM", "Convert (NC, F32, QS8)"), `meta1` = its index in the
         partition (a new partition starts where that index stops rising or a built-in node comes between).
The profile is CompiledModel's, not the Interpreter's that `bench` times, and the profiler costs time of its own
(about 30 % on a graph of hundreds of tiny ops): read it as shares, and take latencies from `make bench`.
The C signatures and the event layout are LiteRT 2.3's (`SUPPORTED`); another version is refused in one line.
"""

from __future__ import annotations

import collections
import ctypes as C
import dataclasses
import os
from pathlib import Path
from typing import Any

from videoseal_tflite.errors import VsTfliteError
from videoseal_tflite.tflite.interpreter import native_info_silenced

SUPPORTED = "2.3."  # ai-edge-litert versions whose C profiler layout this module was written against
_CPU = 1  # kLiteRtHwAcceleratorCpu
_LOCK_WRITE = 1  # kLiteRtTensorBufferLockModeWrite
_FLOAT32 = 1  # kLiteRtElementTypeFloat32
_INVOKE, _BUILTIN_OP, _XNNPACK_OP = 1, 2, 8  # ProfiledEventType values read here
_P = C.c_void_p


class ProfilerUnavailable(VsTfliteError):
    pass


class _Mem(C.Structure):
    _fields_ = [("total", C.c_size_t), ("in_use", C.c_size_t), ("private", C.c_size_t)]


class _Event(C.Structure):  # ProfiledEventData (litert/c/litert_profiler_event.h, LiteRT 2.3)
    _fields_ = [
        ("tag", C.c_char_p),
        ("event_type", C.c_int),
        ("start_us", C.c_uint64),
        ("elapsed_us", C.c_uint64),
        ("begin_mem", _Mem),
        ("end_mem", _Mem),
        ("meta1", C.c_uint64),
        ("meta2", C.c_uint64),
        ("source", C.c_int),
    ]


_SIGNATURES: dict[str, tuple[list, Any]] = {  # name -> (argtypes, restype); LiteRtStatus is an int, 0 = ok
    "LiteRtCreateEnvironment": ([C.c_int, _P, C.POINTER(_P)], C.c_int),
    "LiteRtDestroyEnvironment": ([_P], None),
    "LiteRtCreateModelFromFile": ([_P, C.c_char_p, C.POINTER(_P)], C.c_int),
    "LiteRtDestroyModel": ([_P], None),
    "LiteRtCreateOptions": ([C.POINTER(_P)], C.c_int),
    "LiteRtDestroyOptions": ([_P], None),
    "LiteRtSetOptionsHardwareAccelerators": ([_P, C.c_int], C.c_int),
    "LiteRtCreateOpaqueOptions": ([C.c_char_p, _P, C.CFUNCTYPE(None, _P), C.POINTER(_P)], C.c_int),
    "LiteRtAddOpaqueOptions": ([_P, _P], C.c_int),
    "LiteRtCreateCompiledModel": ([_P, _P, _P, C.POINTER(_P)], C.c_int),
    "LiteRtDestroyCompiledModel": ([_P], None),
    "LiteRtGetModelSignature": ([_P, C.c_size_t, C.POINTER(_P)], C.c_int),
    "LiteRtGetNumSignatureInputs": ([_P, C.POINTER(C.c_size_t)], C.c_int),
    "LiteRtGetNumSignatureOutputs": ([_P, C.POINTER(C.c_size_t)], C.c_int),
    "LiteRtGetSignatureInputTensorByIndex": ([_P, C.c_size_t, C.POINTER(_P)], C.c_int),
    "LiteRtGetSignatureOutputTensorByIndex": ([_P, C.c_size_t, C.POINTER(_P)], C.c_int),
    "LiteRtGetRankedTensorType": ([_P, _P], C.c_int),
    "LiteRtGetCompiledModelInputBufferRequirements": ([_P, C.c_size_t, C.c_size_t, C.POINTER(_P)], C.c_int),
    "LiteRtGetCompiledModelOutputBufferRequirements": ([_P, C.c_size_t, C.c_size_t, C.POINTER(_P)], C.c_int),
    "LiteRtCreateManagedTensorBufferFromRequirements": ([_P, _P, _P, C.POINTER(_P)], C.c_int),
    "LiteRtDestroyTensorBuffer": ([_P], None),
    "LiteRtGetTensorBufferSize": ([_P, C.POINTER(C.c_size_t)], C.c_int),
    "LiteRtLockTensorBuffer": ([_P, C.POINTER(_P), C.c_int], C.c_int),
    "LiteRtUnlockTensorBuffer": ([_P], C.c_int),
    "LiteRtRunCompiledModel": ([_P, C.c_size_t, C.c_size_t, C.POINTER(_P), C.c_size_t, C.POINTER(_P)], C.c_int),
    "LiteRtCompiledModelGetProfiler": ([_P, C.POINTER(_P)], C.c_int),
    "LiteRtStartProfiler": ([_P], C.c_int),
    "LiteRtStopProfiler": ([_P], C.c_int),
    "LiteRtResetProfiler": ([_P], C.c_int),
    "LiteRtGetNumProfilerEvents": ([_P, C.POINTER(C.c_int)], C.c_int),
    "LiteRtGetProfilerEvents": ([_P, C.c_int, C.POINTER(_Event)], C.c_int),
}
_NOOP_FREE = C.CFUNCTYPE(None, _P)(lambda p: None)  # the option payloads are Python buffers, freed by Python


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One operator's mean time per run: `op` is XNNPACK's operator name, or the TFLite builtin's on a built-in
    kernel (then `node` is its TFLite node id); an XNNPACK operator is the `index`-th of the `partition`-th
    delegated partition."""

    op: str
    kernel: str  # "xnnpack" | "builtin"
    node: int | None
    partition: int | None
    index: int | None
    ms: float

    @property
    def where(self) -> str:
        return f"node {self.node}" if self.kernel == "builtin" else f"partition {self.partition}, op {self.index}"


@dataclasses.dataclass(frozen=True)
class OpProfile:
    file: str
    threads: int
    runs: int
    run_ms: float  # median time of one run under the profiler
    ops: tuple[OpTime, ...]

    @property
    def op_ms(self) -> float:
        """The sum of the operators' times; the rest of `run_ms` is the runtime between operators."""
        return sum(o.ms for o in self.ops)

    def by_type(self) -> list[dict[str, Any]]:
        """Operator types by total time: op, kernel, count, ms per run, share of the run."""
        groups: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        for o in self.ops:
            groups[(o.op, o.kernel)].append(o.ms)
        rows = [
            {"op": op, "kernel": kernel, "count": len(ms), "ms": round(sum(ms), 4), "share": sum(ms) / self.run_ms}
            for (op, kernel), ms in groups.items()
        ]
        return sorted(rows, key=lambda r: -r["ms"])

    def to_json(self, top: int = 12) -> dict[str, Any]:
        return {
            "file": self.file,
            "runtime": "LiteRT CompiledModel, CPU (XNNPACK), profiler on",
            "threads": self.threads,
            "runs": self.runs,
            "run_ms_median": round(self.run_ms, 4),
            "op_ms_sum": round(self.op_ms, 4),
            "ops": len(self.ops),
            "by_type": [r | {"share": round(r["share"], 4)} for r in self.by_type()[:top]],
            "slowest": [
                {"op": o.op, "kernel": o.kernel, "where": o.where, "ms": round(o.ms, 4)} for o in self.slowest(top)
            ],
        }

    def slowest(self, count: int) -> list[OpTime]:
        return sorted(self.ops, key=lambda o: -o.ms)[:count]


def _library() -> C.CDLL:
    """libLiteRt.so of the installed ai-edge-litert, with the signatures above; refused for another version."""
    from importlib.metadata import version

    import ai_edge_litert

    have = version("ai-edge-litert")
    if not have.startswith(SUPPORTED):
        raise ProfilerUnavailable(
            f"the op profile reads LiteRT {SUPPORTED}x's C profiler; ai-edge-litert {have} is installed"
        )
    lib = C.CDLL(os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so"))
    for name, (argtypes, restype) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


class _Session:
    """A profiling CompiledModel and its buffers; `close()` destroys them all, in reverse order of creation."""

    def __init__(self, lib: C.CDLL, path: Path, threads: int) -> None:
        self.lib, self._undo, self._keep = lib, [], []
        self.env = self._make("LiteRtCreateEnvironment", 0, None, destroy="LiteRtDestroyEnvironment")
        self.model = self._make("LiteRtCreateModelFromFile", self.env, str(path).encode(), destroy="LiteRtDestroyModel")
        options = self._make("LiteRtCreateOptions", destroy="LiteRtDestroyOptions")
        self._call("LiteRtSetOptionsHardwareAccelerators", options, _CPU)
        for identifier, toml in (("runtime_options_string", "enable_profiling = true\n"),
                                 ("xnnpack", f"num_threads = {threads}\n")):  # fmt: skip
            payload = C.create_string_buffer(toml.encode())
            self._keep.append(payload)
            opaque = self._make("LiteRtCreateOpaqueOptions", identifier.encode(), C.cast(payload, _P), _NOOP_FREE)
            self._call("LiteRtAddOpaqueOptions", options, opaque)  # the options own it from here
        self.compiled = self._make(
            "LiteRtCreateCompiledModel", self.env, self.model, options, destroy="LiteRtDestroyCompiledModel"
        )
        self.inputs, self.outputs = self._buffers("Input"), self._buffers("Output")
        self.profiler = self._make("LiteRtCompiledModelGetProfiler", self.compiled)  # owned by the compiled model

    def _call(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise ProfilerUnavailable(f"LiteRT's {name} failed (LiteRtStatus {status})")

    def _make(self, name: str, *args, destroy: str | None = None) -> _P:
        handle = _P()
        self._call(name, *args, C.byref(handle))
        if destroy:
            self._undo.append((destroy, handle))
        return handle

    def _buffers(self, kind: str) -> tuple[int, Any]:
        signature = self._make("LiteRtGetModelSignature", self.model, 0)
        count = C.c_size_t()
        self._call(f"LiteRtGetNumSignature{kind}s", signature, C.byref(count))
        handles = (_P * count.value)()
        for i in range(count.value):
            tensor = self._make(f"LiteRtGetSignature{kind}TensorByIndex", signature, i)
            tensor_type = C.create_string_buffer(512)  # LiteRtRankedTensorType: element type (int) first
            self._keep.append(tensor_type)
            self._call("LiteRtGetRankedTensorType", tensor, tensor_type)
            needs = self._make(f"LiteRtGetCompiledModel{kind}BufferRequirements", self.compiled, 0, i)
            handles[i] = self._make(
                "LiteRtCreateManagedTensorBufferFromRequirements", self.env, tensor_type, needs,
                destroy="LiteRtDestroyTensorBuffer",
            )  # fmt: skip
            if kind == "Input":
                self._fill(handles[i], C.c_int.from_buffer(tensor_type).value == _FLOAT32)
        return count.value, handles

    def _fill(self, buffer: _P, is_float: bool) -> None:
        size, host = C.c_size_t(), _P()
        self._call("LiteRtGetTensorBufferSize", buffer, C.byref(size))
        self._call("LiteRtLockTensorBuffer", buffer, C.byref(host), _LOCK_WRITE)
        if is_float:
            n = size.value // 4
            ramp = (C.c_float * n)(*[(i % 251) / 250 for i in range(n)])
            C.memmove(host, ramp, n * 4)
        else:
            C.memset(host, 0, size.value)
        self._call("LiteRtUnlockTensorBuffer", buffer)

    def run(self) -> None:
        (n_in, ins), (n_out, outs) = self.inputs, self.outputs
        self._call("LiteRtRunCompiledModel", self.compiled, 0, n_in, ins, n_out, outs)

    def profile(self, warmup: int, runs: int) -> list[_Event]:
        """`warmup` runs, then `runs` with the profiler recording: its events."""
        for _ in range(warmup):
            self.run()
        self._call("LiteRtResetProfiler", self.profiler)
        self._call("LiteRtStartProfiler", self.profiler)
        for _ in range(runs):
            self.run()
        self._call("LiteRtStopProfiler", self.profiler)
        count = C.c_int()
        self._call("LiteRtGetNumProfilerEvents", self.profiler, C.byref(count))
        events = (_Event * max(1, count.value))()
        self._call("LiteRtGetProfilerEvents", self.profiler, max(1, count.value), events)
        return list(events[: count.value])

    def close(self) -> None:
        for name, handle in reversed(self._undo):
            getattr(self.lib, name)(handle)
        self._undo.clear()


def _op_times(events: list[_Event], runs: int) -> tuple[list[float], tuple[OpTime, ...]]:
    """Per-run times (ms) and each operator's mean ms per run, from the profiler's events (module docstring)."""
    totals: dict[tuple, float] = collections.defaultdict(float)  # (op, kernel, node, partition, index) -> ms
    run_ms, partition, last = [], 0, None
    for e in events:
        tag = (e.tag or b"").decode(errors="replace")
        if e.event_type == _INVOKE and tag == "Invoke":
            run_ms.append(e.elapsed_us / 1000)
            partition, last = 0, None
        elif e.event_type == _BUILTIN_OP:
            totals[(tag, "builtin", int(e.meta1), None, None)] += e.elapsed_us / 1000
            last = None
        elif e.event_type == _XNNPACK_OP:
            if last is None or e.meta1 <= last:
                partition += 1
            last = e.meta1
            totals[(tag, "xnnpack", None, partition, int(e.meta1))] += e.elapsed_us / 1000
    return run_ms, tuple(OpTime(*key, ms / runs) for key, ms in totals.items())


def profile_ops(path: Path, threads: int = 2, warmup: int = 5, runs: int = 30) -> OpProfile:
    """Run `path` `warmup` + `runs` times on LiteRT's CPU path with `threads` XNNPACK threads and return where the
    profiled runs spent their time."""
    import statistics

    path = Path(path)
    if not path.is_file():
        raise ProfilerUnavailable(f"{path}: no such file")
    with native_info_silenced():  # LiteRT's native INFO/WARNING lines on building a CompiledModel
        session = _Session(_library(), path, threads)
    try:
        run_ms, ops = _op_times(session.profile(warmup, runs), runs)
    finally:
        with native_info_silenced():
            session.close()
    if len(run_ms) != runs or not ops:
        raise ProfilerUnavailable(f"{path}: LiteRT's profiler recorded {len(run_ms)} of {runs} runs")
    return OpProfile(str(path), threads, runs, statistics.median(run_ms), ops)


def format_profile(profile: OpProfile, top: int = 12) -> str:
    lines = [
        f"op profile: {profile.file}",
        f"  LiteRT CompiledModel, CPU (XNNPACK), {profile.threads} threads, {profile.runs} runs with the profiler on:"
        f" {profile.run_ms:.3f} ms per run (median), of which {profile.op_ms:.3f} ms in {len(profile.ops)} operators",
        "  by operator type:",
    ]
    for r in profile.by_type()[:top]:
        lines.append(f"    {r['share'] * 100:5.1f} %  {r['ms']:8.3f} ms  {r['count']:4d} x  {r['op']}  [{r['kernel']}]")
    lines.append("  slowest operators:")
    for o in profile.slowest(min(top, 8)):
        lines.append(f"    {o.ms:8.3f} ms  {o.op}  [{o.kernel}, {o.where}]")
    return "\n".join(lines)
