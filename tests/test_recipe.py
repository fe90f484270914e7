"""Training recipe: EMA of the weights, backbone freezing, layer-wise LR decay, the LR / batch-size finder."""

from __future__ import annotations

import json

import lightning as L
import pytest
import timm
import torch
from conftest import FAST, compose_config
from torch import nn

from src.errors import UserError
from src.models.net import smp_net
from src.models.optim import backbone_layer_ids, param_groups
from src.run import build_datamodule, build_module, build_trainer

SHORT = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "scheduler=constant"]


def fit(cfg, *callbacks):
    L.seed_everything(0)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg, list(callbacks))
    trainer.fit(module, datamodule=datamodule)
    return trainer, module


class RecordWeights(L.Callback):
    """The weights after every optimizer step, and the weights validation sees (step -> state)."""

    def __init__(self):
        self.steps, self.validated = [], {}

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.steps.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_validation_batch_start(self, trainer, pl_module, *args):
        if not trainer.sanity_checking:
            self.validated[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def running_average(steps, decay):
    """EMA as defined independently here: e_1 = w_1, e_t = decay e_{t-1} + (1 - decay) w_t (float tensors)."""
    out, ema = [], None
    for state in steps:
        floats = {k: v.double() for k, v in state.items() if v.is_floating_point()}
        ema = floats if ema is None else {k: decay * ema[k] + (1 - decay) * floats[k] for k in ema}
        out.append(ema)
    return out


def test_ema_checkpoint_and_validation_hold_the_running_average(tmp_path):
    decay = 0.7
    cfg = compose_config(
        "train",
        FAST
        + SHORT
        + [
            "callbacks=with_ema",
            f"callbacks.ema.decay={decay}",
            "trainer.max_epochs=2",
            "callbacks.model_checkpoint.monitor=null",
        ],
        tmp_path / "run",
    )
    record = RecordWeights()
    trainer, module = fit(cfg, record)
    ema = running_average(record.steps, decay)
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    step = ckpt["global_step"]
    assert step == len(record.steps) == 6
    averaged, raw = ema[step - 1], record.steps[step - 1]
    saved = {k: v for k, v in ckpt["state_dict"].items() if v.is_floating_point()}
    assert saved.keys() == averaged.keys()
    for name, value in saved.items():
        torch.testing.assert_close(value.double(), averaged[name], rtol=1e-5, atol=1e-6, msg=name)
    head = "net.net.head.weight"
    assert not torch.allclose(saved[head], raw[head], atol=1e-5)  # not the last step's weights
    torch.testing.assert_close(ckpt["current_model_state"][head], raw[head])  # those are kept for resuming
    # validation during training ran on the average at that step, too
    assert sorted(record.validated) == [3, 6]
    for at, state in record.validated.items():
        torch.testing.assert_close(state[head].double(), ema[at - 1][head], rtol=1e-5, atol=1e-6)
    # and so does the evaluation of the checkpoint after training (what src.train reports)
    record.validated.clear()
    trainer.validate(
        module, datamodule=trainer.datamodule, ckpt_path=trainer.checkpoint_callback.best_model_path, verbose=False
    )
    torch.testing.assert_close(record.validated[step][head], ckpt["state_dict"][head])


def test_backbone_frozen_then_unfrozen_with_its_own_lr(tmp_path):
    cfg = compose_config(
        "train",
        FAST
        + SHORT[:2]
        + [
            "callbacks=[default,backbone_finetuning]",
            "callbacks.rich_progress_bar=null",
            "callbacks.model_summary=null",
            "callbacks.backbone_finetuning.unfreeze_backbone_at_epoch=1",
            "callbacks.backbone_finetuning.backbone_initial_ratio_lr=0.25",
            "trainer.max_epochs=2",
        ],
        tmp_path / "run",
    )

    class Watch(L.Callback):
        def __init__(self):
            self.changed, self.groups = [], []

        def on_train_epoch_start(self, trainer, pl_module):
            self.start = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
            self.groups.append([dict(lr=g["lr"], n=len(g["params"])) for g in trainer.optimizers[0].param_groups])

        def on_train_epoch_end(self, trainer, pl_module):
            self.changed.append({k for k, v in pl_module.named_parameters() if not torch.equal(v, self.start[k])})

    watch = Watch()
    _, module = fit(cfg, watch)
    backbone = {f"net.net.encoder.{k}" for k, _ in module.backbone.named_parameters()}
    norms = {
        f"net.net.encoder.{n}.{p}"
        for n, m in module.backbone.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in ("weight", "bias")
    }
    convs = backbone - norms
    assert convs and not convs & watch.changed[0]  # epoch 0: backbone convolutions frozen
    assert norms <= watch.changed[0]  # ... its BatchNorm layers train (Lightning freezes with train_bn=True)
    assert any(not k.startswith("net.net.encoder.") for k in watch.changed[0])  # the rest trains
    assert convs <= watch.changed[1]  # epoch 1: unfrozen
    before, after = watch.groups
    assert len(after) == len(before) + 1 and after[-1]["n"] == len(convs)
    assert after[-1]["lr"] == pytest.approx(0.25 * after[0]["lr"])  # its own LR: ratio x the first group's


class TinyViTNet(nn.Module):
    def __init__(self, depth: int = 3):
        super().__init__()
        self.encoder = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=depth, num_classes=0)
        self.head = nn.Linear(192, 3)


def test_layer_wise_lr_decay_on_a_transformer_encoder():
    net = TinyViTNet(depth=3)
    groups = param_groups(net, lr=1.0, weight_decay=0.05, head_lr_mult=2.0, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    # L = 4 layers: embeddings (0), blocks 0..2 (1..3); layer i gets 0.5 ** (4 - i), the head 2.0
    assert lr_of[id(net.encoder.cls_token)] == lr_of[id(net.encoder.patch_embed.proj.weight)] == 0.5**4
    for i, block in enumerate(net.encoder.blocks):
        assert {lr_of[id(p)] for p in block.parameters()} == {0.5 ** (3 - i)}
    assert lr_of[id(net.encoder.norm.weight)] == 0.5  # timm groups the final norm with the last block
    assert {lr_of[id(p)] for p in net.head.parameters()} == {2.0}
    assert len(lr_of) == len(list(net.parameters()))
    # without layer_decay: the groups as before (backwards compatible)
    plain = param_groups(net, lr=1.0, weight_decay=0.05, head_lr_mult=2.0)
    assert sorted(g["name"] for g in plain) == ["backbone_decay", "backbone_norm", "head_decay"]


def test_layer_ids_follow_block_order_for_encoders_without_timm_groups():
    net = smp_net("unet", "resnet18", num_classes=3)
    ids = backbone_layer_ids(net)
    assert ids["net.encoder.conv1.weight"] == ids["net.encoder.bn1.weight"] == 0  # stem
    order = [ids[f"net.encoder.layer{s}.{b}.conv1.weight"] for s in (1, 2, 3, 4) for b in (0, 1)]
    assert order == sorted(order) and len(set(order)) == 8
    assert not any(name.startswith("net.decoder") for name in ids)
    groups = param_groups(net, lr=1.0, weight_decay=0.0, layer_decay=0.9)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["backbone_layer0_decay"] == pytest.approx(0.9 ** (max(ids.values()) + 1))
    assert lrs["head_decay"] == 1.0


# -- the LR and batch-size finders ---------------------------------------------------------------------------
TUNE = [
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=4",
    "model=unet_classic",
    "model.base_channels=8",
    "model.depth=2",
    "trainer.accelerator=cpu",
    "extras.print_config=false",
]


@pytest.mark.slow  # about 25 s on 2 cores
def test_tune_lr_find_writes_its_result(tmp_path):
    from src.tune import tune

    cfg = compose_config(
        "tune", TUNE + ["lr_find.num_training=20", "lr_find.early_stop_threshold=null"], tmp_path / "run"
    )
    result = tune(cfg)
    saved = json.loads((tmp_path / "run" / "lr_find.json").read_text())
    assert saved["mode"] == "lr_find" and len(saved["lr"]) == len(saved["loss"]) == 20
    assert saved["lr"][0] == pytest.approx(1e-6) and saved["lr"] == sorted(saved["lr"])
    assert 1e-6 <= saved["suggested_lr"] <= 1.0 and saved["suggested_lr"] == result["suggested_lr"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_tune_batch_size_writes_its_result(tmp_path):
    from src.tune import tune

    cfg = compose_config("tune", TUNE + ["mode=batch_size", "batch_size.steps_per_trial=1"], tmp_path / "run")
    result = tune(cfg)
    # no memory limit on this CPU: the search doubles 2, 4, 8, 16 and stops at the training set's size
    assert result["batch_size"] == 16
    assert json.loads((tmp_path / "run" / "batch_size.json").read_text())["batch_size"] == 16


def test_tune_unknown_mode_is_a_user_error(tmp_path):
    from src.tune import tune

    with pytest.raises(UserError, match="mode=lr_find or mode=batch_size"):
        tune(compose_config("tune", TUNE + ["mode=lr"], tmp_path / "run"))
