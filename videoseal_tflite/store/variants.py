"""The table of variants: the only place a variant's facts live (issue #17).

A row says what a variant is (its name and place in every listing), how it is built (the base recipe key
in `quantize/recipes.BASE_RECIPES`), what it must reach against the FP32 .tflite (the quality bars), which
runtime gives a second opinion on it, how many bytes a weight takes in it, and which repairs may apply.
Every other module reads this table: adding a variant is one row here plus its base recipe.
"""

from __future__ import annotations

import dataclasses

from videoseal_tflite.errors import UnknownVariant


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    name: str
    recipe: str | None  # key in quantize.recipes.BASE_RECIPES; None for the FP32 export itself
    bytes_per_weight: int
    detector_min_bit_agreement: float | None = None  # vs the FP32 .tflite on the check images
    embedder_max_rel_err: float | None = None  # max|w - w_fp32| / max|w_fp32|
    second_opinion: str | None = None  # runtime that must also run it (integer kernels differ per runtime)
    repairs: tuple[str, ...] = ()  # names in quantize.repairs.KNOWN_REPAIRS that may apply, in no order

    @property
    def quantized(self) -> bool:
        return self.recipe is not None


_ALL_INT = ("batch_matmul_float", "full_resolution_float")
VARIANT_TABLE: list[VariantSpec] = [
    VariantSpec("fp32", None, 4),
    VariantSpec("fp16", "fp16", 2, 0.99, 0.01, repairs=("batch_matmul_float",)),
    VariantSpec("weight_only_int8", "weight_only_int8", 1, 0.99, 0.2, repairs=_ALL_INT),
    VariantSpec("dynamic_int8", "dynamic_int8", 1, 0.98, 0.2, second_opinion="tflite", repairs=_ALL_INT),
    VariantSpec(
        "int8",
        "int8",
        1,
        0.98,
        0.2,
        second_opinion="tflite",
        repairs=("float_io", "norm_float_islands", "attention_float", "int8_matmul_only") + _ALL_INT,
    ),
]


def variant_names(quantized_only: bool = False) -> tuple[str, ...]:
    """Every variant in table order (the order of every listing); `quantized_only` drops fp32."""
    return tuple(v.name for v in VARIANT_TABLE if v.quantized or not quantized_only)


def spec(name: str) -> VariantSpec:
    for row in VARIANT_TABLE:
        if row.name == name:
            return row
    raise UnknownVariant(f"unknown variant '{name}'; known: {', '.join(variant_names())}")


def order(name: str) -> int:
    """Position in the table (unknown names last), for sorting."""
    names = variant_names()
    return names.index(name) if name in names else len(names)
