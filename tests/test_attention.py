"""record_attention: per-block softmax attention of SegFormer (MiT) and DPT (timm ViT), recorded by hooks without
changing the network's output."""

from __future__ import annotations

import hydra
import pytest
import torch
from conftest import compose_config

from src.models.attention import attention_of, record_attention


def build(*overrides: str):
    torch.manual_seed(0)
    return hydra.utils.instantiate(compose_config("train", list(overrides)).model).eval()


def test_segformer_attention_per_stage():
    net = build("model=segformer", "model.encoder=mit_b0")
    x = torch.randn(2, 3, 100, 140)  # padded to 128x160: stage grids 32x40, 16x20, 8x10, 4x5
    with torch.no_grad():
        ref = net(x)
        with record_attention(net) as maps:
            out = net(x)
    assert torch.equal(out, ref)
    assert [(m.stage, m.block) for m in maps] == [(s, b) for s in range(4) for b in range(2)]  # mit_b0: depths 2
    heads, grids, srs = (1, 2, 5, 8), [(32, 40), (16, 20), (8, 10), (4, 5)], (8, 4, 2, 1)
    for m in maps:
        gh, gw = grids[m.stage]
        kh, kw = gh // srs[m.stage], gw // srs[m.stage]
        assert m.query_grid == (gh, gw) and m.key_grid == (kh, kw) and m.num_prefix == 0
        assert m.probs.shape == (2, heads[m.stage], gh * gw, kh * kw)
        assert torch.allclose(m.probs.sum(-1), torch.ones(()), atol=1e-5)
        assert (m.probs >= 0).all()
        assert attention_of(m, 0.5, 0.5).shape == (2, heads[m.stage], kh, kw)
    with torch.no_grad():
        net(x)
    assert len(maps) == 8  # hooks gone after the context


def test_dpt_attention_per_block():
    net = build(
        "model=dpt",
        "model.encoder=tu-vit_tiny_patch16_224",
        "model.decoder_intermediate_channels=[16,32,64,64]",
        "model.decoder_fusion_channels=16",
    )
    attn_modules = [m for m in net.modules() if hasattr(m, "fused_attn")]
    fused_before = [m.fused_attn for m in attn_modules]
    x = torch.randn(2, 3, 100, 140)  # padded to 128x160: a 8x10 patch grid + the class token
    with torch.no_grad():
        ref = net(x)
        with record_attention(net) as maps:
            out = net(x)
    # the recorded path computes softmax(QK^T)V explicitly instead of the fused kernel: equal up to rounding
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert [m.fused_attn for m in attn_modules] == fused_before
    assert [m.block for m in maps] == list(range(12))
    assert [m.stage for m in maps] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # DPT reads blocks 2, 5, 8, 11
    for m in maps:
        assert m.query_grid == m.key_grid == (8, 10) and m.num_prefix == 1
        assert m.probs.shape == (2, 3, 81, 81)
        assert torch.allclose(m.probs.sum(-1), torch.ones(()), atol=1e-5)
    # the recorded probabilities are the ones the block used: recompute block 0's attention by hand
    blk = net.net.encoder.model.blocks[0]
    tokens = {}
    handle = blk.register_forward_pre_hook(lambda mod, args: tokens.setdefault("x", args[0]))
    with torch.no_grad():
        net(x)
        handle.remove()
        a = blk.attn
        qkv = a.qkv(blk.norm1(tokens["x"])).reshape(2, 81, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        expected = ((qkv[0] * a.scale) @ qkv[1].transpose(-2, -1)).softmax(-1)
    assert torch.allclose(maps[0].probs, expected, atol=1e-5)


def test_networks_without_attention_are_refused():
    net = build("model=unet_classic", "model.base_channels=4", "model.depth=2")
    with pytest.raises(ValueError, match="segformer"):
        with record_attention(net):
            pass
