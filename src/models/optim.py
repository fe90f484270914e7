"""Optimizer parameter groups and step-wise learning-rate schedules (warm-up, then poly or cosine)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
BACKBONE_NAMES = ("encoder", "backbone")


def param_groups(net: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 1.0,
                 norm_weight_decay: float | None = 0.0, no_decay_keys: Sequence[str] = ()) -> list[dict]:
    """Split parameters into groups: backbone vs the rest (decoder/head, `head_lr_mult` x lr), and decayed vs not.

    The backbone is any sub-module named `encoder` or `backbone` (smp's naming). Parameters of normalisation
    layers get `norm_weight_decay` (None keeps `weight_decay`); names containing one of `no_decay_keys`
    (e.g. "pos_block") get no weight decay.
    """
    no_decay_norm = set()
    for module in net.modules():
        if isinstance(module, NORM_TYPES):
            no_decay_norm.update(id(p) for p in module.parameters(recurse=False))
    groups: dict[tuple[bool, str], dict] = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        head = not any(part in BACKBONE_NAMES for part in name.split(".")[:-1])
        if any(k in name for k in no_decay_keys):
            wd, kind = 0.0, "no_decay"
        elif id(p) in no_decay_norm and norm_weight_decay is not None:
            wd, kind = norm_weight_decay, "norm"
        else:
            wd, kind = weight_decay, "decay"
        key = (head, kind)
        if key not in groups:
            groups[key] = {"params": [], "lr": lr * (head_lr_mult if head else 1.0), "weight_decay": wd,
                           "name": f"{'head' if head else 'backbone'}_{kind}"}
        groups[key]["params"].append(p)
    return list(groups.values())


def lr_factor(step: int, total: int, kind: str = "poly", warmup_iters: int = 0, warmup_ratio: float = 1e-6,
              power: float = 1.0, min_lr_ratio: float = 0.0) -> float:
    """The multiplier of the base LR at `step` (0-based) of `total` optimizer steps."""
    if kind == "poly":
        main = (1 - min(step, total) / max(total, 1)) ** power
    elif kind == "cosine":
        main = 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    elif kind == "constant":
        main = 1.0
    else:
        raise ValueError(f"scheduler.kind={kind!r} is not known: use one of poly, cosine, constant.")
    main = min_lr_ratio + (1 - min_lr_ratio) * main
    if step < warmup_iters:  # linear warm-up from warmup_ratio * lr towards the scheduled value
        main *= warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
    return main


def warmup_schedule(optimizer: torch.optim.Optimizer, total_steps: int, kind: str = "poly", warmup_iters: int = 0,
                    warmup_ratio: float = 1e-6, power: float = 1.0, min_lr_ratio: float = 0.0,
                    max_iters: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR; `max_iters` (if set) overrides the length the trainer computes."""
    total = int(max_iters or total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, kind, warmup_iters, warmup_ratio, power, min_lr_ratio))
