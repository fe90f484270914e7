"""Optimizer settings (src/models/optim.py): the learning-rate schedule's values, the encoder every setting means,
and the base learning rate as a module argument."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import FAST, compose_config
from torch import nn

from src.errors import UserError
from src.models.module import SegmentationModule
from src.models.net import find_encoder
from src.models.optim import lr_factor, param_groups
from src.models.summary import summarize
from src.run import build_datamodule, build_module, instantiate


# -- the schedule ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "step,kwargs,expected",
    [
        (0, {}, 1.0),  # poly, power 1: linear from lr down to 0
        (50, {}, 0.5),
        (100, {}, 0.0),
        (150, {}, 0.0),  # past the end it stays at the end value
        (50, {"power": 0.9}, 0.5358867312681466),  # (1 - 0.5)^0.9
        (75, {"power": 2.0}, 0.0625),
        (50, {"kind": "cosine"}, 0.5),
        (25, {"kind": "cosine"}, 0.8535533905932737),  # (1 + cos(pi/4)) / 2
        (100, {"kind": "cosine"}, 0.0),
        (40, {"kind": "constant"}, 1.0),
        (100, {"min_lr_ratio": 0.1}, 0.1),  # poly ends at min_lr_ratio x lr
        (50, {"min_lr_ratio": 0.1}, 0.55),
        (50, {"kind": "cosine", "min_lr_ratio": 0.2}, 0.6),
        (0, {"warmup_iters": 10}, 1e-6),  # warm-up: from warmup_ratio x the scheduled value ...
        (5, {"warmup_iters": 10}, 0.475000475),  # ... linearly: 0.95 x (1e-6 + (1 - 1e-6) x 0.5)
        (10, {"warmup_iters": 10}, 0.9),  # ... to the schedule itself
        (5, {"warmup_iters": 10, "warmup_ratio": 0.1, "kind": "constant"}, 0.55),
    ],
)
def test_lr_factor_values(step, kwargs, expected):
    assert lr_factor(step, 100, **kwargs) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_unknown_schedule_kind_is_named():
    with pytest.raises(UserError, match=r"scheduler.kind='step' is not known: use one of poly, cosine, constant"):
        lr_factor(0, 10, kind="step")


def test_scheduler_config_drives_every_parameter_group():
    """scheduler=poly with warm-up, as configured: each optimizer step sets every group's LR to its base LR (head
    LR x head_lr_mult) times the factor."""
    cfg = compose_config("train", ["scheduler.warmup_iters=4", "scheduler.warmup_ratio=0.1", "model=unet"])
    net = instantiate(cfg.model)
    groups = param_groups(net, lr=0.01, weight_decay=0.0, head_lr_mult=10.0)
    optimizer = torch.optim.SGD(groups, lr=0.01)
    schedule = instantiate(cfg.scheduler)(optimizer, total_steps=20)
    base = [g["initial_lr"] for g in optimizer.param_groups]  # the LRs before the schedule
    assert sorted(set(base)) == pytest.approx([0.01, 0.1])
    for step in range(22):
        factor = lr_factor(step, 20, "poly", warmup_iters=4, warmup_ratio=0.1)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([b * factor for b in base], abs=1e-12)
        optimizer.step()
        schedule.step()


# -- the encoder -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["unet", "segformer", "fcn8s", "segnet", "unet_classic"])
def test_one_encoder_for_groups_freezing_and_summary(name, tmp_path):
    """find_encoder is what the parameter groups, the module's `backbone` and the summary all call the encoder."""
    small = {
        "fcn8s": ["model.channels=[8,16,16,32,32]", "model.fc_channels=32"],
        "segnet": ["model.channels=[8,16,16,32,32]"],
    }
    cfg = compose_config("train", [f"model={name}", *small.get(name, [])], tmp_path)
    net = instantiate(cfg.model)
    path, encoder = find_encoder(net)
    assert path.split(".")[-1] == "encoder"
    encoder_params = {id(p) for p in encoder.parameters()}
    groups = param_groups(net, lr=1.0, weight_decay=0.0, head_lr_mult=3.0)
    backbone = {id(p) for g in groups if g["name"].startswith("backbone") for p in g["params"]}
    assert backbone == encoder_params and all(g["lr"] == 3.0 for g in groups if g["name"].startswith("head"))
    module = SegmentationModule(net, loss=None, optimizer=None, lr=1.0)
    assert module.backbone is encoder
    assert summarize(net, (32, 32))["encoder_params"] == sum(p.numel() for p in encoder.parameters())


def test_a_network_without_encoder_is_all_head():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert find_encoder(net) is None
    assert {g["name"] for g in param_groups(net, lr=1.0, weight_decay=0.1)} == {"head_decay", "head_norm"}


# -- the learning rate is a module argument --------------------------------------------------------------------
def test_learning_rate_and_weight_decay_come_from_the_optimizer_config(tmp_path):
    cfg = compose_config(
        "train", [*FAST, "optimizer=sgd", "optimizer.lr=0.05", "optimizer.weight_decay=0.002"], tmp_path
    )
    assert cfg.module.lr == 0.05 and cfg.module.weight_decay == 0.002
    module = build_module(cfg, build_datamodule(cfg, validate=False))
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert {g["lr"] for g in optimizer.param_groups} == {0.05}
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.002, 0.0}  # norm layers: module.norm_weight_decay


def test_an_optimizer_partial_without_lr_uses_the_module_lr():
    """No reading back from the partial (no silent 1e-3): the groups carry the module's lr."""
    module = SegmentationModule(nn.Conv2d(3, 2, 1), loss=None, optimizer=functools.partial(torch.optim.Adam), lr=0.3)
    assert [g["lr"] for g in module.configure_optimizers().param_groups] == [0.3]
    unset = SegmentationModule(nn.Conv2d(3, 2, 1), loss=None, optimizer=functools.partial(torch.optim.Adam))
    with pytest.raises(UserError, match="module.lr is not set"):
        unset.configure_optimizers()
