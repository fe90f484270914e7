"""The one LightningModule every architecture trains under.

It takes a network (logits at input size), a loss, an optimizer factory and a schedule factory, all built by Hydra
from config, and logs the same things for every architecture: `train/loss` (and each loss term), and per
evaluation `val/` or `test/` + mIoU, aAcc, mAcc, fwIoU, mDice, mF1 and per-class IoU, all from one confusion
matrix (src/metrics.py). `predict_step` returns label maps (N,H,W).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from src.metrics import SUMMARY_KEYS, SegMetrics
from src.models.optim import BACKBONE_NAMES, param_groups


class SegmentationModule(L.LightningModule):
    """Args:
    net: the network, (N,3,H,W) -> (N,C,H,W).
    loss: `loss(logits, target)` -> a scalar, or a dict with the total under "loss" and terms beside it.
    optimizer: `optimizer(param_groups)` -> torch optimizer (a Hydra `_partial_`).
    scheduler: `scheduler(optimizer, total_steps=...)` -> a per-step LR scheduler, or None.
    num_classes, class_names, ignore_index: from the dataset config.
    head_lr_mult, norm_weight_decay, no_decay_keys, layer_decay: parameter-group settings (src/models/optim.py).
    train_metrics: also accumulate a confusion matrix on training batches (costs an argmax per step).
    channels_last: run the network in channels-last memory layout (faster convolutions with oneDNN on CPUs and
        with tensor cores on GPUs under mixed precision).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: Callable,
        optimizer: Callable,
        scheduler: Callable | None = None,
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        head_lr_mult: float = 1.0,
        norm_weight_decay: float | None = 0.0,
        no_decay_keys: Sequence[str] = (),
        layer_decay: float | None = None,
        train_metrics: bool = True,
        channels_last: bool = False,
        run_config: dict | None = None,
        inferer: Callable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "run_config", "inferer"])
        self.net, self.loss = net, loss
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.run_config = run_config
        self.inferer = inferer  # evaluation: inferer(self, images) -> logits (src/models/infer.py); None: self(images)
        self.metrics = nn.ModuleDict(
            {f"{stage}_": SegMetrics(num_classes, ignore_index, self.class_names) for stage in ("train", "val", "test")}
        )  # keys get a "_" because ModuleDict may not shadow nn.Module.train
        self.results: dict[str, dict] = {}  # stage -> the last scores computed (read by src.train / src.eval)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    @property
    def backbone(self) -> nn.Module | None:
        """The network's encoder (a sub-module named `encoder` or `backbone`), e.g. for freezing; None if none."""
        for name in BACKBONE_NAMES:
            for module_name, module in self.net.named_modules():
                if module_name.split(".")[-1] == name:
                    return module
        return None

    def _loss(self, logits, batch, stage: str) -> torch.Tensor:
        # per-pixel extras from the data pipeline (e.g. a boundary weight map) go to the loss as keywords
        extras = {k: v for k, v in batch.items() if k not in ("image", "mask")}
        out = self.loss(logits, batch["mask"], **extras)
        terms = out if isinstance(out, dict) else {"loss": out}
        on_step = stage == "train"
        for name, value in terms.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=on_step,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=len(logits),
                sync_dist=not on_step,
            )
        return terms["loss"]

    def training_step(self, batch, batch_idx):
        logits = self(batch["image"])
        loss = self._loss(logits, batch, "train")
        if self.hparams.train_metrics:
            self.metrics["train_"].update(logits.detach().argmax(1), batch["mask"])
        return loss

    def _eval_step(self, batch, stage: str):
        logits = self.inferer(self, batch["image"]) if self.inferer is not None else self(batch["image"])
        if logits.shape[-2:] != batch["mask"].shape[-2:]:  # image resized for evaluation, mask at full size
            logits = F.interpolate(logits, size=batch["mask"].shape[-2:], mode="bilinear", align_corners=False)
        self._loss(logits, batch, stage)
        self.metrics[f"{stage}_"].update(logits.argmax(1), batch["mask"])

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self(batch["image"]).argmax(1)

    def _log_scores(self, stage: str) -> None:
        metric = self.metrics[f"{stage}_"]
        if not metric.update_called:
            return
        scores = metric.compute()
        metric.reset()
        self.results[stage] = scores
        self.log_dict({f"{stage}/{k}": scores[k] for k in SUMMARY_KEYS}, prog_bar=False)
        self.log_dict(
            {f"{stage}/IoU/{name}": v["IoU"] for name, v in scores["per_class"].items() if not math.isnan(v["IoU"])}
        )

    def on_train_epoch_end(self):
        self._log_scores("train")

    def on_validation_epoch_end(self):
        self._log_scores("val")

    def on_test_epoch_end(self):
        self._log_scores("test")

    def configure_optimizers(self):
        hp = self.hparams
        base = self.optimizer_factory.keywords if hasattr(self.optimizer_factory, "keywords") else {}
        groups = param_groups(
            self.net,
            lr=base.get("lr", 1e-3),
            weight_decay=base.get("weight_decay", 0.0),
            head_lr_mult=hp.head_lr_mult,
            norm_weight_decay=hp.norm_weight_decay,
            no_decay_keys=hp.no_decay_keys,
            layer_decay=hp.layer_decay,
        )
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config
