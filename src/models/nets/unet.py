"""U-Net in its original form (Ronneberger et al. 2015), with padded convolutions and a selectable upsampling.

Each level: two 3x3 conv + BatchNorm + ReLU; the encoder halves the resolution with 2x2 max-pooling and doubles the
channels; the decoder upsamples, concatenates the skip of the same level and convolves. `upsampling` picks how
the decoder doubles the resolution: "transposed" (the paper's learned 2x2 up-convolution), "bilinear", "nearest"
(each followed by a 1x1 conv that halves the channels), or "pixel_shuffle" (a conv to 4x channels, then
sub-pixel rearrangement).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from src.errors import UserError

Upsampling = Literal["transposed", "bilinear", "nearest", "pixel_shuffle"]


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def upsample(cin: int, cout: int, mode: Upsampling) -> nn.Module:
    """Doubles the resolution and maps cin -> cout channels."""
    if mode == "transposed":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    if mode in ("bilinear", "nearest"):
        return nn.Sequential(nn.Upsample(scale_factor=2, mode=mode), nn.Conv2d(cin, cout, 1))
    if mode == "pixel_shuffle":
        return nn.Sequential(nn.Conv2d(cin, cout * 4, 1), nn.PixelShuffle(2))
    raise UserError(f"model.upsampling={mode!r} is not supported: use transposed, bilinear, nearest or pixel_shuffle.")


class UNet(nn.Module):
    """Args: num_classes; in_channels; base_channels (64 in the paper); depth = number of poolings (4 in the
    paper); upsampling as above. Input sides must be divisible by 2**depth (SegmentationNet pads)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        base_channels: int = 64,
        depth: int = 4,
        upsampling: Upsampling = "transposed",
    ):
        super().__init__()
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [double_conv(in_channels, chans[0])] + [double_conv(chans[i], chans[i + 1]) for i in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList([upsample(chans[i + 1], chans[i], upsampling) for i in reversed(range(depth))])
        self.decoder = nn.ModuleList([double_conv(chans[i] * 2, chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        self.stride = 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.ups, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
