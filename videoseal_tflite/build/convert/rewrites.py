"""TFLite-friendly rewrites of videoseal modules. Each is exactly equal to the original (tests prove it).

| rewrite              | original                                 | problem in TFLite                                |
|----------------------|------------------------------------------|--------------------------------------------------|
| msg_processor_matmul | Embedding gather + sum + `.repeat(h, w)` | litert-torch 0.10.0 layout bug on `repeat`;      |
|                      |                                          | `expand` gives a BROADCAST_TO failing to prepare |
| relpos_act_lhs       | einsum(r_q, Rh) lowered as const @ act   | const-LHS BATCH_MATMUL: dynamic int8 cannot load |
| jnd_where            | boolean-mask assignment in JND.jnd_la    | torch.export cannot trace it                     |
| reflect_pad_concat   | nn.ReflectionPad2d(1)                    | MIRROR_PAD: no XNNPACK kernel, so it runs on the |
|                      |                                          | built-in kernel between two XNNPACK partitions   |
| depthwise_row_bands  | k x k depthwise conv with k*k > 25       | XNNPACK has no depthwise kernel for 49 taps: it  |
|                      | (ConvNeXt's 7x7)                         | runs it as a grouped IGEMM, ~4x slower           |
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn
from videoseal.modules.jnd import JND
from videoseal.modules.msg_processor import MsgProcessor
from videoseal.modules.vit import Attention


@dataclasses.dataclass(frozen=True)
class Rewrite:
    name: str
    what: str
    why: str


MSG_PROCESSOR_MATMUL = Rewrite(
    "msg_processor_matmul",
    "MsgProcessor: sum_k E[2k+m_k] -> sum_k E[2k] + m @ (E[2k+1]-E[2k]); tiled to h x w as an outer product with ones",
    "the original Embedding gather + .repeat() crashes litert-torch 0.10.0's layout pass, and .expand() "
    "becomes a BROADCAST_TO with an NCHW/NHWC shape mix that fails to prepare",
)
RELPOS_ACT_LHS = Rewrite(
    "relpos_act_lhs",
    "ViT add_decomposed_rel_pos: einsum('bhwc,hkc->bhwk', r_q, Rh) -> matmul(r_q per row, Rh^T) "
    "(activation on the left)",
    "the einsum lowers to a BATCH_MATMUL with the constant on the left; dynamic-range int8 then gives an "
    "int8 x float32 pair the kernel rejects (BATCH_MATMUL failed to prepare)",
)
JND_WHERE = Rewrite(
    "jnd_where",
    "JND.jnd_la: boolean-mask assignment -> torch.where",
    "torch.export cannot trace data-dependent boolean-mask assignment",
)

REFLECT_PAD_CONCAT = Rewrite(
    "reflect_pad_concat",
    "nn.ReflectionPad2d(1) -> concatenation of the row/column next to each edge (slices + CONCATENATION)",
    "MIRROR_PAD has no XNNPACK kernel: it runs on TFLite's built-in kernel and splits the graph into two XNNPACK "
    "partitions (6-11 % of the compact detector's time in LiteRT's profile)",
)


class ConcatReflectionPad(nn.Module):
    """nn.ReflectionPad2d(1) as slices and concatenations, which XNNPACK runs: reflecting one pixel is copying the
    row or column next to the edge (index 1 and -2), first along the width, then along the height."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., :, 1:2], x, x[..., :, -2:-1]], dim=-1)
        return torch.cat([x[..., 1:2, :], x, x[..., -2:-1, :]], dim=-2)


DEPTHWISE_ROW_BANDS = Rewrite(
    "depthwise_row_bands",
    "k x k depthwise Conv2d with k*k > 25 -> a sum of depthwise convs over bands of rows (7x7: 3 + 3 + 1 rows), "
    "each at most 25 taps, over the input padded once (equal up to float summation order)",
    "XNNPACK's depthwise kernels take up to 25 taps; a 7x7 depthwise conv ran as a grouped IGEMM, 4.1 ms for one "
    "64x64x96 layer against 1.0 ms as row bands (LiteRT's profiler, 2 threads)",
)
MAX_DEPTHWISE_TAPS = 25  # the largest depthwise kernel XNNPACK runs as one (5x5)


class RowBandDepthwise(nn.Module):
    """A k x k depthwise `nn.Conv2d` (stride 1, zero 'same' padding) as the sum of depthwise convs over bands of at
    most MAX_DEPTHWISE_TAPS // k kernel rows: out[i, j] = sum_r sum_c K[r, c] x_pad[i + r, j + c], grouped by r."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.k = conv.kernel_size[0]
        rows = max(1, MAX_DEPTHWISE_TAPS // self.k)
        self.bands = [(r, min(r + rows, self.k)) for r in range(0, self.k, rows)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, height = self.k // 2, x.shape[-2]
        padded = nn.functional.pad(x, (p, p, p, p))
        out = None
        for r0, r1 in self.bands:
            band = nn.functional.conv2d(
                padded[:, :, r0 : r0 + height + r1 - r0 - 1, :], self.weight[:, :, r0:r1, :], groups=x.shape[1]
            )
            out = band if out is None else out + band
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def _banded_depthwise(module: nn.Module) -> bool:
    """A Conv2d that RowBandDepthwise reproduces and that XNNPACK would run as a grouped IGEMM."""
    if type(module) is not nn.Conv2d:
        return False
    k = module.kernel_size
    return (
        module.groups == module.in_channels == module.out_channels
        and k[0] == k[1]
        and k[0] * k[1] > MAX_DEPTHWISE_TAPS
        and k[0] % 2 == 1
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.padding == (k[0] // 2, k[1] // 2)
        and module.padding_mode == "zeros"
    )


class MatmulMsgProcessor(nn.Module):
    """Binary message processor without gather, repeat or expand. Equal to MsgProcessor for 0/1 messages."""

    def __init__(self, original: MsgProcessor) -> None:
        super().__init__()
        if not original.msg_type.startswith("bin"):
            raise ValueError(f"only binary message processors are supported, got {original.msg_processor_type}")
        table = original.msg_embeddings.weight.detach()  # [2k, d]: row 2k = bit k is 0, row 2k+1 = bit k is 1
        self.nbits = original.nbits
        self.hidden_size = original.hidden_size
        self.msg_mult = original.msg_mult
        self.msg_agg = original.msg_agg
        self.register_buffer("base", table[0::2].sum(dim=0))  # [d]
        self.register_buffer("delta", (table[1::2] - table[0::2]).contiguous())  # [k, d]

    def forward(self, latents: torch.Tensor, msg: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = latents.shape
        msg_aux = msg.to(latents.dtype) @ self.delta + self.base  # b d
        # tile over h x w as an outer product with a constant row of ones: a broadcasting MUL or expand
        # would be lowered to BROADCAST_TO, a matmul stays a plain activation x constant product
        ones = torch.ones((1, height * width), dtype=latents.dtype, device=latents.device)
        msg_map = (msg_aux.reshape(batch * self.hidden_size, 1) @ ones).reshape(batch, self.hidden_size, height, width)
        if self.msg_agg == "concat":
            return torch.cat([latents, self.msg_mult * msg_map], dim=1)
        return latents + self.msg_mult * msg_map


def add_decomposed_rel_pos_act_lhs(attn, q, rel_pos_h, rel_pos_w, q_size, k_size):
    """videoseal.modules.vit.add_decomposed_rel_pos with both einsums as matmul(activation, constant)."""
    from videoseal.modules.vit import get_rel_pos

    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)  # q_h k_h C
    rw = get_rel_pos(q_w, k_w, rel_pos_w)  # q_w k_w C
    batch, _, dim = q.shape
    r_q = q.reshape(batch, q_h, q_w, dim)
    # rel_h[b,h,w,k] = sum_c r_q[b,h,w,c] Rh[h,k,c]: per row h, [b*w, c] @ [c, k]
    rel_h = torch.matmul(r_q.permute(1, 0, 2, 3).reshape(q_h, batch * q_w, dim), rh.transpose(1, 2))
    rel_h = rel_h.reshape(q_h, batch, q_w, k_h).permute(1, 0, 2, 3)
    # rel_w[b,h,w,k] = sum_c r_q[b,h,w,c] Rw[w,k,c]: per column w, [b*h, c] @ [c, k]
    rel_w = torch.matmul(r_q.permute(2, 0, 1, 3).reshape(q_w, batch * q_h, dim), rw.transpose(1, 2))
    rel_w = rel_w.reshape(q_w, batch, q_h, k_w).permute(1, 2, 0, 3)
    attn = attn.view(batch, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(batch, q_h * q_w, k_h * k_w)


class ActLhsRelPosAttention(Attention):
    """videoseal's Attention, with the rel-pos term computed by add_decomposed_rel_pos_act_lhs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, height * width, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos_act_lhs(
                attn, q, self.rel_pos_h, self.rel_pos_w, (height, width), (height, width)
            )
        attn = attn.softmax(dim=-1)
        x = (
            (attn @ v)
            .view(batch, self.num_heads, height, width, -1)
            .permute(0, 2, 3, 1, 4)
            .reshape(batch, height, width, -1)
        )
        return self.proj(x)


class WhereJND(JND):
    """videoseal's JND with the luminance mask applied by torch.where (traceable)."""

    def jnd_la(self, x, alpha=1.0, eps=1e-5):
        la = self.conv_lum(x) / 32
        dark = 17 * (1 - torch.sqrt(la / 127 + eps))
        bright = 3 / 128 * (la - 127) + 3
        return alpha * torch.where(la <= 127, dark, bright)


def apply_rewrites(model: nn.Module) -> tuple[nn.Module, list[Rewrite]]:
    """A deep copy of a videoseal model (or part) with every applicable rewrite; the input is untouched."""
    model = copy.deepcopy(model)
    applied: dict[str, Rewrite] = {}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is MsgProcessor and child.nbits > 0:
                setattr(parent, child_name, MatmulMsgProcessor(child))
                applied[MSG_PROCESSOR_MATMUL.name] = MSG_PROCESSOR_MATMUL
            elif type(child) is nn.ReflectionPad2d and tuple(child.padding) == (1, 1, 1, 1):
                setattr(parent, child_name, ConcatReflectionPad())
                applied[REFLECT_PAD_CONCAT.name] = REFLECT_PAD_CONCAT
            elif _banded_depthwise(child):
                setattr(parent, child_name, RowBandDepthwise(child))
                applied[DEPTHWISE_ROW_BANDS.name] = DEPTHWISE_ROW_BANDS
    for module in model.modules():
        if type(module) is Attention and module.use_rel_pos:
            module.__class__ = ActLhsRelPosAttention
            applied[RELPOS_ACT_LHS.name] = RELPOS_ACT_LHS
        elif type(module) is JND:
            module.__class__ = WhereJND
            applied[JND_WHERE.name] = JND_WHERE
    return model, list(applied.values())
