"""Robust fine-tuning of the `compact` card through the runtime's own full-resolution path (issue #13).

Each step, for a batch of crops of side F (F drawn per batch from `full_sizes`, larger than the card's
processing size S):
  1. x_S = resize(x_F, S)            bilinear, antialiased (as `runtime.embed` step 2)
  2. w   = embedder(x_S, m)          tanh watermark at S
  3. w_F = resize(w, F)              bilinear (as `runtime.embed` step 4)
  4. y   = round8(clamp(x_F + scaling_w * w_F))   8-bit rounding with a straight-through gradient
  5. y'  = attack(y)                 one of: identity, JPEG (videoseal's straight-through `JPEG`), resize,
                                     crop (then read as is), brightness, contrast, blur, an H.264 stand-in
                                     (4:2:0 chroma subsampling + JPEG; `h264_motion`: first the mark
                                     dragged by motion as in a pan's P frame), or JPEG after a downscale
  6. logits = detector(resize(y', S))
Loss: bit BCE + `lambda_psnr` * relu(target_psnr - PSNR(y, x)) per image, so the watermark may use the room
up to the PSNR target but not past it (+ `lambda_margin` * relu(margin - signed logit) per bit, if set). Attack
strength ramps from mild to the configured strength over `ramp_fraction` of the run; the attack mix is data
(`RobustConfig.attacks`, names from `KNOWN_ATTACKS`). The learning rates stay constant or decay along a cosine
over `steps` (`lr_schedule`).

Model selection (the best score; a tie goes to the later step with `later_wins_ties`) uses a validation set
(procedural images of unseen seeds at 512 px plus full-size training photos), never the card's held-out images.
Deterministic per seed and device; resumable from `last.pt`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from videoseal_tflite.build.cards import Card, load_card
from videoseal_tflite.build.images import CALIB_BUNDLED, TRAIN_PROCEDURAL_SEEDS, bundled_image, procedural_image
from videoseal_tflite.runtime.resync import CANVASES, CanvasKind, canvas
from videoseal_tflite.store.atomic import atomic_path
from videoseal_tflite.training.curriculum import export_weights, rng_state, round_ste, seeded_model, set_rng_state

VALIDATION_PROCEDURAL_SEEDS = range(3000, 3008)  # never in eval, calibration or training seeds


@dataclasses.dataclass(frozen=True)
class RobustConfig:
    card: str = "compact"
    init: str = "package:weights/compact.pth"  # the weights to start from (`package:` = inside videoseal_tflite/build/)
    seed: int = 0
    steps: int = 20000
    batch: int = 8
    lr_embedder: float = 1e-4
    lr_detector: float = 2e-4
    full_sizes: tuple[int, ...] = (192, 256, 320, 384, 512)
    target_psnr: float = 40.0
    lambda_psnr: float = 0.05
    ramp_fraction: float = 0.5
    jpeg_min_quality: int = 40
    min_scale: float = 0.4
    min_crop_area: float = 0.4
    threads: int = 1
    device: str = "cpu"
    eval_every: int = 250
    checkpoint_every: int = 50
    procedural_pool: int = 96
    attacks: str = "identity,jpeg,resize,crop,crop,h264,resize_jpeg,brightness,contrast,blur"  # drawn uniformly
    lr_schedule: str = "constant"  # or "cosine": both learning rates decay to 0 over `steps`
    lambda_margin: float = 0.0  # weight of a hinge that wants every bit's logit on the right side by `margin`
    margin: float = 3.0
    motion_reach: float = 0.015  # `h264_motion`: how far the mark is dragged, as a fraction of the side
    motion_taps: int = 1  # `h264_motion`: >1 averages that many drags up to the reach (a long GOP's smear)
    later_wins_ties: bool = False  # a validation score equal to the best replaces it (a saturated set: later = longer)


_JPEG_POOL: dict[int, ThreadPoolExecutor] = {}


def _jpeg_roundtrip(arr: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.array(Image.open(buf).convert("RGB"))


def interpolate(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def jpeg_ste(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Per-image JPEG through Pillow with a straight-through gradient (videoseal's `JPEG(passthrough=True)`).

    The batch crosses to the host once as uint8; Pillow (which releases the GIL while it codes) runs the images
    on `torch.get_num_threads()` threads, results in batch order, so the output does not depend on the pool."""
    arrs = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    threads = max(1, torch.get_num_threads())
    pool = _JPEG_POOL.setdefault(threads, ThreadPoolExecutor(max_workers=threads))
    decoded = list(pool.map(_jpeg_roundtrip, arrs, [quality] * len(arrs)))
    compressed = torch.from_numpy(np.stack(decoded)).to(x.device).permute(0, 3, 1, 2).float() / 255
    return x + (compressed - x).detach()


def chroma_420(x: torch.Tensor) -> torch.Tensor:
    """yuv420p's chroma subsampling (BT.601), differentiable: what H.264 does before it quantizes."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u, v = (b - y) * 0.564, (r - y) * 0.713
    h, w = x.shape[-2:]
    u = interpolate(F.avg_pool2d(u, 2, ceil_mode=True), (h, w), antialias=False)
    v = interpolate(F.avg_pool2d(v, 2, ceil_mode=True), (h, w), antialias=False)
    return torch.cat([y + 1.403 * v, y - 0.344 * u - 0.714 * v, y + 1.773 * u], 1).clamp(0, 1)


def shift(x: torch.Tensor, fy: float, fx: float) -> torch.Tensor:
    """`x` moved by (fy, fx) of its height and width, bilinear (sub-pixel), edges replicated."""
    theta = torch.tensor([[1.0, 0.0, -2 * fx], [0.0, 1.0, -2 * fy]], device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = max(3, int(2 * round(2 * sigma) + 1))
    t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="reflect"), g.view(1, 1, 1, k).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="reflect"), g.view(1, 1, k, 1).repeat(3, 1, 1, 1), groups=3)


@dataclasses.dataclass(frozen=True)
class Draw:
    """What one attack may use besides the image: its strength, the run's random stream and configuration, the JPEG
    quality drawn for this step, and the unmarked original (for `h264_motion`)."""

    strength: float
    rng: np.random.Generator
    cfg: RobustConfig
    quality: int
    original: torch.Tensor | None


def _resize(x: torch.Tensor, d: Draw, jpeg: bool = False) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = 1 - d.strength * (1 - d.cfg.min_scale) * d.rng.random()
    small = interpolate(x, (max(16, int(h * scale)), max(16, int(w * scale))))
    return jpeg_ste(small, d.quality) if jpeg else small


def _crop(x: torch.Tensor, d: Draw) -> torch.Tensor:
    h, w = x.shape[-2:]
    area = 1 - d.strength * (1 - d.cfg.min_crop_area) * d.rng.random()
    ch, cw = max(16, int(h * math.sqrt(area))), max(16, int(w * math.sqrt(area)))
    top, left = int(d.rng.integers(0, h - ch + 1)), int(d.rng.integers(0, w - cw + 1))
    return x[..., top : top + ch, left : left + cw]


def canvas_read(
    crop: torch.Tensor, extent: tuple[float, float], offset: tuple[float, float], card: Card, kind: CanvasKind
) -> torch.Tensor:
    """What `detect`'s re-synchronisation reads from a crop when it has found the crop's extent and phase
    (runtime/resync.py, steps 2-3): the crop resized to (c_y S, c_x S), so the tile is `tile_period` px again, and
    put on an S x S canvas of `kind` with a tile corner on the canvas grid. `offset`: the crop's top-left corner in
    the marked image, as a fraction of its (height, width). The canvas is `resync.canvas` itself, applied to a map of
    pixel indices, so the reading is differentiable and the runtime's, pixel for pixel."""
    s, tile = card.img_size, card.tile_period or 1
    h, w = max(2 * tile, round(s * extent[0])), max(2 * tile, round(s * extent[1]))
    planes = interpolate(crop, (h, w))
    oy, ox = (round(-offset[0] * s) % tile, round(-offset[1] * s) % tile)
    index = canvas(np.arange(h * w).reshape(1, h, w), ox, oy, kind, tile, s)[0]
    flat = torch.from_numpy(index.reshape(-1)).to(crop.device)
    return planes.flatten(-2)[..., flat].reshape(*planes.shape[:-2], s, s)


def _canvas(x: torch.Tensor, d: Draw) -> torch.Tensor:
    """A crop of 1 - strength x (1 - min_crop_area) x U of the area, at a random place, read as the
    re-synchronisation reads it when it finds the extent (within 1 %) and phase: `canvas_read` on one of the
    search's canvases. Returns S x S."""
    h, w = x.shape[-2:]
    area = 1 - d.strength * (1 - d.cfg.min_crop_area) * d.rng.random()
    ch, cw = max(16, int(h * math.sqrt(area))), max(16, int(w * math.sqrt(area)))
    top, left = int(d.rng.integers(0, h - ch + 1)), int(d.rng.integers(0, w - cw + 1))
    jitter = 1 + d.rng.uniform(-0.01, 0.01, 2)
    kind = CANVASES[int(d.rng.integers(len(CANVASES)))]
    card = _card(d.cfg.card)
    extent = (ch / h * jitter[0], cw / w * jitter[1])
    return canvas_read(x[..., top : top + ch, left : left + cw], extent, (top / h, left / w), card, kind)


@functools.lru_cache(maxsize=4)
def _card(name: str) -> Card:
    return load_card(name)


def _contrast(x: torch.Tensor, d: Draw) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * (1 + d.strength * d.rng.uniform(-0.3, 0.4)) + mean).clamp(0, 1)


def _h264_motion(x: torch.Tensor, d: Draw) -> torch.Tensor:
    """P frames of a pan: the content predicted right, the mark dragged along with it (part of the residual that
    would restore it dropped), smeared over `motion_taps`; then the H.264 stand-in."""
    if d.original is None:
        raise ValueError("h264_motion needs the original image the watermarked one was made from")
    angle, reach = 2 * math.pi * d.rng.random(), d.strength * d.cfg.motion_reach * d.rng.random()
    mark = x - d.original
    taps = [(j + 1) / d.cfg.motion_taps * reach for j in range(d.cfg.motion_taps)]
    dragged = sum(shift(mark, r * math.sin(angle), r * math.cos(angle)) for r in taps) / len(taps)
    x = x + d.rng.uniform(0.5, 1.0) * (dragged - mark)
    return jpeg_ste(chroma_420(x.clamp(0, 1)), d.quality)


# name -> attack(x, draw) -> attacked x: the one list of what `RobustConfig.attacks` may name
TRAINING_ATTACKS: dict[str, Callable[[torch.Tensor, Draw], torch.Tensor]] = {
    "identity": lambda x, d: x,
    "jpeg": lambda x, d: jpeg_ste(x, d.quality),
    "resize": _resize,
    "crop": _crop,
    "canvas": _canvas,  # a crop as the re-synchronisation reads it (S x S)
    # stand-in for H.264: 4:2:0 chroma, then block-DCT quantization (JPEG) at CRF-like strength
    "h264": lambda x, d: jpeg_ste(chroma_420(x), d.quality),
    "h264_motion": _h264_motion,
    "resize_jpeg": lambda x, d: _resize(x, d, jpeg=True),
    "brightness": lambda x, d: (x * (1 + d.strength * d.rng.uniform(-0.3, 0.4))).clamp(0, 1),
    "contrast": _contrast,
    "blur": lambda x, d: _gaussian_blur(x, 0.3 + d.strength * 1.2 * d.rng.random()),
}
KNOWN_ATTACKS = tuple(TRAINING_ATTACKS)


def apply_attack(
    name: str,
    x: torch.Tensor,
    strength: float,
    rng: np.random.Generator,
    cfg: RobustConfig,
    original: torch.Tensor | None = None,
) -> torch.Tensor:
    """One named attack (`TRAINING_ATTACKS`) at `strength` in [0,1] (0 = none, 1 = the configured strongest) on the
    watermarked `x` (`h264_motion` also needs the `original` it was made from). The JPEG quality is drawn first
    for every attack, so that the random stream does not depend on which attack runs."""
    quality = int(round(95 - strength * (95 - cfg.jpeg_min_quality) * rng.random()))
    return TRAINING_ATTACKS[name](x, Draw(strength, rng, cfg, quality, original))


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(cfg: RobustConfig, step: int) -> float:
    """The learning rates' multiplier at `step` (`cfg.lr_schedule`)."""
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, step / cfg.steps)))
    return 1.0


def attack_names(cfg: RobustConfig) -> tuple[str, ...]:
    """The configured attack mix (a name twice = drawn twice as often); unknown names are a usage error."""
    names = tuple(a.strip() for a in cfg.attacks.split(",") if a.strip())
    unknown = sorted(set(names) - set(KNOWN_ATTACKS))
    if not names or unknown:
        raise SystemExit(f"--attacks: unknown attack(s) {', '.join(unknown) or '(none given)'}; known: "
                         f"{', '.join(KNOWN_ATTACKS)}")  # fmt: skip
    return names


def check_schedule(cfg: RobustConfig) -> None:
    """An unknown `lr_schedule` is a usage error."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise SystemExit(f"--lr-schedule: {cfg.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")


class FullResData:
    """Random square crops of side F from training photos (full size) and procedural images at 512 px.

    The images live on `device` (a GPU step then never waits for the host); photos smaller than F are upscaled
    once per (photo, F) so that a crop of F fits, and kept."""

    def __init__(self, pool: int, seed: int, device: str = "cpu") -> None:
        self.photos = [torch.from_numpy(bundled_image(n).pixels).to(device) for n in CALIB_BUNDLED]
        start = TRAIN_PROCEDURAL_SEEDS.start + 50_000 + 1000 * seed
        seeds = range(start, start + pool)
        self.procedural = [torch.from_numpy(procedural_image(s, 512).pixels).to(device) for s in seeds]
        self._fitted: dict[tuple[int, int, int], torch.Tensor] = {}

    def _fit(self, source: int, index: int, img: torch.Tensor, side: int) -> torch.Tensor:
        if min(img.shape[1:]) >= side:
            return img
        key = (source, index, side)
        if key not in self._fitted:
            scale = side / min(img.shape[1:])
            size = (math.ceil(img.shape[1] * scale), math.ceil(img.shape[2] * scale))
            self._fitted[key] = interpolate(img[None], size)[0]
        return self._fitted[key]

    def batch(self, rng: np.random.Generator, count: int, side: int) -> torch.Tensor:
        out = []
        for _ in range(count):
            which = 0 if rng.random() < 0.5 else 1
            source = (self.photos, self.procedural)[which]
            index = int(rng.integers(len(source)))
            img = self._fit(which, index, source[index], side)
            top = int(rng.integers(0, img.shape[1] - side + 1))
            left = int(rng.integers(0, img.shape[2] - side + 1))
            crop = img[:, top : top + side, left : left + side]
            if rng.random() < 0.5:
                crop = crop.flip(-1)
            out.append(crop)
        return torch.stack(out).float()


def embed_full(model: torch.nn.Module, card: Card, x: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
    """Steps 1-4 of the module docstring: the runtime's full-resolution embed, differentiable, 8-bit rounded."""
    s = card.img_size
    w = model.embedder(interpolate(x, (s, s)), msgs)
    w = interpolate(w, tuple(x.shape[-2:]))
    return round_ste((card.scaling_i * x + card.scaling_w * w).clamp(0, 1))


def detect_bits(model: torch.nn.Module, card: Card, y: torch.Tensor) -> torch.Tensor:
    s = card.img_size
    return model.detector(interpolate(y, (s, s)))[:, 1:]


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(1 / mse)


def validation_set() -> list[np.ndarray]:
    """Full-size images never used for training or for the card's held-out table."""
    return [procedural_image(s, 512).pixels for s in VALIDATION_PROCEDURAL_SEEDS] + [
        bundled_image(n).pixels for n in CALIB_BUNDLED[:4]
    ]


def _centre_crop(y: torch.Tensor, area: float) -> torch.Tensor:
    h, w = y.shape[-2:]
    ch, cw = int(h * math.sqrt(area)), int(w * math.sqrt(area))
    return y[..., (h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]


def _centre_canvas(y: torch.Tensor, card: Card) -> torch.Tensor:
    """The 50 % centre crop as the re-synchronisation reads it at the true extent and phase (first canvas)."""
    if not card.tile_period:
        return _centre_crop(y, 0.5)
    h, w = y.shape[-2:]
    ch, cw = int(h * math.sqrt(0.5)), int(w * math.sqrt(0.5))
    top, left = (h - ch) // 2, (w - cw) // 2
    return canvas_read(y[..., top : top + ch, left : left + cw], (ch / h, cw / w), (top / h, left / w), card,
                       CANVASES[0])  # fmt: skip


@torch.no_grad()
def validate_robust(
    model: torch.nn.Module,
    card: Card,
    images: list[np.ndarray],
    device: str,
    with_crop: bool = True,
    with_canvas: bool = False,
) -> dict[str, float]:
    """Bit accuracy per attack (fixed strengths: JPEG 50/80, resize 0.5, crop 50 % area, H.264 stand-in) and PSNR,
    and a 90 %-area crop (`crop90`, a 1.05x rescale of the mark) that shows whether a crop curriculum gets anywhere;
    `canvas50`: the 50 % crop as the re-synchronisation reads it at the true extent and phase (`canvas_read`).

    `score` is the mean of clean, JPEG 80/50, resize and H.264, with the 50 % crop only `with_crop` (a run that does
    not train for crops is not chosen on it), `canvas50` only `with_canvas`; `crop90` is never scored."""
    model.eval()
    rng = np.random.default_rng(0)
    keys = ("clean", "jpeg80", "jpeg50", "resize0.5", "crop50", "crop90", "canvas50", "h264", "psnr")
    sums: dict[str, list[float]] = {k: [] for k in keys}
    for i, img in enumerate(images):
        x = torch.from_numpy(img)[None].to(device)
        msgs = torch.from_numpy(rng.integers(0, 2, (1, card.nbits)).astype(np.float32)).to(device)
        y = embed_full(model, card, x, msgs)
        attacked = {
            "clean": y,
            "jpeg80": jpeg_ste(y, 80),
            "jpeg50": jpeg_ste(y, 50),
            "resize0.5": interpolate(y, (y.shape[-2] // 2, y.shape[-1] // 2)),
            "crop50": _centre_crop(y, 0.5),
            "crop90": _centre_crop(y, 0.9),
            "canvas50": _centre_canvas(y, card),
            "h264": jpeg_ste(chroma_420(y), 70),
        }
        for name, img_a in attacked.items():
            sums[name].append(((detect_bits(model, card, img_a) > 0).float() == msgs).float().mean().item())
        sums["psnr"].append(psnr_per_image(y, x).item())
    model.train()
    out = {k: float(np.mean(v)) for k, v in sums.items()}
    scored = ("clean", "jpeg80", "jpeg50", "resize0.5") + (("crop50",) if with_crop else ()) + ("h264",)
    scored += ("canvas50",) if with_canvas else ()
    out["score"] = float(np.mean([out[k] for k in scored]))
    return out


def _load_init(model: torch.nn.Module, path: str) -> None:
    if path.startswith("package:"):
        path = str(Path(__file__).parents[1] / "build" / path.split(":", 1)[1])
    state = torch.load(path, map_location="cpu", weights_only=False)
    missing, _ = model.load_state_dict(state["model"], strict=False)
    if any(k.startswith(("embedder.", "detector.")) for k in missing):
        raise SystemExit(f"{path} lacks embedder/detector weights for this card")


def _restore(path: Path, cfg: RobustConfig, model, opt_e, opt_d, rng) -> tuple[int, dict, list]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    placement = ("threads", "device")  # where a run computes may change between runs (a CPU run resumed on a GPU)
    recipe = [{k: v for k, v in c.items() if k not in placement} for c in (state["config"], _config_json(cfg))]
    if recipe[0] != recipe[1]:
        raise SystemExit(f"{path} was written with another configuration; use a new --workdir or --no-resume")
    model.load_state_dict(state["model"])
    opt_e.load_state_dict(state["opt_e"])
    opt_d.load_state_dict(state["opt_d"])
    set_rng_state(rng, state["rng"])
    return state["step"], state["best"], state["history"]


def _save(last: Path, cfg: RobustConfig, model, opt_e, opt_d, rng, step: int, best: dict, history: list) -> None:
    """Everything `_restore` needs to go on exactly where this run stopped."""
    state = {
        "config": _config_json(cfg),
        "model": model.state_dict(),
        "opt_e": opt_e.state_dict(),
        "opt_d": opt_d.state_dict(),
        "step": step,
        "best": best,
        "history": history,
        "rng": rng_state(rng),
    }
    with atomic_path(last) as tmp:
        torch.save(state, tmp)


def _config_json(cfg: RobustConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _step(model, card, cfg, data, rng, step, opts, attacks) -> dict[str, float]:
    """One optimizer step of the full-resolution path; returns the batch's loss terms."""
    side = int(cfg.full_sizes[int(rng.integers(len(cfg.full_sizes)))])
    x = data.batch(rng, cfg.batch, side)
    msgs = torch.from_numpy(rng.integers(0, 2, (cfg.batch, card.nbits)).astype(np.float32)).to(cfg.device)
    y = embed_full(model, card, x, msgs)
    strength = min(1.0, step / max(1.0, cfg.ramp_fraction * cfg.steps))
    attack = attacks[int(rng.integers(len(attacks)))]
    bits = detect_bits(model, card, apply_attack(attack, y, strength, rng, cfg, original=x))
    psnr = psnr_per_image(y, x)
    loss = F.binary_cross_entropy_with_logits(bits, msgs) + cfg.lambda_psnr * F.relu(cfg.target_psnr - psnr).mean()
    if cfg.lambda_margin:
        loss = loss + cfg.lambda_margin * F.relu(cfg.margin - (2 * msgs - 1) * bits).mean()
    factor = lr_factor(cfg, step)
    for opt, base in zip(opts, (cfg.lr_embedder, cfg.lr_detector)):
        for group in opt.param_groups:
            group["lr"] = base * factor
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in opts:
        opt.step()
    return {
        "loss": loss.item(),
        "bit_acc": ((bits > 0).float() == msgs).float().mean().item(),
        "psnr": psnr.mean().item(),
        "strength": strength,
    }


def _seeded_start(cfg: RobustConfig) -> tuple[Card, np.random.Generator, torch.nn.Module, tuple]:
    """Seeds, deterministic kernels, the card's model with its initial weights on `cfg.device`, two optimizers."""
    if cfg.device.startswith("cuda"):  # cuBLAS is deterministic only with a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    card, rng, model = seeded_model(cfg.card, cfg.seed, cfg.threads)
    _load_init(model, cfg.init)
    model.to(cfg.device).train()
    opt_e = torch.optim.AdamW(model.embedder.parameters(), lr=cfg.lr_embedder, weight_decay=1e-4)
    opt_d = torch.optim.AdamW(model.detector.parameters(), lr=cfg.lr_detector, weight_decay=1e-4)
    return card, rng, model, (opt_e, opt_d)


def finetune_robust(
    cfg: RobustConfig,
    workdir: Path,
    out: Path,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    time_budget: float | None = None,
    log_every: int = 0,
) -> dict:
    """Run (or resume) robust fine-tuning; write the best validation checkpoint to `out`.

    `stop_after` ends the run at that step, `time_budget` after that many seconds of training (the current step
    finishes, the weights are validated and the checkpoint written, so a resumed run goes on from there). `log_every`
    > 0 writes one JSON line of the batch stats every that many steps (for a log file)."""
    attacks = attack_names(cfg)
    check_schedule(cfg)
    with_crop = "crop" in attacks  # the validation score counts the crop only for runs that train for it
    with_canvas = "canvas" in attacks
    workdir.mkdir(parents=True, exist_ok=True)
    card, rng, model, (opt_e, opt_d) = _seeded_start(cfg)
    data, val = FullResData(cfg.procedural_pool, cfg.seed, cfg.device), validation_set()
    step, best, history = 0, {"score": -1.0}, []
    last = workdir / "last.pt"
    if resume and last.is_file():
        step, best, history = _restore(last, cfg, model, opt_e, opt_d, rng)
    if step == 0:
        history.append({"step": 0, **validate_robust(model, card, val, cfg.device, with_crop, with_canvas)})
    bar = tqdm(total=cfg.steps, initial=step, desc="robust compact", disable=not progress, dynamic_ncols=True)
    start, end = time.perf_counter(), min(cfg.steps, stop_after or cfg.steps)
    while step < end:
        stats = _step(model, card, cfg, data, rng, step, (opt_e, opt_d), attacks)
        step += 1
        bar.update(1)
        bar.set_postfix({k: round(v, 3) for k, v in stats.items()} | {"best": round(best["score"], 3)})
        if log_every and step % log_every == 0:
            line = {"step": step, **{k: round(v, 4) for k, v in stats.items()}}
            line |= {"elapsed_s": round(time.perf_counter() - start), "time": time.strftime("%H:%M:%S")}
            tqdm.write(json.dumps(line))
        out_of_time = time_budget is not None and time.perf_counter() - start >= time_budget
        if out_of_time:
            end = step
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            metrics = {"step": step, **validate_robust(model, card, val, cfg.device, with_crop, with_canvas)}
            history.append(metrics)
            tqdm.write(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
            better = metrics["score"] > best["score"] or (cfg.later_wins_ties and metrics["score"] == best["score"])
            if metrics["psnr"] >= 38.0 and better:
                best = metrics
                export_weights(model.cpu(), card, out, metrics, cfg, measured_on="validation")
                model.to(cfg.device)
        if step % cfg.checkpoint_every == 0 or step == end:
            _save(last, cfg, model, opt_e, opt_d, rng, step, best, history)
    bar.close()
    summary = {"best": best, "history": history, "seconds_this_run": time.perf_counter() - start}
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
