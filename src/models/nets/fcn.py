"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015).

A classification network made fully convolutional: the VGG16 convolution stages (pool1..pool5, stride 32) and
its fully connected layers fc6/fc7 recast as a 7x7 and a 1x1 convolution (with ImageNet weights, the Linear
weights are reshaped into them). A 1x1 conv scores every class at stride 32; learned transposed convolutions
(initialised to bilinear interpolation) upsample the scores:

- 32s: one 32x transposed conv from the stride-32 scores;
- 16s: scores x2, + scores of pool4 (1x1 conv), then a 16x transposed conv;
- 8s:  as 16s, the fused scores x2, + scores of pool3, then an 8x transposed conv.

Differences from the Caffe original: fc6 is padded (padding 3) instead of padding the input by 100 and cropping,
since `SegmentationNet` pads the input to a multiple of 32 and crops back; all three variants train at once
(not staged), so the skip scorers start from PyTorch's default init instead of zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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

Variant = Literal["32s", "16s", "8s"]


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights of a per-channel transposed convolution that performs bilinear upsampling."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight


def upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learned x`factor` upsampling (exact: output = factor x input), initialised to bilinear."""
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


class VGGBackbone(nn.Module):
    """VGG conv stages, each ending in 2x2 max-pooling, and fc6/fc7 as convolutions. Returns pool3, pool4 and the
    fc7 features (strides 8, 16, 32)."""

    def __init__(
        self, in_channels: int, channels: Sequence[int], convs: Sequence[int], fc_channels: int, dropout: float
    ):
        super().__init__()
        self.stages = vgg_stages(in_channels, channels, convs, batch_norm=False)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc = nn.Sequential(
            nn.Conv2d(channels[-1], fc_channels, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pools = []
        for stage in self.stages:
            x = self.pool(stage(x))
            pools.append(x)
        return [pools[-3], pools[-2], self.fc(x)]

    def load_imagenet_vgg16(self) -> None:
        vgg = imagenet_vgg16(batch_norm=False)
        copy_vgg_features(vgg, self.stages)
        fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
        with torch.no_grad():
            self.fc[0].weight.copy_(fc6.weight.view(self.fc[0].weight.shape))
            self.fc[0].bias.copy_(fc6.bias)
            self.fc[3].weight.copy_(fc7.weight.view(self.fc[3].weight.shape))
            self.fc[3].bias.copy_(fc7.bias)


class FCN(nn.Module):
    """Args: num_classes; variant "32s" | "16s" | "8s"; in_channels; channels / convs per backbone stage (VGG16
    by default); fc_channels (4096 in VGG16); dropout after fc6/fc7; encoder_weights None or "imagenet"
    (torchvision's VGG16). Input sides must be multiples of 32 (SegmentationNet pads)."""

    stride = 32

    def __init__(
        self,
        num_classes: int,
        variant: Variant = "8s",
        in_channels: int = 3,
        channels: Sequence[int] = VGG16_CHANNELS,
        convs: Sequence[int] = VGG16_CONVS,
        fc_channels: int = 4096,
        dropout: float = 0.5,
        encoder_weights: str | None = None,
    ):
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise UserError(f"model.variant={variant!r} is not known: use 32s, 16s or 8s.")
        if len(channels) < 3:
            raise UserError("model.channels: FCN needs at least 3 backbone stages (pool3 and pool4 feed the skips).")
        self.variant = variant
        self.encoder = VGGBackbone(in_channels, channels, convs, fc_channels, dropout)
        if encoder_weights == "imagenet":
            check_vgg16_layout(in_channels, channels, convs)
            if fc_channels != 4096:
                raise UserError("model.encoder_weights=imagenet needs model.fc_channels=4096 (VGG16's fc6/fc7).")
            self.encoder.load_imagenet_vgg16()
        elif encoder_weights is not None:
            raise UserError(f"model.encoder_weights={encoder_weights!r}: FCN knows only null or imagenet.")
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        if variant == "32s":
            self.upscore = upsampler(num_classes, 32)
        else:
            self.upscore2 = upsampler(num_classes, 2)
            self.score_pool4 = nn.Conv2d(channels[-2], num_classes, 1)
        if variant == "16s":
            self.upscore = upsampler(num_classes, 16)
        if variant == "8s":
            self.upscore_pool4 = upsampler(num_classes, 2)
            self.score_pool3 = nn.Conv2d(channels[-3], num_classes, 1)
            self.upscore = upsampler(num_classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool3, pool4, fc7 = self.encoder(x)
        score = self.score_fr(fc7)
        if self.variant != "32s":
            score = self.upscore2(score) + self.score_pool4(pool4)
        if self.variant == "8s":
            score = self.upscore_pool4(score) + self.score_pool3(pool3)
        return self.upscore(score)
