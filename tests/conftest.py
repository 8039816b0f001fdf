"""Shared, session-scoped artifacts: each conversion runs once per test session (they cost 15-45 s each)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Official checkpoints cannot be downloaded here; tests must never try.
os.environ.setdefault("VIDEOSEAL_TFLITE_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OFFICIAL = ("videoseal_0.0", "videoseal_1.0")
SEED = 0


@pytest.fixture(scope="session")
def out_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def loaded_models():
    from videoseal_tflite.build.cards import load_card
    from videoseal_tflite.build.weights import WeightSource, load_model

    cache = {}

    def get(card: str):
        if card not in cache:
            cache[card] = load_model(load_card(card), WeightSource(random_init_seed=SEED))
        return cache[card]

    return get


@pytest.fixture(scope="session")
def card_artifacts(out_root):
    """card name -> CardArtifacts (FP32 + every quantized variant), built once per session."""
    from videoseal_tflite.build.pipeline import convert_card
    from videoseal_tflite.build.weights import WeightSource

    cache = {}

    def get(card: str):
        # random-init files of the compact card would sit beside its trained ones in out_root/compact and change
        # what every compact test reads: the trained card has its own fixture
        assert card != "compact", "use the compact_artifacts fixture for the compact card"
        if card not in cache:
            cache[card] = convert_card(card, WeightSource(random_init_seed=SEED), out_root)
        return cache[card]

    return get


@pytest.fixture(scope="session")
def unrewritten_detector_00(tmp_path_factory, loaded_models):
    """The 0.0 detector exported from the original graph (--no-rewrites)."""
    from videoseal_tflite.build.convert.export import convert_part

    out = tmp_path_factory.mktemp("unrewritten")
    return convert_part(loaded_models("videoseal_0.0"), "detector", out, rewrites=False)


@pytest.fixture(scope="session")
def compact_artifacts(out_root):
    """The compact card with its bundled trained weights: FP32 + every variant."""
    from videoseal_tflite.build.pipeline import convert_card
    from videoseal_tflite.build.weights import WeightSource

    return convert_card("compact", WeightSource(), out_root)


@pytest.fixture(scope="session")
def compact_report(compact_artifacts):
    from videoseal_tflite.validate.report import validate_card, write_report

    report = validate_card(compact_artifacts.out_dir, progress=False)
    write_report(report, compact_artifacts.out_dir)
    return report


def _fp32_pair(card: str, out_root: Path) -> dict[str, Path]:
    from videoseal_tflite.build.pipeline import convert_card
    from videoseal_tflite.build.weights import WeightSource

    artifacts = convert_card(card, WeightSource(), out_root, variants=(), progress=False)
    return {c.part: Path(c.path) for c in artifacts.converted}


@pytest.fixture(scope="session")
def default_fp32(out_root):
    """`make convert`'s default card (store.artifact.DEFAULT_CARD: compact64, 64 bits), bundled weights: FP32
    embedder and detector."""
    from videoseal_tflite.store.artifact import DEFAULT_CARD

    return _fp32_pair(DEFAULT_CARD, out_root)


@pytest.fixture(scope="session")
def robust_fp32(out_root):
    """`compact_robust` (16 bits, an 8-px tile; the default before compact64), bundled weights: FP32 embedder and
    detector. The tests of what that card was measured to do (crops re-found, tiles tracked in video, the page)."""
    return _fp32_pair("compact_robust", out_root)
