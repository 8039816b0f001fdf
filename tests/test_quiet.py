"""A quiet terminal (issue #17): during convert, third-party output (absl, the quantizer's prints and bars,
TensorFlow banners, XNNPACK INFO, native stderr of child processes) goes to <artifacts>/<card>/logs/, and the
terminal shows our progress bars and results only."""

from __future__ import annotations

import re
import subprocess
import sys

NOISE = re.compile(
    r"absl|Model name:|Quantization Ratio|Applying Transformations|oneDNN|XNNPACK|Overwrite operation|"
    r"TensorFlow|tensorflow|^(INFO|WARNING|W0000|I0000|E0000)\b|Original model size"
)


def _lines(text: str) -> list[str]:
    return [part.strip() for line in text.splitlines() for part in line.split("\r") if part.strip()]


def test_convert_keeps_third_party_noise_off_the_terminal(tmp_path):
    # make convert's command, on one part and the variant whose build prints the most (calibration, repairs,
    # a tf.lite second opinion)
    command = [sys.executable, "-m", "videoseal_tflite.cli", "convert", "--card", "compact", "--part", "detector",
               "--variant", "fp32", "--variant", "int8", "--artifacts", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    terminal = _lines(proc.stdout) + _lines(proc.stderr)
    noise = [line for line in terminal if NOISE.search(line)]
    assert noise == []
    assert any(line.startswith("quantize compact") for line in _lines(proc.stderr)), "our progress bar is shown"
    assert any("detector_128_int8.tflite" in line for line in _lines(proc.stdout)), "our result lines are shown"
    log = (tmp_path / "compact" / "logs" / "convert.log").read_text()
    assert NOISE.search(log), "the third-party output was produced, and kept in the log"
