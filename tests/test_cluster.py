"""Cluster runs on a real SLURM (scripts/slurm_cluster.sh: a controller and two slurmd "nodes" on this machine),
preemption and requeue, `ckpt_path=auto`, torchrun and Optuna sweeps.

The SLURM tests skip with a reason where SLURM is missing or down; under CI=true they fail instead (.ci/run installs
and starts the local cluster).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from src.errors import Stopped
from src.eval import evaluate
from src.run import build_trainer
from src.train import train
from src.utils.io import AtomicCheckpointIO
from tests.conftest import ROOT, compose_config

# the default run, shrunk: 32x32 images, 4 training steps of 8 images per epoch (per process), CPU, no progress bar
TINY = [
    "data.image_size=32",
    "data.train_size=32",
    "data.val_size=8",
    "data.test_size=8",
    "data.batch_size=8",
    "model=unet_classic",
    "model.base_channels=8",
    "model.depth=2",
    "trainer.num_sanity_val_steps=0",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "extras.print_config=false",
    "test=false",
]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1"}


def need_slurm() -> None:
    """Skip without a running SLURM; under CI=true fail instead, so CI cannot pass by skipping."""
    reason = None
    if shutil.which("sbatch") is None:
        reason = "sbatch not found (apt-get install slurm-wlm munge, then scripts/slurm_cluster.sh start)"
    elif subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        reason = "SLURM is not running (scripts/slurm_cluster.sh start)"
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    if reason:
        pytest.skip(reason)


def submit(log_dir: Path, *overrides: str) -> subprocess.Popen:
    """`python -m src.train -m cluster=slurm ...` as a user types it; the launcher waits for its jobs."""
    cmd = [sys.executable, "-m", "src.train", "-m", "cluster=slurm", "cluster.gpus_per_node=0", "cluster.time_min=15"]
    cmd += [f"paths.log_dir={log_dir}", *TINY, *overrides]
    out_path = log_dir.parent / f"{log_dir.name}.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT, text=True)
    proc.out_path = out_path
    return proc


def finish(proc: subprocess.Popen, timeout: float = 1200) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, Path(proc.out_path).read_text()[-3000:]


def sweep_folder(log_dir: Path, timeout: float = 120) -> Path:
    """The one folder the submission made under logs/train/multiruns/ (its name is fixed at submission)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted((log_dir / "train" / "multiruns").glob("*"))
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(1)
    raise TimeoutError(f"no sweep folder under {log_dir}")


def job_ids(sweep: Path, timeout: float = 120) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        # one folder per job, <job>_<task> for the jobs of an array
        ids = sorted({p.name.split("_")[0] for p in (sweep / ".submitit").glob("*") if p.is_dir()})
        if ids:
            return ids
        time.sleep(1)
    raise TimeoutError(f"no job submitted under {sweep}")


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(what)


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


@pytest.mark.slow
def test_two_node_job_trains_and_its_checkpoint_scores_alike_in_one_process(tmp_path):
    need_slurm()
    log_dir = tmp_path / "logs"
    proc = submit(log_dir, "cluster.nodes=2", "trainer.max_epochs=2")
    finish(proc)
    sweep = sweep_folder(log_dir)
    (job,) = job_ids(sweep)
    logs = "".join(p.read_text() for p in (sweep / ".submitit" / job).glob("*_log.*"))
    # one process on each of the two nodes, in one DDP group
    assert "node=0(2), global_rank=0(2)" in logs and "node=1(2), global_rank=1(2)" in logs
    assert "Starting with 2 processes" in logs
    run = sweep / "0"
    logged = json.loads((run / "metrics.json").read_text())
    best = next((run / "checkpoints").glob("epoch001-*.ckpt"))  # two epochs ran
    scores = evaluate(compose_config("eval", [f"ckpt_path={best}", "extras.print_config=false"], tmp_path / "eval"))
    for key in ("mIoU", "aAcc", "mAcc", "fwIoU", "mDice"):
        assert scores[key] == pytest.approx(logged[key], abs=1e-9), key


@pytest.mark.slow
def test_requeued_and_signalled_job_continues_in_its_folder_to_the_same_weights(tmp_path):
    """Two jobs of one submission with the same seed: job 0 is requeued by `scontrol requeue` after its first epoch,
    then sent SLURM's warning signal (USR2, as before a time limit) after a later one; job 1 runs undisturbed. Job 0
    resumes each time in its own folder from its newest checkpoint and ends with job 1's weights and metrics."""
    need_slurm()
    log_dir = tmp_path / "logs"
    proc = submit(log_dir, "+label=a,b", "trainer.max_epochs=4", "data.train_size=64")
    sweep = sweep_folder(log_dir)
    (job,) = job_ids(sweep)
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    err = sweep / ".submitit" / f"{job}_0" / f"{job}_0_0_log.err"
    wait_for(last.exists, 300, "job 0 wrote no checkpoint")
    subprocess.run(["scontrol", "requeue", f"{job}_0"], check=True)
    # the stopped process saves last.ckpt on its way out (SIGTERM): wait for the requeued one to resume, then for a
    # checkpoint it wrote itself, so that the signal reaches a running training and not a job still starting
    wait_for(lambda: err.exists() and "Restored all states" in err.read_text(), 300, "the requeued job did not resume")
    resumed = mtime(last)
    wait_for(lambda: mtime(last) != resumed, 300, "the requeued job wrote no new checkpoint")
    subprocess.run(["scancel", "--signal=USR2", f"{job}_0"], check=True)
    finish(proc)

    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == ["0", "1", "multirun.yaml"]
    assert len(list((log_dir / "train" / "multiruns").iterdir())) == 1  # no new timestamped folder
    logs = "".join(p.read_text() for p in (sweep / ".submitit" / f"{job}_0").glob("*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs
    restored = err.read_text().count("Restored all states")
    assert restored == 2, restored  # resumed after the requeue and after the signal
    a = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(sweep / "1" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 3
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key
    metrics = [json.loads((sweep / j / "metrics.json").read_text()) for j in ("0", "1")]
    assert Path(metrics[0].pop("ckpt_path")).name == Path(metrics[1].pop("ckpt_path")).name  # the same best epoch
    assert metrics[0] == metrics[1]


def test_time_limit_warning_stops_at_a_step_boundary_before_its_handler_requeues(train_cfg, tmp_path):
    """USR2 with a Python handler installed (submitit's requeue-and-exit): training stops after the step it came in,
    last.ckpt holds that step, and only then does the handler run, once."""
    calls = []
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"

    def requeue(signum, frame):  # what submitit's handler sees when it runs
        calls.append((signum, torch.load(last, weights_only=False)["global_step"] if last.exists() else None))

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(Stopped):
            train(train_cfg("+callbacks.warn={_target_: tests.test_train.SignalAt, step: 4, signal: SIGUSR2}"))
        assert calls == [(signal.SIGUSR2, 4)]
        assert signal.getsignal(signal.SIGUSR2) is requeue  # given back after training
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_ckpt_path_auto_starts_fresh_then_continues_in_the_same_folder(train_cfg, tmp_path):
    common = ["ckpt_path=auto", "callbacks.model_checkpoint.save_top_k=-1", "data.image_size=32", "test=false"]
    train(train_cfg(*common, "trainer.max_epochs=1"))
    run = tmp_path / "run"
    first = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("epoch*.ckpt")}
    assert list(first) == [next(iter(first))] and next(iter(first)).startswith("epoch000")
    train(train_cfg(*common, "trainer.max_epochs=2"))
    ckpts = {p.name: p for p in (run / "checkpoints").glob("epoch*.ckpt")}
    assert sorted(n[:8] for n in ckpts) == ["epoch000", "epoch001"]  # continued: epoch 1 follows epoch 0
    assert all(ckpts[name].read_bytes() == data for name, data in first.items())  # nothing overwritten
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1
    # a plain run still refuses that folder
    from src.errors import UserError

    with pytest.raises(UserError, match="already holds results"):
        train(train_cfg("trainer.max_epochs=1"))


def test_torchrun_ranks_take_rank_zeros_run_folder(monkeypatch, tmp_path):
    """What each rank adds to its command line: rank 0 nothing (first attempt), the others rank 0's folder, read
    from torchrun's key-value store; after an elastic restart every rank takes the first attempt's folder."""
    from datetime import timedelta

    from torch.distributed import TCPStore

    from src.utils.cluster import publish_run_dir, torchrun_run_dir_args
    from tests.test_distributed import free_port

    port = free_port()
    server = TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=30))  # what torchrun's agent runs
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RANK", "0")
    assert torchrun_run_dir_args(["src.train"]) == []
    publish_run_dir(tmp_path / "run")
    monkeypatch.setenv("RANK", "1")
    assert torchrun_run_dir_args(["src.train"]) == [f"hydra.run.dir={tmp_path / 'run'}"]
    assert torchrun_run_dir_args(["src.train", "hydra.run.dir=mine"]) == []  # the user's choice stands
    monkeypatch.setenv("RANK", "0")  # a restarted rank 0 finds the key of the first attempt
    assert torchrun_run_dir_args(["src.train"]) == [f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE")
    assert torchrun_run_dir_args(["src.train"]) == []  # not under torchrun
    del server


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_epoch_into_one_folder(tmp_path):
    cmd = ["torchrun", "--nproc_per_node=2", "-m", "src.train", "trainer=cpu", "trainer.devices=2"]
    cmd += [f"paths.log_dir={tmp_path}", *TINY, "trainer.max_epochs=1"]
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Starting with 2 processes" in out.stdout + out.stderr
    (run,) = (tmp_path / "train" / "runs").iterdir()  # one folder for both ranks
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert json.loads((run / "metrics.json").read_text())["split"] == "val"


@pytest.mark.slow
def test_optuna_sweep_of_two_trials_names_the_best(tmp_path):
    cmd = [sys.executable, "-m", "src.train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2"]
    cmd += ["hydra.sweeper.n_jobs=1", f"paths.log_dir={tmp_path}", *TINY, "trainer.max_epochs=1"]
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    with open(sweep / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows] == [["trial", "optimizer.lr", "optimizer.weight_decay", "mIoU"]] * 2
    assert sorted(r["trial"] for r in rows) == ["0", "1"]
    assert float(rows[0]["mIoU"]) >= float(rows[1]["mIoU"])  # best first
    for row in rows:  # each row is what that trial's folder holds
        logged = json.loads((sweep / row["trial"] / "metrics.json").read_text())["mIoU"]
        assert float(row["mIoU"]) == pytest.approx(logged)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(float(rows[0]["mIoU"]))
    assert f"best trial: {rows[0]['trial']}" in out.stdout + out.stderr


@pytest.mark.parametrize("gpus,tasks,accelerator", [(4, 4, "gpu"), (0, 1, "cpu")])
def test_cluster_slurm_sets_slurm_and_lightning_from_the_same_numbers(gpus, tasks, accelerator, monkeypatch, tmp_path):
    cfg = compose_config(
        "train",
        ["cluster=slurm", "cluster.nodes=3", f"cluster.gpus_per_node={gpus}", "data.num_workers=5"],
        tmp_path,
    )
    launcher, trainer = cfg.hydra.launcher, cfg.trainer
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.nodes == trainer.num_nodes == 3
    assert launcher.tasks_per_node == trainer.devices == tasks
    assert launcher.gpus_per_node == (gpus or None) and trainer.accelerator == accelerator
    assert launcher.cpus_per_task == 6  # the training process and its 5 DataLoader workers
    assert cfg.ckpt_path == "auto"
    assert [p.auto_requeue for p in trainer.plugins] == [False]  # submitit alone handles preemption
    if accelerator == "cpu":  # the Trainer built in the job keeps that plugin beside the atomic checkpoint writer
        slurm = {
            "SLURM_JOB_ID": "7",
            "SLURM_JOB_NAME": "train",
            "SLURM_NODELIST": "n[1-3]",
            "SLURM_NTASKS_PER_NODE": "1",
        }
        for key, value in {**slurm, "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
            monkeypatch.setenv(key, value)
        built = build_trainer(cfg)
        assert type(built._accelerator_connector.cluster_environment).__name__ == "SLURMEnvironment"
        assert built._accelerator_connector.cluster_environment.auto_requeue is False
        assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)
    local = compose_config("train", [], tmp_path / "local")
    assert "cluster" not in local and local.trainer.devices == 1 and "plugins" not in local.trainer


def test_hparams_search_optuna_composes_with_a_search_space(tmp_path):
    cfg = compose_config("train", ["hparams_search=optuna", "logger=wandb"], tmp_path)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
    assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "optimizer.weight_decay"}
    assert cfg.logger.wandb.group.startswith("sweep-") and cfg.logger.wandb._target_.endswith("WandbLogger")
