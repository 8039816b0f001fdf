"""Export wrappers: exactly what each .tflite computes.

- Detector: `image[1,3,S,S]` float32 in [0,1] -> `bit_logits[1,nbits]` (bit k is 1 where its logit > 0)
  and `detection_logit[1,1]` (videoseal's column 0 of `detect()['preds']`).
- Embedder: `image[1,3,S,S]` float32 in [0,1], `message[1,nbits]` float32 of 0/1 -> `watermark[1,C,S,S]`,
  the embedder output in [-1,1] *before* `scaling_w`, attenuation and blending. C=3 for RGB cards; C=1 for
  YUV cards, which take the Y channel of the image inside the model (videoseal's RGB2YUV row 0).
  The full-resolution pipeline (resize, JND, blend, clamp) runs outside the model, in `runtime`.
"""

from __future__ import annotations

import torch
from torch import nn
from videoseal.data.transforms import RGB2YUV

from videoseal_tflite.store.artifact import PARTS


class EmbedderExport(nn.Module):
    def __init__(self, embedder: nn.Module, yuv: bool) -> None:
        super().__init__()
        self.embedder = embedder
        self.yuv = yuv
        self.rgb2yuv = RGB2YUV()

    def forward(self, image: torch.Tensor, message: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.rgb2yuv(image)[:, 0:1] if self.yuv else image
        return {"watermark": self.embedder(x, message)}


class DetectorExport(nn.Module):
    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        preds = self.detector(image)
        return {"bit_logits": preds[:, 1:], "detection_logit": preds[:, :1]}


def export_module(model: nn.Module, part: str, yuv: bool) -> nn.Module:
    """The export wrapper of `part` for a (possibly rewritten) videoseal model, in eval mode."""
    if part == "embedder":
        return EmbedderExport(model.embedder, yuv).eval()
    if part == "detector":
        return DetectorExport(model.detector).eval()
    raise ValueError(f"unknown part '{part}' (expected one of {PARTS})")


def sample_inputs(part: str, size: int, nbits: int, seed: int) -> dict[str, torch.Tensor]:
    """Random inputs in the wrapper's domain: images in [0,1], messages of 0/1 floats."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {"image": torch.rand((1, 3, size, size), generator=generator)}
    if part == "embedder":
        inputs["message"] = torch.randint(0, 2, (1, nbits), generator=generator).float()
    return inputs
