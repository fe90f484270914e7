"""How a trained network is applied to a batch of normalised images: whole image, sliding window, multi-scale + flip.

`Inferer(...)(net, images)` returns logits (N, C, H, W) at the input size for every mode, so that the metrics, the
loss and the argmax need no special case. One config group, `infer` (configs/infer/{whole,slide,tta}.yaml), builds
it for `src.eval` and `src.predict`.

- whole: one forward pass of the whole image (the network pads to its stride itself).
- slide: windows of `crop` (h, w) every `stride` pixels (mmsegmentation's `slide_inference` grid: the last window
  of a row or column is moved back inside the image), run `batch_size` windows per forward pass (mmsegmentation
  runs one at a time; the output is the same), and blended either by a flat average of the overlapping logits or,
  with `weighting="gaussian"`, by nnU-Net's Gaussian importance map (sigma = 1/8 of the window side, largest at the
  window centre), which trusts window centres more than their borders.
- multi-scale + flip (`scales`, `flip`): the image resized by each scale, also mirrored left-right; each view runs
  whole or slide, its logits go back to the original size and through a softmax; the probabilities are averaged
  (mmsegmentation's "MS+flip" protocol). The logits returned are then log(mean probability).
- `crf=True`: the probabilities are refined with a fully connected CRF (src/models/crf.py) on the CPU, per image;
  it needs the RGB image, recovered from the normalised one with `mean`/`std` (0..255 units, the normalisation of
  the data pipeline). The logits returned are log(CRF marginals).

The ignore index takes no part here: inference labels every pixel, and the metrics skip ignored target pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from src.errors import UserError

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # albumentations' Normalize defaults, in 0..255 units
IMAGENET_STD = (58.395, 57.12, 57.375)
TINY = 1e-12  # floor of probabilities before the log (log(0) would give -inf logits)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one side: every `stride`, the last moved back to end at the border
    (mmsegmentation's grid). A side shorter than the window gets one window of the side's length, at 0."""
    if size <= crop:
        return [0]
    count = (size - crop + stride - 1) // stride + 1
    return sorted({min(i * stride, size - crop) for i in range(count)})


def gaussian_weights(height: int, width: int, sigma_scale: float = 1 / 8) -> torch.Tensor:
    """nnU-Net's importance map for a (height, width) window: a Gaussian centred on the window with sigma =
    `sigma_scale` x side, scaled to a maximum of 1. Positive everywhere (about exp(-8) = 3e-4 at the borders), so
    every pixel of a window has weight and no blended pixel divides by zero."""

    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        return torch.exp(-(x**2) / (2 * (sigma_scale * n) ** 2))

    w = axis(height)[:, None] * axis(width)[None, :]
    w = w / w.max()
    return w.clamp_min(w[w > 0].min()).float()


class Inferer:
    """Args:
    slide: run the network on sliding windows instead of the whole image.
    crop, stride: window size and step (h, w) for `slide`; `src.run.build_inferer` fills a missing crop with the
        training crop of the checkpoint and a missing stride with 2/3 of the crop.
    batch_size: windows per forward pass (1: one at a time, as mmsegmentation).
    weighting: "flat" (plain average of overlapping windows) or "gaussian" (nnU-Net's importance map).
    scales, flip: test-time augmentation: the image resized by each scale, and also mirrored when `flip`;
        probabilities averaged at the original size. `scales=[1.0], flip=False` is a plain pass.
    crf: refine the probabilities with a dense CRF (src/models/crf.py), its settings in `crf_params`.
    mean, std: the data pipeline's normalisation (0..255 units), to recover the RGB image for the CRF.
    name: what the config calls this mode (shown in logs and benchmark tables).
    """

    def __init__(
        self,
        slide: bool = False,
        crop: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        batch_size: int = 8,
        weighting: Literal["flat", "gaussian"] = "flat",
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        crf: bool = False,
        crf_params: dict | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        name: str = "whole",
    ):
        if weighting not in ("flat", "gaussian"):
            raise UserError(f"infer.weighting={weighting}: use flat or gaussian.")
        if slide:
            if crop is None or len(crop) != 2 or min(crop) < 1:
                raise UserError(f"infer.crop={crop}: give the window size [h, w] in pixels, e.g. infer.crop=[512,512].")
            stride = stride if stride is not None else [max(1, c * 2 // 3) for c in crop]
            if len(stride) != 2 or min(stride) < 1 or any(s > c for s, c in zip(stride, crop)):
                raise UserError(
                    f"infer.stride={stride}: give the step [h, w] between windows, at least 1 and at most the "
                    f"window infer.crop={list(crop)} (a larger step would leave pixels without a window)."
                )
        if int(batch_size) < 1:
            raise UserError(f"infer.batch_size={batch_size}: give the number of windows per forward pass (>= 1).")
        if not scales or any(float(s) <= 0 for s in scales):
            raise UserError(f"infer.scales={scales}: give a list of positive scale factors, e.g. [0.75,1.0,1.25].")
        self.slide, self.batch_size, self.weighting = bool(slide), int(batch_size), weighting
        self.crop = tuple(int(c) for c in crop) if crop is not None else None
        self.stride = tuple(int(s) for s in stride) if stride is not None else None
        self.scales, self.flip = tuple(float(s) for s in scales), bool(flip)
        self.crf, self.crf_params = bool(crf), dict(crf_params or {})
        self.mean, self.std = tuple(mean), tuple(std)
        self.name = name
        if self.crf:
            from src.models.crf import check_crf_available

            check_crf_available()

    def __repr__(self) -> str:
        parts = [self.name]
        if self.slide:
            parts.append(f"crop={list(self.crop)} stride={list(self.stride)} {self.weighting} batch={self.batch_size}")
        if self.scales != (1.0,) or self.flip:
            parts.append(f"scales={list(self.scales)} flip={self.flip}")
        if self.crf:
            parts.append("crf")
        return f"Inferer({', '.join(parts)})"

    @property
    def plain(self) -> bool:
        """One forward pass of the whole image: what `net(images)` gives."""
        return not self.slide and self.scales == (1.0,) and not self.flip and not self.crf

    @torch.no_grad()
    def __call__(self, net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) of `net` on the normalised `images` (N, 3, H, W), at the input size."""
        if self.plain:
            return net(images)
        views = [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]
        if len(views) == 1 and views[0][0] == 1.0:
            logits = self.single(net, images)
            probs = logits.float().softmax(1) if self.crf else None
        else:
            probs = None
            for scale, flipped in views:
                view_probs = self.view(net, images, scale, flipped).softmax(1)
                probs = view_probs if probs is None else probs + view_probs
            probs = probs / len(views)
            logits = probs.clamp_min(TINY).log()
        if self.crf:
            from src.models.crf import dense_crf

            rgb = self.to_rgb(images)
            refined = [dense_crf(p.cpu().numpy(), im, **self.crf_params) for p, im in zip(probs, rgb)]
            refined = torch.stack([torch.from_numpy(r) for r in refined])
            logits = refined.to(images.device).clamp_min(TINY).log()
        return logits

    def view(self, net, images: torch.Tensor, scale: float, flipped: bool) -> torch.Tensor:
        """Float logits of one test-time view, mapped back to the input's size and orientation."""
        size = images.shape[-2:]
        x = images
        if scale != 1.0:
            scaled = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
            x = F.interpolate(x, size=scaled, mode="bilinear", align_corners=False)
        if flipped:
            x = x.flip(-1)
        out = self.single(net, x).float()
        if flipped:
            out = out.flip(-1)
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def single(self, net, images: torch.Tensor) -> torch.Tensor:
        return self.sliding(net, images) if self.slide else net(images)

    def sliding(self, net, images: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits: all windows of all images, `batch_size` per forward pass, blended."""
        n, _, h, w = images.shape
        ch, cw = min(self.crop[0], h), min(self.crop[1], w)
        boxes = [(y, x) for y in window_starts(h, ch, self.stride[0]) for x in window_starts(w, cw, self.stride[1])]
        windows = [(i, y, x) for i in range(n) for y, x in boxes]
        weight = (
            gaussian_weights(ch, cw).to(images.device)
            if self.weighting == "gaussian"
            else torch.ones(ch, cw, device=images.device)
        )
        total, norm = None, torch.zeros(n, 1, h, w, device=images.device)
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start : start + self.batch_size]
            out = net(torch.stack([images[i, :, y : y + ch, x : x + cw] for i, y, x in chunk])).float()
            if total is None:
                total = torch.zeros(n, out.shape[1], h, w, device=images.device)
            for (i, y, x), logits in zip(chunk, out):
                total[i, :, y : y + ch, x : x + cw] += logits * weight
                norm[i, :, y : y + ch, x : x + cw] += weight
        return total / norm

    def to_rgb(self, images: torch.Tensor):
        """The uint8 RGB images (N, H, W, 3) as NumPy arrays, undoing the pipeline's normalisation."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        rgb = (images.float() * std + mean).round().clamp(0, 255).to(torch.uint8)
        return rgb.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def window_count(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> int:
    """How many windows `Inferer(slide=True)` runs on one (height, width) image."""
    ch, cw = min(crop[0], height), min(crop[1], width)
    return len(window_starts(height, ch, stride[0])) * len(window_starts(width, cw, stride[1]))
