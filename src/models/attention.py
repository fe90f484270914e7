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
def record_attention(net: nn.Module, to_cpu: bool = False) -> Iterator[list[AttentionMap]]:
    """Records the attention probabilities of every transformer block of `net` run inside the context (see the
    module docstring). Raises ValueError if `net` has no attention module it knows. `to_cpu` moves each map to
    the CPU as it is recorded (memory: e.g. MiT stage 0 at 512x512 is 16384 x 256 per head and image)."""
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
            probs = args[0].detach()
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
