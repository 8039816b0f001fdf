"""Quantized variants of both official cards (random-init): they load and run, or are marked failed with the
runtime's reason; repairs are recorded exactly where they happened; numbers vs FP32 on 16 evaluation images."""

from __future__ import annotations

import json

import pytest

from videoseal_tflite.store.variants import spec, variant_names
from videoseal_tflite.tflite.load_check import load_check_many

CARDS = ["videoseal_0.0", "videoseal_1.0"]
PARTS = ["embedder", "detector"]


VARIANTS = variant_names(quantized_only=True)
# what each variant of the random-init official cards (seed 0) comes out as, measured: a variant that goes from built
# to failed, or that needs a repair it did not need before, fails here instead of passing unnoticed
EXPECTED_STATUS = {
    "videoseal_0.0": {
        ("embedder", "fp16"): "ok",
        ("embedder", "weight_only_int8"): "ok",
        ("embedder", "dynamic_int8"): "repaired",
        ("embedder", "int8"): "repaired",
        ("detector", "fp16"): "ok",
        ("detector", "weight_only_int8"): "ok",
        ("detector", "dynamic_int8"): "ok",
        ("detector", "int8"): "repaired",
    },
    "videoseal_1.0": {
        ("embedder", "fp16"): "ok",
        ("embedder", "weight_only_int8"): "ok",
        ("embedder", "dynamic_int8"): "ok",
        ("embedder", "int8"): "repaired",
        ("detector", "fp16"): "ok",
        ("detector", "weight_only_int8"): "ok",
        ("detector", "dynamic_int8"): "ok",
        ("detector", "int8"): "repaired",
    },
}


def _report(card_artifacts):
    rows = []
    for card in CARDS:
        for v in card_artifacts(card).variants:
            a = v.agreement
            rows.append(
                (
                    card,
                    v.part,
                    v.variant,
                    v.status,
                    a.bit_agreement if a else None,
                    a.watermark_rel_err if a else None,
                    [r.name for r in v.repairs_applied],
                    v.error,
                )
            )
    return rows


@pytest.mark.parametrize("card", CARDS)
def test_every_variant_built_or_failed_with_reason(card, card_artifacts):
    artifacts = card_artifacts(card)
    assert {(v.part, v.variant) for v in artifacts.variants} == {(p, v) for p in PARTS for v in VARIANTS}
    assert {(v.part, v.variant): v.status for v in artifacts.variants} == EXPECTED_STATUS[card]
    for v in artifacts.variants:
        if v.status == "failed":
            assert v.path is None and v.error
            assert not list(artifacts.out_dir.glob(f"{v.part}_256_{v.variant}*.tflite"))
        else:
            assert v.path.is_file() and v.bytes == v.path.stat().st_size
    log = json.loads((artifacts.out_dir / "quantize_log.json").read_text())
    assert set(log) == {f"{p}/{v}" for p in PARTS for v in VARIANTS}


@pytest.mark.parametrize("card", CARDS)
@pytest.mark.parametrize("runtime", ["litert", "tflite"])
def test_built_variants_load_and_invoke(card, runtime, card_artifacts):
    built = [v for v in card_artifacts(card).variants if v.status != "failed"]
    for v, result in zip(built, load_check_many([v.path for v in built], runtime), strict=True):
        assert result.loads, f"{card} {v.part} {v.variant} on {runtime}: {result.error}"


def test_repairs_recorded_exactly_where_they_happened(card_artifacts):
    for card in CARDS:
        for v in card_artifacts(card).variants:
            assert (v.status == "repaired") == (bool(v.repairs_applied) and v.status != "failed"), v
            assert v.attempts >= len(v.repairs_applied) + 1  # a quality repair that did not help is undone
            for repair in v.repairs_applied:
                assert repair.what and repair.why and repair.removed_error
            if v.variant == "fp16":
                assert v.repairs_applied == [], (card, v.part, v.variant)
            if v.variant in ("weight_only_int8", "dynamic_int8"):  # only quality repairs, after a miss of the bar
                for repair in v.repairs_applied:
                    assert repair.name == "full_resolution_float" and "below the quality bar" in repair.removed_error


def test_int8_gets_float_io_repair_with_runtime_text(card_artifacts):
    v = card_artifacts("videoseal_0.0").variant("detector", "int8")
    assert v.status == "repaired"
    first = v.repairs_applied[0]
    assert first.name == "float_io"
    assert "Cannot set tensor: Got value of type FLOAT32 but expected type INT8" in first.removed_error


def test_int8_embedder_div_or_wrong_output_is_seen_and_acted_on(card_artifacts):
    """Full-int8 embedders hit the DIV failure or a wrong output; the loop records it and tries the repairs."""
    for card in CARDS:
        v = card_artifacts(card).variant("embedder", "int8")
        names = [r.name for r in v.repairs_applied]
        assert names[0] == "float_io"
        texts = " ".join(
            [r.removed_error for r in v.repairs_applied]
            + [r["removed_error"] for r in v.repairs_rejected]
            + [v.error or ""]
        )
        assert any(
            t in texts for t in ("(DIV) failed to invoke", "output differs from FP32", "below the quality bar")
        ), texts
        tried = names + [r["name"] for r in v.repairs_rejected]
        assert "norm_float_islands" in tried  # the float-island repair was tried (kept only where it helped)


# Measured with random-init weights (README "Quantization and repairs"): the 0.0 embedder (RGB UNet, 96 bits) is
# the one part whose int8 variants miss the 0.2 bar; its trained counterpart (compact) keeps >= 99.8 % of bits.
KNOWN_BELOW_BAR = {
    "videoseal_0.0": {"embedder int8"},  # measured: rel. err 0.257 after every repair (dynamic_int8: 0.150)
}


@pytest.mark.parametrize("card", CARDS)
def test_numbers_against_fp32(card, card_artifacts, capsys):
    """Every number is printed; the bars are asserted for every variant that was built."""
    failures = []
    for v in card_artifacts(card).variants:
        a = v.agreement
        if v.status == "failed" or a is None:
            print(f"{card} {v.part} {v.variant}: failed: {v.error}")
            continue
        assert a.images >= 16
        if v.part == "detector":
            print(f"{card} detector {v.variant}: bit agreement vs fp32 {a.bit_agreement:.4f}")
            if a.bit_agreement < spec(v.variant).detector_min_bit_agreement:
                failures.append(
                    f"{v.part} {v.variant} bit agreement {a.bit_agreement:.4f} < "
                    f"{spec(v.variant).detector_min_bit_agreement}"
                )
        else:
            print(f"{card} embedder {v.variant}: watermark rel. err vs fp32 {a.watermark_rel_err:.4f}")
            if a.watermark_rel_err > spec(v.variant).embedder_max_rel_err:
                failures.append(
                    f"{v.part} {v.variant} rel err {a.watermark_rel_err:.4f} > {spec(v.variant).embedder_max_rel_err}"
                )
    with capsys.disabled():
        print("\n" + "\n".join(f"  {row}" for row in _report(card_artifacts) if row[0] == card))
    # every bar is met except these, measured and named so that a change either way is noticed
    assert {" ".join(f.split()[:2]) for f in failures} == KNOWN_BELOW_BAR.get(card, set()), failures
