"""Tamper-evident artifacts: verify catches tampered, missing and extra files; the output lock; SIGTERM."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videoseal_tflite.cli.main import main
from videoseal_tflite.store.lock import output_lock
from videoseal_tflite.store.manifest import read_manifest


@pytest.fixture
def artifact_copy(compact_artifacts, out_root, tmp_path):
    """A private copy of the artifact tree with only the compact card, and its manifest."""
    import json

    root = tmp_path / "artifacts"
    shutil.copytree(compact_artifacts.out_dir, root / "compact")
    manifest = json.loads((out_root / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k.startswith("compact/")}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _verify(root, capsys):
    code = main(["verify", "--artifacts", str(root), "--no-load"])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_verify_passes_on_a_fresh_tree(artifact_copy, capsys):
    assert main(["verify", "--artifacts", str(artifact_copy)]) == 0
    assert "files verified" in capsys.readouterr().out


def test_verify_reports_tampered_missing_and_extra(artifact_copy, capsys):
    files = sorted((artifact_copy / "compact").glob("*.tflite"))
    tampered, missing = files[0], files[1]
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    missing.unlink()
    (artifact_copy / "compact" / "detector_128_rogue.tflite").write_bytes(files[2].read_bytes())
    code, err = _verify(artifact_copy, capsys)
    assert code == 1 and len(err) == 3
    kinds = sorted(line.split(":")[0] for line in err)
    assert kinds == ["extra", "missing", "tampered"]


def test_verify_without_manifest(tmp_path, capsys):
    code, err = _verify(tmp_path, capsys)
    assert code == 1 and "no manifest.json" in err[0]


def test_second_writer_gets_a_clear_message(tmp_path):
    with output_lock(tmp_path):
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "from videoseal_tflite.store.lock import output_lock, FolderLocked\n"
                f"try:\n    output_lock({str(tmp_path)!r}).__enter__()\nexcept FolderLocked as e:\n    print(e)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"pid {os.getpid()}" in child.stdout and "is writing to" in child.stdout
    with output_lock(tmp_path):  # released: can be taken again
        pass


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries `marker` (a test's own children and their children)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            pass  # gone, or not ours to read
    return found


def test_sigterm_mid_conversion_stops_both_parts_and_leaves_no_partial_file(tmp_path):
    """Both parts are built at once (the detector in a second Python): SIGTERM to `convert` stops both, and
    neither leaves a partial file, a temp file or a process behind."""
    out, marker = tmp_path / "out", f"VST_SIGTERM_TEST={os.getpid()}-{time.time_ns()}"
    command = [sys.executable, "-m", "videoseal_tflite.cli.main", "convert", "--card", "compact", "--variant", "fp32",
               "--workers", "2", "--artifacts", str(out)]  # fmt: skip
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.rglob(".*.tmp-*")):
        time.sleep(0.1)  # wait until a converter has its temp file open
    assert list(out.rglob(".*.tmp-*")), "conversion never started writing"
    assert len(_processes_with(marker)) >= 2, "the second part's process was not running"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    assert _processes_with(marker) == []
    assert not list(out.rglob("*.tmp-*"))
    # a part that finished before the signal keeps its file, as a one-process run keeps its finished first part:
    # whole, and listed in the manifest with its sha256 (verify's check); nothing else is left
    listed = read_manifest(out)["files"]
    for path in out.rglob("*.tflite"):
        entry = listed.get(path.relative_to(out).as_posix())
        assert entry is not None and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), path


def test_an_error_in_the_second_process_is_raised_as_its_own(tmp_path):
    from videoseal_tflite.build.cards import load_card
    from videoseal_tflite.build.pipeline import PartJob, _PartProcesses
    from videoseal_tflite.build.weights import WeightSource
    from videoseal_tflite.errors import InvalidCheckpoint

    missing = tmp_path / "missing.pth"
    job = PartJob(load_card("compact"), WeightSource(checkpoint=missing), tmp_path, "detector", True, (), False, False)
    with pytest.raises(InvalidCheckpoint, match="checkpoint not found: .*missing.pth"), _PartProcesses([job]) as others:
        others.results(progress=False, card_name="compact")


def test_a_second_process_that_dies_is_named(tmp_path, monkeypatch):
    from videoseal_tflite.build import pipeline
    from videoseal_tflite.build.cards import load_card
    from videoseal_tflite.build.weights import WeightSource
    from videoseal_tflite.errors import ConversionFailed

    monkeypatch.setattr(pipeline, "PART_PROCESS", "videoseal_tflite.no_such_module")  # the child exits 1 at once
    job = pipeline.PartJob(load_card("compact"), WeightSource(), tmp_path, "detector", True, (), False, False)
    with pytest.raises(ConversionFailed, match=r"detector of compact stopped \(exit code 1\)"):
        with pipeline._PartProcesses([job]) as others:
            others.results(progress=False, card_name="compact")
