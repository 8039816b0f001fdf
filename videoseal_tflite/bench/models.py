"""`make bench` / `videoseal-tflite bench`: conversion cost, size and latency per variant, beside PyTorch eager.

- Conversion (FP32) and each quantization run in their own child process; wall time and peak RSS come from
  the child itself (`peak_rss.py`: VmHWM after exec, not the rusage a vforked child inherits).
- Latency: LiteRT median / p90 at 1 and 2 threads after warm-up, the variants' timing rounds interleaved so
  that machine drift hits all alike; PyTorch eager latency of the same export wrapper, same threads, same run.
- Size: file bytes against the floor `parameter_count x bytes_per_weight` of the variant (format overhead).
- Scaling: detector FP32 and dynamic_int8 re-exported at 128 / 256 / 512 where the architecture allows
  (a ViT with a fixed absolute position table does not).
Writes `artifacts/bench/<card>.json` and `.md`; the CPU model and load average are recorded.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoseal_tflite.build.cards import load_card
from videoseal_tflite.build.convert.wrappers import export_module, sample_inputs
from videoseal_tflite.build.weights import WeightSource, load_model
from videoseal_tflite.store.artifact import Artifact
from videoseal_tflite.store.atomic import write_text_atomic
from videoseal_tflite.store.manifest import tool_versions
from videoseal_tflite.store.variants import order, spec, variant_names
from videoseal_tflite.tflite.coverage import xnnpack_coverage
from videoseal_tflite.tflite.interpreter import SignatureModel
from videoseal_tflite.tflite.op_profile import profile_ops
from videoseal_tflite.validate import peak_rss


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    """Where a record was measured: date, CPU model, cores, load average (before the run)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def timed_child(command: list[str]) -> dict[str, Any]:
    """Run a command (`cli_command(...)`); wall seconds and the child's own peak RSS (MB, `peak_rss.py`)."""
    start = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith(peak_rss.MARKER)]
    return {"seconds": round(seconds, 2), "peak_rss_mb": peak_rss.parse(proc.stderr), "ok": proc.returncode == 0,
            "error": None if proc.returncode == 0 else (lines or ["?"])[-1][:300]}  # fmt: skip


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "videoseal_tflite.validate.peak_rss", "videoseal_tflite.cli.main", *args]


def _litert_latencies(
    paths: dict[str, Path], inputs: dict[str, dict[str, np.ndarray]], threads: int, invokes: int, rounds: int
) -> dict[str, list[float]]:
    models = {name: SignatureModel(path, threads=threads) for name, path in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(rounds):  # interleaved: drift hits every variant alike
        for name, model in models.items():
            times[name] += model.time_ms(inputs[name], max(1, invokes // rounds), warmup=2 if i == 0 else 0)
    return times


def _torch_latency(module: torch.nn.Module, inputs: dict[str, torch.Tensor], threads: int, invokes: int) -> list[float]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(2):
                module(**inputs)
            out = []
            for _ in range(invokes):
                start = time.perf_counter()
                module(**inputs)
                out.append((time.perf_counter() - start) * 1000)
        return out
    finally:
        torch.set_num_threads(previous)


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(float(np.median(values)), 2),
        "p90": round(float(np.percentile(values, 90)), 2),
        "n": len(values),
    }


def bench_card(
    card_name: str,
    source: WeightSource,
    out_root: Path,
    variants: tuple[str, ...] | None = None,
    invokes: int = 20,
    rounds: int = 4,
    threads: tuple[int, ...] = (1, 2),
    scaling: bool = True,
) -> dict[str, Any]:
    card = load_card(card_name)
    loaded = load_model(card, source)
    variants = variant_names(quantized_only=True) if variants is None else variants
    weight_args = (
        ["--random-init", str(source.random_init_seed)]
        if source.random_init_seed is not None
        else (["--checkpoint", str(source.checkpoint)] if source.checkpoint else [])
    )
    record: dict[str, Any] = {
        "card": card.name,
        "weights": loaded.weights,
        "weights_label": loaded.label or None,
        **machine_facts(),
        "tool_versions": tool_versions(),
        "invokes": invokes,
        "rounds": rounds,
        "parts": {},
    }
    with tempfile.TemporaryDirectory(prefix="vst-bench-") as tmp:
        work = Path(tmp)
        for part in ("embedder", "detector"):
            entry = _build_costs(card, part, work, weight_args, variants)
            record["parts"][part] = entry | _latencies(card, loaded, part, work, invokes, rounds, threads)
        if scaling:
            record["scaling"] = _scaling(card, loaded, work, weight_args, invokes)
    record["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return record


def _build_costs(card, part: str, work: Path, weight_args: list[str], variants: tuple[str, ...]) -> dict[str, Any]:
    """Wall time and peak RSS of the FP32 conversion and of each quantization, one child process each."""
    convert = cli_command(
        "convert", "--card", str(card.path), "--part", part, "--variant", "fp32", "--artifacts", str(work)
    )
    return {
        "convert_fp32": timed_child(convert + weight_args),
        "quantize": {
            v: timed_child(
                cli_command(
                    "quantize", "--card", str(card.path), "--part", part, "--variant", v, "--artifacts", str(work)
                )
            )
            for v in variants
        },
    }


def _latencies(card, loaded, part: str, work: Path, invokes: int, rounds: int, threads: tuple[int, ...]) -> dict:
    """Sizes against the weight floor, LiteRT latency per variant and PyTorch eager latency, per thread count."""
    files = {a.variant: p for a, p in sorted(Artifact.find(work / card.name, part), key=lambda f: order(f[0].variant))}
    wrapper = export_module(loaded.model, part, card.yuv)
    params = sum(p.numel() for p in wrapper.parameters())
    sample = sample_inputs(part, card.img_size, card.nbits, 1)
    np_inputs = {k: v.numpy() for k, v in sample.items()}
    entry: dict[str, Any] = {"parameters": params, "pytorch_eager_ms": {}}
    entry["variants"] = {
        v: {
            "bytes": files[v].stat().st_size,
            "bytes_vs_floor": round(files[v].stat().st_size / (params * spec(v).bytes_per_weight), 3),
            "runtime": "LiteRT CPU",
            "xnnpack": xnnpack_coverage(files[v]).to_json(),
            "op_profile": profile_ops(files[v], threads=2, runs=max(10, invokes)).to_json(top=8),
        }
        for v in files
    }
    for t in threads:
        entry["pytorch_eager_ms"][str(t)] = _stats(_torch_latency(wrapper, sample, t, invokes))
        lat = _litert_latencies(files, {v: np_inputs for v in files}, t, invokes, rounds)
        for v, values in lat.items():
            entry["variants"][v][f"litert_ms_{t}t"] = _stats(values)
    for data in entry["variants"].values():
        for t in threads:
            median = data[f"litert_ms_{t}t"]["median"]
            data[f"ratio_vs_fp32_{t}t"] = round(median / entry["variants"]["fp32"][f"litert_ms_{t}t"]["median"], 3)
            data[f"ratio_vs_pytorch_{t}t"] = round(median / entry["pytorch_eager_ms"][str(t)]["median"], 3)
    return entry


def _scaling(card, loaded, work: Path, weight_args: list[str], invokes: int) -> dict[str, Any]:
    """Detector FP32 and dynamic_int8 latency at 128/256/512 px (2 threads) where the architecture allows."""
    import yaml

    out: dict[str, Any] = {}
    if card.extractor_model.startswith("sam"):
        return {"skipped": "the ViT's absolute position table fixes the input size"}
    for size in (128, 256, 512):
        raw = yaml.safe_load(card.path.read_text())
        raw["args"]["img_size_proc"] = size
        for key in ("img_size", "img_size_extractor"):
            raw["args"].pop(key, None)
        variant_card = work / f"{card.name}_{size}.yaml"
        variant_card.write_text(yaml.safe_dump(raw))
        # weights: same seed / checkpoint; the detector's weights do not depend on the size for ConvNeXt
        conv = timed_child(
            cli_command(
                "convert",
                "--card",
                str(variant_card),
                "--part",
                "detector",
                "--variant",
                "fp32",
                "--variant",
                "dynamic_int8",
                "--artifacts",
                str(work),
                *weight_args,
            )
        )
        files = {art.variant: path for art, path in Artifact.find(work / variant_card.stem, "detector")}
        if not conv["ok"] or "fp32" not in files:
            out[str(size)] = {"error": conv["error"]}
            continue
        image = {"image": np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)}
        lat = _litert_latencies(files, {v: image for v in files}, 2, invokes, 2)
        out[str(size)] = {"pixels": size * size, **{f"{v}_ms": _stats(values)["median"] for v, values in lat.items()}}
    return out


def bench_markdown(record: dict[str, Any]) -> str:
    lines = [
        f"### {record['card']} ({record['weights_label'] or record['weights']})",
        "",
        f"{record['date']}, {record['cpu']} ({record['cores']} cores), load average {record['load_average_before']} -> "
        f"{record['load_average_after']}; LiteRT median of {record['invokes']} invokes in {record['rounds']} "
        "interleaved rounds.",
        "",
        "| part | variant | runtime | delegate (nodes taken) | MB | x floor | ms 1 thread | ms 2 threads | "
        "p90 2 threads | x FP32 (2 threads) | x PyTorch (2 threads) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for part, entry in record["parts"].items():
        for v, d in entry["variants"].items():
            cov = d.get("xnnpack")
            delegate = f"XNNPACK ({cov['xnnpack_nodes']} of {cov['nodes']})" if cov else "XNNPACK (default)"
            lines.append(
                f"| {part} | {v} | LiteRT CPU | {delegate} | {d['bytes'] / 1e6:.2f} | {d['bytes_vs_floor']:.2f} | "
                f"{d['litert_ms_1t']['median']:.1f} | "
                f"{d['litert_ms_2t']['median']:.1f} | {d['litert_ms_2t']['p90']:.1f} | {d['ratio_vs_fp32_2t']:.2f} | "
                f"{d['ratio_vs_pytorch_2t']:.2f} |"
            )
        eager = entry["pytorch_eager_ms"]
        lines.append(
            f"| {part} | - | PyTorch eager | none | - | - | {eager['1']['median']:.1f} | {eager['2']['median']:.1f} | "
            f"{eager['2']['p90']:.1f} | - | 1.00 |"
        )
    lines += ["", "| part | step | wall s | peak RSS MB |", "|---|---|---|---|"]
    for part, entry in record["parts"].items():
        steps = {"convert fp32": entry["convert_fp32"], **{f"quantize {v}": q for v, q in entry["quantize"].items()}}
        for name, cost in steps.items():
            lines.append(f"| {part} | {name} | {cost['seconds']:.1f} | {cost['peak_rss_mb']:.0f} |")
    lines += _profile_markdown(record)
    if "scaling" in record:
        lines += ["", f"Detector scaling (2 threads): {json.dumps(record['scaling'])}"]
    lines += ["", "Targets (issue #8), computed from this record:"] + [f"- {t}" for t in targets(record)]
    return "\n".join(lines) + "\n"


def _profile_markdown(record: dict[str, Any]) -> list[str]:
    """Where each file's time goes, by operator type (LiteRT's own profiler, `validate/op_profile.py`)."""
    lines = [
        "",
        "Where the time goes (LiteRT CompiledModel's own profiler, CPU + XNNPACK, 2 threads; share of the profiled "
        "run, operator types by XNNPACK's names, `[builtin]` = a TFLite node XNNPACK did not take; the profiler adds "
        "its own cost, so the shares matter, the latency above is the number):",
        "",
        "| part | variant | ms per run (profiled) | in operators | top operator types (share, count) |",
        "|---|---|---|---|---|",
    ]
    for part, entry in record["parts"].items():
        for v, d in entry["variants"].items():
            prof = d.get("op_profile")
            if not prof:
                continue
            top = "; ".join(
                f"{r['op']}{' [builtin]' if r['kernel'] == 'builtin' else ''} {r['share'] * 100:.0f} % (x{r['count']})"
                for r in prof["by_type"][:5]
            )
            lines.append(f"| {part} | {v} | {prof['run_ms_median']:.2f} | {prof['op_ms_sum']:.2f} | {top} |")
    return lines


def targets(record: dict[str, Any]) -> list[str]:
    """The benchmark targets, each with met / not met, from the numbers in `record` (2 threads)."""
    out = []
    for part, entry in record["parts"].items():
        ratio = entry["variants"]["fp32"]["ratio_vs_pytorch_2t"]
        out.append(f"{part}: TFLite FP32 <= 1.0x PyTorch eager: {ratio:.2f}x -> {'met' if ratio <= 1.0 else 'NOT met'}")
    detector = record["parts"].get("detector", {}).get("variants", {})
    quantized = {v: d for v, d in detector.items() if v != "fp32"}
    if quantized:
        best = min(quantized, key=lambda v: quantized[v]["ratio_vs_fp32_2t"])
        ratio = quantized[best]["ratio_vs_fp32_2t"]
        out.append(
            f"fastest detector variant ({best}) <= 0.2x FP32: {ratio:.2f}x -> {'met' if ratio <= 0.2 else 'NOT met'} "
            "(its bit accuracy is in the card's report.md)"
        )
    total = sum(
        e["convert_fp32"]["seconds"] + sum(q["seconds"] for q in e["quantize"].values())
        for e in record["parts"].values()
    )
    out.append(
        f"convert + every quantization of both parts, one process each: {total / 60:.1f} min -> "
        f"{'met' if total <= 300 else 'NOT met'} (target <= 5 min)"
    )
    return out


def write_bench(record: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{record['card']}.json", out_dir / f"{record['card']}.md"
    write_text_atomic(json_path, json.dumps(record, indent=2) + "\n")
    write_text_atomic(md_path, bench_markdown(record))
    return [json_path, md_path]
