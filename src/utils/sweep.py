"""The results table of a sweep: a Hydra callback that, when a multirun ends, writes `trials.csv` into the sweep
folder (trial, the swept parameters, the optimised metric; best first) and logs the best trial.

It reads what every trial left in its own folder (`.hydra/overrides.yaml` and `metrics.json`), so it works with any
launcher, SLURM jobs included, and a trial that failed shows up with an empty metric.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def trials_table(sweep_dir: str | Path, metric: str, maximize: bool = True) -> list[dict]:
    """One row per trial folder of `sweep_dir`: {"trial": n, <param>: value, ..., metric: value or None}."""
    rows = []
    for folder in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        overrides_file = folder / ".hydra" / "overrides.yaml"
        if not (folder.is_dir() and folder.name.isdigit() and overrides_file.is_file()):
            continue
        row: dict = {"trial": int(folder.name)}
        for item in OmegaConf.load(overrides_file):
            key, _, value = str(item).partition("=")
            row[key.lstrip("+~")] = value
        metrics = folder / "metrics.json"
        row[metric] = json.loads(metrics.read_text()).get(metric) if metrics.is_file() else None
        rows.append(row)
    sign = -1 if maximize else 1
    return sorted(rows, key=lambda r: (r[metric] is None or math.isnan(r[metric]), sign * (r[metric] or 0.0)))


class TrialsTable(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        metric = config.get("optimized_metric") or "mIoU"
        direction = str(OmegaConf.select(config, "hydra.sweeper.direction", default="maximize"))
        rows = trials_table(sweep_dir, metric, maximize="max" in direction.lower())
        if not rows:
            return
        # the swept parameters: the sweeper's search space, else the overrides that differ between trials
        swept = list(OmegaConf.select(config, "hydra.sweeper.params", default=None) or {})
        if not swept:
            keys = dict.fromkeys(k for row in rows for k in row if k not in ("trial", metric))
            swept = [k for k in keys if len({str(row.get(k)) for row in rows}) > 1]
        columns = ["trial", *swept, metric]
        with open(sweep_dir / "trials.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        best = rows[0]
        table = sweep_dir / "trials.csv"
        log.info(f"best trial: {best['trial']} ({metric} {best[metric]}) of {len(rows)}; all trials: {table}")
