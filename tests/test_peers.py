"""`bench --peers` (issue #26): our default card beside invisible-watermark 0.2.0, the same images, attacks, metric
and threads, on a CI-sized set through the same function `make bench` runs."""

from __future__ import annotations

import json
import sys

import pytest

from videoseal_tflite.bench.peers import PEERS, PeersPlan, bench_peers, fpr_key, write_peers
from videoseal_tflite.runtime.verdict import min_matching_bits, pvalue
from videoseal_tflite.store.artifact import DEFAULT_CARD

TINY = PeersPlan(
    images=2,
    messages_per_image=1,
    attacks=("clean", "jpeg_80"),
    image_size=256,  # invisible-watermark reads nothing under 256x256 pixels
    timing_size=(256, 256),
    timing_repeats=1,
)
COLUMNS = {"method", "label", "how", "bits", "threads", "images", "messages_per_image", "samples", "psnr_db"}
COLUMNS |= {"attacks", "ms_per_embed", "ms_per_detect", "timing"}


@pytest.fixture(scope="module")
def tiny_record(robust_fp32):
    """A 16-bit card (compact_robust): the record must say where a card cannot reach FPR 1e-6, not write a 0."""
    artifacts = robust_fp32["embedder"].parent.parent
    return bench_peers(artifacts, "compact_robust", TINY, progress=False)


def test_every_method_has_every_column(tiny_record):
    rows = {row["method"]: row for row in tiny_record["methods"]}
    assert list(rows) == ["ours", *PEERS]
    for row in rows.values():
        assert COLUMNS <= set(row), row["method"]
        assert row["threads"] == 2 and row["samples"] == 2 and row["ms_per_embed"] > 0 and row["ms_per_detect"] > 0
        assert 25 < row["psnr_db"] < 70
        for summary in row["attacks"].values():
            assert set(summary["tpr"]) == {fpr_key(1e-6), fpr_key(1e-4)}
            assert summary["samples"] == 2 and summary["bit_accuracy"] is not None
    assert rows["ours"]["bits"] == 16 and all(rows[m]["bits"] == 32 for m in PEERS)
    assert "not verified here" in tiny_record["trustmark_published"]["tpr_at_fpr_1e-6"]


def test_methods_read_their_own_clean_mark(tiny_record):
    rows = {row["method"]: row for row in tiny_record["methods"]}
    assert rows["dwtDctSvd"]["attacks"]["clean"]["bit_accuracy"] >= 0.9
    assert rows["dwtDctSvd"]["attacks"]["clean"]["tpr"][fpr_key(1e-6)] == 1.0
    ours = rows["ours"]["attacks"]["clean"]
    # 16 bits can never reach FPR 1e-6 (all bits right is p = 1.5e-5): the record says so instead of a 0
    assert ours["tpr"][fpr_key(1e-6)] is None and ours["threshold_bits"][fpr_key(1e-6)] is None
    assert ours["bit_accuracy"] >= 0.95 and ours["tpr"][fpr_key(1e-4)] == 1.0  # decided: every bit right


def test_pvalues_and_decisions_follow_the_verdict_module(tiny_record):
    for row in tiny_record["methods"]:
        n = row["bits"]
        for summary in row["attacks"].values():
            for k, h, p in zip(summary["matching_bits"], summary["hypotheses"], summary["pvalues"]):
                assert p == pytest.approx(min(1.0, pvalue(k, n) * h), rel=1e-12)
            for key, threshold in summary["threshold_bits"].items():
                assert threshold == min_matching_bits(n, float(key))
                if threshold is not None:
                    decided = sum(p <= float(key) for p in summary["pvalues"])
                    assert summary["tpr"][key] == round(decided / summary["samples"], 4)


def test_record_is_written_as_json_and_markdown(tiny_record, tmp_path):
    json_path, md_path = write_peers(tiny_record, tmp_path)
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(tiny_record))
    text = md_path.read_text()
    for row in tiny_record["methods"]:
        assert f"| {row['label']} | {row['bits']} |" in text
    assert "TrustMark" in text and "| threads |" in text and "n/a (16 bits" in text


@pytest.mark.fast
def test_missing_extra_is_one_line(tmp_path, monkeypatch, capsys):
    from videoseal_tflite.cli.main import main

    monkeypatch.setitem(sys.modules, "imwatermark", None)  # `import imwatermark` now fails as if not installed
    assert main(["bench", "--card", DEFAULT_CARD, "--peers", "--artifacts", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ExtraNotInstalled" in err[0] and "[peers]" in err[0], err
