"""Mutation fuzzing of `inspect` and of loading: a mutated model yields a record or a clean error, never a dead
process. `make test` runs a short, derandomized pass (reproducible in CI); `make fuzz` a longer random one:

    VIDEOSEAL_TFLITE_FUZZ_EXAMPLES=200 VIDEOSEAL_TFLITE_FUZZ_RANDOM=1 make fuzz
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from videoseal_tflite.errors import InvalidModelFile
from videoseal_tflite.tflite.inspect import inspect_model
from videoseal_tflite.tflite.load_check import LoadResult

EXAMPLES = int(os.environ.get("VIDEOSEAL_TFLITE_FUZZ_EXAMPLES", "12"))
RANDOM = os.environ.get("VIDEOSEAL_TFLITE_FUZZ_RANDOM", "") not in ("", "0")
HEAD = 1 << 16  # tables and vtables live near both ends of the file; weights in the middle rarely matter


@pytest.fixture(scope="module")
def seed_model(compact_artifacts) -> bytes:
    return (compact_artifacts.out_dir / "detector_128_dynamic_int8.tflite").read_bytes()


def _apply(data: bytes, edits: list[tuple[int, int, int]], cut: float | None) -> bytes:
    out = bytearray(data)
    for region, offset, value in edits:
        position = offset % HEAD if region == 0 else len(out) - 1 - offset % HEAD if region == 1 else offset % len(out)
        out[position] = value
    if cut is not None:
        out = out[: int(len(out) * cut)]
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2**31 - 1), st.integers(0, 255)), min_size=1, max_size=24)
cuts = st.one_of(st.none(), st.floats(0.0, 1.0))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not RANDOM,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(edits=edits, cut=cuts)
def test_mutated_model_gives_a_record_or_a_clean_error(seed_model, tmp_path_factory, edits, cut):
    path = Path(tmp_path_factory.mktemp("fuzz")) / "mutant.tflite"
    path.write_bytes(_apply(seed_model, edits, cut))
    try:
        result = inspect_model(path, load=True)
    except InvalidModelFile as exc:  # the static parser refused it: one sentence naming the file
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    # parsed: the load check ran in a child; whatever the runtime did (error, abort, segfault), we got a record
    assert isinstance(result.load, LoadResult)
    assert result.load.loads or (result.load.error and result.load.stage in ("load", "allocate", "invoke", "crash"))
    assert result.to_json()["path"] == str(path)
