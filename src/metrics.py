"""Segmentation scores from one confusion matrix accumulated over the whole evaluation set.

Follows the convention papers report with (mmsegmentation, the Cityscapes scripts): a class that never occurs in
the ground truth nor in the prediction has IoU/Dice NaN and is left out of the means (torchmetrics' JaccardIndex
counts it as 0 instead, which lowers mIoU on any split missing a class). Every score derives from the same
matrix, which torchmetrics sums across processes before it is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

SUMMARY_KEYS = ("mIoU", "aAcc", "mAcc", "fwIoU", "mDice", "mF1")


def scores_from_confmat(confmat: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """Scores from a (C, C) confusion matrix, rows = ground truth, columns = prediction.

    Returns the summary scores (fractions 0-1) `mIoU`, `aAcc`, `mAcc`, `fwIoU`, `mDice`, `mF1` and `per_class`:
    class name -> {"IoU", "Acc", "Dice"} (NaN where undefined). Per class, F1 and Dice are the same quantity
    (2TP / (2TP + FP + FN)), so `mF1` equals `mDice`; both are reported because papers use both names.
    """
    cm = confmat.double().cpu()
    tp = cm.diag()
    gt, pred = cm.sum(1), cm.sum(0)
    union = gt + pred - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    dice = torch.where(gt + pred > 0, 2 * tp / (gt + pred).clamp(min=1), nan)
    total = cm.sum()
    freq = gt / total.clamp(min=1)
    present = gt > 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    out = {
        "mIoU": iou.nanmean().item(),
        "aAcc": (tp.sum() / total).item() if total > 0 else float("nan"),
        "mAcc": acc.nanmean().item(),
        "fwIoU": (freq[present] * iou[present]).sum().item() if total > 0 else float("nan"),
        "mDice": dice.nanmean().item(),
    }
    out["mF1"] = out["mDice"]
    out["per_class"] = {
        name: {"IoU": iou[i].item(), "Acc": acc[i].item(), "Dice": dice[i].item()} for i, name in enumerate(names)
    }
    return out


class SegMetrics(MulticlassConfusionMatrix):
    """A torchmetrics Metric holding the confusion matrix; `compute()` returns `scores_from_confmat`'s dict.

    `update` takes logits (N,C,H,W) or labels (N,H,W) and targets (N,H,W); pixels at `ignore_index` are skipped.
    `last_confmat` holds the matrix of the last `compute()` (summed across processes, on the CPU) for figures.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = None, class_names: Sequence[str] | None = None):
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)
        self.class_names = list(class_names) if class_names is not None else None
        self.last_confmat: torch.Tensor | None = None

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch to the matrix without waiting for the device: ignored pixels are counted with weight 0
        (torchmetrics' own update drops them by boolean indexing, a host-device synchronisation per batch)."""
        if preds.ndim == target.ndim + 1:
            preds = preds.max(1).indices  # = argmax(1), ties included; several times faster on CPU for NCHW
        target = target.long()
        num_classes = self.num_classes
        if self.ignore_index is None:
            index, weight = target * num_classes + preds, torch.ones_like(target)
        else:
            valid = target != self.ignore_index
            index, weight = (target * num_classes + preds).masked_fill(~valid, 0), valid.long()
        self.confmat.view(-1).index_add_(0, index.flatten(), weight.flatten())

    def compute(self) -> dict:
        self.last_confmat = super().compute().detach().cpu()
        return scores_from_confmat(self.last_confmat, self.class_names)
