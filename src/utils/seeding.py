"""Per-epoch seeding, so that a run resumed from a checkpoint replays the epochs it has not done yet exactly."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from src.data.base import reseed_transform


class EpochSeed(L.Callback):
    """At the start of training epoch k, seed every RNG from (seed, k).

    DataLoader workers draw their seeds from the main process's torch RNG when the epoch's iterator starts, so
    the augmentations, the dropout masks and everything else random in epoch k depend on (seed, k) alone, not on
    how many epochs this process has run before. With `num_workers=0` the training pipeline is reseeded directly.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        s = (self.seed * 1_000_003 + trainer.current_epoch) % 2**32
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and getattr(datamodule, "num_workers", 0) == 0:
            reseed_transform(getattr(datamodule, "train_transform", None), s)
