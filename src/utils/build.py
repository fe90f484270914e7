"""Build the run's objects from a composed config (Hydra `_target_` entries)."""

from __future__ import annotations

import hydra
from hydra.errors import InstantiationException
from lightning import Callback
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from src.models.module import SegmentationModule
from src.utils.checks import UserError


def instantiate(cfg, **kwargs):
    """`hydra.utils.instantiate` that lets a user's mistake (a `UserError` raised while building) come out as is,
    not wrapped in Hydra's InstantiationException with a long traceback."""
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None:
            if isinstance(cause, UserError):
                raise cause from None
            cause = cause.__cause__
        raise


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a config group that holds several (callbacks, loggers)."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def build_datamodule(cfg: DictConfig):
    return instantiate(cfg.data, _convert_="partial")


def build_module(cfg: DictConfig, datamodule) -> SegmentationModule:
    """The LightningModule: network, loss, optimizer and schedule from `cfg`, labels from the datamodule.

    A loss that needs per-pixel inputs computed from the mask in the data pipeline (e.g. a boundary weight map)
    names them in `loss.sample_extras()`; they are handed to the training dataset here.
    """
    loss = instantiate(cfg.loss)
    if hasattr(loss, "sample_extras"):
        datamodule.sample_extras.update(loss.sample_extras())
    return SegmentationModule(
        net=instantiate(cfg.model),
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        ignore_index=datamodule.ignore_index,
        run_config=OmegaConf.to_container(cfg, resolve=True),
        **OmegaConf.to_container(cfg.get("module") or OmegaConf.create({}), resolve=True),
    )


def build_trainer(cfg: DictConfig, extra_callbacks: list[Callback] = ()):
    callbacks: list[Callback] = instantiate_list(cfg.get("callbacks")) + list(extra_callbacks)
    loggers: list[Logger] = instantiate_list(cfg.get("logger"))
    if not loggers:  # `logger=none`: LearningRateMonitor would stop the run ("Cannot use ... without a logger")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def finish_loggers(trainer) -> None:
    """Close the W&B run when a task ends (Lightning finalizes its loggers but leaves the W&B run open), so that the
    next run of a sweep, or of the same Python session, starts its own W&B run instead of logging into this one."""
    if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        wandb.finish()
