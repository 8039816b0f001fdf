#!/usr/bin/env python3
"""Compare LiteRT CompiledModel outputs on the GPU accelerator with the CPU.

Issue #16 item 3: where a GPU machine is available, run LiteRT's
``CompiledModel`` with the GPU accelerator and compare its outputs with the
CPU run.

Standalone on purpose: it needs only numpy and ``ai_edge_litert`` (plus the
standard library), never torch or the ``videoseal_tflite`` package, so it can
run on a bare machine with just a LiteRT wheel installed.

Usage::

    python scripts/litert_gpu_check.py --out result.json [--markdown result.md] A.tflite [B.tflite ...]
    python scripts/litert_gpu_check.py --render result.json --markdown result.md [--title TITLE]

For every file and for each accelerator setting (CPU, GPU, GPU|CPU) it records
whether the model loaded, the runtime's own error text if it did not,
``is_fully_accelerated()``, the max abs difference of every output vs. the CPU
run, and the median wall time of the timed runs.  By default each (file,
setting) runs in its own child process, so a native crash in one GPU setting
is recorded instead of ending the whole check (``--no-isolate`` turns that
off).  The native runtime's log (stderr) of each child is kept in the JSON.

``--markdown PATH`` also writes the result as a Markdown record (title, an
environment line, one table row per (file, setting)); ``--render JSON`` with
``--markdown PATH`` only renders an existing result JSON, running nothing.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _ensure_ml_dtypes():
    """ai_edge_litert.tensor_buffer imports ml_dtypes only for dtype-table keys.

    On a bare machine without ml_dtypes, register a stub whose bfloat16/float8
    entries are distinct structured dtypes, so float/int models still run.
    Returns "real" or "stub".
    """
    try:
        import ml_dtypes  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel

        return "real"
    except ImportError:
        import types  # pylint: disable=import-outside-toplevel

        stub = types.ModuleType("ml_dtypes")
        stub.bfloat16 = np.dtype([("litert_stub_bfloat16", "<u2")])
        stub.float8_e4m3fn = np.dtype([("litert_stub_float8_e4m3fn", "u1")])
        stub.float8_e5m2 = np.dtype([("litert_stub_float8_e5m2", "u1")])
        sys.modules["ml_dtypes"] = stub
        return "stub"


ML_DTYPES = _ensure_ml_dtypes()

SETTINGS = ("CPU", "GPU", "GPU|CPU")
LOG_TAIL_CHARS = 6000
ERROR_CHARS = 160  # the Markdown record's error column
TITLE = "LiteRT GPU accelerator vs CPU"
COLUMNS = ("file", "accelerator", "loaded", "fully accelerated", "max abs diff vs CPU", "median ms (run+read)", "error")
# Native log lines worth surfacing: the Python exception from a failed GPU load
# is only a source location; the reason (no Vulkan, no adapter) is in the log.
_LOG_KEYS = ("error", "warning", "couldn't", "failed", "no adapters")
_LOG_NOISE = ("intel_openvino", "libopenvino", "npu_registry", "logging before initgoogle")


def _native_errors(log):
    lines = []
    for line in log.splitlines():
        low = line.lower()
        if any(k in low for k in _LOG_KEYS) and not any(k in low for k in _LOG_NOISE) and line.strip() not in lines:
            lines.append(line.strip())
    return lines[:20]


def _accel(name):
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator as HA

    value = HA(0)
    for part in name.split("|"):
        value |= getattr(HA, part)
    return value


def _make_input(name, dtype, shape, rng):
    """Deterministic input: uniform [0,1) floats, 0/1 for message/bits."""
    dt = np.dtype(dtype)
    lname = name.lower()
    is_bits = any(k in lname for k in ("message", "msg", "bits"))
    if is_bits:
        return rng.integers(0, 2, size=shape).astype(dt)
    if dt.kind == "f":
        return rng.random(size=shape, dtype=np.float32).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        lo, hi = max(int(info.min), -128), min(int(info.max), 127)
        return rng.integers(lo, hi + 1, size=shape).astype(dt)
    raise ValueError(f"unsupported input dtype {dtype} for {name}")


def _load(path, setting, meta):
    from ai_edge_litert.compiled_model import CompiledModel

    t0 = time.perf_counter()
    model = CompiledModel.from_file(str(path), hardware_accel=_accel(setting))
    meta["load_ms"] = (time.perf_counter() - t0) * 1e3
    meta["loaded"] = True
    return model


def _describe(model, meta):
    """Records acceleration, signature, inputs and buffer requirements."""
    try:
        meta["fully_accelerated"] = bool(model.is_fully_accelerated())
    except Exception as exc:  # pylint: disable=broad-except
        meta["fully_accelerated"] = None
        meta["fully_accelerated_error"] = f"{type(exc).__name__}: {exc}"
    sig = model.get_signature_by_index(0)
    in_details = model.get_input_tensor_details(sig["key"])
    out_details = model.get_output_tensor_details(sig["key"])
    meta["signature"] = sig["key"]
    meta["inputs"] = {n: {"dtype": d["dtype"], "shape": list(d["shape"])} for n, d in in_details.items()}
    meta["input_buffer_requirements"] = {}
    for i, n in enumerate(sig["inputs"]):
        try:
            meta["input_buffer_requirements"][n] = model.get_input_buffer_requirements(i, 0)
        except Exception as exc:  # pylint: disable=broad-except
            meta["input_buffer_requirements"][n] = f"{type(exc).__name__}: {exc}"
    return sig, in_details, out_details


def _buffers(model, sig, details, meta):
    """Input buffers filled with deterministic data, output buffers and their (name, buf, dtype, shape)."""
    in_details, out_details = details
    in_bufs = model.create_input_buffers(0)
    out_bufs = model.create_output_buffers(0)
    rng = np.random.default_rng(0)
    for name, buf in zip(sig["inputs"], in_bufs):
        d = in_details[name]
        buf.write(_make_input(name, d["dtype"], list(d["shape"]), rng))
    out_specs = []
    for name, buf in zip(sig["outputs"], out_bufs):
        try:
            td = buf.get_tensor_details()
            dtype, shape = td["dtype"], list(td["shape"])
        except Exception:  # pylint: disable=broad-except
            dtype, shape = out_details[name]["dtype"], list(out_details[name]["shape"])
        out_specs.append((name, buf, np.dtype(dtype), shape))
    meta["outputs"] = {n: {"dtype": str(dt), "shape": s} for n, _, dt, s in out_specs}
    return in_bufs, out_bufs, out_specs


def _read_all(out_specs):
    return {n: b.read(int(np.prod(s)), dt).reshape(s) for n, b, dt, s in out_specs}


def _max_abs_diff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _first_run(model, bufs, out_specs, meta):
    t0 = time.perf_counter()
    model.run_by_index(0, *bufs)
    outputs = _read_all(out_specs)
    meta["first_run_ms"] = (time.perf_counter() - t0) * 1e3
    meta["ran"] = True
    meta["outputs_finite"] = bool(all(np.all(np.isfinite(v.astype(np.float64))) for v in outputs.values()))
    return outputs


def _time_runs(model, bufs, out_specs, outputs, runs, warmup, meta):
    for _ in range(warmup):
        model.run_by_index(0, *bufs)
        _read_all(out_specs)
    t_run, t_run_read = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.run_by_index(0, *bufs)
        t1 = time.perf_counter()
        again = _read_all(out_specs)
        t_run.append((t1 - t0) * 1e3)
        t_run_read.append((time.perf_counter() - t0) * 1e3)
    meta["ms_run_median"] = float(np.median(t_run))
    meta["ms_run_read_median"] = float(np.median(t_run_read))
    meta["timing_runs"] = runs
    meta["timing_warmup"] = warmup
    # Repeat runs must give the same outputs (catches stale async reads).
    meta["repeat_max_abs_diff"] = max((_max_abs_diff(again[n], v) for n, v in outputs.items() if v.size), default=0.0)


def run_setting(path, setting, runs, warmup):
    """Runs one accelerator setting in this process.

    Returns (meta dict, {output name: np.ndarray}).
    """
    meta = {"accelerator": setting, "loaded": False, "ran": False}
    outputs = {}
    stage = "load"
    try:
        model = _load(path, setting, meta)
        stage = "inspect"
        sig, *details = _describe(model, meta)
        stage = "buffers"
        in_bufs, out_bufs, out_specs = _buffers(model, sig, details, meta)
        stage = "run"
        outputs = _first_run(model, (in_bufs, out_bufs), out_specs, meta)
        stage = "timing"
        _time_runs(model, (in_bufs, out_bufs), out_specs, outputs, runs, warmup, meta)
    except Exception as exc:  # pylint: disable=broad-except
        meta["error_stage"] = stage
        meta["error_type"] = type(exc).__name__
        meta["error"] = str(exc)
    return meta, outputs


def _child_main(args):
    meta, outputs = run_setting(args.child_file, args.child_setting, args.runs, args.warmup)
    out_dir = Path(args.child_dir)
    np.savez(out_dir / "outputs.npz", **outputs)
    (out_dir / "meta.json").write_text(json.dumps(meta, default=str))
    return 0


def _run_child(cmd, timeout):
    """Returns (return code or "timeout", stdout + stderr)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
        return proc.returncode, (proc.stdout or "") + (proc.stderr or "")
    except subprocess.TimeoutExpired as exc:
        parts = [p.decode("utf-8", "replace") if isinstance(p, bytes) else p for p in (exc.stdout, exc.stderr) if p]
        return "timeout", "".join(parts)


def run_isolated(path, setting, args):
    """Runs one setting in a child process; survives native crashes."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = ["--_child-file", str(path), "--_child-setting", setting, "--_child-dir", tmp]
        opts += ["--runs", str(args.runs), "--warmup", str(args.warmup)]
        cmd = [sys.executable, str(Path(__file__).resolve()), *opts]
        t0 = time.perf_counter()
        rc, log = _run_child(cmd, args.timeout)
        wall = time.perf_counter() - t0
        meta_path, npz_path = Path(tmp) / "meta.json", Path(tmp) / "outputs.npz"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            with np.load(npz_path) as z:
                outputs = {k: z[k] for k in z.files}
        else:
            meta = {"accelerator": setting, "loaded": False, "ran": False, "error_stage": "child_process"}
            meta["error_type"] = "ChildProcessDied"
            meta["error"] = f"child exited with {rc} before writing results; see native_log_tail"
            outputs = {}
    meta["child_returncode"] = rc
    meta["child_wall_s"] = wall
    meta["native_log_tail"] = log[-LOG_TAIL_CHARS:]
    meta["native_errors"] = _native_errors(log)
    if args.echo_logs and log:
        sys.stderr.write(f"----- {Path(path).name} [{setting}] -----\n{log}\n")
    return meta, outputs


def _environment():
    import ctypes.util

    env = {
        "python": sys.version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "ml_dtypes": ML_DTYPES,
    }
    try:
        import ai_edge_litert

        env["ai_edge_litert"] = getattr(ai_edge_litert, "__version__", None)
        pkg_dir = Path(ai_edge_litert.__file__).parent
        env["ai_edge_litert_dir"] = str(pkg_dir)
        env["litert_accelerator_libs"] = sorted(p.name for p in pkg_dir.glob("libLiteRt*Accelerator*.so"))
    except Exception as exc:  # pylint: disable=broad-except
        env["ai_edge_litert_import_error"] = f"{type(exc).__name__}: {exc}"
    env["system_libs"] = {
        lib: ctypes.util.find_library(lib) for lib in ("vulkan", "EGL", "GLESv2", "GL", "OpenCL", "cuda")
    }
    env["env_vars"] = {
        k: os.environ.get(k)
        for k in (
            "LD_LIBRARY_PATH",
            "VK_ICD_FILENAMES",
            "VK_DRIVER_FILES",
            "__EGL_VENDOR_LIBRARY_FILENAMES",
            "NVIDIA_VISIBLE_DEVICES",
            "CUDA_VISIBLE_DEVICES",
        )
    }
    icd_dirs = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/share/glvnd/egl_vendor.d")
    env["icd_files"] = {d: sorted(p.name for p in Path(d).glob("*.json")) for d in icd_dirs if Path(d).is_dir()}
    return env


def _fmt(v, spec):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return format(v, spec)


def _one_line(text, limit=ERROR_CHARS):
    """The runtime's error text on one line (lines joined with " / ", tree marks dropped), cut at `limit` chars."""
    line = " / ".join(x.strip(" └") for x in str(text).splitlines() if x.strip(" └"))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cell(text):
    return str(text).replace("|", "\\|")


def render_markdown(result, title=TITLE):
    """A result JSON (as a dict) as a Markdown record: title, environment line, one table row per result."""
    env = result.get("environment", {})
    vulkan = (env.get("env_vars") or {}).get("VK_ICD_FILENAMES")
    lines = [f"# {title}", ""]
    lines.append(
        f"python {str(env.get('python', '?')).split()[0]} · ai_edge_litert {env.get('ai_edge_litert')} · "
        f"{env.get('platform')} · Vulkan driver file: {f'`{vulkan}`' if vulkan else 'none set'}"
    )
    lines += ["", f"| {' | '.join(COLUMNS)} |", "|" + "---|" * len(COLUMNS)]
    for r in result["results"]:
        loaded = _fmt(r.get("loaded"), "")
        if r.get("loaded") and not r.get("ran"):
            loaded = f"yes (run failed: {r.get('error_type')})"
        cells = (
            r["file"],
            r["accelerator"],
            loaded,
            _fmt(r.get("fully_accelerated"), ""),
            _fmt(r.get("max_abs_diff_vs_cpu"), ".3g"),
            _fmt(r.get("ms_run_read_median"), ".2f"),
            _one_line(r["error"]) if r.get("error") else "-",
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _print_errors(result):
    """Each distinct error per setting once, with the native log lines that explain it."""
    seen = set()
    for r in sorted(result["results"], key=lambda r: result["settings"].index(r["accelerator"])):
        if not r.get("error"):
            continue
        msg = (_one_line(r["error"], 300), *(r.get("native_errors") or []))
        # glog lines carry a timestamp and thread id; ignore digits.
        key = (r["accelerator"], "".join(c for c in "\n".join(msg) if not c.isdigit()))
        if key not in seen:
            seen.add(key)
            print(f"\n{r['accelerator']} error: {msg[0]}")
            for line in msg[1:]:
                print(f"  native: {line}")


def _compare(meta, outputs, ref):
    """Adds the max abs difference of every output vs. the CPU run (`ref`) to `meta`."""
    diffs = {}
    for name, ref_v in ref.items():
        same = name in outputs and outputs[name].shape == ref_v.shape
        diffs[name] = _max_abs_diff(outputs[name], ref_v) if same else None
    meta["max_abs_diff_vs_cpu_per_output"] = diffs
    vals = [d for d in diffs.values() if d is not None]
    meta["max_abs_diff_vs_cpu"] = max(vals) if len(vals) == len(diffs) and vals else None
    meta["output_abs_max_cpu"] = {
        n: float(np.max(np.abs(v.astype(np.float64)))) if v.size else 0.0 for n, v in ref.items()
    }


def _check_file(path, settings, args, on_result):
    """Runs every setting on one file (CPU first, the reference); calls `on_result(meta)` after each."""
    ref = None
    for setting in settings:
        t0 = time.perf_counter()
        print(f"[{path.name}] {setting} ...", file=sys.stderr, flush=True)
        if args.isolate:
            meta, outputs = run_isolated(path, setting, args)
        else:
            meta, outputs = run_setting(path, setting, args.runs, args.warmup)
        meta = {"file": str(path), **meta}
        if setting == "CPU":
            ref = outputs if meta.get("ran") else None
        if meta.get("ran") and ref is not None:
            _compare(meta, outputs, ref)
        meta["total_s"] = time.perf_counter() - t0
        if not meta.get("loaded") or not meta.get("ran"):
            print(f"  -> failed at {meta.get('error_stage')}: {meta.get('error')}", file=sys.stderr, flush=True)
            for line in meta.get("native_errors", []):
                print(f"     native: {line}", file=sys.stderr, flush=True)
        on_result(meta)


def _parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--out", type=Path, default=Path("litert_gpu_check.json"))
    p.add_argument("--markdown", type=Path, help="also write the result as a Markdown record here")
    p.add_argument("--render", type=Path, metavar="JSON", help="only render this result JSON (needs --markdown)")
    p.add_argument("--title", default=TITLE, help="title of the Markdown record")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated accelerator settings")
    p.add_argument("--no-isolate", dest="isolate", action="store_false", help="run every setting in this process")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per isolated (file, setting) run")
    p.add_argument("--echo-logs", action="store_true", help="echo each child's native log to stderr")
    p.add_argument("--_child-file", dest="child_file", help=argparse.SUPPRESS)
    p.add_argument("--_child-setting", dest="child_setting", help=argparse.SUPPRESS)
    p.add_argument("--_child-dir", dest="child_dir", help=argparse.SUPPRESS)
    return p


def _write_markdown(result, args):
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(render_markdown(result, args.title), encoding="utf-8")
    print(f"wrote {args.markdown}")


def main(argv=None):
    p = _parser()
    args = p.parse_args(argv)
    if args.child_file:
        return _child_main(args)
    if args.render:
        if not args.markdown:
            p.error("--render needs --markdown")
        _write_markdown(json.loads(args.render.read_text(encoding="utf-8")), args)
        return 0
    if not args.files:
        p.error("no .tflite files given")

    settings = [s.strip() for s in args.settings.split(",") if s.strip() and s.strip() != "CPU"]
    settings.insert(0, "CPU")  # reference first
    result = {"environment": _environment(), "settings": settings, "isolated": args.isolate, "results": []}

    def save(meta=None):
        if meta is not None:
            result["results"].append(meta)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))

    for path in args.files:
        _check_file(path, settings, args, save)
    save()
    print(render_markdown(result, args.title))
    _print_errors(result)
    print(f"\nwrote {args.out}")
    if args.markdown:
        _write_markdown(result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
