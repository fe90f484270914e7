"""record_attention: per-block softmax attention of SegFormer (MiT) and DPT (timm ViT), recorded by hooks without
changing the network's output."""

from __future__ import annotations

import hydra
import pytest
import torch
from conftest import compose_config

from src.models.attention import (
    AttentionMap,
    attention_of,
    class_relevance,
    crop_grid,
    padded_size,
    record_attention,
    rollout,
    rollout_of,
    stage_maps,
)


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


# -- what the maps show: per-stage maps, rollout, class-conditioned relevance -----------------------------------


def test_stage_maps_follow_input_size_and_spatial_reduction():
    net = build("model=segformer", "model.encoder=mit_b0", "model.decoder_segmentation_channels=16")
    x = torch.randn(1, 3, 70, 100)  # padded to 96x128: stage grids 24x32, 12x16, 6x8, 3x4
    assert padded_size(net, 70, 100) == (96, 128)
    with torch.no_grad(), record_attention(net) as maps:
        net(x)
    per_stage = stage_maps(maps, 0.5, 0.5)
    srs = (8, 4, 2, 1)
    for stage, grid in enumerate([(24, 32), (12, 16), (6, 8), (3, 4)]):
        assert per_stage[stage].shape == (1, grid[0] // srs[stage], grid[1] // srs[stage])
        assert torch.allclose(
            per_stage[stage].sum((-2, -1)), torch.ones(1), atol=1e-5
        )  # head mean: still a distribution
    # the part of the stage-1 grid (12x16) over the unpadded 70x100 input
    assert crop_grid(torch.zeros(12, 16), (70, 100), (96, 128)).shape == (9, 13)


def test_rollout_of_identity_attention_is_identity_and_mixes_otherwise():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    maps = [AttentionMap(f"b{i}", 0, i, eye, (2, 2), (2, 2), num_prefix=1) for i in range(4)]
    assert torch.allclose(rollout(maps), torch.eye(5).expand(2, 5, 5))
    uniform = torch.full((2, 3, 5, 5), 0.2)
    mixed = rollout([AttentionMap("b", 0, 0, uniform, (2, 2), (2, 2), num_prefix=1)])
    assert torch.allclose(mixed[0], 0.5 * torch.eye(5) + 0.1)  # 0.5 I + 0.5 A, rows summing to 1
    assert torch.allclose(mixed.sum(-1), torch.ones(2, 5))
    assert rollout_of(mixed, maps[0], 0.9, 0.1).shape == (2, 2, 2)
    with pytest.raises(ValueError):  # MiT: tokens change with the spatial reduction
        rollout([AttentionMap("m", 0, 0, torch.rand(1, 1, 16, 4), (4, 4), (2, 2))])


def test_dpt_rollout_follows_the_patch_grid():
    net = build(
        "model=dpt",
        "model.encoder=tu-vit_tiny_patch16_224",
        "model.decoder_intermediate_channels=[16,32,64,64]",
        "model.decoder_fusion_channels=16",
    )
    with torch.no_grad(), record_attention(net) as maps:
        net(torch.randn(1, 3, 64, 96))  # 4x6 patches + class token
    rolled = rollout(maps)
    assert rolled.shape == (1, 25, 25) and torch.allclose(rolled.sum(-1), torch.ones(1, 25), atol=1e-5)
    assert rollout_of(rolled, maps[0], 0.5, 0.5).shape == (1, 4, 6)
    rel, logits = class_relevance(net, torch.randn(1, 3, 64, 96), 1)
    assert len(rel) == 1 and rel[0].shape == (1, 4, 6) and logits.shape == (1, 6, 64, 96)


def test_class_relevance_depends_on_the_class_and_leaves_parameters_alone():
    net = build("model=segformer", "model.encoder=mit_b0", "model.decoder_segmentation_channels=16")
    x = torch.randn(1, 3, 64, 64)
    everywhere = torch.ones(1, 64, 64, dtype=torch.bool)
    with torch.inference_mode():  # as inside Lightning's validation loop
        a, logits = class_relevance(net, x, 1, region=everywhere)
        b, _ = class_relevance(net, x, 2, region=everywhere)
    assert [m.shape for m in a] == [(1, 2, 2), (1, 2, 2), (1, 2, 2), (1, 2, 2)]  # key grids: 16/8, 8/4, 4/2, 2/1
    assert all((m >= 0).all() for m in a)
    assert any(not torch.allclose(p, q) for p, q in zip(a, b))
    assert all(p.grad is None for p in net.parameters())
    with torch.no_grad():
        assert torch.allclose(logits, net(x), atol=1e-5)
