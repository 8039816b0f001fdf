"""scripts/train_compact.py's engine: deterministic for a seed, and resuming gives the same weights."""

from __future__ import annotations

import torch

from videoseal_tflite.training import TrainConfig, train

TINY = TrainConfig(
    steps_detector=2, steps_embedder=2, steps_joint=2, batch=2, eval_every=1000, checkpoint_every=100, procedural_pool=4
)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_same_seed_same_weights_and_resume_matches(tmp_path):
    train(TINY, tmp_path / "a", tmp_path / "a.pth", resume=False, progress=False)
    train(TINY, tmp_path / "b", tmp_path / "b.pth", resume=False, progress=False)
    # interrupted after 3 steps, then resumed from its checkpoint
    train(TINY, tmp_path / "c", tmp_path / "c.pth", resume=False, progress=False, stop_after=3)
    assert not (tmp_path / "c.pth").exists()  # no evaluation yet, so no best weights either
    train(TINY, tmp_path / "c", tmp_path / "c.pth", resume=True, progress=False)
    a, b, c = _weights(tmp_path / "a.pth"), _weights(tmp_path / "b.pth"), _weights(tmp_path / "c.pth")
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"not deterministic: {key}"
        assert torch.equal(a[key], c[key]), f"resume differs: {key}"
