"""The part of the data pipeline that runs on the device, on whole batches, after they are moved there.

DataLoader workers decode, do the geometry (rescale, crop, flip, pad: it changes sizes) and hand over uint8
images and masks: a quarter of the bytes of a float32 image to make, copy, pin and transfer. The per-pixel work
that does not change sizes runs here, after the transfer: the photometric distortion (training batches only) and
the normalisation to the network's input. Torch only, so it runs wherever the batch is (CPU or GPU).

The distortion of sample i is drawn from that sample's seed (the one `EpochSampler` yields, which also seeds the
sample's host augmentations), through a counter-based hash computed on the device: it depends on the seed alone,
not on the batch it lands in, the number of workers or the device, and needs no host-device synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY = (0.299, 0.587, 0.114)  # OpenCV's RGB -> gray weights (what albumentations' ColorJitter uses)
# the 6 orders of brightness (0), contrast (1), saturation (2)
ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def uniform(seeds: torch.Tensor, stream: int) -> torch.Tensor:
    """A float32 in [0, 1) per seed, for the random draw number `stream`: a 31-bit integer hash of (seed, stream),
    computed where `seeds` are (int64 arithmetic; every product stays below 2**63)."""
    x = (seeds.long() % 2**31 * 0x9E3779B1 + (stream + 1) * 0x632BE5AB) & 0x7FFFFFFF
    for multiplier in (0x7FEB352D, 0x46C6A68B, 0x2C1B3C6D):
        x = x ^ (x >> 15)
        x = (x * multiplier) & 0x7FFFFFFF
    x = x ^ (x >> 16)
    return (x.double() / 2**31).float()


def _per_sample(value: torch.Tensor) -> torch.Tensor:
    return value.view(-1, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images in [0, 255] by `shift` (N,) turns (HSV round trip, torchvision's formulas)."""
    x = x / 255.0
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    v = maxc
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    rgb = (
        torch.stack([v, q, p, p, t, v], 1).gather(1, i.unsqueeze(1)),
        torch.stack([t, v, v, q, p, p], 1).gather(1, i.unsqueeze(1)),
        torch.stack([p, p, t, v, v, q], 1).gather(1, i.unsqueeze(1)),
    )
    return torch.cat(rgb, 1) * 255.0


class Photometric:
    """Colour jitter per sample, as albumentations' `ColorJitter(brightness, contrast, saturation, hue, p)`
    (torchvision's semantics): with probability `p`, brightness x b, contrast x c (blend with the mean gray
    level), saturation x s (blend with the gray image), b, c, s uniform in [1 - value, 1 + value], then the hue
    rotated by h turns, h uniform in [-hue, hue]; values clipped to [0, 255] after each step.

    Brightness, contrast and saturation come in a random order per sample (as ColorJitter's); the hue comes last
    (ColorJitter draws its place too: hue rotation commutes with the other three up to clipping, and running it
    once instead of at each of 4 places costs a quarter of the time).
    """

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0, p: float = 1.0
    ):
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def params(self, seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample factors (identity where the sample is not distorted) and the order of the first three."""
        apply = uniform(seeds, 0) < self.p

        def factor(stream: int, spread: float, neutral: float) -> torch.Tensor:
            value = neutral - spread + 2 * spread * uniform(seeds, stream)
            return torch.where(apply, value, torch.full_like(value, neutral))

        order = torch.tensor(ORDERS, device=seeds.device)[(uniform(seeds, 5) * len(ORDERS)).long()]
        return {
            "brightness": factor(1, self.brightness, 1.0),
            "contrast": factor(2, self.contrast, 1.0),
            "saturation": factor(3, self.saturation, 1.0),
            "hue": factor(4, self.hue, 0.0),
            "order": order,
            "apply": apply,
        }

    def __call__(self, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """`images`: float (N,3,H,W) in [0, 255]; `seeds`: (N,) integers. Returns new images."""
        p = self.params(seeds.to(images.device))
        x = images
        for slot in range(3):  # each sample runs its own op at this slot; the other two are identities for it
            op = p["order"][:, slot]
            b = torch.where(op == 0, p["brightness"], torch.ones_like(p["brightness"]))
            c = torch.where(op == 1, p["contrast"], torch.ones_like(p["contrast"]))
            s = torch.where(op == 2, p["saturation"], torch.ones_like(p["saturation"]))
            x = (x * _per_sample(b)).clamp_(0, 255)
            mean = _gray(x).mean((1, 2, 3), keepdim=True)
            x = (x * _per_sample(c) + mean * (1 - _per_sample(c))).clamp_(0, 255)
            x = (x * _per_sample(s) + _gray(x) * (1 - _per_sample(s))).clamp_(0, 255)
        if self.hue:
            rotate = _per_sample(p["apply"] & (p["hue"] != 0))
            x = torch.where(rotate, _shift_hue(x, p["hue"]).clamp_(0, 255), x)
        return x


class BatchTransform:
    """uint8 images (N,3,H,W) -> the network's input: photometric distortion (when `seeds` are given, i.e. for
    training batches, and `photometric` is set), then `(x / 255 - mean) / std` (albumentations' `Normalize`).

    A floating-point batch was normalised on the host by a pipeline of its own (an `A.Normalize` in the config)
    and passes unchanged.

    Args:
        mean, std: per channel, of images scaled to [0, 1] (default ImageNet's).
        photometric: keyword arguments of `Photometric` (brightness, contrast, saturation, hue, p), or None.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        photometric: dict | None = None,
    ):
        self.mean, self.std = tuple(mean), tuple(std)
        self.photometric = Photometric(**photometric) if photometric else None

    def __call__(self, images: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        if images.is_floating_point():
            return images
        x = images.float()
        if seeds is not None and self.photometric is not None:
            x = self.photometric(x, seeds)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1) * 255.0
        scale = 1.0 / (torch.tensor(self.std, device=x.device).view(1, -1, 1, 1) * 255.0)
        return (x - mean) * scale
