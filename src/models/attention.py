"""Attention probabilities of the attention-based networks (SegFormer's MiT encoders, DPT's timm ViT), recorded
without editing smp or timm.

    from src.models.attention import record_attention

    with record_attention(net) as maps:      # net: SegmentationNet, SegmentationModule or the smp model
        logits = net(images)                 # the output is the same as without recording
    for m in maps:                           # one AttentionMap per transformer block, in forward order
        print(m.stage, m.block, m.probs.shape, m.query_grid, m.key_grid)

`AttentionMap.probs` has shape (N, heads, queries, keys); each row (the last axis) is a softmax distribution and
sums to 1.
- MiT (SegFormer): stage 0..3 (strides 4, 8, 16, 32), `block` counts within the stage. Queries are the stage's
  token grid, row-major: queries = query_grid[0] * query_grid[1]. Keys come after MiT's spatial reduction (a
  sr x sr strided conv; sr = 8, 4, 2, 1 by stage): keys = key_grid[0] * key_grid[1], key_grid = query_grid // sr.
- ViT (DPT): every block attends over [prefix tokens (class/register), then the patch grid row-major]:
  queries = keys = num_prefix + query_grid[0] * query_grid[1]. `stage` is the DPT feature level the block feeds
  (blocks up to the first output index are stage 0, and so on); `block` is the block index in the ViT.
Grids are those of the padded input the network saw (SegmentationNet pads to its stride at the bottom/right).

`attention_of(m, y, x)` gives the attention of the query at (y, x) (fractions of the image height/width) over
the key grid, (N, heads, kh, kw): an image to draw over the input.

How: each attention module (a child `attn_drop` and a `num_heads` attribute: smp's MiT `Attention`, timm's
`Attention`) applies dropout to the softmax probabilities; a forward pre-hook on `attn_drop` sees them. timm
blocks compute attention fused (scaled_dot_product_attention, probabilities never materialised), so inside the
context their `fused_attn` is switched off (same result up to float rounding) and restored afterwards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AttentionMap:
    """The softmax attention of one transformer block; see the module docstring for shapes."""

    name: str  # the attention module's path in the network
    stage: int
    block: int
    probs: torch.Tensor  # (N, heads, queries, keys), detached
    query_grid: tuple[int, int]
    key_grid: tuple[int, int]
    num_prefix: int = 0  # leading prefix tokens (class/register) among queries and keys (ViT only)


def attention_of(amap: AttentionMap, y: float, x: float) -> torch.Tensor:
    """The attention of the query at (y, x), fractions in [0, 1) of the grid height/width, over the key grid:
    (N, heads, key_grid[0], key_grid[1]); prefix keys are dropped (the map then sums to <= 1)."""
    gh, gw = amap.query_grid
    q = amap.num_prefix + min(int(y * gh), gh - 1) * gw + min(int(x * gw), gw - 1)
    keys = amap.probs[:, :, q, amap.num_prefix :]
    return keys.reshape(*keys.shape[:2], *amap.key_grid)


def _attention_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in net.named_modules()
        if isinstance(getattr(m, "attn_drop", None), nn.Module) and hasattr(m, "num_heads")
    ]


@contextmanager
def record_attention(net: nn.Module, to_cpu: bool = False, keep_graph: bool = False) -> Iterator[list[AttentionMap]]:
    """Records the attention probabilities of every transformer block of `net` run inside the context (see the
    module docstring). Raises ValueError if `net` has no attention module it knows. `to_cpu` moves each map to
    the CPU as it is recorded (memory: e.g. MiT stage 0 at 512x512 is 16384 x 256 per head and image).
    `keep_graph` keeps the probabilities in the autograd graph (not detached), for gradients with respect to them
    (`class_relevance`)."""
    modules = _attention_modules(net)
    if not modules:
        raise ValueError(
            "record_attention: this network has no attention blocks it knows (SegFormer's MiT "
            "encoders and timm ViTs, e.g. model=segformer or model=dpt)."
        )
    maps: list[AttentionMap] = []
    handles, fused = [], []
    grids: dict[int, tuple[int, int]] = {}  # id(attention module) -> query grid of its current call
    vit_grid: list[tuple[int, int]] = []  # the patch grid of the current ViT input (smp calls forward_intermediates)

    def on_patch_embed(module, args):
        vit_grid[:] = [tuple(module.dynamic_feat_size(args[0].shape[-2:]))]

    for _, m in net.named_modules():
        if hasattr(m, "patch_embed") and hasattr(m, "blocks"):  # timm VisionTransformer
            handles.append(m.patch_embed.register_forward_pre_hook(on_patch_embed))
    output_indices = _dpt_output_indices(net)

    for name, attn in modules:
        if hasattr(attn, "fused_attn"):
            fused.append((attn, attn.fused_attn))
            attn.fused_attn = False
        sr = getattr(attn, "sr_ratio", None)
        if sr is not None:  # MiT: forward(x, height, width)

            def on_mit_input(module, args, kwargs):
                h = args[1] if len(args) > 1 else kwargs["height"]
                w = args[2] if len(args) > 2 else kwargs["width"]
                grids[id(module)] = (int(h), int(w))

            handles.append(attn.register_forward_pre_hook(on_mit_input, with_kwargs=True))
        stage, block = _position(name, output_indices)

        def on_probs(module, args, attn=attn, name=name, stage=stage, block=block, sr=sr):
            probs = args[0] if keep_graph else args[0].detach()
            if sr is not None:
                grid = grids[id(attn)]
                key_grid = (grid[0] // sr, grid[1] // sr) if sr > 1 else grid
                prefix = 0
            else:
                grid = vit_grid[0] if vit_grid else _square(probs.shape[-2])
                key_grid, prefix = grid, probs.shape[-1] - grid[0] * grid[1]
            maps.append(AttentionMap(name, stage, block, probs.cpu() if to_cpu else probs, grid, key_grid, prefix))

        handles.append(attn.attn_drop.register_forward_pre_hook(on_probs))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()
        for attn, value in fused:
            attn.fused_attn = value


def _dpt_output_indices(net: nn.Module) -> list[int]:
    for m in net.modules():
        if hasattr(m, "_output_indices"):  # smp's TimmViTEncoder
            return list(m._output_indices)
    return []


def _position(name: str, output_indices: list[int]) -> tuple[int, int]:
    """(stage, block) from a module path: MiT `...block<s>.<b>.attn`, ViT `...blocks.<b>.attn`."""
    mit = re.search(r"block(\d+)\.(\d+)\.attn$", name)
    if mit:
        return int(mit.group(1)) - 1, int(mit.group(2))
    vit = re.search(r"blocks\.(\d+)\.attn$", name)
    if vit:
        b = int(vit.group(1))
        stage = next((s for s, i in enumerate(output_indices) if b <= i), len(output_indices))
        return stage, b
    return 0, 0


def _square(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    return side, n // max(side, 1)


# -- what the recorded maps show ------------------------------------------------------------------------------


def has_attention(net: nn.Module) -> bool:
    """Whether `record_attention` can record anything from `net`."""
    return bool(_attention_modules(net))


def padded_size(net: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The input size the attention blocks saw: SegmentationNet (src/models/net.py) pads at the bottom/right to a
    multiple of its `stride` and to at least `min_size`; the token grids cover that padded image."""
    for m in net.modules():
        if hasattr(m, "stride") and hasattr(m, "min_size") and isinstance(getattr(m, "net", None), nn.Module):
            s, lo = int(m.stride), int(m.min_size)
            return -(-max(height, lo) // s) * s, -(-max(width, lo) // s) * s
    return height, width


def crop_grid(grid_map: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    """The part of a token-grid map (..., gh, gw) that covers the unpadded input of `size` (of `padded`)."""
    gh, gw = grid_map.shape[-2:]
    return grid_map[..., : max(1, math.ceil(gh * size[0] / padded[0])), : max(1, math.ceil(gw * size[1] / padded[1]))]


def stage_maps(maps: list[AttentionMap], y: float, x: float) -> dict[int, torch.Tensor]:
    """Per stage, the attention of the query at (y, x) (fractions of the token grid) in the stage's last block,
    averaged over heads: stage -> (N, key_grid[0], key_grid[1])."""
    last = {m.stage: m for m in maps}
    return {stage: attention_of(m, y, x).mean(1) for stage, m in sorted(last.items())}


def rollout(maps: list[AttentionMap], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): each block's head-averaged attention A mixed with the identity for
    the skip connection, A' = residual * I + (1 - residual) * A, rows renormalised, multiplied through the blocks:
    R = A'_L ... A'_1, (N, tokens, tokens); R[q] is how much each input token flows into output token q.
    Needs the same tokens in every block (ViT); MiT's spatial reduction changes them per stage (ValueError)."""
    if not maps:
        raise ValueError("rollout: no attention maps")
    tokens = maps[0].probs.shape[-1]
    if any(m.probs.shape[-2] != tokens or m.probs.shape[-1] != tokens for m in maps):
        raise ValueError("rollout needs square attention over the same tokens in every block (a ViT, e.g. DPT)")
    eye = torch.eye(tokens, dtype=maps[0].probs.dtype, device=maps[0].probs.device)
    result = eye.expand(maps[0].probs.shape[0], tokens, tokens)
    for m in maps:
        a = residual * eye + (1 - residual) * m.probs.mean(1)
        a = a / a.sum(-1, keepdim=True)
        result = a @ result
    return result


def rollout_of(result: torch.Tensor, amap: AttentionMap, y: float, x: float) -> torch.Tensor:
    """The rollout row of the patch query at (y, x) (fractions of the grid) over the patch grid: (N, gh, gw)."""
    gh, gw = amap.query_grid
    q = amap.num_prefix + min(int(y * gh), gh - 1) * gw + min(int(x * gw), gw - 1)
    return result[:, q, amap.num_prefix :].reshape(-1, gh, gw)


def class_relevance(
    net: nn.Module, images: torch.Tensor, class_index: int, region: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """What the network looked at to call `region` class `class_index`: gradient-weighted attention relevance
    (Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization", CVPR 2021).

    The score is the sum of the class's logits over `region` ((N, H, W) bool; default: the pixels predicted as the
    class, or all pixels of an image where none is). Each block's attention A and its gradient dA give
    Abar = mean over heads of relu(dA * A) (queries x keys).
    - ViT (same tokens in every block): Chefer's rule R <- R + Abar R from R = I, over all blocks; the map is the
      region's patch rows of R - I (the relevance that reached the region through attention), one map.
    - MiT (tokens change per stage): per stage, Abar averaged over the stage's blocks, weighted by the region's
      share of each query token; one map per stage on its key grid.
    Returns (maps, logits): maps as (N, gh, gw) over the padded input's grid (see `crop_grid`), detached.
    Runs forward and backward in float32 with gradients on (also inside Lightning's inference mode); parameters'
    `.grad` are untouched (the gradient is taken with respect to the attention only).
    """
    with torch.inference_mode(False), torch.enable_grad(), record_attention(net, keep_graph=True) as maps:
        images = images.detach().clone()
        logits = net(images)
        if region is None:
            region = logits.argmax(1) == class_index
        region = region.to(logits.device).clone()
        empty = region.flatten(1).sum(1) == 0
        region[empty] = True
        score = (logits[:, class_index] * region).sum()
        grads = torch.autograd.grad(score, [m.probs for m in maps])
    weighted = [(g * m.probs).clamp(min=0).mean(1).detach() for g, m in zip(grads, maps)]
    padded = padded_size(net, *images.shape[-2:])
    reg = F.pad(region.float()[:, None], (0, padded[1] - region.shape[-1], 0, padded[0] - region.shape[-2]))

    def query_weights(grid: tuple[int, int]) -> torch.Tensor:
        w = F.interpolate(reg, size=grid, mode="area").flatten(1)
        return w / w.sum(1, keepdim=True).clamp(min=1e-12)

    same_tokens = {tuple(m.probs.shape[-2:]) for m in maps} == {(maps[0].probs.shape[-1],) * 2}
    if same_tokens:  # ViT
        p = maps[0].num_prefix
        tokens = weighted[0].shape[-1]
        eye = torch.eye(tokens, dtype=weighted[0].dtype, device=weighted[0].device)
        rel = eye.expand(len(images), tokens, tokens)
        for a in weighted:
            rel = rel + a @ rel
        rel = rel - eye
        w = query_weights(maps[0].query_grid)
        out = [(w[:, None, :] @ rel[:, p:, p:]).squeeze(1).reshape(-1, *maps[0].key_grid)]
    else:
        out = []
        for stage in sorted({m.stage for m in maps}):
            idx = [i for i, m in enumerate(maps) if m.stage == stage]
            a = torch.stack([weighted[i] for i in idx]).mean(0)
            w = query_weights(maps[idx[0]].query_grid)
            out.append((w[:, None, :] @ a).squeeze(1).reshape(-1, *maps[idx[0]].key_grid))
    return out, logits.detach()
