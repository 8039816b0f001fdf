"""`load_check_many`: several files share one child (tf.lite's import alone is ~4 s a child), and a file that hangs
or crashes its child costs only that file: the results before it are kept and the files after it go on."""

from __future__ import annotations

import os

from videoseal_tflite.tflite.load_check import load_check, load_check_many


def test_files_share_a_child_and_a_hanging_file_costs_only_itself(compact_artifacts, tmp_path):
    good = sorted(compact_artifacts.out_dir.glob("detector_128_*.tflite"))[:2]
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer" * 64)
    fifo = tmp_path / "never_written.tflite"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: the child hangs on this file
    results = load_check_many([good[0], garbage, fifo, good[1]], "litert", timeout_s=2)
    assert [r.loads for r in results] == [True, False, False, True]
    assert results[1].stage == "load" and results[1].error  # the runtime's own text, from the shared child
    assert results[2].stage == "crash" and "did not finish loading" in results[2].error
    assert results[0] == load_check(good[0], "litert") and results[3] == load_check(good[1], "litert")
