"""Known failures of quantized LiteRT models and the recipe rules that repair them (data, not code paths).

Each repair names the failure text it recognises (the runtime's own words, or our check's), the rules it
appends to the recipe, what it changes and why. The build loop in `build.py` applies them in order.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

from videoseal_tflite.build.quantize.recipes import Rule, keep_float

# Ops of RMSNorm (x / max(||x||, eps)), LayerNorm (mean / squared difference / rsqrt) and ConvNeXt's GRN
NORM_OPS = ["DIV", "SQRT", "RSQRT", "SUM", "MEAN", "SQUARED_DIFFERENCE", "MAXIMUM"]
# Everything but the weight-heavy ops: int8 stays where the MACs and the bytes are
ELEMENTWISE_OPS = NORM_OPS + [
    "ADD",
    "SUB",
    "MUL",
    "LOGISTIC",
    "TANH",
    "GELU",
    "SOFTMAX",
    "CONCATENATION",
    "RESIZE_BILINEAR",
    "PAD",
    "MIRROR_PAD",
    "TRANSPOSE",
    "RESHAPE",
    "SLICE",
    "STRIDED_SLICE",
    "POW",
    "LESS_EQUAL",
    "SELECT",
    "SELECT_V2",
    "MINIMUM",
]


@dataclasses.dataclass(frozen=True)
class Repair:
    name: str
    triggers: tuple[str, ...]  # any of these substrings in the failure text selects this repair
    rules: tuple[Rule, ...]
    what: str
    why: str
    # rules that depend on the model's graph (e.g. which layers run at full resolution); the concrete rules
    # land in the recipe, so the saved recipe still says exactly what was built
    rules_for_model: Callable[[Path], list[Rule]] | None = None

    def rules_for(self, fp32_path: Path) -> list[Rule]:
        return list(self.rules) + (self.rules_for_model(fp32_path) if self.rules_for_model else [])


WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")


def scope_regex(tensor_name: str) -> str:
    """ai-edge-quantizer's scope of an op: its output tensor names joined by ';' plus a trailing ';'."""
    return "^" + re.escape(tensor_name + ";") + "$"


def full_resolution_rules(fp32_path: Path) -> list[Rule]:
    """Keep float every weight op whose output has the model input's height and width."""
    from videoseal_tflite.tflite.inspect import inspect_model

    inspection = inspect_model(fp32_path, load=False)
    image = next((i for i in inspection.inputs if i.get("signature_name") == "image"), None)
    if image is None:
        return []
    size = tuple(image["shape"][-2:])  # the input is NCHW
    return [
        {"regex": scope_regex(op.outputs[0].name), "operation": op.op, "algorithm_key": "no_quantize"}
        for op in inspection.ops
        if op.op in WEIGHT_OPS
        and op.outputs
        and len(op.outputs[0].shape) == 4
        and tuple(op.outputs[0].shape[1:3]) == size
    ]


KNOWN_REPAIRS: tuple[Repair, ...] = (
    Repair(
        name="float_io",
        triggers=("Cannot set tensor: Got value of type FLOAT32 but expected type INT8",),
        rules=tuple(keep_float(["INPUT", "OUTPUT"])),
        what="model inputs and outputs kept float32, with QUANTIZE/DEQUANTIZE at the edges",
        why="full-integer quantization made the interface int8, so float images and messages are rejected",
    ),
    Repair(
        name="batch_matmul_float",
        triggers=("(BATCH_MATMUL) failed to prepare", "batch_matmul_dtypes"),
        rules=tuple(keep_float(["BATCH_MATMUL"])),
        what="BATCH_MATMUL ops left out of the quantization rules (float32)",
        why="the recipe quantized one operand of an attention matmul but not the other; "
        "the kernel rejects int8 x float32",
    ),
    Repair(
        name="norm_float_islands",
        triggers=(
            "(DIV) failed to invoke",
            "quantized_div",
            "output differs from FP32",
            "output below the quality bar",
        ),
        rules=tuple(keep_float(NORM_OPS)),
        what=f"normalisation ops ({', '.join(NORM_OPS)}) kept float32 as mixed-precision islands",
        why="RMSNorm / LayerNorm / GRN divide by a norm that int8 rounds to zero or saturates",
    ),
    Repair(
        name="attention_float",
        triggers=("slow_int8_batch_matmul",),
        rules=tuple(keep_float(["BATCH_MATMUL", "SOFTMAX", "GELU"])),
        what="attention (BATCH_MATMUL, SOFTMAX) and GELU kept float32; convolutions and FULLY_CONNECTED stay int8",
        why="XNNPACK has no int8 BATCH_MATMUL kernel: int8 attention runs on the reference kernel and made full int8 "
        "slower than FP32 (videoseal_0.0 detector 2.4x FP32; with this mix 0.44x at 0.9935 bit agreement, "
        "artifacts/bench/int8_mixes_videoseal_0.0_detector.md)",
    ),
    Repair(
        name="full_resolution_float",
        triggers=("output below the quality bar",),
        rules=(),
        rules_for_model=full_resolution_rules,
        what="the weight ops that run at the input's full resolution (the UNet's input block, last up block and "
        "output conv) kept float32",
        why="they see the image itself and draw the watermark's finest detail, and hold under 1 % of the weights "
        "(size unchanged); measured on the 0.0 embedder (random-init): dynamic int8 watermark rel. err "
        "0.251 -> 0.150 (scripts/layer_sensitivity.py ranks these layers first)",
    ),
    Repair(
        name="int8_matmul_only",
        triggers=("output differs from FP32", "output below the quality bar"),
        rules=tuple(keep_float(ELEMENTWISE_OPS)),
        what="only CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / BATCH_MATMUL stay int8; every other op runs float32",
        why="per-tensor int8 activations through the remaining elementwise chain (norms, gates, skips) lose the signal",
    ),
)


def find_repair(
    failure: str, variant: str, already: set[str], fp32_path: Path | None = None
) -> tuple[Repair, list[Rule]] | None:
    """The first known repair for this failure that has rules for this model, with those rules."""
    from videoseal_tflite.store.variants import spec

    allowed = spec(variant).repairs  # which repairs apply to a variant is a fact of the variants table
    for repair in KNOWN_REPAIRS:
        if repair.name in already or repair.name not in allowed:
            continue
        if any(trigger in failure for trigger in repair.triggers):
            rules = repair.rules_for(fp32_path) if fp32_path is not None else list(repair.rules)
            if rules:
                return repair, rules
    return None
