"""Optimizer parameter groups and step-wise learning-rate schedules (warm-up, then poly or cosine)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from src.errors import UserError
from src.models.net import find_encoder

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(
    net: nn.Module,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 1.0,
    norm_weight_decay: float | None = 0.0,
    no_decay_keys: Sequence[str] = (),
    layer_decay: float | None = None,
) -> list[dict]:
    """Split parameters into groups: backbone vs the rest (decoder/head, `head_lr_mult` x lr), and decayed vs not.

    The backbone is the network's encoder (`find_encoder`: the first sub-module named `encoder` or `backbone`).
    Parameters of normalisation layers get `norm_weight_decay` (None keeps `weight_decay`); names containing one
    of `no_decay_keys` (e.g. "pos_block") get no weight decay. `layer_decay` (e.g. 0.65 to 0.9, for transformer
    encoders; BEiT, MAE): encoder layer i of L (`backbone_layer_ids`) gets lr x layer_decay^(L - i), so the
    embeddings learn slowest and the last block at layer_decay x lr; None or 1 leaves the backbone at lr.
    """
    found = find_encoder(net)
    prefix = found[0] + "." if found is not None else None
    layer_of = backbone_layer_ids(net) if layer_decay is not None and layer_decay != 1 else {}
    num_layers = max(layer_of.values(), default=-1) + 1
    no_decay_norm = set()
    for module in net.modules():
        if isinstance(module, NORM_TYPES):
            no_decay_norm.update(id(p) for p in module.parameters(recurse=False))
    groups: dict[tuple[bool, str], dict] = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        head = prefix is None or not name.startswith(prefix)
        if any(k in name for k in no_decay_keys):
            wd, kind = 0.0, "no_decay"
        elif id(p) in no_decay_norm and norm_weight_decay is not None:
            wd, kind = norm_weight_decay, "norm"
        else:
            wd, kind = weight_decay, "decay"
        layer = None if head else layer_of.get(name)
        key = (head, kind, layer)
        if key not in groups:
            scale = head_lr_mult if head else 1.0 if layer is None else layer_decay ** (num_layers - layer)
            part = "head" if head else "backbone" if layer is None else f"backbone_layer{layer}"
            groups[key] = {"params": [], "lr": lr * scale, "weight_decay": wd, "name": f"{part}_{kind}"}
        groups[key]["params"].append(p)
    return list(groups.values())


def backbone_layer_ids(net: nn.Module) -> dict[str, int]:
    """Parameter name (in `net`) -> depth index 0..L-1 of the backbone (the first sub-module named `encoder` or
    `backbone`) for layer-wise LR decay; 0 is the stem / embeddings.

    A timm model inside the backbone that has `group_matcher` (ViT, DeiT, BEiT, EVA... as smp's ViT encoders
    hold them) is split as timm splits it: embeddings, then one layer per block. Otherwise each numbered block
    (the name up to its first numeric part, e.g. `stages_1.blocks.2`, `layer3.0`) is a layer, in the order the
    encoder registers them, and the parameters registered before the first block form layer 0.
    """
    prefix, backbone = find_encoder(net) or (None, None)
    if backbone is None:
        return {}
    names = [n for n, _ in backbone.named_parameters()]
    ids: dict[str, int] = {}
    timm_model = next(((n, m) for n, m in backbone.named_modules() if hasattr(m, "group_matcher")), None)
    if timm_model is not None:
        from timm.models import group_parameters

        sub, model = timm_model
        layer_map = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
        last = max(layer_map.values(), default=0)
        sub = f"{sub}." if sub else ""
        ids = {n: layer_map.get(n[len(sub) :], last) if n.startswith(sub) else last for n in names}
    else:
        units: dict[str, int] = {}
        for n in names:
            parts = n.split(".")
            numbered = next((i for i, part in enumerate(parts[:-1]) if part.isdigit()), None)
            if numbered is None and not units:
                ids[n] = 0  # stem: registered before the first numbered block
                continue
            unit = ".".join(parts[: numbered + 1]) if numbered is not None else parts[0]
            ids[n] = units.setdefault(unit, len(units) + 1)
    return {f"{prefix}.{n}": i for n, i in ids.items()}


def constant_factor(epoch: int, factor: float = 1.0) -> float:
    """A per-epoch LR factor that ignores the epoch (`lambda_func` of BackboneFinetuning: 1.0 keeps the LR)."""
    return factor


def lr_factor(
    step: int,
    total: int,
    kind: str = "poly",
    warmup_iters: int = 0,
    warmup_ratio: float = 1e-6,
    power: float = 1.0,
    min_lr_ratio: float = 0.0,
) -> float:
    """The multiplier of the base LR at `step` (0-based) of `total` optimizer steps."""
    if kind == "poly":
        main = (1 - min(step, total) / max(total, 1)) ** power
    elif kind == "cosine":
        main = 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    elif kind == "constant":
        main = 1.0
    else:
        raise UserError(f"scheduler.kind={kind!r} is not known: use one of poly, cosine, constant.")
    main = min_lr_ratio + (1 - min_lr_ratio) * main
    if step < warmup_iters:  # linear warm-up from warmup_ratio * lr towards the scheduled value
        main *= warmup_ratio + (1 - warmup_ratio) * step / warmup_iters
    return main


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    kind: str = "poly",
    warmup_iters: int = 0,
    warmup_ratio: float = 1e-6,
    power: float = 1.0,
    min_lr_ratio: float = 0.0,
    max_iters: int | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR; `max_iters` (if set) overrides the length the trainer computes."""
    total = int(max_iters or total_steps)
    return StepSchedule(optimizer, lambda s: lr_factor(s, total, kind, warmup_iters, warmup_ratio, power, min_lr_ratio))


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR that leaves alone the parameter groups added after it was built.

    Lightning's BackboneFinetuning adds the backbone as a new group when it unfreezes it and sets that group's LR
    itself each epoch; torch's LambdaLR (2.10+) raises on a group it does not know.
    """

    def get_lr(self):
        lrs = super().get_lr()
        return lrs + [group["lr"] for group in self.optimizer.param_groups[len(lrs) :]]
