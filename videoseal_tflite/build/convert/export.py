"""PyTorch export wrapper -> FLOAT32 .tflite through litert-torch, then parity on the LiteRT interpreter."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from videoseal_tflite.build.convert.rewrites import Rewrite, apply_rewrites
from videoseal_tflite.build.convert.wrappers import export_module, sample_inputs
from videoseal_tflite.build.weights import LoadedModel
from videoseal_tflite.errors import ConversionFailed, ParityFailed
from videoseal_tflite.store.artifact import Artifact, Provenance
from videoseal_tflite.store.atomic import atomic_path
from videoseal_tflite.tflite.interpreter import SignatureModel
from videoseal_tflite.tflite.metadata import with_metadata

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
PARITY_INPUTS = 8
TRACE_SEED = 0  # parity inputs use seeds 1..8, never the trace input


@dataclasses.dataclass(frozen=True)
class ParityResult:
    """LiteRT FLOAT32 vs the PyTorch wrapper of the *original* (unrewritten) model."""

    inputs: int
    max_abs_diff: float
    bit_agreement: float | None  # detector only: fraction of bit logits with the same sign

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= PARITY_ATOL and self.bit_agreement in (None, 1.0)


@dataclasses.dataclass(frozen=True)
class ConvertedModel:
    path: Path
    card: str
    part: str
    size: int
    variant: str
    weights: str
    weights_sha256: str | None
    rewrites: tuple[Rewrite, ...]
    parity: ParityResult
    sha256: str
    bytes: int
    convert_seconds: float
    provenance: Provenance
    reused: bool = False  # up to date from an earlier run (same input hash, bytes match the manifest)

    @classmethod
    def from_manifest(cls, path: Path, entry: dict) -> "ConvertedModel":
        record = Provenance.from_json(entry)
        return cls(
            path=Path(path),
            card=record.card,
            part=record.part,
            size=record.size,
            variant="fp32",
            weights=record.weights,
            weights_sha256=record.weights_sha256,
            rewrites=tuple(Rewrite(**r) for r in record.rewrites),
            parity=ParityResult(**record.parity_vs_pytorch),
            sha256=entry["sha256"],
            bytes=entry["bytes"],
            convert_seconds=0.0,
            provenance=record,
            reused=True,
        )


def fp32_provenance(
    loaded: LoadedModel, part: str, rewrites: list[Rewrite], input_hash: str | None = None
) -> Provenance:
    """The record of an FP32 file: the card's facts the runtime needs, the weights, the rewrites."""
    card = loaded.card
    return Provenance(
        card=card.name,
        part=part,
        size=card.img_size,
        nbits=card.nbits,
        variant="fp32",
        weights=loaded.weights,
        weights_label=loaded.label or None,
        weights_sha256=loaded.weights_sha256,
        weights_path=loaded.weights_path,
        random_init_seed=loaded.random_init_seed,
        card_path=str(card.path),
        yuv=card.yuv,
        scaling_w=card.scaling_w,
        scaling_i=card.scaling_i,
        attenuation=card.attenuation,
        step_size=card.step_size,
        detection_logit_trained=card.detection_logit_trained,
        tile_period=card.tile_period,
        payload_code=card.payload_code,
        rewrites=tuple(dataclasses.asdict(r) for r in rewrites),
        input_hash=input_hash,
    )


def _patch_litert_repeat_layout() -> None:
    # litert-torch 0.10.0 treats aten.repeat as layout-agnostic and applies NCHW repeat factors to an
    # NHWC tensor; marking it NCHW-only fixes conversion of graphs that still contain repeat (--no-rewrites).
    from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import layout_check

    layout_check.nhwcable_node_checkers.register(torch.ops.aten.repeat)(layout_check._not_nhwc)


def check_parity(model_bytes: bytes, reference: torch.nn.Module, part: str, size: int, nbits: int) -> ParityResult:
    runner = SignatureModel(content=model_bytes, threads=2)
    max_diff, agree, total = 0.0, 0, 0
    for seed in range(1, PARITY_INPUTS + 1):
        inputs = sample_inputs(part, size, nbits, seed)
        with torch.no_grad():
            expected = {k: v.numpy() for k, v in reference(**inputs).items()}
        got = runner(**{k: v.numpy() for k, v in inputs.items()})
        for key, value in expected.items():
            max_diff = max(max_diff, float(np.abs(np.asarray(got[key]) - value).max()))
        if part == "detector":
            agree += int(((np.asarray(got["bit_logits"]) > 0) == (expected["bit_logits"] > 0)).sum())
            total += expected["bit_logits"].size
    return ParityResult(PARITY_INPUTS, max_diff, (agree / total) if total else None)


def convert_part(
    loaded: LoadedModel, part: str, out_dir: Path, rewrites: bool = True, input_hash: str | None = None
) -> ConvertedModel:
    """Convert one part of `loaded` to `out_dir/<part>_<size>_fp32[.label].tflite`, checked for parity.

    The file appears only when conversion and parity both succeed (temp file + rename); its metadata is the
    provenance record, parity included.
    """
    card = loaded.card
    size = card.img_size
    model, applied = apply_rewrites(loaded.model) if rewrites else (loaded.model, [])
    wrapper = export_module(model, part, card.yuv)
    reference = export_module(loaded.model, part, card.yuv)
    target = Path(out_dir) / Artifact(card.name, part, size, "fp32", loaded.label).filename
    _patch_litert_repeat_layout()
    import litert_torch

    start = time.perf_counter()
    with atomic_path(target) as tmp:
        try:
            edge = litert_torch.convert(wrapper, sample_kwargs=sample_inputs(part, size, card.nbits, TRACE_SEED))
            edge.export(str(tmp))
        except Exception as exc:  # the converter raises anything from RuntimeError to ValueError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionFailed(f"litert-torch could not convert the {card.name} {part}: {first[:300]}") from exc
        seconds = time.perf_counter() - start
        raw = tmp.read_bytes()
        parity = check_parity(raw, reference, part, size, card.nbits)
        if not parity.ok:
            raise ParityFailed(
                f"{card.name} {part} FLOAT32 .tflite differs from PyTorch: max abs diff {parity.max_abs_diff:.3g} "
                f"(limit {PARITY_ATOL}), bit agreement {parity.bit_agreement}"
            )
        record = dataclasses.replace(
            fp32_provenance(loaded, part, applied, input_hash), parity_vs_pytorch=dataclasses.asdict(parity)
        )
        data = with_metadata(raw, record.to_json())
        tmp.write_bytes(data)
    log.info("%s %s -> %s (%.1f s, max diff %.2g)", loaded.describe(), part, target, seconds, parity.max_abs_diff)
    return ConvertedModel(
        path=target,
        card=card.name,
        part=part,
        size=size,
        variant="fp32",
        weights=loaded.weights,
        weights_sha256=loaded.weights_sha256,
        rewrites=tuple(applied),
        parity=parity,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        convert_seconds=seconds,
        provenance=record,
    )
