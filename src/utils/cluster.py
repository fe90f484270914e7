"""Cluster runs: the `cluster` config group's arithmetic (one set of numbers for SLURM and Lightning),
`ckpt_path=auto` (resume a run folder from its newest checkpoint) and one run folder for all torchrun ranks.

`configs/cluster/slurm.yaml` derives both the SLURM request (tasks per node, GPUs, CPUs per task) and Lightning's
`num_nodes`, `devices` and `accelerator` from `cluster.nodes`, `cluster.gpus_per_node` and `data.num_workers`
through the resolvers below, so the two sides cannot disagree.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

from omegaconf import OmegaConf


def tasks_per_node(gpus_per_node: int) -> int:
    """One process per GPU; one process per node for CPU runs (`gpus_per_node=0`)."""
    return max(1, int(gpus_per_node))


def accelerator(gpus_per_node: int) -> str:
    return "gpu" if int(gpus_per_node) > 0 else "cpu"


def gpus_or_none(gpus_per_node: int) -> int | None:
    """SLURM's GPU request: none at all for CPU runs (a `--gpus-per-node=0` is refused by some clusters)."""
    return int(gpus_per_node) or None


def cpus_per_task(num_workers: int) -> int:
    """The training process plus its DataLoader workers."""
    return int(num_workers) + 1


for _name, _fn in {
    "cluster_tasks": tasks_per_node,
    "cluster_accelerator": accelerator,
    "cluster_gpus": gpus_or_none,
    "cluster_cpus": cpus_per_task,
}.items():
    OmegaConf.register_new_resolver(_name, _fn, replace=True)


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint a run folder would resume from: the newest `checkpoints/*.ckpt` (`last.ckpt` on a tie, it is
    written after the best one of the same validation), or Lightning's own `hpc_ckpt_*.ckpt`; None when there is
    none yet (Lightning's `ckpt_path="hpc"` raises in that case)."""
    out = Path(output_dir)
    found = [p for p in [*(out / "checkpoints").glob("*.ckpt"), *out.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not found:
        return None
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"))


# torchrun: every rank runs the whole command, Hydra included, and would date its own run folder (`${now:...}`).
# Rank 0 publishes its folder in torchrun's own key-value store (the elastic agent's TCPStore, which every worker
# can reach at MASTER_ADDR:MASTER_PORT); the other ranks start with `hydra.run.dir=<that folder>`. After an elastic
# restart (--max-restarts) all ranks take the first attempt's folder again, so `ckpt_path=auto` continues there.
RUN_DIR_KEY = "segtemplate/run_dir"


def _torchrun_store():
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed import TCPStore

    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    return TCPStore(host, port, is_master=False, timeout=timedelta(minutes=10))


def torchrun_run_dir_args(argv: list[str]) -> list[str]:
    """The extra command-line override that puts this torchrun rank into rank 0's run folder (none for rank 0 of
    a first attempt, outside torchrun, for multiruns, or when the command already sets hydra.run.dir)."""
    if any(a in ("-m", "--multirun") or a.startswith("hydra.run.dir=") for a in argv):
        return []
    store = _torchrun_store()
    if store is None:
        return []
    if not store.check([RUN_DIR_KEY]) and int(os.environ.get("RANK", "0")) == 0:
        return []
    return [f"hydra.run.dir={store.get(RUN_DIR_KEY).decode()}"]  # waits until rank 0 has published it


def publish_run_dir(output_dir: str | Path) -> None:
    """Rank 0 under torchrun: tell the other ranks where this run writes."""
    if int(os.environ.get("RANK", "0")) == 0 and (store := _torchrun_store()) is not None:
        store.set(RUN_DIR_KEY, str(Path(output_dir).resolve()))


class StopAtStepOn:
    """While training, a signal `signum` (SLURM's warning before a time limit: USR2 under submitit) first stops
    training at the next step boundary, as SIGTERM does (Lightning finishes the step, every DDP rank stops at the
    same one, and last.ckpt is written), and only then runs the handler that was installed for it (submitit's:
    requeue the job and exit). Without this, submitit's handler exits from wherever the signal lands, in the middle
    of a step, and the checkpoint written on the way out holds half an optimizer step.

    A context manager around `trainer.fit`; it changes nothing when no Python handler owns the signal.
    """

    def __init__(self, signum: int = signal.SIGUSR2):
        self.signum, self.previous, self.caught = signum, None, None

    def _handler(self, signum, frame) -> None:
        if self.caught is None:
            self.caught = (signum, frame)
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM handler: stop cleanly at the step's end

    def __enter__(self) -> StopAtStepOn:
        self.previous = signal.getsignal(self.signum)
        if callable(self.previous):
            signal.signal(self.signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if not callable(self.previous):
            return
        signal.signal(self.signum, self.previous)
        if self.caught is not None:
            self.previous(*self.caught)  # submitit: requeue and sys.exit (rank 0), nothing on the other ranks
