"""Shared test helpers: compose the project's Hydra configs into a temporary run folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from src.utils.compose import CONFIG_DIR, compose_config  # noqa: F401  (tests import both from here)

ROOT = Path(__file__).resolve().parents[1]

# small and fast: what every end-to-end test starts from (each test adds its own overrides)
FAST = [
    "data.train_size=48",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=8",
    "model=unet_classic",
    "model.base_channels=8",
    "model.depth=2",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "extras.print_config=false",
]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def train_cfg(tmp_path):
    """`train_cfg(*overrides, run="run")` -> a fast train config writing into tmp_path/run."""

    def make(*overrides: str, run: str = "run", fast: bool = True) -> DictConfig:
        return compose_config("train", (FAST if fast else []) + list(overrides), tmp_path / run)

    return make


@pytest.fixture(autouse=True)
def _torch_threads():
    """Tests may run in parallel processes (pytest -n): keep each to its share of the cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    yield
    torch.set_num_threads(before)
