"""What a run prints and writes: the config tree, the table of scores, metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from src.metrics import SUMMARY_KEYS
from src.utils.io import atomic_write

console = Console()


@rank_zero_only
def print_config(cfg: DictConfig, order=("data", "model", "loss", "optimizer", "scheduler", "trainer")) -> None:
    tree = Tree("config")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=False) if isinstance(node, DictConfig) else str(node)
        tree.add(f"[bold]{key}[/bold]").add(text.rstrip())
    console.print(tree)


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.2f}"


@rank_zero_only
def print_scores(scores: dict, title: str) -> None:
    """Per-class IoU/Acc/Dice and the summary scores, in percent."""
    table = Table(title=title)
    for col in ("class", "IoU", "Acc", "Dice"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, s in scores["per_class"].items():
        table.add_row(name, _pct(s["IoU"]), _pct(s["Acc"]), _pct(s["Dice"]))
    console.print(table)
    console.print("  ".join(f"{k} {_pct(scores[k])}" for k in SUMMARY_KEYS))


@rank_zero_only
def write_metrics(path: Path, scores: dict, **extra) -> None:
    """metrics.json: summary scores and per_class as fractions 0-1 (NaN written as null), plus `extra` keys."""

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return None if isinstance(x, float) and math.isnan(x) else x

    atomic_write(path, json.dumps(clean({**scores, **extra}), indent=2))
