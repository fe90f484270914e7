"""The one LightningModule every architecture trains under.

It takes a network (logits at input size), a loss, an optimizer factory and a schedule factory, all built by Hydra
from config, and logs the same things for every architecture: `train/loss_step` (every `trainer.log_every_n_steps`)
and `train/loss_epoch`, `val/loss` and `test/loss` (and the same for each term of a weighted sum), and per
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

from src.errors import UserError
from src.metrics import SUMMARY_KEYS, SegMetrics
from src.models.net import find_encoder
from src.models.optim import param_groups


class SegmentationModule(L.LightningModule):
    """Args:
    net: the network, (N,3,H,W) -> (N,C,H,W).
    loss: `loss(logits, target)` -> a scalar, or a dict with the total under "loss" and terms beside it. A loss
        with `sample_extras()` (name -> fn(mask)) also gets those batch entries as keywords, and no other; each
        training batch must carry them (the DataModule is built with them: src.run.build_datamodule).
    optimizer: `optimizer(param_groups)` -> torch optimizer (a Hydra `_partial_`).
    lr, weight_decay: the base learning rate and weight decay of the parameter groups (src/models/optim.py); the
        config passes the optimizer's own (`module.lr: ${optimizer.lr}`).
    scheduler: `scheduler(optimizer, total_steps=...)` -> a per-step LR scheduler, or None.
    num_classes, class_names, ignore_index: from the dataset config.
    head_lr_mult, norm_weight_decay, no_decay_keys, layer_decay: parameter-group settings (src/models/optim.py).
    train_metrics: also accumulate a confusion matrix on training batches (an argmax and a scatter-add per step).
    train_metrics_stride: ... on every k-th pixel of every k-th row (1: all). The argmax over classes runs at
        ~5 ns per logit on a CPU whatever the precision: on all pixels 2.5% of a step of the default run under
        bf16 autocast, on a quarter (k = 2) 0.7%, on a 16th (k = 4, configs/train.yaml's default) 0.2%
        (benchmarks/step.py). Evaluation scores every pixel.
    channels_last: run the network in channels-last memory layout (faster convolutions with oneDNN on CPUs and
        with tensor cores on GPUs under mixed precision).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: Callable,
        optimizer: Callable,
        scheduler: Callable | None = None,
        lr: float | None = None,
        weight_decay: float = 0.0,
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        head_lr_mult: float = 1.0,
        norm_weight_decay: float | None = 0.0,
        no_decay_keys: Sequence[str] = (),
        layer_decay: float | None = None,
        train_metrics: bool = True,
        train_metrics_stride: int = 1,
        channels_last: bool = False,
        run_config: dict | None = None,
        inferer: Callable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "run_config", "inferer"])
        self.net, self.loss = net, loss
        # the batch keys the loss takes beside logits and mask (e.g. "weight": a boundary weight map)
        self.loss_keys = tuple(loss.sample_extras()) if hasattr(loss, "sample_extras") else ()
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
        self._train_sums: dict[str, torch.Tensor] = {}  # this epoch's training losses x samples (_log_train_losses)
        self._train_count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    @property
    def backbone(self) -> nn.Module | None:
        """The network's encoder (`find_encoder`), e.g. for freezing; None if it has none."""
        found = find_encoder(self.net)
        return found[1] if found is not None else None

    def _loss(self, logits, batch, stage: str) -> torch.Tensor:
        # the per-pixel extras the loss declares (e.g. a boundary weight map) go to it as keywords; other batch
        # keys (a file name, an index) never reach it. Training batches must carry them; evaluation batches don't.
        missing = [k for k in self.loss_keys if k not in batch]
        if missing and stage == "train":
            raise RuntimeError(
                f"the loss {type(self.loss).__name__} needs {missing} in every training batch, but the batch has "
                f"only {sorted(batch)}: build the DataModule with sample_extras=loss.sample_extras() "
                "(src.run.build_datamodule does)."
            )
        extras = {k: batch[k] for k in self.loss_keys if k in batch}
        out = self.loss(logits, batch["mask"], **extras)
        terms = out if isinstance(out, dict) else {"loss": out}
        # a single loss's one term is the total: logged once, as <stage>/loss; the terms of a weighted sum are
        # logged beside it. Values stay on the device (read when the logs are written, and by the progress bar at
        # its own interval).
        names = [name for name in terms if name != "loss"]
        names = ["loss"] + (names if len(names) > 1 else [])
        if stage == "train":
            self._log_train_losses({name: terms[name] for name in names}, len(logits))
        else:
            for name in names:
                self.log(
                    f"{stage}/{name}",
                    terms[name],
                    on_step=False,
                    on_epoch=True,
                    prog_bar=name == "loss",
                    batch_size=len(logits),
                    sync_dist=True,
                )
        return terms["loss"]

    def _log_train_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """`train/<name>_step` on the steps the loggers write (every `trainer.log_every_n_steps`), and
        `train/<name>_epoch`, the epoch's mean over samples, at its end (this process's samples, as Lightning's
        own epoch mean of training values). In between the losses are summed here, on the device: Lightning's
        `self.log` costs 0.3-0.6 ms a call (it moves its whole record of the value to the value's device every
        time), 0.4% of a CPU step of the default run and more of a short GPU step."""
        for name, value in losses.items():
            value = value.detach().float() * batch_size
            self._train_sums[name] = self._train_sums[name] + value if name in self._train_sums else value
        self._train_count += batch_size
        trainer = self._trainer
        if trainer is None:
            return
        connector = getattr(trainer, "_logger_connector", None)  # Lightning's; without it, log every step
        if connector is not None and not (trainer.fast_dev_run or connector.should_update_logs):
            return
        for name, value in losses.items():
            self.log(f"train/{name}_step", value, on_step=True, on_epoch=False, prog_bar=name == "loss")

    def training_step(self, batch, batch_idx):
        logits = self(batch["image"])
        loss = self._loss(logits, batch, "train")
        if self.hparams.train_metrics:
            k = self.hparams.train_metrics_stride
            self.metrics["train_"].update(logits.detach()[..., ::k, ::k], batch["mask"][..., ::k, ::k])
        return loss

    def _eval_step(self, batch, stage: str):
        logits = self.inferer(self, batch["image"]) if self.inferer is not None else self(batch["image"])
        if logits.shape[-2:] != batch["mask"].shape[-2:]:  # image resized for evaluation, mask at full size
            # in float32: bilinear weights applied in bf16 (autocast) move logits by up to 2^-7 and flip argmaxes
            logits = F.interpolate(logits.float(), size=batch["mask"].shape[-2:], mode="bilinear", align_corners=False)
        self._loss(logits, batch, stage)
        self.metrics[f"{stage}_"].update(logits, batch["mask"])

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

    def on_train_epoch_start(self):
        self._train_sums.clear()
        self._train_count = 0

    def on_train_epoch_end(self):
        for name, total in self._train_sums.items():
            self.log(f"train/{name}_epoch", total / self._train_count, on_epoch=True, prog_bar=name == "loss")
        self._log_scores("train")

    def on_validation_epoch_end(self):
        self._log_scores("val")

    def on_test_epoch_end(self):
        self._log_scores("test")

    def configure_optimizers(self):
        hp = self.hparams
        if hp.lr is None:
            raise UserError("module.lr is not set: give the base learning rate (configs/train.yaml: ${optimizer.lr}).")
        groups = param_groups(
            self.net,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
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
