"""Full-int8 op mixes: which ops to leave in float so that full int8 is accurate *and* fast.

For one card and part (FP32 .tflite already under --artifacts), builds the full-int8 variant with each mix
of float islands and each calibration range, checks it against FP32 on the 16 evaluation images (the same
check set as the repair loop), times it on LiteRT (2 threads, median of 20 invokes after 2 warm-ups, in a
child process) and writes `artifacts/bench/int8_mixes_<card>_<part>.json` + `.md`:

    .venv/bin/python experiments/int8_mixes.py --card videoseal_0.0 --part detector
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from videoseal_tflite.build.cards import load_card
from videoseal_tflite.build.pipeline import calibration_feeds, check_set
from videoseal_tflite.build.quantize.recipes import base_recipe, keep_float
from videoseal_tflite.build.quantize.repairs import ELEMENTWISE_OPS, NORM_OPS
from videoseal_tflite.build.quantize.variant import calibrate_min_max, compare, quantize_bytes
from videoseal_tflite.store.artifact import Artifact
from videoseal_tflite.store.atomic import write_text_atomic
from videoseal_tflite.tflite.load_check import run_isolated

# name -> ops kept float on top of full int8 (float I/O always)
MIXES: dict[str, list[str]] = {
    "int8 (float I/O only)": [],
    "norm islands": NORM_OPS,
    "norm + SOFTMAX": NORM_OPS + ["SOFTMAX"],
    "norm + GELU": NORM_OPS + ["GELU"],
    "norm + BATCH_MATMUL": NORM_OPS + ["BATCH_MATMUL"],
    "norm + SOFTMAX + GELU + BATCH_MATMUL": NORM_OPS + ["SOFTMAX", "GELU", "BATCH_MATMUL"],
    "int8 CONV/FC/BATCH_MATMUL only": ELEMENTWISE_OPS,
    "int8 CONV/FC only": ELEMENTWISE_OPS + ["BATCH_MATMUL"],
}
RANGES = ("moving_average", "min_max")
# name -> (ops kept float, ops given 16-bit activations with int8 weights: "a16w8"); min-max ranges only.
# Accurate, but LiteRT runs 16x8 CONV/FC on reference kernels (no XNNPACK path): measured, not adopted.
A16W8_MIXES: dict[str, tuple[list[str], list[str]]] = {
    "int8 CONV/FC only, a16w8 CONV/FC": (ELEMENTWISE_OPS + ["BATCH_MATMUL"], ["CONV_2D", "FULLY_CONNECTED"]),
}


def a16w8(operations: list[str]) -> list:
    """Rules giving `operations` int16 (symmetric, per-tensor) activations and int8 per-channel weights."""
    rule = base_recipe("int8")[0]  # the full-int8 rule, with activations widened to 16 bits
    rule["op_config"]["activation_tensor_config"] = {
        "num_bits": 16,
        "symmetric": True,
        "granularity": "TENSORWISE",
        "dtype": "INT",
    }
    return [{**rule, "operation": op} for op in operations]


def _latency(path: Path, feed: dict, repeats: int = 20) -> float | None:
    timing: list[float] = []
    result, _ = run_isolated(path, [feed], repeats=repeats, timing=timing)
    return statistics.median(timing) if result.loads and timing else None


def explore(card_name: str, part: str, artifacts: Path) -> dict:
    card = load_card(card_name)
    out_dir = artifacts / card.name
    fp32 = [p for a, p in Artifact.find(out_dir, part, "fp32") if a.size == card.img_size][0]
    checks = check_set(card, out_dir, part, fp32)
    calibration = calibration_feeds(card, part)
    rows = [
        {
            "mix": "fp32",
            "range": None,
            "float_ops": None,
            "bytes": fp32.stat().st_size,
            "ms_2t": _latency(fp32, checks.inputs[0]),
            "loads": True,
        }
    ]
    qsv_cache: dict[str, dict] = {}
    steps = [(name, rng) for rng in RANGES for name in MIXES] + [(name, "min_max") for name in A16W8_MIXES]
    with tempfile.TemporaryDirectory(prefix="vst-mix-") as tmp:
        for name, rng in tqdm(steps, desc=f"int8 mixes {card.name} {part}", unit="mix"):
            float_ops, int16_ops = A16W8_MIXES.get(name, (MIXES.get(name), []))
            recipe = base_recipe("int8") + keep_float(["INPUT", "OUTPUT"]) + keep_float(float_ops) + a16w8(int16_ops)
            row = {"mix": name, "range": rng, "float_ops": float_ops, "int16_activation_ops": int16_ops}
            start = time.perf_counter()
            try:
                if rng == "min_max":
                    data = quantize_bytes(
                        fp32,
                        recipe,
                        calibration,
                        {"qsv": qsv_cache.setdefault(name, calibrate_min_max(fp32, recipe, calibration))},
                    )
                else:
                    data = _legacy_moving_average(fp32, recipe, calibration)
            except Exception as exc:  # a mix the quantizer refuses is a result too
                rows.append({**row, "loads": False, "error": " ".join(str(exc).split())[:300]})
                continue
            path = Path(tmp) / "model.tflite"
            path.write_bytes(data)
            result, outputs = run_isolated(path, checks.inputs)
            row.update(bytes=len(data), build_s=round(time.perf_counter() - start, 1), loads=result.loads)
            if not result.loads:
                rows.append({**row, "error": result.error})
                continue
            agreement = compare(part, outputs, checks.fp32_outputs)
            row.update(
                bit_agreement=agreement.bit_agreement,
                watermark_rel_err=agreement.watermark_rel_err,
                watermark_corr=agreement.watermark_corr,
                ms_2t=_latency(path, checks.inputs[0], repeats=3 if int16_ops else 20),
            )
            rows.append(row)
    fp32_ms = rows[0]["ms_2t"]
    for row in rows:
        if row.get("ms_2t") and fp32_ms:
            row["x_fp32_latency"] = round(row["ms_2t"] / fp32_ms, 3)
    return {
        "card": card.name,
        "part": part,
        "fp32": str(fp32),
        "images": len(checks.inputs),
        "machine": f"{platform.processor() or platform.machine()}, threads 2",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }


def _legacy_moving_average(fp32: Path, recipe: list, calibration: list) -> bytes:
    """ai-edge-quantizer's own calibrate() (moving-average ranges), for comparison."""
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(str(fp32))
    q.load_quantization_recipe(recipe)
    qsv = q.calibrate({"serving_default": calibration}, num_threads=2)
    return bytes(q.quantize(qsv).quantized_model)


def markdown(record: dict) -> str:
    metric = "bit agreement" if record["part"] == "detector" else "watermark rel. err (corr)"
    lines = [
        f"# Full-int8 op mixes: {record['card']} {record['part']}",
        "",
        f"{record['date']}, {record['machine']}; {record['images']} evaluation images vs the FP32 .tflite; "
        "latency: LiteRT median of 20 invokes (3 for a16w8), 2 threads.",
        "",
        f"| mix (ops kept float) | calibration range | MB | {metric} | ms | x FP32 |",
        "|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        if not row.get("loads"):
            lines.append(f"| {row['mix']} | {row['range']} | - | failed: {row.get('error', '')[:120]} | - | - |")
            continue
        if row["mix"] == "fp32":
            value = "-"
        elif row.get("bit_agreement") is not None:
            value = f"{row['bit_agreement']:.4f}"
        else:
            value = f"{row['watermark_rel_err']:.3f} ({row['watermark_corr']:.3f})"
        ms = f"{row['ms_2t']:.2f}" if row.get("ms_2t") else "-"
        lines.append(
            f"| {row['mix']} | {row['range'] or '-'} | {row['bytes'] / 1e6:.2f} | {value} | {ms} | "
            f"{row.get('x_fp32_latency', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", required=True)
    parser.add_argument("--part", choices=("embedder", "detector"), required=True)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args()
    record = explore(args.card, args.part, args.artifacts)
    stem = args.artifacts / "bench" / f"int8_mixes_{load_card(args.card).name}_{args.part}"
    write_text_atomic(stem.parent / f"{stem.name}.json", json.dumps(record, indent=2) + "\n")
    write_text_atomic(stem.parent / f"{stem.name}.md", markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
