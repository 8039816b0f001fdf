"""FLOAT32 .tflite -> one quantized variant, checked and repaired until it loads, runs and agrees with FP32.

Loop: build with the recipe -> static inspection + run on check images in a child process -> if it fails
with a known failure, append that repair's rules, rebuild, re-check. Each step is recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..tflite_metadata import io_quantization, read_metadata, with_metadata
from ..validate.inspect_model import SLOW_INT8_BATCH_MATMUL, inspect_model
from ..validate.load_check import run_isolated
from .recipes import Rule, base_recipe
from .repairs import find_repair

log = logging.getLogger(__name__)

# Sanity floors in the repair loop: below these the variant computes something else, not a rounding of FP32
# (embedders: correlation of the watermark with FP32's; the max-based relative error is no floor: a trained
# embedder's tanh output is nearly binary, so one flipped pixel at a tile edge gives ~2 while the rest agree)
MIN_BIT_AGREEMENT = 0.9
MIN_WATERMARK_CORR = 0.9
# Quality bars vs the FP32 .tflite (issue #3). A variant that loads but misses its bar gets the next
# applicable repair, kept only if it improves the number.
DETECTOR_MIN_BIT_AGREEMENT = {"fp16": 0.99, "weight_only_int8": 0.99, "dynamic_int8": 0.98, "int8": 0.98}
EMBEDDER_MAX_REL_ERR = {"fp16": 0.01, "weight_only_int8": 0.2, "dynamic_int8": 0.2, "int8": 0.2}
BELOW_BAR = "output below the quality bar vs FP32"


@dataclasses.dataclass(frozen=True)
class RepairRecord:
    name: str
    what: str
    why: str
    removed_error: str


@dataclasses.dataclass(frozen=True)
class Agreement:
    """Variant vs the FP32 .tflite on the check images. Detector: bit agreement; embedder: watermark error."""

    images: int
    max_abs_diff: float
    bit_agreement: float | None = None
    watermark_rel_err: float | None = None  # max|dq - dref| / max|dref| (issue #3's bar)
    watermark_corr: float | None = None  # Pearson correlation of the watermark with FP32's (sanity floor)


@dataclasses.dataclass(frozen=True)
class VariantResult:
    part: str
    variant: str
    status: str  # ok | repaired | failed
    path: Path | None
    recipe: list[Rule]
    repairs_applied: list[RepairRecord]
    error: str | None
    agreement: Agreement | None
    sha256: str | None
    bytes: int | None
    build_seconds: float
    attempts: int
    repairs_rejected: list[dict] = dataclasses.field(default_factory=list)  # tried, undone: did not help
    io_quantization: dict[str, dict] = dataclasses.field(default_factory=dict)  # int8 I/O: scale, zero point
    input_hash: str | None = None  # what it was built from (see staleness.py)
    reused: bool = False  # up to date from an earlier run

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["path"] = str(self.path) if self.path else None
        out.pop("reused")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VariantResult":
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        return cls(**{**data, "path": Path(data["path"]) if data.get("path") else None,
                      "repairs_applied": [RepairRecord(**r) for r in data.get("repairs_applied", [])],
                      "agreement": Agreement(**data["agreement"]) if data.get("agreement") else None,
                      "reused": True})


@dataclasses.dataclass(frozen=True)
class CheckSet:
    """Inputs the loop runs every build on, and the FP32 model's outputs for them."""

    inputs: list[dict[str, np.ndarray]]
    fp32_outputs: list[dict[str, np.ndarray]]


def make_check_set(fp32_path: Path, inputs: list[dict[str, np.ndarray]]) -> CheckSet:
    result, outputs = run_isolated(fp32_path, inputs)
    if not result.loads:
        raise RuntimeError(f"the FP32 model {fp32_path} does not run: {result.error}")
    return CheckSet(inputs, outputs)


def compare(part: str, outputs: list[dict[str, np.ndarray]], reference: list[dict[str, np.ndarray]]) -> Agreement:
    key = "bit_logits" if part == "detector" else "watermark"
    got = np.stack([o[key] for o in outputs])
    ref = np.stack([r[key] for r in reference])
    diff = float(np.abs(got - ref).max())
    if part == "detector":
        return Agreement(len(outputs), diff, bit_agreement=float(((got > 0) == (ref > 0)).mean()))
    corr = float(np.corrcoef(got.ravel().astype(np.float64), ref.ravel().astype(np.float64))[0, 1])
    return Agreement(len(outputs), diff, watermark_rel_err=diff / max(float(np.abs(ref).max()), 1e-12),
                     watermark_corr=corr if np.isfinite(corr) else 0.0)


def quality_gap(variant: str, agreement: Agreement) -> float:
    """How far the variant is from its bar (<= 0: meets it). Same scale for both parts: larger is worse."""
    if agreement.bit_agreement is not None:
        return DETECTOR_MIN_BIT_AGREEMENT[variant] - agreement.bit_agreement
    return agreement.watermark_rel_err - EMBEDDER_MAX_REL_ERR[variant]


# How activation ranges are gathered over the calibration set. ai-edge-quantizer's default is a moving
# average (0.95) of per-image min/max, which shrinks every range below what the set contains (the image
# input came out as [0, 0.95]: brighter pixels clip). The union of the ranges keeps every calibrated value
# representable; measured on 16 evaluation images (random-init): videoseal_0.0 int8 detector bit agreement
# 0.968 -> 0.991, videoseal_1.0 int8 embedder watermark rel. err 0.487 -> 0.080 (scripts/int8_mixes.py).
CALIBRATION_RANGE = "min_max"


def calibrate_min_max(fp32_path: Path, recipe: list[Rule], calibration: list[dict[str, np.ndarray]]) -> dict:
    """Activation ranges (QSVs) = union over the calibration set of each tensor's min and max."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(str(fp32_path), num_threads=2, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate({"serving_default": calibration}, manager)
    return calib.get_model_qsvs()


def _quantize_bytes(fp32_path: Path, recipe: list[Rule], calibration: list[dict[str, np.ndarray]] | None,
                    calibration_cache: dict) -> bytes:
    from ai_edge_quantizer import quantizer

    q = quantizer.Quantizer(str(fp32_path))
    q.load_quantization_recipe(recipe)
    qsv = None
    if q.need_calibration:
        if not calibration:
            raise ValueError("this recipe needs calibration data")
        # one calibration per float model; repairs only change which ops consume it
        if "qsv" not in calibration_cache:
            calibration_cache["qsv"] = calibrate_min_max(fp32_path, recipe, calibration)
        qsv = calibration_cache["qsv"]
    return bytes(q.quantize(qsv).quantized_model)


# Variants whose kernels differ from FP32's: integer kernels are implemented separately in each runtime
# (the compact int8 detector runs on LiteRT but stops on tf.lite 2.21 at a DIV), so they get a second opinion.
SECOND_OPINION_VARIANTS = ("dynamic_int8", "int8")
SECOND_OPINION_RUNTIME = "tflite"


def _noise_like(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Uniform noise image (and random bits): the input on which tf.lite's int8 DIV was seen to stop."""
    rng = np.random.default_rng(0)
    return {k: (rng.integers(0, 2, v.shape) if k == "message" else rng.random(v.shape)).astype(v.dtype)
            for k, v in feed.items()}


def _check(path: Path, part: str, checks: CheckSet, convert_io: bool,
           variant: str = "", repaired_for_speed: bool = False) -> tuple[str | None, Agreement | None]:
    """The failure text (runtime's own words first), or None, plus agreement with FP32 when it ran."""
    static = inspect_model(path, load=False)
    result, outputs = run_isolated(path, checks.inputs, convert_io=convert_io)
    if not result.loads:
        return result.error, None
    if variant in SECOND_OPINION_VARIANTS:
        second, _ = run_isolated(path, checks.inputs[:2] + [_noise_like(checks.inputs[0])],
                                 runtime=SECOND_OPINION_RUNTIME, convert_io=convert_io)
        if not second.loads:
            return f"on {SECOND_OPINION_RUNTIME}: {second.error}", None
    agreement = compare(part, outputs, checks.fp32_outputs)
    if agreement.bit_agreement is not None and agreement.bit_agreement < MIN_BIT_AGREEMENT:
        return f"output differs from FP32: bit agreement {agreement.bit_agreement:.3f} < {MIN_BIT_AGREEMENT}", agreement
    if agreement.watermark_corr is not None and agreement.watermark_corr < MIN_WATERMARK_CORR:
        return (f"output differs from FP32: watermark correlation {agreement.watermark_corr:.3f} < {MIN_WATERMARK_CORR} "
                f"(relative error {agreement.watermark_rel_err:.3f})"), agreement
    errors = static.errors
    if errors:  # ran anyway, but the static check knows this pattern fails elsewhere
        return f"{errors[0].kind}: {errors[0].detail}", agreement
    slow = [f for f in static.flags if f.kind == SLOW_INT8_BATCH_MATMUL]
    if variant == "int8" and slow and not repaired_for_speed:  # works, but slower than FP32: worth one repair
        return f"{slow[0].kind}: {len(slow)} ops, e.g. node {slow[0].node}: {slow[0].detail}", agreement
    return None, agreement


def quantize_variant(
    fp32_path: Path,
    variant: str,
    target: Path,
    checks: CheckSet,
    calibration: list[dict[str, np.ndarray]] | None = None,
    repair: bool = True,
    int8_io: bool = False,
) -> VariantResult:
    """Build `variant` of `fp32_path` into `target` (atomically). With `repair=False` the naive recipe's file
    is kept even when it fails, so the failure can be shown; with repairs, a failed variant leaves no file."""
    fp32_path, target = Path(fp32_path), Path(target)
    meta = read_metadata(fp32_path.read_bytes()) or {}
    part = meta.get("part") or ("detector" if "detector" in fp32_path.name else "embedder")
    recipe = base_recipe(variant)
    repairs: list[RepairRecord] = []
    rejected: list[dict] = []
    cache: dict = {}
    start = time.perf_counter()
    attempts = 0
    with atomic_path(target) as tmp:
        best: tuple[bytes, Agreement, list[Rule]] | None = None  # last build that met the sanity floors
        io: dict[str, dict] = {}
        skip: set[str] = set()  # quality repairs that did not help on the current best build
        while True:
            attempts += 1
            data = _quantize_bytes(fp32_path, recipe, calibration, cache)
            io = io_quantization(data)
            record = {**meta, "variant": variant, "recipe": recipe, "repairs_applied": [r.name for r in repairs],
                      "int8_io": int8_io, "io_quantization": io,
                      "calibration_range": CALIBRATION_RANGE if calibration else None}
            data = with_metadata(data, record)
            tmp.write_bytes(data)
            failure, agreement = _check(tmp, part, checks, convert_io=int8_io, variant=variant,
                                        repaired_for_speed=any(r.name == "attention_float" for r in repairs))
            quality_repair = bool(repairs) and repairs[-1].removed_error.startswith(BELOW_BAR)
            if best is not None and quality_repair and (
                    failure is not None or quality_gap(variant, agreement) >= quality_gap(variant, best[1])):
                # the quality repair did not help (or broke the model): undo it, keep the best build, try the next
                undone = repairs.pop()
                result = dataclasses.asdict(agreement) if failure is None else f"broke the model: {failure}"
                rejected.append({**dataclasses.asdict(undone), "on_top_of": [r.name for r in repairs], "result": result})
                skip.add(undone.name)
                (data, agreement, recipe), failure = best, None
                tmp.write_bytes(data)
                io = io_quantization(data)
            elif quality_repair and failure is None:
                skip.clear()  # it helped: repairs that did not help before may help on top of it
            if failure is None and quality_gap(variant, agreement) > 0:
                failure_for_repair = f"{BELOW_BAR}: " + (
                    f"bit agreement {agreement.bit_agreement:.4f}" if agreement.bit_agreement is not None
                    else f"watermark relative error {agreement.watermark_rel_err:.4f}")
                best = (data, agreement, recipe)
            else:
                failure_for_repair = failure
            if failure_for_repair is None or not repair:
                break
            found = find_repair(failure_for_repair, variant, {r.name for r in repairs} | skip, fp32_path)
            if found is None or (int8_io and found[0].name == "float_io"):
                if failure is None:
                    tmp.write_bytes(data)  # the best build stands (a variant below its bar is still written)
                break
            fix, rules = found
            log.info("%s %s: %s -> repair %s", part, variant, failure_for_repair[:120], fix.name)
            repairs.append(RepairRecord(fix.name, fix.what, fix.why, failure_for_repair))
            recipe = recipe + rules
        seconds = time.perf_counter() - start
        if failure is not None and repair:
            # nothing half-good is left behind: the temp file is removed by atomic_path
            raise _Failed(VariantResult(part, variant, "failed", None, recipe, repairs, failure, agreement,
                                        None, None, seconds, attempts, rejected))
    status = "failed" if failure else ("repaired" if repairs else "ok")
    return VariantResult(part, variant, status, target, recipe, repairs, failure, agreement,
                         hashlib.sha256(data).hexdigest(), len(data), seconds, attempts, rejected, io)


class _Failed(Exception):
    def __init__(self, result: VariantResult) -> None:
        super().__init__(result.error)
        self.result = result


def build_variant(*args, **kwargs) -> VariantResult:
    """`quantize_variant`, with a failed repaired build returned as a `failed` result instead of raised."""
    try:
        return quantize_variant(*args, **kwargs)
    except _Failed as failed:
        return failed.result

