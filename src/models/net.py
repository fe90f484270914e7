"""Networks as the LightningModule sees them: any size in, logits of the same size out.

`SegmentationNet` wraps a network that needs its input divisible by a stride: it pads (images with 0, which is
the mean after normalisation) to the multiple and crops the logits back. `smp_net` builds any
segmentation_models_pytorch architecture by name; the classic networks written here live in `src/models/nets/`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationNet(nn.Module):
    """Pads inputs to a multiple of `stride`, runs `net`, crops the logits back to the input size.

    The wrapped network stays reachable as `.net` (its `encoder`, if it has one, is the backbone the optimizer
    settings refer to).
    """

    def __init__(self, net: nn.Module, stride: int = 32):
        super().__init__()
        self.net, self.stride = net, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        out = self.net(x)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :h, :w]


def smp_net(arch: str, encoder: str = "resnet34", encoder_weights: str | None = None, num_classes: int = 2,
            in_channels: int = 3, stride: int | None = None, **kwargs) -> SegmentationNet:
    """Any segmentation_models_pytorch architecture (`arch` as smp names it, e.g. "unet", "deeplabv3plus")."""
    import segmentation_models_pytorch as smp

    net = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels,
                           classes=num_classes, **kwargs)
    if stride is None:
        stride = getattr(net.encoder, "output_stride", 32) if hasattr(net, "encoder") else 32
    return SegmentationNet(net, stride=stride)


def unet_classic(num_classes: int, in_channels: int = 3, base_channels: int = 64, depth: int = 4,
                 upsampling: str = "transposed") -> SegmentationNet:
    """The original U-Net (src/models/nets/unet.py), padded to its stride."""
    from src.models.nets.unet import UNet

    net = UNet(num_classes, in_channels, base_channels, depth, upsampling)
    return SegmentationNet(net, stride=net.stride)
