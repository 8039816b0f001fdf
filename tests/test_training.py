"""scripts/train_compact.py's engine: deterministic for a seed, and resuming gives the same weights."""

from __future__ import annotations

import torch

from videoseal_tflite.training.curriculum import TrainConfig, train

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


def test_robust_finetuning_is_deterministic_and_resumes(tmp_path):
    """scripts/train_robust.py's engine (issue #13): the full-resolution path with attacks, from the shipped
    weights; the same seed gives the same weights, and an interrupted run resumed equals an uninterrupted one."""
    from videoseal_tflite.training.robust import RobustConfig, finetune_robust

    tiny = RobustConfig(steps=4, batch=2, full_sizes=(160, 192), eval_every=4, checkpoint_every=100,
                        procedural_pool=2, ramp_fraction=0.5, target_psnr=30.0, lr_schedule="cosine",
                        lambda_margin=0.1, attacks="h264_motion,jpeg,crop")  # fmt: skip
    last = {}
    for name, stop in (("a", None), ("b", 2)):
        finetune_robust(tiny, tmp_path / name, tmp_path / f"{name}.pth", resume=False, progress=False, stop_after=stop)
        if stop:
            finetune_robust(tiny, tmp_path / name, tmp_path / f"{name}.pth", resume=True, progress=False)
        last[name] = torch.load(tmp_path / name / "last.pt", map_location="cpu", weights_only=False)
    assert last["a"]["step"] == last["b"]["step"] == 4
    for key, value in last["a"]["model"].items():
        assert torch.equal(value, last["b"]["model"][key]), f"resume differs: {key}"
    exported = torch.load(tmp_path / "a.pth", map_location="cpu", weights_only=False)["training"]
    assert set(exported) == {"config", "validation"} and exported["validation"]["step"] == 4
    history = last["a"]["history"]
    assert [h["step"] for h in history] == [0, 4] and 0.0 <= history[-1]["jpeg50"] <= 1.0 and history[-1]["psnr"] > 30


def test_robust_schedule_and_motion_drag():
    """The cosine schedule reaches 0 at `steps`; `shift` moves by a fraction of the side (what `h264_motion` drags
    the mark by); an unknown schedule is one usage line."""
    import pytest

    from videoseal_tflite.training.robust import RobustConfig, check_schedule, lr_factor, shift

    cosine = RobustConfig(steps=100, lr_schedule="cosine")
    assert [round(lr_factor(cosine, s), 6) for s in (0, 50, 100, 150)] == [1.0, 0.5, 0.0, 0.0]
    assert lr_factor(RobustConfig(steps=100), 99) == 1.0
    dot = torch.zeros(1, 1, 100, 200)
    dot[..., 50, 100] = 1
    assert torch.nonzero(shift(dot, 0.02, 0.05)[0, 0] > 0.5).tolist() == [[52, 110]]
    with pytest.raises(SystemExit, match="--lr-schedule: 'linear' is not one of constant, cosine"):
        check_schedule(RobustConfig(lr_schedule="linear"))


def test_canvas_attack_is_what_the_resync_reads():
    """`canvas_read` (the `canvas` training attack) is the runtime's re-synchronisation reading at the true extent and
    phase: the same pixels as resizing the crop with the runtime and putting it on `resync.canvas`, for every canvas
    kind; and the phase it picks puts a tile corner of the marked image on the canvas grid."""
    import numpy as np

    from videoseal_tflite.build.cards import load_card
    from videoseal_tflite.runtime.image import resize_bilinear
    from videoseal_tflite.runtime.resync import CANVASES, canvas
    from videoseal_tflite.training.robust import canvas_read

    card = load_card("compact64")
    s, tile = card.img_size, card.tile_period
    assert (s, tile) == (128, 16)
    rng = np.random.default_rng(0)
    marked = rng.random((3, 400, 600)).astype(np.float32)
    top, left, ch, cw = 57, 101, 283, 424  # 50 % of the area, off the tile grid
    crop = marked[:, top : top + ch, left : left + cw]
    h, w = round(s * ch / 400), round(s * cw / 600)
    oy, ox = round(-top / 400 * s) % tile, round(-left / 600 * s) % tile
    assert (oy, ox) == (14, 10)  # the crop starts at processing px (18.2, 21.5): the tile corner at 32 lands here
    for kind in CANVASES:
        ours = canvas_read(torch.from_numpy(crop)[None], (ch / 400, cw / 600), (top / 400, left / 600), card, kind)
        runtime = canvas(resize_bilinear(crop, h, w), ox, oy, kind, tile, s)
        assert ours.shape == (1, 3, s, s)
        np.testing.assert_allclose(ours[0].numpy(), runtime, atol=2e-6)
