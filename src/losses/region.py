"""segmentation_models_pytorch's losses (multiclass mode), behind this package's call signature.

What smp does, measured (tests/test_losses.py pins it):
- Dice, Jaccard, Tversky: soft scores per class over the whole batch; a class absent from the batch's labels
  contributes 0 but still counts in the mean over classes; `class_weights` turn the mean into a weighted mean.
  Ignored pixels are zeroed in prediction and target (no value, no gradient).
- Focal: smp's multiclass focal loss is a sigmoid (one-vs-rest) binary focal loss per class, averaged over the
  labelled pixels and then over classes (as mmsegmentation's FocalLoss); on a batch with no labelled pixel it
  would return NaN, which the base class turns into 0.
- Lovasz: Lovasz-softmax over the labelled pixels of the batch, averaged over the classes present in the labels;
  on a batch with no labelled pixel smp returns an empty tensor, which the base class turns into 0.

A per-pixel `weight` map (from the data pipeline) does not apply to these set-level losses and is not used.
"""

from __future__ import annotations

from segmentation_models_pytorch import losses as smp_losses

from src.losses.base import ClassWeights, SegLoss, load_class_weights


class _SmpLoss(SegLoss):
    """An smp loss (`smp_class`, multiclass mode) behind this package's signature: `options` go to smp, class
    weights are read by `load_class_weights` (a list or a `python -m src.check` file) when given.

    Computes in float32: sums over the batch overflow in float16, and smp's Lovasz fails on float64.
    """

    smp_class: type

    def __init__(
        self,
        ignore_index: int = 255,
        class_weights: ClassWeights = None,
        num_classes: int | None = None,
        **options,
    ):
        super().__init__(ignore_index)
        if class_weights is not None:
            options["class_weights"] = load_class_weights(class_weights, num_classes).tolist()
        self.smp = self.smp_class("multiclass", ignore_index=ignore_index, **options)

    def compute(self, logits, target, weight):
        return self.smp(logits.float(), target)


class _SoftOverlap(_SmpLoss):
    """1 - a soft overlap score per class, averaged over classes (smp's `smp_class` in multiclass mode)."""

    def __init__(
        self,
        class_weights: ClassWeights = None,
        num_classes: int | None = None,
        smooth: float = 0.0,
        log_loss: bool = False,
        ignore_index: int = 255,
    ):
        super().__init__(ignore_index, class_weights, num_classes, smooth=smooth, log_loss=log_loss)


class Dice(_SoftOverlap):
    """`loss=dice`: 1 - soft Dice per class (smp.losses.DiceLoss); `log_loss` uses -log(Dice)."""

    name = "dice"
    smp_class = smp_losses.DiceLoss


class Jaccard(_SoftOverlap):
    """`loss=jaccard`: 1 - soft IoU per class (smp.losses.JaccardLoss)."""

    name = "jaccard"
    smp_class = smp_losses.JaccardLoss


class Tversky(_SmpLoss):
    """`loss=tversky`: 1 - TP / (TP + alpha FP + beta FN) per class, mean over classes, to the power gamma."""

    name = "tversky"
    smp_class = smp_losses.TverskyLoss

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 1.0,
        class_weights: ClassWeights = None,
        num_classes: int | None = None,
        smooth: float = 0.0,
        ignore_index: int = 255,
    ):
        super().__init__(ignore_index, class_weights, num_classes, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth)


class Focal(_SmpLoss):
    """`loss=focal`: sigmoid focal loss per class (smp.losses.FocalLoss), `gamma` focusing, optional `alpha`."""

    name = "focal"
    smp_class = smp_losses.FocalLoss

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        class_weights: ClassWeights = None,
        num_classes: int | None = None,
        ignore_index: int = 255,
    ):
        super().__init__(ignore_index, class_weights, num_classes, gamma=gamma, alpha=alpha)


class Lovasz(_SmpLoss):
    """`loss=lovasz`: Lovasz-softmax (smp.losses.LovaszLoss), a surrogate of the IoU of the batch."""

    name = "lovasz"

    smp_class = smp_losses.LovaszLoss

    def __init__(self, per_image: bool = False, ignore_index: int = 255):
        super().__init__(ignore_index)
        self.per_image = per_image  # mean of the images' losses (images without labelled pixels left out)

    def compute(self, logits, target, weight):
        if not self.per_image:
            return super().compute(logits, target, weight)
        labelled = (target != self.ignore_index).flatten(1).any(1).nonzero()[:, 0]
        return sum(super(Lovasz, self).compute(logits[i : i + 1], target[i : i + 1], weight) for i in labelled) / len(
            labelled
        )
