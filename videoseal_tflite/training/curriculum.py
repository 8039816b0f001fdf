"""Train the `compact` card: deterministic for a seed, resumable, both cores, progress bar with bits and PSNR.

Curriculum (each stage is a number of optimizer steps; joint training from scratch stalls: a ViT reads a
patch-periodic code easily and a random embedder's residual hardly at all, so the code comes first):
  A. detector alone reads a synthetic message code: a fixed random tile per bit (8x8 px, or the card's
     `watermark_tile_period` with `TrainConfig.tile` 0), tiled over the image (patch-periodic, what a ViT with
     16-px patches reads easily), its strength annealed 0.1 -> 2x scaling_w;
  B. embedder alone learns to emit that code for its message (regression onto the code);
  C. both jointly on the bit loss, the watermark strength annealed from 2x to the card's scaling_w, with the
     watermarked image rounded to 8 bits (straight-through) so the detector learns to read saved images.
The data are package-bundled and procedural images only; the card's held-out images are never used.

The code (`TrainConfig.code`): `sign`, sign(sum_k (2m_k-1) T_k) of random tiles (the 16-bit cards), or `linear`,
tanh(gain * sum_k (2m_k-1) T_k / sqrt(nbits)) of orthogonal tiles: no cross-talk between bits, and linear in the
message before the tanh, as the UNet's message path is (issue #26: with 64 bits on a 16-px tile, stage B's
matched-filter accuracy after 300 steps 0.80 vs 0.74 for `sign`, stage A's 0.88 vs 0.86).
`init_patch_embed` > 0 sets the detector's first `nbits` patch-embedding filters to the bits' tiles (scaled to
that norm), so the ViT reads the code linearly from the start (64 bits, 16-px tile, 400 stage-A steps: 0.86
vs 0.67 without).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from videoseal_tflite.build.cards import Card, load_card
from videoseal_tflite.build.images import (
    CALIB_BUNDLED,
    TRAIN_PROCEDURAL_SEEDS,
    bundled_image,
    evaluation_images,
    fit_square,
    procedural_image,
    random_messages,
)
from videoseal_tflite.build.weights import build_architecture
from videoseal_tflite.store.atomic import atomic_path


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    card: str = "compact"
    seed: int = 0
    steps_detector: int = 1000
    steps_embedder: int = 400
    steps_joint: int = 2400
    batch: int = 16
    lr_embedder: float = 1e-3
    lr_detector: float = 1.5e-4  # 1e-3 and above barely leave chance level (measured, stage A probes)
    threads: int = 2
    eval_every: int = 200
    checkpoint_every: int = 50
    procedural_pool: int = 384
    # issue #26 (more bits); the defaults are the 16-bit cards' recipe
    tile: int = 8  # the synthetic code's tile (px at the processing size); 0: the card's watermark_tile_period
    code: str = "sign"  # or "linear" (module docstring)
    code_gain: float = 1.5  # `linear`: tanh(gain * ...)
    init_patch_embed: float = 0.0  # > 0: the detector's patch filters start as the bits' tiles, this norm
    detector_warmup: int = 0  # steps of linear warm-up of the detector's learning rate at the start
    joint_lr_schedule: str = "constant"  # or "cosine": both rates decay to 10 % over stage C
    tensor_data: bool = False  # crops cut and resized with torch on `device` (no numpy/PIL per image)
    eval_all_stages: bool = False  # also evaluate in stages A (the code read) and B; the best is chosen in C only
    device: str = "cpu"

    @property
    def total_steps(self) -> int:
        return self.steps_detector + self.steps_embedder + self.steps_joint


CODES = ("sign", "linear")
JOINT_LR_SCHEDULES = ("constant", "cosine")


# fields that say where a run computes, not what it computes: a run may resume with other values (a GPU lend)
_PLACEMENT_FIELDS = ("threads", "device")


def same_recipe(saved: dict, cfg: TrainConfig) -> bool:
    """True when a checkpoint's config is `cfg`'s, placement aside; fields it predates count as their defaults."""
    current, defaults = dataclasses.asdict(cfg), dataclasses.asdict(TrainConfig())
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    return all(saved.get(k) == v for k, v in current.items() if k not in _PLACEMENT_FIELDS) and set(saved) == set(
        current
    )


def tile_size(cfg: TrainConfig, card: Card) -> int:
    """The synthetic code's tile: `cfg.tile`, or the card's `watermark_tile_period` when `cfg.tile` is 0."""
    tile = cfg.tile or card.tile_period
    if not tile or card.img_size % tile:
        raise SystemExit(f"tile {tile!r} must divide the processing size {card.img_size} (set --tile or the card's "
                         "watermark_tile_period)")  # fmt: skip
    return int(tile)


def stage_of(step: int, cfg: TrainConfig) -> str:
    if step < cfg.steps_detector:
        return "A"
    return "B" if step < cfg.steps_detector + cfg.steps_embedder else "C"


class TrainingData:
    """Random 128-px crops of bundled (non-held-out) images and a pool of procedural images; seeded."""

    def __init__(self, size: int, pool: int, seed: int) -> None:
        self.size = size
        self.bundled = [bundled_image(n).pixels for n in CALIB_BUNDLED]
        start = TRAIN_PROCEDURAL_SEEDS.start + 1000 * seed
        self.procedural = [procedural_image(s, int(size * 1.25)).pixels for s in range(start, start + pool)]

    def draw(self, rng: np.random.Generator):
        """One crop's source and place, the same draws whatever form the pictures take: (picture [3,H,W], top,
        left, side, photo). A bundled photo's square of `side` px is to be resized to `size`; a procedural
        image's is `size` already."""
        if rng.random() < 0.4:
            img = self.bundled[int(rng.integers(len(self.bundled)))]
            side = int(rng.integers(self.size, max(self.size + 1, min(img.shape[1:]) + 1)))
            top = int(rng.integers(0, img.shape[1] - side + 1))
            left = int(rng.integers(0, img.shape[2] - side + 1))
            return img, top, left, side, True
        img = self.procedural[int(rng.integers(len(self.procedural)))]
        top, left = (int(v) for v in rng.integers(0, img.shape[1] - self.size + 1, size=2))
        return img, top, left, self.size, False

    def squares(self, rng: np.random.Generator, count: int) -> Iterator[tuple[Any, bool]]:
        """`count` (square cut from a picture, photo) by `draw`, one at a time: lazily, so that a caller's own draws
        for each (flip, jitter) come between two of them, as they always have."""
        for _ in range(count):
            img, top, left, side, photo = self.draw(rng)
            yield img[:, top : top + side, left : left + side], photo

    def batch(self, rng: np.random.Generator, count: int) -> torch.Tensor:
        out = []
        for crop, photo in self.squares(rng, count):
            if photo:
                crop = fit_square(crop, self.size)
            if rng.random() < 0.5:
                crop = crop[:, :, ::-1]
            if rng.random() < 0.5:  # brightness/contrast jitter
                crop = np.clip((crop - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.1, 0.1), 0, 1)
            out.append(np.ascontiguousarray(crop, dtype=np.float32))
        return torch.from_numpy(np.stack(out))


class TensorTrainingData(TrainingData):
    """`TrainingData`'s draws with torch on `device`: the crop of a photo resized by `F.interpolate` (bicubic,
    antialiased) instead of PIL, no numpy per image, so that a GPU is not starved by the host."""

    def __init__(self, size: int, pool: int, seed: int, device: str = "cpu") -> None:
        super().__init__(size, pool, seed)
        self.bundled = [torch.from_numpy(p).to(device) for p in self.bundled]
        self.procedural = [torch.from_numpy(p).to(device) for p in self.procedural]

    def batch(self, rng: np.random.Generator, count: int) -> torch.Tensor:
        out = []
        for crop, photo in self.squares(rng, count):
            if photo:
                if crop.shape[-1] != self.size:
                    crop = F.interpolate(crop[None], size=(self.size, self.size), mode="bicubic", antialias=True)[0]
                crop = crop.clamp(0, 1)
            if rng.random() < 0.5:
                crop = crop.flip(-1)
            if rng.random() < 0.5:  # brightness/contrast jitter
                crop = ((crop - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)).clamp(0, 1)
            out.append(crop)
        return torch.stack(out).float()


def code_templates(cfg: TrainConfig, card: Card) -> torch.Tensor:
    """The bits' tiles [nbits, 3, tile, tile]: random normal (`sign`, as drawn for the 16-bit cards), or an
    orthogonal set of RMS 1 (`linear`)."""
    tile, generator = tile_size(cfg, card), torch.Generator().manual_seed(cfg.seed + 1)
    if cfg.code == "sign":
        return torch.randn(card.nbits, 3, tile, tile, generator=generator)
    if cfg.code != "linear":
        raise SystemExit(f"--code: {cfg.code!r} is not one of {', '.join(CODES)}")
    dims = 3 * tile * tile
    if card.nbits > dims:
        raise SystemExit(f"a {tile}-px tile holds at most {dims} orthogonal codes, the card has {card.nbits} bits")
    q, _ = torch.linalg.qr(torch.randn(dims, card.nbits, generator=generator))
    return (q.T * math.sqrt(dims)).reshape(card.nbits, 3, tile, tile)


def message_code(templates: torch.Tensor, msgs: torch.Tensor, size: int, code: str, gain: float) -> torch.Tensor:
    """The target watermark of stages A and B for `code` (module docstring), tiled to size x size."""
    if code == "sign":
        return synthetic_code(templates, msgs, size)
    tile = torch.einsum("bk,kchw->bchw", msgs * 2 - 1, templates) / math.sqrt(templates.shape[0])
    reps = size // templates.shape[-1]
    return torch.tanh(gain * tile).repeat(1, 1, reps, reps)


def init_patch_embedding(detector: torch.nn.Module, templates: torch.Tensor, norm: float) -> None:
    """The detector's first nbits patch-embedding filters := the bits' tiles (repeated to fill a patch), at `norm`."""
    proj = detector.image_encoder.patch_embed.proj
    patch, tile = proj.weight.shape[-1], templates.shape[-1]
    if patch % tile or templates.shape[0] > proj.weight.shape[0]:
        raise SystemExit(f"--init-patch-embed needs a tile ({tile}) dividing the patch ({patch}) and at most "
                         f"{proj.weight.shape[0]} bits")  # fmt: skip
    filters = templates.repeat(1, 1, patch // tile, patch // tile)
    with torch.no_grad():
        proj.weight[: len(filters)] = filters / filters.flatten(1).norm(dim=1)[:, None, None, None] * norm


def synthetic_code(templates: torch.Tensor, msgs: torch.Tensor, size: int) -> torch.Tensor:
    """sign(sum_k (2m_k-1) T_k) tiled to size x size: the target watermark of stages A and B, in {-0.9, 0.9}."""
    signs = msgs * 2 - 1  # b k
    tile = torch.einsum("bk,kchw->bchw", signs, templates)
    reps = size // templates.shape[-1]
    return 0.9 * torch.sign(tile).repeat(1, 1, reps, reps)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """8-bit rounding with a straight-through gradient."""
    return x + (torch.round(x * 255) / 255 - x).detach()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a, b).item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def min_matching(nbits: int, fpr: float = 1e-6) -> int | None:
    """The fewest matching bits of `nbits` whose one-sided binomial p-value is <= fpr (None: not reachable); the
    same rule as runtime.verdict.min_matching_bits, kept here so that training does not load the runtime."""
    tail = 0
    for k in range(nbits, -1, -1):
        tail += math.comb(nbits, k)
        if tail / 2**nbits > fpr:
            return k + 1 if k < nbits else None
    return 0


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, msgs: torch.Tensor) -> dict[str, float]:
    """Held-out evaluation with videoseal's own embed/detect; watermarked images rounded to 8 bits. With 32 bits
    or more, also the share of images decided at FPR 1e-6 (`decided_1e-6`)."""
    model.eval()
    imgs_w = model.embed(images, msgs, is_video=False)["imgs_w"]
    imgs_w = torch.round(imgs_w.clamp(0, 1) * 255) / 255
    preds = model.detect(imgs_w, is_video=False)["preds"]
    clean = model.detect(images, is_video=False)["preds"]
    correct = (preds[:, 1:] > 0).float() == msgs
    metrics = {
        "bit_accuracy": correct.float().mean().item(),
        "psnr_db": psnr(imgs_w, images),
        "detection_tpr": (preds[:, 0] > 0).float().mean().item(),
        "detection_fpr": (clean[:, 0] > 0).float().mean().item(),
    }
    needed = min_matching(msgs.shape[1]) if msgs.shape[1] >= 32 else None
    if needed is not None:
        metrics["decided_1e-6"] = (correct.sum(dim=1) >= needed).float().mean().item()
    return metrics


def heldout_set(card: Card, messages_per_image: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.stack([i.pixels for i in evaluation_images(card.img_size)]))
    images = images.repeat_interleave(messages_per_image, 0)
    msgs = torch.from_numpy(random_messages(len(images), card.nbits, seed=123))
    return images, msgs


def rng_state(rng: np.random.Generator) -> dict:
    """Every random state a training step draws from (numpy, torch, Python), for a checkpoint."""
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def export_weights(
    model: torch.nn.Module,
    card: Card,
    target: Path,
    metrics: dict,
    cfg: Any,  # the run's frozen config dataclass (TrainConfig, or training.robust.RobustConfig)
    measured_on: str = "heldout",
) -> None:
    """Official checkpoint layout: {'model': state_dict, 'args': {...}}; embedder and detector only. `metrics` go
    under `training[measured_on]`: the set they were measured on (`heldout`, or `validation` for robust runs)."""
    state = {
        k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith(("embedder.", "detector."))
    }
    payload = {
        "model": state,
        "args": {"nbits": card.nbits, "card": card.name, "img_size": card.img_size},
        "training": {"config": dataclasses.asdict(cfg), measured_on: metrics},
    }
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)


@dataclasses.dataclass
class _Run:
    """Everything a training run carries from step to step (and into `last.pt`)."""

    card: Card
    model: torch.nn.Module
    templates: torch.Tensor
    opt_e: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    rng: np.random.Generator
    step: int = 0
    best: dict = dataclasses.field(default_factory=lambda: {"bit_accuracy": -1.0})
    history: list = dataclasses.field(default_factory=list)


def seeded_model(card_name: str, seed: int, threads: int) -> tuple[Card, np.random.Generator, torch.nn.Module]:
    """Where every training run starts: `threads` torch threads, deterministic kernels, torch's, Python's and a
    numpy generator seeded with `seed`, then the card's architecture built (its initial weights drawn from them)."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    card = load_card(card_name)
    torch.manual_seed(seed)
    random.seed(seed)
    rng = np.random.default_rng(seed)
    return card, rng, build_architecture(card)


def _start(cfg: TrainConfig, last: Path, resume: bool) -> _Run:
    """Seeded model, optimizers and RNG; resumed from `last` when it exists (same configuration only)."""
    card, rng, model = seeded_model(cfg.card, cfg.seed, cfg.threads)
    torch.nn.init.zeros_(model.embedder.unet.outc.weight)  # start silent; the embedder learns what to emit
    torch.nn.init.zeros_(model.embedder.unet.outc.bias)
    if cfg.joint_lr_schedule not in JOINT_LR_SCHEDULES:
        known = ", ".join(JOINT_LR_SCHEDULES)
        raise SystemExit(f"--joint-lr-schedule: {cfg.joint_lr_schedule!r} is not one of {known}")
    templates = code_templates(cfg, card)
    if cfg.init_patch_embed > 0:
        init_patch_embedding(model.detector, templates, cfg.init_patch_embed)
    if cfg.device.startswith("cuda"):  # cuBLAS is deterministic only with a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    model.to(cfg.device)
    templates = templates.to(cfg.device)
    opt_e = torch.optim.AdamW(model.embedder.parameters(), lr=cfg.lr_embedder, weight_decay=1e-4)
    opt_d = torch.optim.AdamW(model.detector.parameters(), lr=cfg.lr_detector, weight_decay=1e-4)
    run = _Run(card, model, templates, opt_e, opt_d, rng)
    if resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        if not same_recipe(state["config"], cfg):
            raise SystemExit(f"{last} was written with another configuration; use a new --workdir or --no-resume")
        model.load_state_dict(state["model"])
        opt_e.load_state_dict(state["opt_e"])
        opt_d.load_state_dict(state["opt_d"])
        run.step, run.best, run.history = state["step"], state["best"], state["history"]
        set_rng_state(rng, state["rng"])
    return run


def _set_learning_rates(run: _Run, cfg: TrainConfig, stage: str) -> None:
    """The detector's warm-up at the start of stage A and stage C's schedule; with the defaults, nothing changes."""
    factor_d = factor_e = 1.0
    if cfg.detector_warmup > 0:
        factor_d = min(1.0, (run.step + 1) / cfg.detector_warmup)
    if stage == "C" and cfg.joint_lr_schedule == "cosine":
        progress_c = (run.step - cfg.steps_detector - cfg.steps_embedder) / max(cfg.steps_joint, 1)
        factor_d = factor_e = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_c)))
    if cfg.detector_warmup > 0 or cfg.joint_lr_schedule != "constant":
        for opt, base, factor in ((run.opt_d, cfg.lr_detector, factor_d), (run.opt_e, cfg.lr_embedder, factor_e)):
            for group in opt.param_groups:
                group["lr"] = base * factor


def _step(run: _Run, cfg: TrainConfig, data: TrainingData) -> tuple[str, dict[str, float]]:
    """One optimizer step of the curriculum stage `run.step` is in; returns the stage and its batch stats."""
    card, model, step = run.card, run.model, run.step
    stage = stage_of(step, cfg)
    model.train()
    _set_learning_rates(run, cfg, stage)
    imgs = data.batch(run.rng, cfg.batch).to(cfg.device)
    msgs = torch.randint(0, 2, (cfg.batch, card.nbits), generator=None).float().to(cfg.device)
    target = message_code(run.templates, msgs, card.img_size, cfg.code, cfg.code_gain)
    stats: dict[str, float] = {}
    if stage == "A":
        # a strong code first (0.1, about 21 dB), annealed to 2x the card's strength by the end of stage A
        strength = 0.1 + (2 * card.scaling_w - 0.1) * step / max(cfg.steps_detector, 1)
        imgs_w = round_ste((imgs + strength * target).clamp(0, 1))
    elif stage == "B":
        w = model.embedder(imgs, msgs)
        loss = F.mse_loss(w, target)
        run.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        run.opt_e.step()
        return stage, {"code_mse": loss.item()}
    else:
        progress_c = (step - cfg.steps_detector - cfg.steps_embedder) / max(cfg.steps_joint, 1)
        strength = card.scaling_w * (2.0 - min(progress_c / 0.5, 1.0))  # 2x -> 1x over the first half
        w = model.embedder(imgs, msgs)
        imgs_w = round_ste((imgs + strength * w).clamp(0, 1))
        aux = max(0.0, 1.0 - progress_c / 0.2)  # keep the code shape for the first 20 % of joint training
    preds = model.detector(torch.cat([imgs_w, imgs]))
    bits = preds[: cfg.batch, 1:]
    detected = torch.cat([torch.ones(cfg.batch), torch.zeros(cfg.batch)]).to(cfg.device)
    loss = F.binary_cross_entropy_with_logits(bits, msgs) + 0.2 * F.binary_cross_entropy_with_logits(
        preds[:, 0], detected
    )
    if stage == "C" and aux > 0:
        loss = loss + aux * F.mse_loss(w, target)
    run.opt_d.zero_grad(set_to_none=True)
    run.opt_e.zero_grad(set_to_none=True)
    loss.backward()
    run.opt_d.step()
    if stage == "C":
        run.opt_e.step()
    stats["bit_acc"] = ((bits > 0).float() == msgs).float().mean().item()
    stats["psnr"] = psnr(imgs_w.detach(), imgs)
    return stage, stats


@torch.no_grad()
def _evaluate_stage(run: _Run, cfg: TrainConfig, stage: str, images: torch.Tensor, msgs: torch.Tensor) -> dict:
    """Stage A: the detector reading the synthetic code at 2x and 1x the card's strength (held-out images, 8-bit
    rounded); stage B: `evaluate` (the embedder's output read by the detector as trained so far)."""
    if stage == "B":
        return evaluate(run.model, images, msgs)
    run.model.eval()
    code = message_code(run.templates, msgs, run.card.img_size, cfg.code, cfg.code_gain)
    out = {}
    for name, factor in (("code_bit_accuracy_2x", 2.0), ("code_bit_accuracy_1x", 1.0)):
        marked = torch.round((images + factor * run.card.scaling_w * code).clamp(0, 1) * 255) / 255
        out[name] = ((run.model.detector(marked)[:, 1:] > 0).float() == msgs).float().mean().item()
    run.model.train()
    return out


def _save(run: _Run, cfg: TrainConfig, last: Path) -> None:
    state = {
        "config": dataclasses.asdict(cfg),
        "model": run.model.state_dict(),
        "opt_e": run.opt_e.state_dict(),
        "opt_d": run.opt_d.state_dict(),
        "step": run.step,
        "best": run.best,
        "history": run.history,
        "rng": rng_state(run.rng),
    }
    with atomic_path(last) as tmp:
        torch.save(state, tmp)


def train(
    cfg: TrainConfig,
    workdir: Path,
    out: Path,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    log_every: int = 0,
) -> dict:
    """Run (or resume) training; write the best held-out checkpoint to `out`. Returns the best metrics.
    `stop_after` ends this run early at that step (as an interruption would), checkpoint written. `log_every` > 0
    writes one JSON line of the batch stats every that many steps (for a log file, where a progress bar is not)."""
    workdir.mkdir(parents=True, exist_ok=True)
    last = workdir / "last.pt"
    run = _start(cfg, last, resume)
    if cfg.tensor_data:
        data: TrainingData = TensorTrainingData(run.card.img_size, cfg.procedural_pool, cfg.seed, cfg.device)
    else:
        data = TrainingData(run.card.img_size, cfg.procedural_pool, cfg.seed)
    eval_images, eval_msgs = (t.to(cfg.device) for t in heldout_set(run.card))
    bar = tqdm(total=cfg.total_steps, initial=run.step, desc="train compact", disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    while run.step < min(cfg.total_steps, stop_after or cfg.total_steps):
        stage, stats = _step(run, cfg, data)
        run.step += 1
        bar.update(1)
        bar.set_postfix(
            {"stage": stage, **{k: round(v, 3) for k, v in stats.items()}, "best": round(run.best["bit_accuracy"], 3)}
        )
        if log_every and run.step % log_every == 0:
            elapsed = time.perf_counter() - start
            line = {"step": run.step, "stage": stage, **{k: round(v, 4) for k, v in stats.items()}}
            tqdm.write(json.dumps(line | {"elapsed_s": round(elapsed), "time": time.strftime("%H:%M:%S")}))
        due = run.step % cfg.eval_every == 0 or run.step == cfg.total_steps
        if due and stage != "C" and cfg.eval_all_stages:
            metrics = {"step": run.step, "stage": stage, **_evaluate_stage(run, cfg, stage, eval_images, eval_msgs)}
            run.history.append(metrics)
            tqdm.write(json.dumps(metrics))
        if stage == "C" and due:
            metrics = {"step": run.step, **evaluate(run.model, eval_images, eval_msgs)}
            run.history.append(metrics)
            tqdm.write(json.dumps(metrics))
            if metrics["bit_accuracy"] > run.best["bit_accuracy"]:
                run.best = metrics
                export_weights(run.model, run.card, out, metrics, cfg)
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.total_steps or run.step == stop_after:
            _save(run, cfg, last)
    bar.close()
    summary = {"best": run.best, "history": run.history, "seconds_this_run": time.perf_counter() - start}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
