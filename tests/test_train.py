"""End to end on the built-in data: fast_dev_run, eval reproduces training's numbers, exact resume, same seed."""

import json
import os
import signal
import subprocess
import sys

import lightning as L
import pytest
import torch

from src.errors import Stopped, UserError
from src.eval import evaluate
from src.train import train
from tests.conftest import ROOT, compose_config


def test_fast_dev_run_default_config(train_cfg, tmp_path):
    cfg = train_cfg("debug=fast_dev_run", "callbacks.rich_progress_bar=null", "extras.print_config=false", fast=False)
    results = train(cfg)
    assert 0.0 <= results["val"]["mIoU"] <= 1.0
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(written) >= {"mIoU", "aAcc", "mAcc", "fwIoU", "mDice", "mF1", "per_class"}
    assert set(written["per_class"]) == {"background", "disk", "square", "triangle", "ring", "cross"}
    assert set(written["per_class"]["disk"]) == {"IoU", "Acc", "Dice"}


def test_eval_reproduces_logged_val_metrics(train_cfg, tmp_path):
    results = train(train_cfg())
    checkpoints = tmp_path / "run" / "checkpoints"
    # the monitored name val/mIoU holds a '/': it must not turn into a sub-folder of checkpoints/
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        f"epoch000-mIoU{results['val']['mIoU']:.4f}.ckpt",
        "last.ckpt",
    ]
    ckpt = next(checkpoints.glob("epoch*.ckpt"))
    eval_cfg = compose_config("eval", [f"ckpt_path={ckpt}", "extras.print_config=false"], tmp_path / "eval")
    scores = evaluate(eval_cfg)
    for key in ("mIoU", "aAcc", "mAcc", "fwIoU", "mDice"):
        assert scores[key] == pytest.approx(results["val"][key], abs=1e-9), key
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["mIoU"] == pytest.approx(scores["mIoU"]) and written["split"] == "val"


class SignalAt(L.Callback):
    """Sends this process a signal after training step `step`, as SLURM does when it preempts or requeues a job
    (SIGTERM) or warns of its time limit (`--signal`: USR2 under submitit)."""

    def __init__(self, step: int, signal: str = "SIGTERM"):
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


def test_resume_from_mid_run_checkpoint_matches_uninterrupted_run(train_cfg, tmp_path):
    """Run 3 epochs; separately resume from the epoch-1 checkpoint: the final weights and metrics are the same.
    The same holds for a run stopped by SIGTERM in the middle of its second epoch (last.ckpt is written on the way
    out) and continued with `ckpt_path=auto` in its folder: it trains on the rest of that epoch's batches, not on
    the epoch's first ones again.

    No monitored metric here: a resumed run in a new folder cannot see the first run's best checkpoint (Lightning
    resets the best when the folder changes), so both runs score their last epoch.
    """
    common = [
        "trainer.max_epochs=3",
        "callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.model_checkpoint.monitor=null",
        "data.num_workers=2",
        "data.train_transform.transforms.0.p=0.5",
    ]
    full = train(train_cfg(*common, run="full"))
    first = sorted((tmp_path / "full" / "checkpoints").glob("epoch000-*.ckpt"))[0]
    resumed = train(train_cfg(*common, f"ckpt_path={first}", run="resumed"))
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["optimizer_states"][0]["state"][0]["exp_avg"].equal(b["optimizer_states"][0]["state"][0]["exp_avg"])
    assert resumed["val"] == full["val"]
    assert resumed["test"] == full["test"]

    stop = "+callbacks.sigterm={_target_: tests.test_train.SignalAt, step: 8}"  # 6 steps an epoch: epoch 1, step 2
    with pytest.raises(Stopped, match="SIGTERM received during training"):
        train(train_cfg(*common, stop, run="stopped"))
    stopped = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=False)
    assert stopped["epoch"] == 1 and stopped["global_step"] == 8
    continued = train(train_cfg(*common, "ckpt_path=auto", run="stopped"))
    c = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=False)
    assert c["global_step"] == a["global_step"] == 18
    for key, value in a["state_dict"].items():
        assert torch.equal(value, c["state_dict"][key]), key
    assert continued["val"] == full["val"]


def test_last_checkpoint_follows_every_epoch_when_best_does_not_improve(train_cfg, tmp_path):
    """Pins a Lightning 2.6 trap: with save_last on the monitored callback, last.ckpt is only rewritten when the
    best improves. Monitoring `epoch` with mode=min makes epoch 0 the best forever; last.ckpt must still be the
    final epoch."""
    train(
        train_cfg(
            "trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min"
        )
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [p.name.startswith("epoch000") for p in checkpoints.glob("epoch*.ckpt")] == [True]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 2


def test_same_seed_same_metrics_other_seed_other_metrics(train_cfg):
    a = train(train_cfg("seed=7", run="a"))
    b = train(train_cfg("seed=7", run="b"))
    c = train(train_cfg("seed=8", run="c"))
    assert a["val"] == b["val"]
    assert a["val"]["mIoU"] != c["val"]["mIoU"]


def test_existing_results_are_never_overwritten(train_cfg, tmp_path):
    train(train_cfg("debug=limit", "trainer.max_epochs=1"))
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.suffix == ".ckpt"}
    with pytest.raises(UserError, match="already holds results of an earlier run"):
        train(train_cfg("debug=limit", "trainer.max_epochs=1"))
    assert before and all(p.read_bytes() == data for p, data in before.items())


@pytest.mark.slow
def test_short_training_beats_majority_baseline(train_cfg):
    """The default model and data on half the default budget (750 steps): far above predicting the majority class
    (background) everywhere, which scores about 0.13 mIoU."""
    results = train(
        train_cfg(
            "model=unet_small",
            "model.base_channels=16",  # FAST's overrides of model keys apply after the group choice
            "model.depth=3",
            "data.train_size=2400",
            "data.val_size=100",
            "data.batch_size=32",
            "trainer.max_epochs=10",
        )
    )
    baseline = compute_majority_baseline(train_cfg)
    assert results["val"]["mIoU"] > baseline + 0.3, (results["val"]["mIoU"], baseline)


def compute_majority_baseline(train_cfg) -> float:
    from src.metrics import SegMetrics
    from src.run import build_datamodule

    cfg = train_cfg("data.val_size=100", run="baseline")
    dm = build_datamodule(cfg)
    metric = SegMetrics(dm.num_classes, dm.ignore_index)
    for batch in dm.val_dataloader():
        metric.update(torch.zeros_like(batch["mask"]), batch["mask"])
    return metric.compute()["mIoU"]


def test_cli_trains_and_writes_run_folder(tmp_path):
    """The real entry point, as a user runs it."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.train",
            f"hydra.run.dir={tmp_path}",
            "debug=fast_dev_run",
            "model=unet_classic",
            "model.base_channels=8",
            "model.depth=2",
            "data.train_size=16",
            "data.val_size=8",
            "data.test_size=8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "val scores" in out.stdout and "mIoU" in out.stdout
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["split"] == "val"
