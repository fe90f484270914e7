"""Per-epoch seeding, so that a run resumed from a checkpoint replays the epochs it has not done yet exactly."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from src.data.base import EpochSampler


class EpochSeed(L.Callback):
    """At the start of training epoch k, seed the global RNGs (dropout, any model randomness) from (seed, k).

    The data side is seeded per sample by `EpochSampler`; together, what happens in epoch k depends on (seed, k)
    alone, not on how many epochs this process has run before. One Lightning detail needs mending for that: on a
    resume, Lightning makes the first epoch's data iterator before it restores the epoch counter (and before it
    calls `set_epoch`), so that iterator would replay epoch 0's order; it is remade here when that happened.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        s = (self.seed * 1_000_003 + trainer.current_epoch) % 2**32
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        loaders = trainer.train_dataloader
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        stale = [
            dl
            for dl in loaders
            if isinstance(getattr(dl, "sampler", None), EpochSampler)
            and dl.sampler.iterated_epoch not in (None, dl.sampler.epoch)
        ]
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if stale and fetcher is not None:
            iter(fetcher)  # what Lightning itself does at the start of every later epoch
