"""The VGG-style backbone FCN and SegNet are built on, and ImageNet VGG16 weights from torchvision for it.

A backbone is five stages of 3x3 conv (+ BatchNorm) + ReLU; `channels[i]` and `convs[i]` give stage i's width and
number of convolutions. VGG16 is channels (64, 128, 256, 512, 512), convs (2, 2, 3, 3, 3); smaller widths keep the
same code path for quick experiments and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from src.errors import UserError
from src.models.pretrained import check_reachable

VGG16_CHANNELS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)


def vgg_stage(cin: int, cout: int, convs: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def vgg_stages(in_channels: int, channels: Sequence[int], convs: Sequence[int], batch_norm: bool) -> nn.ModuleList:
    if len(channels) != len(convs):
        raise UserError(
            f"model.channels {list(channels)} and model.convs {list(convs)} must have the same length "
            "(one entry per stage)."
        )
    cins = [in_channels, *channels[:-1]]
    return nn.ModuleList([vgg_stage(a, b, n, batch_norm) for a, b, n in zip(cins, channels, convs)])


def check_vgg16_layout(in_channels: int, channels: Sequence[int], convs: Sequence[int]) -> None:
    """ImageNet weights fit only the VGG16 layout: say so before anything is downloaded."""
    if in_channels != 3 or tuple(channels) != VGG16_CHANNELS or tuple(convs) != VGG16_CONVS:
        raise UserError(
            "model.encoder_weights=imagenet needs the VGG16 layout: model.channels="
            f"{list(VGG16_CHANNELS)} model.convs={list(VGG16_CONVS)} and in_channels=3."
        )


def imagenet_vgg16(batch_norm: bool) -> nn.Module:
    """torchvision's VGG16 (or VGG16-BN) with its ImageNet weights, from the local torch hub cache or downloaded;
    fails at once with a UserError if neither works."""
    import torchvision

    weights = (torchvision.models.VGG16_BN_Weights if batch_norm else torchvision.models.VGG16_Weights).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        check_reachable(
            weights.url,
            "model.encoder_weights=imagenet",
            f"Put {Path(weights.url).name} (from {weights.url}) into {cached.parent}, or load weights of "
            "this network from a local file with model.encoder_weights=null model.pretrained=PATH.",
        )
    return (torchvision.models.vgg16_bn if batch_norm else torchvision.models.vgg16)(weights=weights)


def copy_vgg_features(source: nn.Module, stages: nn.ModuleList) -> None:
    """Copies the conv/BatchNorm weights of torchvision VGG `source` into `stages`, layer by layer in order."""
    kinds = (nn.Conv2d, nn.BatchNorm2d)
    theirs = [m for m in source.features if isinstance(m, kinds)]
    ours = [m for m in stages.modules() if isinstance(m, kinds)]
    for a, b in zip(theirs, ours):
        b.load_state_dict(a.state_dict())
