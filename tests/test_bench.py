"""A CI-sized smoke run of the benchmark (one variant, a few invokes) so that `make bench` cannot rot."""

from __future__ import annotations

from videoseal_tflite.bench import bench_card, write_bench
from videoseal_tflite.weights import WeightSource


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
    assert json_path.is_file() and "| part | variant | MB |" in md_path.read_text()
