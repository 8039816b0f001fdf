"""Quantization recipes as data: ai-edge-quantizer's JSON rule lists, and the repair rules we add to them.

A rule is `{regex, operation, algorithm_key, op_config}`; later rules win over earlier ones for the ops
they match (ai-edge-quantizer's recipe manager), so a repair is a rule appended to the base recipe.
"""

from __future__ import annotations

import copy
from typing import Any

Rule = dict[str, Any]

_INT8_WEIGHTS = {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE", "dtype": "INT"}

BASE_RECIPES: dict[str, list[Rule]] = {
    # float16 weights, explicitly dequantized; compute stays float32
    "fp16": [
        {
            "regex": ".*",
            "operation": "*",
            "algorithm_key": "float_casting",
            "op_config": {
                "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                "compute_precision": "FLOAT",
                "explicit_dequantize": True,
            },
        }
    ],
    # == ai_edge_quantizer.recipe.weight_only_wi8_afp32()
    "weight_only_int8": [
        {
            "regex": ".*",
            "operation": "*",
            "algorithm_key": "min_max_uniform_quantize",
            "op_config": {
                "weight_tensor_config": dict(_INT8_WEIGHTS),
                "compute_precision": "FLOAT",
                "explicit_dequantize": True,
                "skip_checks": False,
                "min_weight_elements": 0,
            },
        }
    ],
    # == ai_edge_quantizer.recipe.dynamic_wi8_afp32(): int8 weights, activations quantized on the fly; but depthwise
    # convs stay float: XNNPACK has no kernel for a hybrid DEPTHWISE_CONV_2D, which then runs on the built-in one
    # (the 1.0 detector's 7x7 depthwise convs: 25 ms of its 50, against 6 ms float; their weights are < 1 % of it)
    "dynamic_int8": [
        {
            "regex": ".*",
            "operation": "*",
            "algorithm_key": "min_max_uniform_quantize",
            "op_config": {
                "weight_tensor_config": dict(_INT8_WEIGHTS),
                "compute_precision": "INTEGER",
                "explicit_dequantize": False,
                "skip_checks": False,
                "min_weight_elements": 0,
            },
        },
        {"regex": ".*", "operation": "DEPTHWISE_CONV_2D", "algorithm_key": "no_quantize"},
    ],
    # == ai_edge_quantizer.recipe.static_wi8_ai8(): int8 weights and calibrated int8 activations
    "int8": [
        {
            "regex": ".*",
            "operation": "*",
            "algorithm_key": "min_max_uniform_quantize",
            "op_config": {
                "activation_tensor_config": {
                    "num_bits": 8,
                    "symmetric": False,
                    "granularity": "TENSORWISE",
                    "dtype": "INT",
                },
                "weight_tensor_config": dict(_INT8_WEIGHTS),
                "compute_precision": "INTEGER",
                "explicit_dequantize": False,
                "skip_checks": False,
                "min_weight_elements": 0,
            },
        }
    ],
}


def keep_float(operations: list[str]) -> list[Rule]:
    """Rules that leave `operations` (TFLite op names, or INPUT/OUTPUT for the model interface) in float."""
    return [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"} for op in operations]


def base_recipe(variant: str) -> list[Rule]:
    """The variant's base recipe (`variants.VariantSpec.recipe` names it), a fresh copy."""
    from videoseal_tflite.store.variants import spec

    key = spec(variant).recipe
    if key is None:
        raise KeyError(f"{variant} is not a quantized variant")
    return copy.deepcopy(BASE_RECIPES[key])
