"""Cross-entropy with class weights and label smoothing, and its hard-pixel (OHEM) variant.

Both are weighted means over the labelled pixels, `sum_i w_i * ce_i / sum_i w_i`, where `w_i` is the class weight
of pixel i's label (1 without class weights), or the per-pixel `weight` map when the data pipeline supplies one
(e.g. the U-Net boundary map, which already holds the class weights). Without a map this is exactly
`torch.nn.CrossEntropyLoss(weight=..., ignore_index=..., label_smoothing=...)`, but a batch with no labelled pixel
gives 0 instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from src.losses.base import ClassWeights, SegLoss, load_class_weights


class CrossEntropy(SegLoss):
    """`loss=ce`. Args: class_weights (list, or the path of a `src.check` JSON file), num_classes (to check
    the weights against), label_smoothing (torch's), ignore_index."""

    name = "ce"

    def __init__(
        self,
        class_weights: ClassWeights = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = 255,
    ):
        super().__init__(ignore_index)
        self.register_buffer("class_weights", load_class_weights(class_weights, num_classes), persistent=False)
        self.label_smoothing = label_smoothing

    def pixel_losses(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None):
        """(per-pixel loss, per-pixel weight), both (N,H,W) and 0 at ignored pixels."""
        class_weights = None  # a weight map already holds the class weights
        if weight is None and self.class_weights is not None:
            class_weights = self.class_weights.to(logits.dtype)
        ce = F.cross_entropy(
            logits,
            target,
            weight=class_weights,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )
        valid = target != self.ignore_index
        if weight is not None:
            w = weight.to(ce.dtype) * valid
            return ce * w, w
        if class_weights is None:
            return ce, valid.to(ce.dtype)
        # torch has already multiplied ce by the class weight; the mean divides by the weights' sum
        return ce, class_weights[target.masked_fill(~valid, 0)] * valid

    def value(self, logits, target, weight=None):
        # no test for "nothing labelled" (a host-device synchronisation per step): the weighted mean below is
        # already 0, with zero gradient, when every pixel is ignored; batches carry uint8 masks
        return self.compute(logits, target.long(), weight)

    def compute(self, logits, target, weight):
        if weight is None and self.class_weights is None:  # the plain mean, in one call
            total = F.cross_entropy(
                logits, target, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, reduction="sum"
            )
            return total / (target != self.ignore_index).sum().clamp_min(1)
        losses, weights = self.pixel_losses(logits, target, weight)
        return losses.sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)


class OhemCrossEntropy(CrossEntropy):
    """`loss=ohem`: online hard example mining (PSPNet / mmsegmentation's OhemPixelSampler with a threshold).

    Keeps the labelled pixels whose predicted probability of their true class is below `thresh`, and at least
    the `min_kept` hardest pixels of the batch (when the threshold keeps fewer, it is raised to the probability of
    the (min_kept+1)-th hardest pixel); the loss is the (weighted) mean cross-entropy over the kept pixels.
    """

    name = "ohem"

    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, **kwargs):
        super().__init__(**kwargs)
        self.thresh, self.min_kept = thresh, min_kept

    @torch.no_grad()
    def kept(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Boolean (N,H,W): the pixels that take part in the loss."""
        valid = target != self.ignore_index
        prob = logits.softmax(1).gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
        probs = prob[valid]
        if probs.numel() <= self.min_kept:
            return valid
        threshold = max(self.thresh, probs.kthvalue(self.min_kept + 1).values.item())
        return valid & (prob < threshold)

    def compute(self, logits, target, weight):
        losses, weights = self.pixel_losses(logits, target, weight)
        keep = self.kept(logits, target)
        return (losses * keep).sum() / (weights * keep).sum().clamp_min(torch.finfo(losses.dtype).tiny)
