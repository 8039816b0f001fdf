"""One chunk of the evaluation set through every file (`stream` runs these, in worker processes):
`chunk_processing` at the processing size, against the PyTorch reference; `chunk_fullres` at full resolution
through the runtime, saved and attacked as users do. Counts and sums only: `stream.Totals` adds them up."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from videoseal_tflite.runtime.image import blend, round_8bit
from videoseal_tflite.runtime.image_io import NamedImage
from videoseal_tflite.runtime.payload import PayloadCode
from videoseal_tflite.validate.robustness import evaluate_samples, psnr_db, sample_messages


@dataclasses.dataclass
class Reference:
    """The PyTorch model's view of the evaluation batch: its watermarked images (8-bit), raw watermark, logits."""

    images: np.ndarray
    msgs: np.ndarray
    imgs_w: np.ndarray
    watermark: np.ndarray
    logits: np.ndarray


def pytorch_reference(loaded, images: np.ndarray, msgs: np.ndarray) -> Reference:
    """Watermark with videoseal's own embed, round to 8 bits, detect."""
    card, model = loaded.card, loaded.model
    with torch.no_grad():
        imgs_w = round_8bit(
            model.embed(torch.from_numpy(images), torch.from_numpy(msgs), is_video=False)["imgs_w"].numpy()
        )
        x = torch.from_numpy(images)
        watermark = model.embedder(model.rgb2yuv(x)[:, 0:1] if card.yuv else x, torch.from_numpy(msgs)).numpy()
    logits = torch_detect(model, imgs_w)
    return Reference(images, msgs, imgs_w, watermark, logits)


def torch_detect(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    """Bit logits of videoseal's own `detect` (image mode) on a batch [N,3,S,S]."""
    with torch.no_grad():
        return model.detect(torch.from_numpy(batch), is_video=False)["preds"][:, 1:].numpy()


def _hits(logits: np.ndarray, msgs: np.ndarray) -> int:
    return int(((logits > 0) == (msgs > 0.5)).sum())


def chunk_processing(models, images: np.ndarray, msgs: np.ndarray) -> dict[str, Any]:
    """A chunk at the processing size: the PyTorch reference, every file against it, every embedder x detector
    pair (both .tflite). Counts and sums only (`stream.Totals` adds them up; `max_*` keys take the maximum)."""
    loaded = models.loaded
    ref = pytorch_reference(loaded, images, msgs)
    bits = int(msgs.size)
    out: dict[str, Any] = {
        "reference": {"hits": _hits(ref.logits, msgs), "bits": bits, "psnr_sum": _psnr_sum(ref.imgs_w, images)},
        "records": {},
        "pairs": {},
    }
    embedded = {}
    for (part, variant), model in models.signature.items():
        if part == "embedder":
            watermark = np.concatenate(
                [model(image=images[i : i + 1], message=msgs[i : i + 1])["watermark"] for i in range(len(images))]
            )
            imgs_w = np.stack(
                [
                    round_8bit(blend(img, w, loaded.card.scaling_w, loaded.card.scaling_i, models.attenuation[variant]))
                    for img, w in zip(images, watermark)
                ]
            )
            embedded[variant] = imgs_w
            logits, max_diff = torch_detect(loaded.model, imgs_w), float(np.abs(watermark - ref.watermark).max())
            extra = {"psnr_sum": _psnr_sum(imgs_w, images), "ssim_sum": sum(ssim(w, o) for w, o in zip(imgs_w, images))}
        else:
            logits = _detect(model, ref.imgs_w)
            max_diff, extra = float(np.abs(logits - ref.logits).max()), {}
        out["records"][f"{part}/{variant}"] = {
            "hits": _hits(logits, msgs),
            "agree": int(((logits > 0) == (ref.logits > 0)).sum()),
            "bits": bits,
            "images": len(images),
            "max_abs_diff": max_diff,
            **extra,
        }
    for (part, det), model in models.signature.items():
        if part == "detector":
            for emb, imgs_w in embedded.items():
                out["pairs"][f"{emb}/{det}"] = {"hits": _hits(_detect(model, imgs_w), msgs), "bits": bits}
    return out


def _detect(model, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([model(image=batch[i : i + 1])["bit_logits"] for i in range(len(batch))])


def _psnr_sum(marked: np.ndarray, originals: np.ndarray) -> float:
    return float(sum(psnr_db(w, o) for w, o in zip(marked, originals)))


def chunk_fullres(models, job, images: list[NamedImage], slots: list[int]) -> dict[str, Any]:
    """A chunk at full resolution through the runtime (`robustness.evaluate_samples`): every file with the FP32
    file of the other part; the attacks of `job.attacks`."""
    mpi = job.messages_per_image
    code = PayloadCode.from_meta(models.runtime[("detector", "fp32")].model.meta)
    msgs = sample_messages(job.source.slots * mpi, models.loaded.card.nbits, code)
    samples = [(image.pixels, msgs[slot * mpi + m]) for image, slot in zip(images, slots) for m in range(mpi)]
    out = {}
    for (part, variant), runtime in models.runtime.items():
        pair = {"embedder": models.runtime[("embedder", "fp32")], "detector": models.runtime[("detector", "fp32")]}
        pair[part] = runtime
        out[f"{part}/{variant}"] = evaluate_samples(pair["embedder"], pair["detector"], samples, job.attacks)
    return out


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over channels, Gaussian window sigma 1.5 (Wang et al. 2004), images in [0,1]."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = 0.01**2, 0.03**2
    values = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        mx, my = gaussian_filter(x, 1.5), gaussian_filter(y, 1.5)
        vx = gaussian_filter(x * x, 1.5) - mx**2
        vy = gaussian_filter(y * y, 1.5) - my**2
        cov = gaussian_filter(x * y, 1.5) - mx * my
        values.append(np.mean(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))
    return float(np.mean(values))
