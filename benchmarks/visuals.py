"""What the Visuals callback (overlays, confusion matrix, tables; attention for attention encoders) adds to a run's
wall time, with `logger=wandb` (offline) and `logger=csv`, side by side with the callback switched off.

    python benchmarks/visuals.py [--epochs 1] [--repeats 2] [--threads 1] [--out DIR] [-- extra overrides ...]

Each configuration is a `python -m src.train` run of the default config (built-in data, unet_small, the default
number of training images per epoch) for `--epochs` epochs, without the final test; the four configurations run
one after the other, `--repeats` times in turn (interleaved, so a slow period of a shared machine hits them all).
The cost per epoch is what matters: the callback draws once per validation, so the ratio of a 1-epoch run is the
ratio of the default 10-epoch run (startup aside). The callback also logs the time it spends ("Visuals: ... drawn in
X s" in the run's train.log): on a busy machine that direct time, as a share of the run without the callback, is
the steadier number. Prints a markdown table (median seconds per configuration, the wall-time overhead, the
callback's own time and its share) and writes `<out>/results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # name -> overrides
    "wandb + visuals": ["logger=wandb"],
    "wandb, no visuals": ["logger=wandb", "callbacks.visuals=null"],
    "csv + visuals": ["logger=csv"],
    "csv, no visuals": ["logger=csv", "callbacks.visuals=null"],
}


def callback_seconds(folder: Path) -> float:
    """The time the Visuals callback reported spending (its "drawn in X s" lines in the run's train.log)."""
    log = folder / "train.log"
    lines = log.read_text().splitlines() if log.is_file() else []
    return sum(
        float(line.split(" drawn in ")[1].split()[0]) for line in lines if "Visuals: " in line and " drawn in " in line
    )


def run(overrides: list[str], folder: Path, threads: int) -> float:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "src.train", *overrides, f"hydra.run.dir={folder}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run (e.g. data.train_size=480)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="visuals_benchmark_"))
    common = [
        f"trainer.max_epochs={args.epochs}",
        "test=false",
        "extras.print_config=false",
        "callbacks.rich_progress_bar=null",
        "trainer.enable_progress_bar=false",
        *args.overrides,
    ]
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    drawn: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for r in range(args.repeats):
        for k, (name, overrides) in enumerate(CONFIGS.items()):
            folder = out / f"r{r}_{k}"
            times[name].append(run(common + overrides, folder, args.threads))
            drawn[name].append(callback_seconds(folder))
            print(f"repeat {r} {name}: {times[name][-1]:.1f} s (visuals: {drawn[name][-1]:.2f} s)", flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for logger in ("wandb", "csv"):
        on, off = median[f"{logger} + visuals"], median[f"{logger}, no visuals"]
        own = statistics.median(drawn[f"{logger} + visuals"])
        rows.append(
            {
                "logger": logger,
                "with": on,
                "without": off,
                "overhead": on / off - 1,
                "callback": own,
                "callback_share": own / off,
            }
        )
    print(f"\n{args.epochs} epoch(s), {args.repeats} repeats (median wall seconds per run):\n")
    print("| logger | with visuals (s) | without (s) | wall-time overhead | callback's own time (s) | its share |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['logger']} | {row['with']:.1f} | {row['without']:.1f} | {100 * row['overhead']:+.1f}% "
            f"| {row['callback']:.2f} | {100 * row['callback_share']:.1f}% |"
        )
    results = {
        "epochs": args.epochs,
        "repeats": args.repeats,
        "overrides": common,
        "times": times,
        "callback_seconds": drawn,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
