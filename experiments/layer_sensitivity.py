"""Which layer's quantization costs the most? For one card, part and variant, rebuild the variant with one weight
op (CONV_2D / TRANSPOSE_CONV / FULLY_CONNECTED / DEPTHWISE_CONV_2D) at a time left in float, and measure the
number the quality bar uses (embedder: watermark relative error; detector: bit agreement) against FP32 on the
16 evaluation images. Writes `artifacts/bench/sensitivity_<card>_<part>_<variant>.json` + `.md`:

    .venv/bin/python experiments/layer_sensitivity.py --card videoseal_0.0 --part embedder --variant dynamic_int8

With `--on-built` the starting point is the built variant's own recipe (its repairs included, read from the
file's metadata) instead of the base recipe; the record is then `sensitivity_<card>_<part>_<variant>_built.*`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from videoseal_tflite.build.cards import load_card
from videoseal_tflite.build.pipeline import calibration_feeds, check_set
from videoseal_tflite.build.quantize.recipes import base_recipe, keep_float
from videoseal_tflite.build.quantize.repairs import WEIGHT_OPS, scope_regex
from videoseal_tflite.build.quantize.variant import compare, quantize_bytes
from videoseal_tflite.store.artifact import Artifact
from videoseal_tflite.store.atomic import write_text_atomic
from videoseal_tflite.tflite.inspect import inspect_model
from videoseal_tflite.tflite.load_check import run_isolated
from videoseal_tflite.tflite.metadata import read_metadata

TOP_K = (2, 3, 5, 8, 12)


def weight_ops(fp32: Path) -> list[tuple[int, str, str]]:
    """(node, op, scope regex) of every weight op; the regex matches that op's output tensor name only."""
    ops = inspect_model(fp32, load=False).to_json(with_ops=True)["ops"]
    return [(o["node"], o["op"], scope_regex(o["source"])) for o in ops if o["op"] in WEIGHT_OPS]


def _metric(part: str, agreement) -> float:
    return agreement.bit_agreement if part == "detector" else agreement.watermark_rel_err


def scan(card_name: str, part: str, variant: str, artifacts: Path, on_built: bool = False) -> dict:
    card = load_card(card_name)
    out_dir = artifacts / card.name
    fp32 = [p for a, p in Artifact.find(out_dir, part, "fp32") if a.size == card.img_size][0]
    checks = check_set(card, out_dir, part, fp32)
    calibration = calibration_feeds(card, part) if variant == "int8" else None
    if on_built:
        built = [p for a, p in Artifact.find(out_dir, part, variant) if a.size == card.img_size]
        meta = read_metadata(built[0].read_bytes()) if built else None
        if not meta:
            raise SystemExit(
                f"no built {part} {variant} with metadata under {out_dir}: run `videoseal-tflite quantize` first"
            )
        base, repairs = meta["recipe"], meta.get("repairs_applied", [])
    else:
        base, repairs = base_recipe(variant) + (keep_float(["INPUT", "OUTPUT"]) if variant == "int8" else []), []
    cache: dict = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="vst-sens-") as tmp:
        path = Path(tmp) / "model.tflite"

        def measure(recipe) -> float | None:
            path.write_bytes(quantize_bytes(fp32, recipe, calibration, cache))
            result, outputs = run_isolated(path, checks.inputs)
            return _metric(part, compare(part, outputs, checks.fp32_outputs)) if result.loads else None

        baseline = measure(base)
        rules = {}
        for node, op, regex in tqdm(weight_ops(fp32), desc=f"sensitivity {card.name} {part} {variant}", unit="op"):
            rules[node] = {"regex": regex, "operation": "*", "algorithm_key": "no_quantize"}
            rows.append(
                {
                    "node": node,
                    "op": op,
                    "scope": regex[1:-2].replace("\\", "")[-160:],
                    "metric_with_this_op_float": measure(base + [rules[node]]),
                }
            )
        better = (lambda m: -m) if part == "detector" else (lambda m: m)
        rows.sort(
            key=lambda r: better(r["metric_with_this_op_float"]) if r["metric_with_this_op_float"] is not None else 1e9
        )
        # do the single-op gains add up? keep the k best ops float together
        top_k = [
            {"k": k, "metric": measure(base + [rules[r["node"]] for r in rows[:k]])}
            for k in tqdm(TOP_K, desc="top-k together", unit="k")
            if k <= len(rows)
        ]
    return {
        "card": card.name,
        "part": part,
        "variant": variant,
        "on_built": on_built,
        "repairs": repairs,
        "metric": "bit_agreement" if part == "detector" else "watermark_rel_err",
        "baseline": baseline,
        "top_k": top_k,
        "images": len(checks.inputs),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }


def markdown(record: dict) -> str:
    lines = [
        f"# Layer sensitivity: {record['card']} {record['part']} {record['variant']}",
        "",
        f"{record['date']}; {record['images']} evaluation images vs the FP32 .tflite; {record['metric']} with "
        + (
            f"the built recipe (repairs: {', '.join(_names(record['repairs'])) or 'none'}): "
            if record.get("on_built")
            else "every op quantized: "
        )
        + f"{record['baseline']:.4f}. Best first.",
        "",
        f"| node | op | {record['metric']} with this op float | scope (tail) |",
        "|---|---|---|---|",
    ]
    for row in record["rows"]:
        value = row["metric_with_this_op_float"]
        lines.append(
            f"| {row['node']} | {row['op']} | {value:.4f} | `{row['scope'][-90:]}` |"
            if value is not None
            else f"| {row['node']} | {row['op']} | does not run | `{row['scope'][-90:]}` |"
        )
    if record.get("top_k"):
        lines += [
            "",
            "The k best ops kept float together: "
            + ", ".join(
                f"k={t['k']}: {t['metric']:.4f}" if t["metric"] is not None else f"k={t['k']}: does not run"
                for t in record["top_k"]
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def _names(repairs: list) -> list[str]:
    """The repairs' names: a file's metadata lists each repair as a record ({"name", "what", "why", ...})."""
    return [r if isinstance(r, str) else r["name"] for r in repairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", required=True)
    parser.add_argument("--part", choices=("embedder", "detector"), required=True)
    parser.add_argument("--variant", choices=("weight_only_int8", "dynamic_int8", "int8"), required=True)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument(
        "--on-built", action="store_true", help="start from the built variant's recipe (with its repairs)"
    )
    args = parser.parse_args()
    record = scan(args.card, args.part, args.variant, args.artifacts, args.on_built)
    stem = f"sensitivity_{record['card']}_{args.part}_{args.variant}" + ("_built" if args.on_built else "")
    write_text_atomic(args.artifacts / "bench" / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    write_text_atomic(args.artifacts / "bench" / f"{stem}.md", markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
