"""Scores equal an independent NumPy computation; absent classes are left out of the means (torchmetrics'
JaccardIndex would count them as 0)."""

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from src.metrics import SegMetrics, scores_from_confmat


def numpy_scores(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int) -> dict:
    """Reference written from the definitions, pixel loops over classes, no shared code."""
    keep = target != ignore
    p, t = pred[keep], target[keep]
    iou, acc, dice, freq = [], [], [], []
    for c in range(num_classes):
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c))
        fn = np.sum((p != c) & (t == c))
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
        acc.append(tp / (tp + fn) if tp + fn else np.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan)
        freq.append((tp + fn) / t.size)
    iou, freq = np.array(iou), np.array(freq)
    present = freq > 0
    return {
        "mIoU": np.nanmean(iou),
        "mAcc": np.nanmean(acc),
        "mDice": np.nanmean(dice),
        "aAcc": np.mean(p == t),
        "fwIoU": np.sum(freq[present] * iou[present]),
        "iou": iou,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_numpy_with_ignored_pixels_and_absent_classes(seed):
    rng = np.random.default_rng(seed)
    num_classes, ignore = 6, 255
    target = rng.integers(0, 4, (3, 17, 23))  # classes 4 and 5 never in the target
    pred = rng.integers(0, 5, (3, 17, 23))  # class 4 predicted (false positives only), 5 nowhere
    target[rng.random(target.shape) < 0.2] = ignore
    metric = SegMetrics(num_classes, ignore_index=ignore)
    for i in range(3):  # accumulated over batches, not averaged per batch
        metric.update(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(target[i : i + 1]))
    got = metric.compute()
    ref = numpy_scores(pred, target, num_classes, ignore)
    for key in ("mIoU", "mAcc", "mDice", "aAcc", "fwIoU"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert got["mF1"] == got["mDice"]
    per_class_iou = [got["per_class"][str(c)]["IoU"] for c in range(num_classes)]
    np.testing.assert_allclose(per_class_iou, ref["iou"], equal_nan=True)
    assert per_class_iou[4] == 0.0  # predicted but never present: counts as 0
    assert math.isnan(per_class_iou[5])  # absent from both: left out of the mean


def test_absent_class_is_left_out_unlike_torchmetrics_jaccard():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 0, 1, 1]])
    ours = SegMetrics(3)
    ours.update(pred, target)
    assert ours.compute()["mIoU"] == 1.0
    assert math.isnan(ours.compute()["per_class"]["2"]["IoU"])
    theirs = MulticlassJaccardIndex(3, average="none")(pred, target)
    assert theirs[2].item() == 0.0  # torchmetrics scores the absent class as 0 (torchmetrics#1693); we use NaN


def test_logits_are_reduced_by_argmax():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2] = 1.0
    metric = SegMetrics(3)
    metric.update(logits, torch.full((1, 2, 2), 2))
    assert metric.compute()["aAcc"] == 1.0


def test_empty_matrix_gives_nan_not_error():
    scores = scores_from_confmat(torch.zeros(3, 3, dtype=torch.long), ["a", "b", "c"])
    assert math.isnan(scores["mIoU"]) and math.isnan(scores["aAcc"])
