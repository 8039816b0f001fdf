"""A CI-sized smoke run of the benchmark (one variant, a few invokes) so that `make bench` cannot rot."""

from __future__ import annotations

import pytest

from videoseal_tflite.bench.models import bench_card, write_bench
from videoseal_tflite.bench.sizes import ROUNDS, _interleaved_medians
from videoseal_tflite.build.weights import WeightSource


def test_bench_smoke(tmp_path):
    record = bench_card(
        "compact", WeightSource(), tmp_path, variants=("dynamic_int8",), invokes=3, rounds=1, scaling=False
    )
    for part in ("embedder", "detector"):
        entry = record["parts"][part]
        assert entry["convert_fp32"]["ok"] and entry["convert_fp32"]["peak_rss_mb"] > 100
        assert entry["quantize"]["dynamic_int8"]["ok"]
        assert set(entry["variants"]) == {"fp32", "dynamic_int8"}
        for data in entry["variants"].values():
            assert data["litert_ms_1t"]["median"] > 0 and data["litert_ms_2t"]["n"] == 3
            assert 0.9 < data["bytes_vs_floor"] < 3
        assert entry["variants"]["fp32"]["ratio_vs_fp32_2t"] == 1.0
        assert entry["pytorch_eager_ms"]["2"]["median"] > 0
    json_path, md_path = write_bench(record, tmp_path / "bench")
    assert json_path.is_file() and "| part | variant | runtime | delegate (nodes taken) |" in md_path.read_text()
    # every latency row names its runtime, delegate (with the nodes it took) and threads
    assert "| LiteRT CPU | XNNPACK (" in md_path.read_text() and "| PyTorch eager | none |" in md_path.read_text()
    cov = record["parts"]["detector"]["variants"]["fp32"]["xnnpack"]
    assert 0 < cov["xnnpack_nodes"] <= cov["nodes"]
    # where the time goes, per file: LiteRT's profiler, operator types whose times are a real part of the run
    prof = record["parts"]["detector"]["variants"]["dynamic_int8"]["op_profile"]
    assert prof["threads"] == 2 and 0 < prof["op_ms_sum"] < 1.5 * prof["run_ms_median"]
    assert sum(r["count"] for r in prof["by_type"]) <= prof["ops"] and prof["by_type"][0]["share"] > 0.05
    assert "| detector | dynamic_int8 |" in md_path.read_text().split("Where the time goes")[1]


def test_video_bench_smoke(compact_artifacts):
    """The video record at a CI-sized clip: ours per variant beside videoseal's PyTorch video mode."""
    from videoseal_tflite.bench.video import bench_video, bench_video_markdown

    record = bench_video(compact_artifacts.out_dir, sizes=((320, 180),), frames=12, variants=("fp32",))
    row = record["sizes"]["180p"]
    assert set(row) == {"fp32", "pytorch"} and not any("error" in r for r in row.values()), row
    ours, torch_row = row["fp32"], row["pytorch"]
    assert ours["frames"] == torch_row["frames"] == 12
    assert ours["embed_fps"] > 0 and ours["detect_fps"] > 0 and ours["watermarking_fps"] > ours["embed_fps"]
    assert set(ours["seconds"]) == {"decode", "model", "resize_blend", "encode"}
    assert ours["peak_rss_mb"] > 50 and torch_row["peak_rss_mb"] > ours["peak_rss_mb"]
    assert "| 180p | PyTorch (videoseal) |" in bench_video_markdown(record)


def test_validate_scale_bench_smoke(compact_artifacts, tmp_path):
    """`bench --validate-scale` at a CI size: a child `validate --images` run on generated PNGs, its own peak RSS."""
    from videoseal_tflite.bench.scale import bench_validate_scale, scale_markdown, write_scale

    record = bench_validate_scale(compact_artifacts.out_dir, counts=(3,), workers=(1,), say=lambda _: None)
    (row,) = record["rows"]
    assert row["images"] == 3 and row["workers"] == 1 and row["peak_rss_mb"] > 100 and row["seconds"] > 0
    assert row["peak_rss_mb_workers"] is None and row["bit_accuracy_fp32_detector"] >= 0.9
    json_path, md_path = write_scale(record, tmp_path)
    assert json_path.is_file() and "| 3 | 1 |" in scale_markdown(record) == md_path.read_text()


@pytest.mark.fast
def test_the_runtime_timings_take_turns():
    """`bench --sizes` times embed and both detects in ROUNDS turns, so a busy spell of the machine lands on every
    case, not on one: each case is called `repeats` times after one warm-up, a turn at a time."""
    calls: list[str] = []
    cases = tuple((name, lambda name=name: calls.append(name)) for name in "abc")
    medians = _interleaved_medians(cases, 7)
    assert ROUNDS == 5 and set(medians) == set("abc")
    assert [calls.count(name) for name in "abc"] == [8, 8, 8]
    assert calls[:9] == list("abcaabbcc")  # warm-ups, then turn 0: 7 // 5 + 1 calls each
    assert calls[-3:] == list("abc")  # the last turn: one call each
