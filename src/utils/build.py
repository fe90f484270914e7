"""Build the run's objects from a composed config (Hydra `_target_` entries)."""

from __future__ import annotations

import hydra
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from src.models.module import SegmentationModule


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a config group that holds several (callbacks, loggers)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def build_datamodule(cfg: DictConfig):
    return hydra.utils.instantiate(cfg.data, _convert_="partial")


def build_module(cfg: DictConfig, datamodule) -> SegmentationModule:
    """The LightningModule: network, loss, optimizer and schedule from `cfg`, labels from the datamodule.

    A loss that needs per-pixel inputs computed from the mask in the data pipeline (e.g. a boundary weight map)
    names them in `loss.sample_extras()`; they are handed to the training dataset here.
    """
    loss = hydra.utils.instantiate(cfg.loss)
    if hasattr(loss, "sample_extras"):
        datamodule.sample_extras.update(loss.sample_extras())
    return SegmentationModule(
        net=hydra.utils.instantiate(cfg.model),
        loss=loss,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        ignore_index=datamodule.ignore_index,
        run_config=OmegaConf.to_container(cfg, resolve=True),
        **OmegaConf.to_container(cfg.get("module") or OmegaConf.create({}), resolve=True),
    )


def build_trainer(cfg: DictConfig, extra_callbacks: list[Callback] = ()):
    callbacks: list[Callback] = instantiate_list(cfg.get("callbacks")) + list(extra_callbacks)
    loggers: list[Logger] = instantiate_list(cfg.get("logger"))
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
