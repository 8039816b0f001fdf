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
from typing import Any, Literal

import numpy as np

from videoseal_tflite.build.quantize.recipes import Rule, base_recipe
from videoseal_tflite.build.quantize.repairs import find_repair
from videoseal_tflite.errors import InvalidModelFile
from videoseal_tflite.store.artifact import Provenance
from videoseal_tflite.store.atomic import atomic_path
from videoseal_tflite.store.variants import spec
from videoseal_tflite.tflite.inspect import SLOW_INT8_BATCH_MATMUL, inspect_model
from videoseal_tflite.tflite.load_check import run_isolated
from videoseal_tflite.tflite.metadata import io_quantization, read_metadata, with_metadata

log = logging.getLogger(__name__)

# Sanity floors in the repair loop: below these the variant computes something else, not a rounding of FP32
# (embedders: correlation of the watermark with FP32's; the max-based relative error is no floor: a trained
# embedder's tanh output is nearly binary, so one flipped pixel at a tile edge gives ~2 while the rest agree)
MIN_BIT_AGREEMENT = 0.9
MIN_WATERMARK_CORR = 0.9
# A variant that loads but misses its quality bar (variants.VariantSpec) gets the next applicable repair,
# kept only if it improves the number.
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
    provenance: Provenance | None = None  # the record in the file's metadata (fresh builds; the manifest has it too)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(dataclasses.replace(self, provenance=None))
        out["path"] = str(self.path) if self.path else None
        out.pop("reused")
        out.pop("provenance")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VariantResult":
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        return cls(
            **{
                **data,
                "path": Path(data["path"]) if data.get("path") else None,
                "repairs_applied": [RepairRecord(**r) for r in data.get("repairs_applied", [])],
                "agreement": Agreement(**data["agreement"]) if data.get("agreement") else None,
                "reused": True,
            }
        )


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
    return Agreement(
        len(outputs),
        diff,
        watermark_rel_err=diff / max(float(np.abs(ref).max()), 1e-12),
        watermark_corr=corr if np.isfinite(corr) else 0.0,
    )


def quality_gap(variant: str, agreement: Agreement) -> float:
    """How far the variant is from its bar (<= 0: meets it). Same scale for both parts: larger is worse."""
    row = spec(variant)
    if agreement.bit_agreement is not None:
        return row.detector_min_bit_agreement - agreement.bit_agreement
    return agreement.watermark_rel_err - row.embedder_max_rel_err


# How activation ranges are gathered over the calibration set. ai-edge-quantizer's default is a moving
# average (0.95) of per-image min/max, which shrinks every range below what the set contains (the image
# input came out as [0, 0.95]: brighter pixels clip). The union of the ranges keeps every calibrated value
# representable; measured on 16 evaluation images (random-init): videoseal_0.0 int8 detector bit agreement
# 0.968 -> 0.991, videoseal_1.0 int8 embedder watermark rel. err 0.487 -> 0.080 (scripts/int8_mixes.py).
CALIBRATION_RANGE = "min_max"


def calibrate_min_max(
    fp32_path: Path,
    recipe: list[Rule],
    calibration: list[dict[str, np.ndarray]],
    tracked_by: Literal["litert", "numpy"] = "litert",
) -> dict:
    """Activation ranges (QSVs) = union over the calibration set of each tensor's min and max. `litert`: tracked
    by LiteRT's profiler-based calibration in C++ during each invoke; `numpy`: ai-edge-quantizer's default, every
    tensor kept and reduced in numpy per op (2.5-3x slower: videoseal_0.0's embedder 38 s against 15 s). Both give
    the same int8 files (tests/test_quantize_compact.py). The profiler's ranges come as float64 of shape (1,);
    the quantizer's scales follow the dtype, so they are returned as float32 of shape (1,) x the tensor's rank, as
    the numpy path's are."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    mode = calibrator.CalibrationMode
    calib = calibrator.Calibrator(
        str(fp32_path),
        num_threads=2,
        mode=mode.CALIBRATION_PROFILER_BASED if tracked_by == "litert" else mode.CALIBRATION_PRESERVE_ALL_TENSORS,
        qsv_update_func=qsv_utils.min_max_update,
    )
    calib.calibrate({"serving_default": calibration}, manager)
    if tracked_by == "numpy":
        return calib.get_model_qsvs()
    ranks = {t["name"]: len(t["shape"]) for t in Interpreter(model_path=str(fp32_path)).get_tensor_details()}
    return {
        name: {key: np.asarray(value, np.float32).reshape((1,) * ranks[name]) for key, value in qsv.items()}
        for name, qsv in calib.get_model_qsvs().items()
    }


def quantize_bytes(
    fp32_path: Path, recipe: list[Rule], calibration: list[dict[str, np.ndarray]] | None, calibration_cache: dict
) -> bytes:
    """`fp32_path` quantized with `recipe` (calibrated once per `calibration_cache`), as bytes."""
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


def _noise_like(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Uniform noise image (and random bits): the input on which tf.lite's int8 DIV was seen to stop."""
    rng = np.random.default_rng(0)
    return {
        k: (rng.integers(0, 2, v.shape) if k == "message" else rng.random(v.shape)).astype(v.dtype)
        for k, v in feed.items()
    }


def _check(
    path: Path, part: str, checks: CheckSet, convert_io: bool, variant: str = "", repaired_for_speed: bool = False
) -> tuple[str | None, Agreement | None]:
    """The failure text (runtime's own words first), or None, plus agreement with FP32 when it ran."""
    static = inspect_model(path, load=False)
    result, outputs = run_isolated(path, checks.inputs, convert_io=convert_io)
    if not result.loads:
        return result.error, None
    # integer kernels are implemented separately in each runtime (the compact int8 detector runs on LiteRT but
    # stops on tf.lite 2.21 at a DIV), so such variants get a second opinion
    second_runtime = spec(variant).second_opinion if variant else None
    if second_runtime:
        second, _ = run_isolated(
            path, checks.inputs[:2] + [_noise_like(checks.inputs[0])], runtime=second_runtime, convert_io=convert_io
        )
        if not second.loads:
            return f"on {second_runtime}: {second.error}", None
    agreement = compare(part, outputs, checks.fp32_outputs)
    if agreement.bit_agreement is not None and agreement.bit_agreement < MIN_BIT_AGREEMENT:
        return f"output differs from FP32: bit agreement {agreement.bit_agreement:.3f} < {MIN_BIT_AGREEMENT}", agreement
    if agreement.watermark_corr is not None and agreement.watermark_corr < MIN_WATERMARK_CORR:
        return (
            f"output differs from FP32: watermark correlation {agreement.watermark_corr:.3f} < {MIN_WATERMARK_CORR} "
            f"(relative error {agreement.watermark_rel_err:.3f})"
        ), agreement
    errors = static.errors
    if errors:  # ran anyway, but the static check knows this pattern fails elsewhere
        return f"{errors[0].kind}: {errors[0].detail}", agreement
    slow = [f for f in static.flags if f.kind == SLOW_INT8_BATCH_MATMUL]
    if variant == "int8" and slow and not repaired_for_speed:  # works, but slower than FP32: worth one repair
        return f"{slow[0].kind}: {len(slow)} ops, e.g. node {slow[0].node}: {slow[0].detail}", agreement
    return None, agreement


@dataclasses.dataclass
class Build:
    """One try of the search: the file's bytes, the failure text (None: it runs and meets the floors), agreement."""

    data: bytes
    failure: str | None
    agreement: Agreement | None
    recipe: list[Rule]


class RepairSearch:
    """The repair loop as a small search: try a recipe, accept or reject the last repair, retry with the next.

    - a runtime failure (or a sanity floor missed) takes the first known repair for its text;
    - a build that runs but misses its quality bar takes the next quality repair; such a repair is kept only
      when it narrows the gap to the bar, else it is rejected (recorded with what it sat on top of) and the
      best build stands; a rejected repair is retried once a later repair helped.
    """

    def __init__(self, variant: str, fp32_path: Path, int8_io: bool) -> None:
        self.variant, self.fp32_path, self.int8_io = variant, fp32_path, int8_io
        self.recipe = base_recipe(variant)
        self.applied: list[RepairRecord] = []
        self.rejected: list[dict] = []
        self.skip: set[str] = set()  # quality repairs that did not help on the current best build
        self.best: Build | None = None  # the last build that met the sanity floors but not its bar
        self.attempts = 0

    def judge(self, build: Build) -> Build:
        """Accept the last repair, or reject it and fall back to the best build. Returns the build that stands."""
        quality_repair = bool(self.applied) and self.applied[-1].removed_error.startswith(BELOW_BAR)
        if (
            self.best is not None
            and quality_repair
            and (
                build.failure is not None
                or quality_gap(self.variant, build.agreement) >= quality_gap(self.variant, self.best.agreement)
            )
        ):
            undone = self.applied.pop()
            result = (
                dataclasses.asdict(build.agreement) if build.failure is None else f"broke the model: {build.failure}"
            )
            self.rejected.append(
                {**dataclasses.asdict(undone), "on_top_of": [r.name for r in self.applied], "result": result}
            )
            self.skip.add(undone.name)
            build = dataclasses.replace(self.best, failure=None)
            self.recipe = build.recipe
        elif quality_repair and build.failure is None:
            self.skip.clear()  # it helped: repairs that did not help before may help on top of it
        return build

    def problem(self, build: Build) -> str | None:
        """What the next repair must remove: the failure, or the gap to the quality bar; None when done."""
        if build.failure is None and quality_gap(self.variant, build.agreement) > 0:
            self.best = build
            a = build.agreement
            return f"{BELOW_BAR}: " + (
                f"bit agreement {a.bit_agreement:.4f}"
                if a.bit_agreement is not None
                else f"watermark relative error {a.watermark_rel_err:.4f}"
            )
        return build.failure

    def retry(self, problem: str) -> bool:
        """Append the rules of the next known repair for `problem`; False when none is left."""
        found = find_repair(problem, self.variant, {r.name for r in self.applied} | self.skip, self.fp32_path)
        if found is None or (self.int8_io and found[0].name == "float_io"):
            return False
        fix, rules = found
        log.info("%s: %s -> repair %s", self.variant, problem[:120], fix.name)
        self.applied.append(RepairRecord(fix.name, fix.what, fix.why, problem))
        self.recipe = self.recipe + rules
        return True


def variant_provenance(
    fp32: Provenance,
    variant: str,
    recipe: list[Rule],
    repairs: list[RepairRecord],
    int8_io: bool,
    io: dict,
    calibrated: bool,
    status: str,
    agreement: Agreement | None,
) -> Provenance:
    """The record of a quantized file: its FP32 parent's, with how this variant was built and checked."""
    return dataclasses.replace(
        fp32,
        variant=variant,
        recipe=recipe,
        repairs_applied=tuple(dataclasses.asdict(r) for r in repairs),
        int8_io=int8_io,
        io_quantization=io,
        calibration_range=CALIBRATION_RANGE if calibrated else None,
        status=status,
        parity_vs_pytorch=None,
        agreement_vs_fp32=dataclasses.asdict(agreement) if agreement else None,
    )


class _BuildFailed(Exception):
    """Raised inside the temp-file block so that the half-built file is removed; caught in `quantize_variant`."""


def _search(search: RepairSearch, tmp: Path, part: str, checks: CheckSet, calibration, repair: bool) -> Build:
    cache: dict = {}
    while True:
        search.attempts += 1
        data = quantize_bytes(search.fp32_path, search.recipe, calibration, cache)
        tmp.write_bytes(data)
        failure, agreement = _check(
            tmp,
            part,
            checks,
            convert_io=search.int8_io,
            variant=search.variant,
            repaired_for_speed=any(r.name == "attention_float" for r in search.applied),
        )
        build = search.judge(Build(data, failure, agreement, search.recipe))
        problem = search.problem(build)
        if problem is None or not repair or not search.retry(problem):
            return build


def _fp32_provenance(fp32_path: Path) -> Provenance:
    meta = read_metadata(fp32_path.read_bytes())
    if not meta:
        raise InvalidModelFile(f"{fp32_path} carries no videoseal_tflite metadata; convert it with videoseal-tflite")
    return Provenance.from_json(meta)


def _result(
    search: RepairSearch,
    part: str,
    status: str,
    build: Build,
    seconds: float,
    path: Path | None = None,
    data: bytes | None = None,
    io: dict | None = None,
    record: Provenance | None = None,
) -> VariantResult:
    return VariantResult(
        part=part, variant=search.variant, status=status, path=path,
        recipe=build.recipe if data is not None else search.recipe, repairs_applied=search.applied,
        error=build.failure, agreement=build.agreement, sha256=hashlib.sha256(data).hexdigest() if data else None,
        bytes=len(data) if data else None, build_seconds=seconds, attempts=search.attempts,
        repairs_rejected=search.rejected, io_quantization=io or {}, provenance=record,
    )  # fmt: skip


def quantize_variant(
    fp32_path: Path,
    variant: str,
    target: Path,
    checks: CheckSet,
    calibration: list[dict[str, np.ndarray]] | None = None,
    repair: bool = True,
    int8_io: bool = False,
    provenance: Provenance | None = None,
) -> VariantResult:
    """Build `variant` of `fp32_path` into `target` (atomically), repairing until it runs and meets its bar.

    With `repair=False` the naive recipe's file is kept even when it fails, so the failure can be shown; with
    repairs, a failed variant leaves no file and comes back with status `failed`. The file's metadata is the
    final provenance record (`provenance`: the FP32 parent's record, by default read from its metadata)."""
    fp32_path, target = Path(fp32_path), Path(target)
    provenance = provenance or _fp32_provenance(fp32_path)
    search = RepairSearch(variant, fp32_path, int8_io)
    start = time.perf_counter()
    try:
        with atomic_path(target) as tmp:
            build = _search(search, tmp, provenance.part, checks, calibration, repair)
            if build.failure is not None and repair:
                raise _BuildFailed()  # nothing half-good is left behind: atomic_path removes the temp file
            status = "failed" if build.failure else ("repaired" if search.applied else "ok")
            io = io_quantization(build.data)
            record = variant_provenance(provenance, variant, build.recipe, search.applied, int8_io, io,
                                        bool(calibration), status, build.agreement)  # fmt: skip
            data = with_metadata(build.data, record.to_json())
            tmp.write_bytes(data)
    except _BuildFailed:
        return _result(search, provenance.part, "failed", build, time.perf_counter() - start)
    return _result(search, provenance.part, status, build, time.perf_counter() - start, target, data, io, record)
