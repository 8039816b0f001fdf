"""The CI matrix (issue #15): the workflow passes actionlint, and its own shell steps, run here in matrix order
into separate folders, merge into a release byte-identical to a single run."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videoseal_tflite.store.artifact import DEFAULT_CARD
from videoseal_tflite.store.manifest import MANIFEST_NAME

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "artifacts.yml"
VENV_BIN = Path(sys.executable).parent


@pytest.mark.fast
@pytest.mark.parametrize("workflow", sorted((ROOT / ".github" / "workflows").glob("*.yml")), ids=lambda p: p.name)
def test_workflow_passes_actionlint(workflow):
    proc = subprocess.run([str(VENV_BIN / "actionlint"), str(workflow)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.fast
def test_pull_requests_run_lint_and_the_fast_tier():
    steps = (ROOT / ".github" / "workflows" / "pr.yml").read_text()
    assert "pull_request:" in steps and "run: make lint" in steps and "run: make test-fast" in steps


def _expand(text: str, matrix: dict) -> str:
    """`${{ matrix.x }}` as Actions fills it in (the only expression the run steps and env use)."""
    return re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", lambda m: str(matrix[m.group(1)]), str(text))


def _workspace(tmp: Path) -> Path:
    """A checkout as the runner has it: the repository's files (links) and the venv `Set up` makes. `make` is a
    stub there: the venv is this one, already set up, and a real `make setup` through the link would rewrite it."""
    work = tmp / "workspace"
    (work / ".stub-bin").mkdir(parents=True)
    for name in ("Makefile", "requirements.lock", "pyproject.toml", "scripts", "videoseal_tflite", ".venv"):
        (work / name).symlink_to(ROOT / name)
    stub = work / ".stub-bin" / "make"
    stub.write_text('#!/bin/sh\n[ "$1" = setup ] || exit 3\n')
    stub.chmod(0o755)
    return work


def _run_steps(job: dict, work: Path, matrix: dict, env_extra: dict | None = None) -> None:
    """Every `run:` step of the job whose `if:` holds, with the job's env, GITHUB_ENV and GITHUB_PATH honoured."""
    runner = "-".join(str(v) for v in matrix.values()) or "job"  # cells running at once keep their own files
    env_file, path_file = work / f".env-{runner}", work / f".path-{runner}"
    env_file.write_text("")
    path_file.write_text("")
    base = {k: _expand(v, matrix) for k, v in (job.get("env") or {}).items()}
    for step in job["steps"]:
        condition = str(step.get("if", ""))
        if "failure()" in condition or "always()" in condition:
            continue
        if condition == "!startsWith(matrix.card, 'compact')" and str(matrix.get("card")).startswith("compact"):
            continue
        if "run" not in step:
            continue
        extra = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        paths = [str(work / ".stub-bin"), *(p for p in path_file.read_text().splitlines() if p)]
        env = {**os.environ, **base, **(env_extra or {}), **extra, "GITHUB_ENV": str(env_file),
               "GITHUB_PATH": str(path_file), "GITHUB_STEP_SUMMARY": str(work / "summary.md"),
               "PATH": os.pathsep.join([*paths, str(VENV_BIN), os.environ["PATH"]])}  # fmt: skip
        env.update({k: _expand(v, matrix) for k, v in (step.get("env") or {}).items() if "secrets." not in str(v)})
        proc = subprocess.run(["bash", "-e", "-c", _expand(step["run"], matrix)], cwd=work, env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, f"step {step.get('name')}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The workflow's compact shards (matrix order, separate folders), downloaded as Actions would, then merged."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    work = _workspace(tmp_path_factory.mktemp("ci"))
    shard_job = workflow["jobs"]["shard"]
    matrix = shard_job["strategy"]["matrix"]
    assert matrix["part"] == ["embedder", "detector"] and "compact" in matrix["card"]
    cells = [{"card": "compact", "part": part} for part in matrix["part"]]
    with concurrent.futures.ThreadPoolExecutor(len(cells)) as jobs:  # matrix jobs run at once, as on Actions
        list(jobs.map(lambda cell: _run_steps(shard_job, work, cell), cells))
    shards = [work / _expand(shard_job["env"]["SHARD"], cell) for cell in cells]
    for shard in shards:  # download-artifact: each artifact in shards/<artifact name>/
        shutil.copytree(shard, work / "shards" / f"shard-{shard.name}")
    merge_job = dict(workflow["jobs"]["merge"])
    # `Validate` runs the full-resolution attack table (minutes); test_validate covers it on the same files
    merge_job["steps"] = [s for s in merge_job["steps"] if s.get("name") != "Validate"]
    _run_steps(merge_job, work, {})
    return {"work": work, "release": work / "release", "shards": shards}


def test_merged_release_is_byte_identical_to_a_single_run(released, compact_artifacts, out_root):
    release = released["release"]
    single = json.loads((out_root / MANIFEST_NAME).read_text())
    expected = {k: v for k, v in single["files"].items() if k.startswith("compact/")}
    merged = json.loads((release / MANIFEST_NAME).read_text())
    assert sorted(merged["files"]) == list(merged["files"]) == sorted(expected)
    differing = {rel: sorted(k for k in expected[rel] if expected[rel][k] != merged["files"][rel].get(k))
                 for rel in expected}  # fmt: skip
    assert {rel: keys for rel, keys in differing.items() if keys} == {}
    for rel in expected:
        assert (release / rel).read_bytes() == (out_root / rel).read_bytes(), rel
    manifest = {"schema": 1, "default_card": DEFAULT_CARD, "tool_versions": single["tool_versions"], "files": expected}
    assert (release / MANIFEST_NAME).read_text() == json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    assert sorted(p.name for p in (release / "compact").glob("*.tflite")) == sorted(Path(k).name for k in expected)


def test_conflicting_shards_stop_the_merge_naming_the_file(released, tmp_path, capsys):
    from videoseal_tflite.cli.main import main

    bad = tmp_path / "bad"
    shutil.copytree(released["shards"][1], bad)
    manifest = json.loads((bad / MANIFEST_NAME).read_text())
    rel = next(iter(manifest["files"]))
    data = bytearray((bad / rel).read_bytes())
    data[-1] ^= 0xFF  # same file name, other bytes, its own manifest updated: a shard built differently
    (bad / rel).write_bytes(bytes(data))
    import hashlib

    manifest["files"][rel]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (bad / MANIFEST_NAME).write_text(json.dumps(manifest))
    out = tmp_path / "release"
    code = main(["merge", str(released["shards"][1]), str(bad), "--artifacts", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "MergeConflict" in err[0] and rel in err[0]
    assert not out.exists() or not any(out.rglob("*.tflite"))


def test_a_missing_part_is_reported_by_verify_and_validate(released, tmp_path, capsys):
    from videoseal_tflite.cli.main import main

    out = tmp_path / "half"
    assert main(["merge", str(released["shards"][0]), "--artifacts", str(out)]) == 0
    capsys.readouterr()
    assert main(["verify", "--artifacts", str(out), "--no-load"]) == 1
    err = capsys.readouterr().err
    assert "missing_part: compact/: no detector in the manifest" in err
    assert main(["validate", "--artifacts", str(out), "--no-fullres"]) == 1
    assert "compact: no detector file (missing part)" in capsys.readouterr().err
