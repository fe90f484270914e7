"""A test-only callback that scores every validation run again, independently of src/metrics.py.

Add it to a run with `INDEPENDENT` (a config override); after training, `IndependentScores.runs[-1]` is the mIoU of
the last validation run computed here with NumPy (confusion matrix by bincount, ignored pixels dropped, classes
absent from both ground truth and prediction left out), from the same forward pass (same precision context) and
the same resize of the logits to the mask. A test then asserts that the run's reported mIoU equals it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback

INDEPENDENT = ["+callbacks.independent_scores._target_=tests.scoring.IndependentScores"]


class IndependentScores(Callback):
    runs: list[float] = []  # mIoU of each validation run, in order (class-level: Hydra builds the instance)

    def on_validation_epoch_start(self, trainer, pl_module):
        self.confmat = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            return
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            logits = pl_module(batch["image"])
        mask = batch["mask"]
        if logits.shape[-2:] != mask.shape[-2:]:
            logits = F.interpolate(logits.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
        pred, gt = logits.argmax(1).cpu().numpy().ravel(), mask.cpu().numpy().ravel().astype(np.int64)
        c = pl_module.hparams.num_classes
        keep = gt != pl_module.hparams.ignore_index
        confmat = np.bincount(gt[keep] * c + pred[keep], minlength=c * c).reshape(c, c)
        self.confmat = confmat if self.confmat is None else self.confmat + confmat

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.confmat is None:
            return
        tp = np.diag(self.confmat).astype(np.float64)
        union = self.confmat.sum(0) + self.confmat.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        IndependentScores.runs.append(float(np.nanmean(iou)))
