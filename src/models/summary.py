"""Parameters, FLOPs and output shape of a network (the CLI is `python -m src.summary model=NAME`).

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one forward pass in eval mode: matrix products
and convolutions (incl. attention), a multiply-add counting as 2 FLOPs (papers often quote MACs, half of it);
element-wise operations, pooling and interpolation are not counted.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from src.models.net import find_encoder


def summarize(net: nn.Module, input_size: tuple[int, int], batch_size: int = 1, in_channels: int = 3) -> dict:
    """{"params", "trainable", "encoder_params", "flops", "output_shape"} for one forward of a zero input."""
    encoder = (find_encoder(net) or (None, None))[1]
    x = torch.zeros(batch_size, in_channels, *input_size)
    was_training = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = net(x)
    net.train(was_training)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "encoder_params": sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0,
        "flops": counter.get_total_flops(),
        "output_shape": tuple(out.shape),
    }


def format_summary(name: str, s: dict, input_shape: tuple[int, ...]) -> str:
    return "\n".join(
        [
            f"model: {name}",
            f"parameters: {s['params'] / 1e6:.2f} M (trainable {s['trainable'] / 1e6:.2f} M, "
            f"encoder {s['encoder_params'] / 1e6:.2f} M)",
            f"FLOPs: {s['flops'] / 1e9:.2f} G for input {'x'.join(map(str, input_shape))} "
            "(multiply-add = 2 FLOPs; MACs are half)",
            f"output shape: {s['output_shape']}",
        ]
    )
