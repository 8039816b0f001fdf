"""Each TFLite-friendly rewrite equals the original module on random inputs (PyTorch only, fast)."""

from __future__ import annotations

import pytest
import torch
from videoseal.modules.jnd import JND
from videoseal.modules.msg_processor import MsgProcessor
from videoseal.modules.vit import add_decomposed_rel_pos

from videoseal_tflite.build.cards import ATTENUATION_CONFIGS
from videoseal_tflite.build.convert.rewrites import (
    ConcatReflectionPad,
    MatmulMsgProcessor,
    WhereJND,
    add_decomposed_rel_pos_act_lhs,
    apply_rewrites,
)


@pytest.mark.parametrize("nbits,hidden,agg", [(96, 192, "concat"), (256, 256, "concat"), (16, 32, "add")])
def test_matmul_msg_processor_equals_embedding_gather(nbits, hidden, agg):
    torch.manual_seed(nbits)
    # float64 so that the check is about the algebra, not float32 summation order
    original = MsgProcessor(nbits, hidden, f"binary+{agg}").double()
    rewritten = MatmulMsgProcessor(original)
    for batch in (1, 3):
        latents = torch.randn(batch, hidden if agg == "add" else 64, 32, 32, dtype=torch.float64)
        msgs = torch.randint(0, 2, (batch, nbits))
        with torch.no_grad():
            expected = original(latents, msgs)
            got = rewritten(latents, msgs.double())
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-9, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("batch,size,dim", [(6, 16, 64), (96, 8, 64), (1, 5, 32)])
def test_relpos_act_lhs_equals_einsum(batch, size, dim):
    torch.manual_seed(size)
    q = torch.randn(batch, size * size, dim)
    attn = torch.randn(batch, size * size, size * size)
    rel_h, rel_w = torch.randn(2 * size - 1, dim), torch.randn(2 * size - 1, dim)
    expected = add_decomposed_rel_pos(attn, q, rel_h, rel_w, (size, size), (size, size))
    got = add_decomposed_rel_pos_act_lhs(attn, q, rel_h, rel_w, (size, size), (size, size))
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 16, 32, 32), (1, 1, 2, 2)])
def test_concat_reflect_pad_equals_reflection_pad(shape):
    torch.manual_seed(sum(shape))
    x = torch.randn(shape)
    assert torch.equal(ConcatReflectionPad()(x), torch.nn.ReflectionPad2d(1)(x))


def test_reflect_pad_rewrite_applies_to_one_pixel_pads_only():
    model = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(3, 3, 3), torch.nn.ReflectionPad2d(2))
    rewritten, applied = apply_rewrites(model)
    assert [type(m).__name__ for m in rewritten] == ["ConcatReflectionPad", "Conv2d", "ReflectionPad2d"]
    assert [r.name for r in applied] == ["reflect_pad_concat"] and type(model[0]) is torch.nn.ReflectionPad2d


@pytest.mark.parametrize("config", sorted(ATTENUATION_CONFIGS))
def test_where_jnd_equals_mask_assignment(config):
    torch.manual_seed(0)
    original = JND(**ATTENUATION_CONFIGS[config])
    rewritten = JND(**ATTENUATION_CONFIGS[config])
    rewritten.__class__ = WhereJND
    # include flat dark and bright regions so both branches of the luminance mask are taken
    imgs = torch.rand(2, 3, 64, 80)
    imgs[:, :, :16] = 0.02
    imgs[:, :, 16:32] = 0.97
    expected = original.heatmaps(imgs)
    got = rewritten.heatmaps(imgs)
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("card", ["videoseal_0.0", "videoseal_1.0"])
def test_wrappers_reproduce_library_embed_and_detect(card, loaded_models):
    """Wrapper outputs + blend/JND/clamp == videoseal's own Videoseal.embed/detect at 256x256 (<= 1e-5)."""
    from videoseal_tflite.build.convert.wrappers import export_module

    loaded = loaded_models(card)
    model, applied = apply_rewrites(loaded.model)
    assert applied, "no rewrite applied"
    torch.manual_seed(1)
    for _ in range(3):
        img = torch.rand(1, 3, 256, 256)
        msg = torch.randint(0, 2, (1, loaded.card.nbits)).float()
        with torch.no_grad():
            expected = loaded.model.embed(img, msg, is_video=False)["imgs_w"]
            watermark = export_module(model, "embedder", loaded.card.yuv)(img, msg)["watermark"]
            if model.attenuation is not None:
                watermark = model.attenuation.heatmaps(img) * watermark
            got = (loaded.card.scaling_i * img + loaded.card.scaling_w * watermark).clamp(0, 1)
            assert (got - expected).abs().max().item() <= 1e-5
            preds = loaded.model.detect(img, is_video=False)["preds"]
            out = export_module(model, "detector", loaded.card.yuv)(img)
            assert (out["bit_logits"] - preds[:, 1:]).abs().max().item() <= 1e-5
            assert (out["detection_logit"] - preds[:, :1]).abs().max().item() <= 1e-5


def test_apply_rewrites_leaves_original_untouched(loaded_models):
    loaded = loaded_models("videoseal_0.0")
    before = type(loaded.model.embedder.unet.msg_processor)
    rewritten, _ = apply_rewrites(loaded.model)
    assert type(loaded.model.embedder.unet.msg_processor) is before is MsgProcessor
    assert isinstance(rewritten.embedder.unet.msg_processor, MatmulMsgProcessor)


@pytest.mark.parametrize("channels,size,k", [(96, 64, 7), (8, 9, 7), (4, 12, 9)])
def test_row_band_depthwise_equals_the_conv(channels, size, k):
    from videoseal_tflite.build.convert.rewrites import RowBandDepthwise

    torch.manual_seed(k + size)
    conv = torch.nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels).double()
    x = torch.randn(2, channels, size, size + 3, dtype=torch.float64)
    banded = RowBandDepthwise(conv)
    assert all((r1 - r0) * k <= 25 for r0, r1 in banded.bands) and banded.bands[-1][1] == k
    with torch.no_grad():
        assert torch.allclose(banded(x), conv(x), atol=1e-10, rtol=0)


def test_row_band_rewrite_applies_to_large_depthwise_only():
    convs = [torch.nn.Conv2d(8, 8, 7, padding=3, groups=8), torch.nn.Conv2d(8, 8, 5, padding=2, groups=8),
             torch.nn.Conv2d(8, 8, 7, padding=3), torch.nn.Conv2d(8, 8, 7, padding=3, groups=8, stride=2)]  # fmt: skip
    rewritten, applied = apply_rewrites(torch.nn.Sequential(*convs))
    assert [type(m).__name__ for m in rewritten] == ["RowBandDepthwise", "Conv2d", "Conv2d", "Conv2d"]
    assert [r.name for r in applied] == ["depthwise_row_bands"]
