"""NPU compile, offline, through LiteRT's own AOT path (issue #16 item 2): `ai_edge_litert.aot.aot_compile`.

The vendor SDK wheels are an optional extra (`make setup-npu` -> .venv-npu from requirements-npu.lock), never part
of the main venv. So this module runs in two roles:
  - in .venv-npu (`python -m videoseal_tflite.tflite.npu FILE --target T --json`): it compiles, one JSON line per
    (file, target) record;
  - in the main venv (`inspect --npu`, `npu_block` for the report): it starts that child process and parses the
    lines. The child's interpreter is NPU_PYTHON, overridable by $VIDEOSEAL_TFLITE_NPU_PYTHON.
Only the standard library is imported at module level, so the module imports anywhere, with or without the extra.

A record says what the compiler said: compiled or not, its own text (`error`: one line; `detail`: all of it),
how many ops LiteRT's partitioner gave the vendor versus left to the CPU fallback, and the compiled file's size.
`intel_cpu` is the one target that is no NPU: the same OpenVINO AOT path with OpenVINO's CPU device, the only
vendor path whose compiled file also runs on this x86 machine (its `run` check compares it with the .tflite).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from videoseal_tflite.errors import InvalidModelFile, VsTfliteError

REPO_ROOT = Path(__file__).resolve().parents[2]
NPU_PYTHON_ENV = "VIDEOSEAL_TFLITE_NPU_PYTHON"
NPU_PYTHON = REPO_ROOT / ".venv-npu" / "bin" / "python"
SETUP_HINT = "the NPU extra is not installed: run `make setup-npu` (creates .venv-npu from requirements-npu.lock)"

# name -> the aot vendor backend, the SDK package that must be importable for the target to be offered, the
# default SoC (`name:SOC` picks another), backend flags, and what the compiled partitions run on.
TARGETS: dict[str, dict] = {
    "qualcomm": {"backend": "qualcomm", "sdk": "ai_edge_litert_sdk_qualcomm", "soc": "SM8650", "device": "NPU"},
    "mediatek": {"backend": "mediatek", "sdk": "ai_edge_litert_sdk_mediatek", "soc": "MT6989", "device": "NPU"},
    "google_tensor": {
        "backend": "google_tensor",
        "sdk": "ai_edge_litert_sdk_google_tensor",
        "soc": "Tensor_G4",
        "device": "NPU",
    },
    "intel_npu": {
        "backend": "intel_openvino",
        "sdk": "ai_edge_litert_sdk_intel",
        "soc": "LNL",
        "flags": {"intel_openvino_graph_backends": "npu"},
        "device": "NPU",
    },
    "intel_cpu": {
        "backend": "intel_openvino",
        "sdk": "ai_edge_litert_sdk_intel",
        "soc": "LNL",
        "flags": {"intel_openvino_graph_backends": "cpu"},
        "device": "OpenVINO CPU device (not an NPU)",
        "runs_here": True,
    },
}
SDK_DISTS = {
    "ai_edge_litert_sdk_qualcomm": "ai-edge-litert-sdk-qualcomm",
    "ai_edge_litert_sdk_mediatek": "ai-edge-litert-sdk-mediatek",
    "ai_edge_litert_sdk_google_tensor": "ai-edge-litert-sdk-google-tensor",
    "ai_edge_litert_sdk_intel": "ai-edge-litert-sdk-intel",
}
# apply_plugin_main's own line (ai_edge_litert/aot/core/apply_plugin.py parses the same)
_PARTITION_LINE = re.compile(
    r"Partitioned subgraph<(\d+)>, selected (\d+) ops, from a total of (\d+) ops\. resulted in (\d+) partitions\."
)
_ERROR_FILE = re.compile(r"See (\S+\.error) for details")
_GENERIC = re.compile(r"\[apply_plugin\.cc:\d+\] ERROR: \[litert/compiler/plugin/compiler_plugin\.cc:\d+\]\s*$")


class NpuUnavailable(VsTfliteError):
    """The extra is not installed, or the asked target is not one it offers (exit 2, one line)."""


# ---------------------------------------------------------------- parsing (pure, tested without the extra)


def parse_partitions(text: str) -> list[dict]:
    """apply_plugin_main's `Partitioned subgraph<i>, selected n ops, from a total of m ops...` lines."""
    return [
        {"subgraph": int(s), "offloaded_ops": int(n), "total_ops": int(m), "partitions": int(p)}
        for s, n, m, p in _PARTITION_LINE.findall(text)
    ]


def op_split(partitions: list[dict]) -> dict:
    """Ops the vendor compiled versus ops left to LiteRT's CPU kernels (None when the partitioner never ran)."""
    if not partitions:
        return {"offloaded_ops": None, "cpu_fallback_ops": None, "total_ops": None, "partitions": None}
    offloaded = sum(p["offloaded_ops"] for p in partitions)
    total = sum(p["total_ops"] for p in partitions)
    return {
        "offloaded_ops": offloaded,
        "cpu_fallback_ops": total - offloaded,
        "total_ops": total,
        "partitions": sum(p["partitions"] for p in partitions),
    }


def headline(text: str) -> str:
    """The compiler's most specific line: a missing library, else its first non-generic ERROR, else the last line."""
    lines = [ln.strip(" └") for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "cannot open shared object file" in ln.lower():
            return ln[:400]
    for ln in lines:
        if (ln.startswith("ERROR") or "Exception" in ln) and not _GENERIC.search(ln):
            return ln[:400]
    return lines[-1][:400] if lines else "no output"


def parse_record_line(stdout: str) -> list[dict]:
    """The child's stdout -> its records (one JSON object per line; other lines are ignored)."""
    records = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def format_record(rec: dict) -> str:
    """A compile record as a few human lines."""
    head = f"{rec['file']}  ->  {rec['target']} ({rec.get('target_id')}, {rec.get('device')})"
    lines = [head, f"  compiled: {'yes' if rec['compiled'] else 'no'}"]
    if rec.get("total_ops") is not None:
        where = "" if rec["compiled"] else "  (partitioner, before the compile failed)"
        lines.append(
            f"  ops: {rec['offloaded_ops']}/{rec['total_ops']} to the vendor in {rec['partitions']} partition(s),"
            f" {rec['cpu_fallback_ops']} left to the CPU fallback{where}"
        )
    if rec.get("compiled_bytes") is not None:
        lines.append(f"  compiled file: {rec['compiled_bytes']} bytes (input {rec['input_bytes']} bytes)")
    if rec.get("error"):
        lines.append(f"  compiler: {rec['error']}")
    run = rec.get("run")
    if run:
        lines.append(f"  run here: {json.dumps(run)}")
    return "\n".join(lines)


def format_info(info: dict) -> str:
    """extra_info() as human lines: one per SDK package, then the targets offered."""
    lines = [f"ai-edge-litert {info.get('ai_edge_litert')} ({info.get('python')})"]
    for dist, sdk in info.get("sdks", {}).items():
        if not sdk.get("installed"):
            lines.append(f"{dist}: not installed")
        elif sdk.get("sdk_libs"):
            lines.append(f"{dist} {sdk['version']}: SDK libraries at {sdk['sdk_libs']}")
        else:
            missing = "SDK libraries MISSING (downloaded from the vendor at install time; that download did not happen)"
            lines.append(f"{dist} {sdk['version']}: {missing}")
    lines.append(f"targets offered: {', '.join(info.get('targets', [])) or 'none'}")
    return "\n".join(lines)


# ---------------------------------------------------------------- in the interpreter that has the extra


def _sdk_status() -> dict:
    """Each vendor SDK package: installed version, and whether its libraries (downloaded at install) are there."""
    from importlib import metadata

    status = {}
    for module, dist in SDK_DISTS.items():
        try:
            version = metadata.version(dist)
            mod = importlib.import_module(module)
        except Exception:  # not installed, or installed but failing on import
            status[dist] = {"installed": False}
            continue
        with contextlib.redirect_stderr(io.StringIO()):
            libs = mod.path_to_sdk_libs() if hasattr(mod, "path_to_sdk_libs") else None
        status[dist] = {"installed": True, "version": version, "sdk_libs": str(libs) if libs else None}
    return status


def local_targets() -> list[str]:
    """Targets this interpreter can attempt: ai_edge_litert's aot backends import and the vendor's SDK package too."""
    try:
        importlib.import_module("ai_edge_litert.aot.aot_compile")
        importlib.import_module("ai_edge_litert.aot.vendors")
    except Exception:
        return []
    out = []
    for name, spec in TARGETS.items():
        try:
            importlib.import_module(spec["sdk"])
        except Exception:
            continue
        out.append(name)
    return out


def _resolve(target: str) -> tuple[str, dict, str]:
    name, _, soc = target.partition(":")
    if name not in TARGETS:
        raise NpuUnavailable(f"unknown NPU target {name!r}; known: {', '.join(TARGETS)} (optionally NAME:SOC)")
    spec = TARGETS[name]
    return name, spec, soc or spec["soc"]


def _target_object(spec: dict, soc: str):
    module = importlib.import_module(f"ai_edge_litert.aot.vendors.{spec['backend']}.target")
    try:
        model = module.SocModel(soc)
    except ValueError:
        known = ", ".join(m.value for m in module.SocModel if m.value != "ALL")
        raise NpuUnavailable(f"SoC {soc!r} is not one of {spec['backend']}'s: {known}") from None
    return module.Target(model)


def compiler_text(message: str) -> str:
    """aot_compile reports a failed apply_plugin as 'See /tmp/x.error for details': read (and remove) that file."""
    match = _ERROR_FILE.search(message)
    if not match:
        return message
    path = Path(match.group(1))
    try:
        text = path.read_text(errors="replace")
        path.unlink()
    except OSError:
        return message
    return f"{message}\n{text}"


def _aot(path: Path, spec: dict, soc: str, out_dir: Path):
    from ai_edge_litert.aot import aot_compile as aot

    target = _target_object(spec, soc)
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
        result = aot.aot_compile(str(path), output_dir=out_dir, target=target, keep_going=True, **spec.get("flags", {}))
    return target, result, noise.getvalue()


def compile_for(path: Path, target: str, out_dir: Path | None = None, run: bool | None = None) -> dict:
    """One AOT compile of `path` for `target` ('qualcomm' or 'qualcomm:SM8750'); the record, never an exception
    for a compiler failure. The compiled file is kept only when out_dir is given."""
    path = Path(path)
    name, spec, soc = _resolve(target)
    rec = {"file": str(path), "input_bytes": path.stat().st_size, "target": name, "soc": soc}
    rec |= {"device": spec["device"], "target_id": None, "compiled": False, "error": None, "detail": None}
    rec |= {"partition_stats": [], **op_split([]), "compiled_bytes": None, "compiled_path": None, "run": None}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vs-npu-") as tmp:
        where = Path(out_dir) if out_dir else Path(tmp)
        try:
            tgt, result, noise = _aot(path, spec, soc, where)
        except NpuUnavailable:
            raise
        except Exception as exc:  # the Python side of aot_compile failed before or around the compiler
            text = f"{type(exc).__name__}: {exc}"
            rec |= {"error": headline(text), "detail": text}
            return rec | {"seconds": round(time.perf_counter() - started, 2)}
        rec["target_id"] = repr(tgt)
        if result.failed_backends:
            text = "\n".join(compiler_text(err) for _, err in result.failed_backends)
            stats = parse_partitions(text)
            rec |= {"error": headline(text), "detail": text, "partition_stats": stats, **op_split(stats)}
        for _, model in result.models_with_backend:
            stats = [
                {
                    "subgraph": s.subgraph_index,
                    "offloaded_ops": s.num_ops_offloaded,
                    "total_ops": s.num_total_ops,
                    "partitions": s.num_partitions_offloaded,
                }
                for s in (model.partition_stats.subgraph_stats if model.partition_stats else [])
            ]
            rec |= {"compiled": True, "partition_stats": stats, **op_split(stats)}
            rec |= {"compiled_bytes": model.path.stat().st_size, "detail": result.compilation_report() + noise}
            rec["compiled_path"] = str(model.path) if out_dir else None
            runs = spec.get("runs_here", False) if run is None else run
            if runs:
                rec["run"] = run_check(model.path, path)
    return rec | {"seconds": round(time.perf_counter() - started, 2)}


def _inputs(details: dict, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for name, d in details.items():
        shape, dtype = d["shape"], np.dtype(d["dtype"])
        out[name] = rng.random(shape).astype(dtype) if dtype.kind == "f" else rng.integers(0, 2, shape).astype(dtype)
    return out


def run_check(compiled: Path, original: Path) -> dict:
    """Load the compiled file with LiteRT's CompiledModel (NPU|CPU), run it once on seeded inputs, and compare
    with the interpreter on the original .tflite: per output, max |diff|, relative L2 error and the share of equal
    signs (for bit logits: the bit agreement)."""
    import numpy as np
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator as Hw
    from ai_edge_litert.interpreter import Interpreter

    try:
        model = CompiledModel.from_file(str(compiled), hardware_accel=Hw.NPU | Hw.CPU)
        key = next(iter(model.get_signature_list()))
        in_det, out_det = model.get_input_tensor_details(key), model.get_output_tensor_details(key)
        feeds = _inputs(in_det)
        ins, outs = model.create_input_buffers(0), model.create_output_buffers(0)
        for name, buf in zip(model.get_signature_list()[key]["inputs"], ins):
            buf.write(feeds[name])
        model.run_by_index(0, ins, outs)
        got = {
            name: buf.read(int(np.prod(out_det[name]["shape"])), np.dtype(out_det[name]["dtype"]))
            for name, buf in zip(model.get_signature_list()[key]["outputs"], outs)
        }
        interp = Interpreter(model_path=str(original))
        interp.allocate_tensors()
        ref = interp.get_signature_runner(key)(**feeds)
    except Exception as exc:
        return {"ran": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
    compare = {}
    for name, value in got.items():
        want = np.asarray(ref[name], dtype=np.float64).ravel()
        have = np.asarray(value, dtype=np.float64).ravel()
        compare[name] = {
            "max_abs_diff": round(float(np.abs(want - have).max()), 6),
            "rel_l2_err": round(float(np.linalg.norm(want - have) / max(np.linalg.norm(want), 1e-12)), 6),
            "sign_agreement": round(float(np.mean(np.sign(want) == np.sign(have))), 4),
        }
    return {"ran": True, "fully_accelerated": bool(model.is_fully_accelerated()), "vs_tflite": compare}


def extra_info() -> dict:
    """What the extra holds: ai_edge_litert's version, each SDK package, and the targets offered."""
    from importlib import metadata

    try:
        litert = metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        litert = None
    return {"ai_edge_litert": litert, "sdks": _sdk_status(), "targets": local_targets(), "python": sys.executable}


# ---------------------------------------------------------------- from the main venv: the child process


def npu_python() -> Path:
    return Path(os.environ.get(NPU_PYTHON_ENV) or NPU_PYTHON)


def _child(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    python = npu_python()
    if not python.exists():
        raise NpuUnavailable(SETUP_HINT)
    env = dict(os.environ, TQDM_DISABLE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [str(python), "-m", "videoseal_tflite.tflite.npu", *args, "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)


def npu_info(timeout: float = 120) -> dict | None:
    """extra_info() from NPU_PYTHON; None when that interpreter is missing or does not answer."""
    try:
        proc = _child(["--list-targets"], timeout)
    except (NpuUnavailable, OSError, subprocess.TimeoutExpired):
        return None
    found = parse_record_line(proc.stdout)
    return found[-1] if proc.returncode == 0 and found else None


def npu_targets() -> list[str]:
    """What the installed extra offers: this interpreter's own targets, else NPU_PYTHON's; [] without the extra."""
    own = local_targets()
    if own:
        return own
    info = npu_info()
    return list(info.get("targets", [])) if info else []


def compile_in_child(paths: list[Path], targets: list[str], timeout: float = 600, run: bool = False) -> list[dict]:
    """compile_for in NPU_PYTHON, for every (path, target); raises NpuUnavailable without the extra."""
    args = [str(Path(p).resolve()) for p in paths]
    for t in targets:
        args += ["--target", t]
    proc = _child(args + (["--run"] if run else []), timeout)
    records = parse_record_line(proc.stdout)
    if proc.returncode == 2:
        raise NpuUnavailable(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else SETUP_HINT)
    if proc.returncode != 0 or not records:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise RuntimeError(f"{npu_python()} -m videoseal_tflite.tflite.npu failed (rc {proc.returncode}): {tail}")
    return records


def npu_block(paths: list[Path], targets: list[str] | None = None) -> dict | None:
    """The report's `npu` block for these .tflite files (the int8 variants); None when the extra is absent.

    Every offered target is tried on every file; `detail` (the compiler's full text) is left out of the block,
    `error` (its one line) stays in."""
    info = npu_info()
    if not info or not info.get("targets"):
        return None
    targets = targets or info["targets"]
    paths = [Path(p) for p in paths]
    if not paths:
        return {"extra": info, "targets": targets, "records": []}
    records = compile_in_child(paths, targets, timeout=300 * len(paths) * len(targets))
    for rec in records:
        rec.pop("detail", None)
    return {
        "check": "LiteRT AOT compile (ai_edge_litert.aot.aot_compile), offline; no NPU hardware ran anything",
        "extra": info,
        "targets": targets,
        "records": records,
    }


def inspect_npu(path: Path, target: str, as_json: bool = False) -> int:
    """`videoseal-tflite inspect FILE --npu TARGET`: the compile record, from NPU_PYTHON. 0 compiled, 1 not;
    NpuUnavailable (exit 2) when the extra is absent or does not offer the target."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelFile(f"{path}: no such file")
    name = target.partition(":")[0]
    if name not in TARGETS:
        raise NpuUnavailable(f"unknown NPU target {name!r}; known: {', '.join(TARGETS)} (optionally NAME:SOC)")
    offered = npu_targets()
    if not offered:
        raise NpuUnavailable(SETUP_HINT)
    if name not in offered:
        raise NpuUnavailable(
            f"NPU target {name!r} is not offered by the installed extra (offered: {', '.join(offered)})"
        )
    rec = compile_in_child([path], [target])[0]
    print(json.dumps(rec, indent=2) if as_json else format_record(rec))
    return 0 if rec["compiled"] else 1


# ---------------------------------------------------------------- python -m videoseal_tflite.tflite.npu


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m videoseal_tflite.tflite.npu", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--target", action="append", default=[], help="NAME or NAME:SOC (repeatable)")
    parser.add_argument("--out", type=Path, help="keep the compiled files here")
    parser.add_argument("--run", action="store_true", help="also run each compiled file here (needs its dispatch)")
    parser.add_argument("--json", action="store_true", help="one JSON line per record")
    parser.add_argument("--list-targets", action="store_true", help="what the installed extra offers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_targets:
        info = extra_info()
        print(json.dumps(info) if args.json else format_info(info))
        return 0
    offered = local_targets()
    if not offered:
        print(SETUP_HINT, file=sys.stderr)
        return 2
    targets = args.target or offered
    for t in targets:
        name = t.partition(":")[0]
        if name not in offered:
            print(f"NPU target {name!r} is not offered by this extra (offered: {', '.join(offered)})", file=sys.stderr)
            return 2
    for path in args.files:
        for t in targets:
            try:
                rec = compile_for(path, t, out_dir=args.out, run=True if args.run else None)
            except NpuUnavailable as exc:
                print(str(exc), file=sys.stderr)
                return 2
            print(json.dumps(rec) if args.json else format_record(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
