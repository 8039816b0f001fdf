"""A quiet terminal (issue #17): during convert, third-party output (absl, the quantizer's prints and bars,
TensorFlow banners, XNNPACK INFO, native stderr of child processes) goes to <artifacts>/<card>/logs/, and the
terminal shows our progress bars and results only."""

from __future__ import annotations

import re
import subprocess
import sys

NOISE = re.compile(
    r"absl|Model name:|Quantization Ratio|Applying Transformations|oneDNN|XNNPACK delegate|Overwrite operation|"
    r"TensorFlow|tensorflow|^(INFO|WARNING|W0000|I0000|E0000)\b|Original model size"
)


def _lines(text: str) -> list[str]:
    return [part.strip() for line in text.splitlines() for part in line.split("\r") if part.strip()]


def test_convert_keeps_third_party_noise_off_the_terminal(tmp_path):
    # make convert's command, on one part and the variant whose build prints the most (calibration, repairs,
    # a tf.lite second opinion)
    command = [sys.executable, "-m", "videoseal_tflite.cli.main", "convert", "--card", "compact", "--part", "detector",
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


def test_embed_detect_and_inspect_show_only_our_lines(compact_artifacts, tmp_path):
    """The shipped runtime and `inspect`: LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." once
    per process when the first interpreter is built, so each command runs in a fresh process here."""
    from PIL import Image

    from videoseal_tflite.build.images import bundled_image
    from videoseal_tflite.runtime.image import to_uint8

    photo, marked = tmp_path / "photo.png", tmp_path / "marked.png"
    Image.fromarray(to_uint8(bundled_image("coffee").pixels)).save(photo)
    models = ["--artifacts", str(compact_artifacts.out_dir.parent), "--card", "compact"]
    cli = [sys.executable, "-m", "videoseal_tflite.cli.main"]
    message = "0110100111010010"
    for argv, ours in (
        (["embed", photo, marked, "--message", message, *models], "wrote "),
        (["detect", marked, "--message", message, *models], "matching bits: "),
        (["inspect", compact_artifacts.out_dir / "detector_128_int8.tflite"], "XNNPACK: "),
    ):
        proc = subprocess.run([*cli, *map(str, argv)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        terminal = _lines(proc.stdout) + _lines(proc.stderr)
        assert [line for line in terminal if NOISE.search(line)] == [], argv[0]
        assert any(line.startswith(ours) for line in _lines(proc.stdout)), f"{argv[0]}: our result line is shown"
