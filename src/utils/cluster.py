"""Cluster runs: the `cluster` config group's arithmetic (one set of numbers for SLURM and Lightning) and
`ckpt_path=auto` (resume a run folder from its newest checkpoint).

`configs/cluster/slurm.yaml` derives both the SLURM request (tasks per node, GPUs, CPUs per task) and Lightning's
`num_nodes`, `devices` and `accelerator` from `cluster.nodes`, `cluster.gpus_per_node` and `data.num_workers`
through the resolvers below, so the two sides cannot disagree.
"""

from __future__ import annotations

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
