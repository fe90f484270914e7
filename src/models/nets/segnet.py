"""SegNet (Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image
Segmentation", TPAMI 2017).

Encoder: the VGG16 conv stages with BatchNorm, each followed by 2x2 max-pooling that keeps the argmax positions.
Decoder: the mirror image; each stage max-unpools with the indices of its encoder stage (the pooled values go
back to where the maxima were, zeros elsewhere), then densifies the sparse map with conv + BN + ReLU. No feature
maps are carried over from the encoder, only the indices; a 1x1 conv scores the classes at full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from src.errors import UserError
from src.models.nets.vgg import (
    VGG16_CHANNELS,
    VGG16_CONVS,
    check_vgg16_layout,
    copy_vgg_features,
    imagenet_vgg16,
    vgg_stages,
)


def decoder_stage(cin: int, cout: int, convs: int) -> nn.Sequential:
    """`convs` conv + BN + ReLU at width `cin`, the last one mapping to `cout` (the next shallower stage's width)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        out = cout if i == convs - 1 else cin
        layers += [nn.Conv2d(cin, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SegNet(nn.Module):
    """Args: num_classes; in_channels; channels / convs per stage (VGG16: (64, 128, 256, 512, 512), (2, 2, 3, 3,
    3)); encoder_weights None or "imagenet" (torchvision's VGG16-BN). Input sides must be multiples of
    2**len(channels) (SegmentationNet pads)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        channels: Sequence[int] = VGG16_CHANNELS,
        convs: Sequence[int] = VGG16_CONVS,
        encoder_weights: str | None = None,
    ):
        super().__init__()
        self.encoder = vgg_stages(in_channels, channels, convs, batch_norm=True)
        if encoder_weights == "imagenet":
            check_vgg16_layout(in_channels, channels, convs)
            copy_vgg_features(imagenet_vgg16(batch_norm=True), self.encoder)
        elif encoder_weights is not None:
            raise UserError(f"model.encoder_weights={encoder_weights!r}: SegNet knows only null or imagenet.")
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        outs = [channels[0], *channels[:-1]]
        self.decoder = nn.ModuleList([decoder_stage(c, o, n) for c, o, n in zip(channels, outs, convs)][::-1])
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self.stride = 2 ** len(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        for stage in self.encoder:
            x = stage(x)
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)
            indices.append(idx)
        for stage in self.decoder:
            x = stage(self.unpool(x, indices.pop(), output_size=sizes.pop()))
        return self.head(x)
