"""Losses on imbalanced data: the built-in dataset with one rare class, the same training budget for each loss.

    python benchmarks/losses.py [--rare-prob 0.25] [--train-size 48000] [--batch-size 32] [--threads 2] [--out DIR]

Defaults: the default run's data, model and optimizer (48 px shapes, unet_small, AdamW 1e-3, poly), one epoch of
48,000 images = 1,500 steps, the default run's budget.

The rare class is `cross`: `data.shape_probs` draws it with weight `--rare-prob` against 1 for each other shape
(0.25 makes it about 1% of the pixels; the script measures and prints the share). Each loss trains the same
network with the same seed, data, schedule and number of steps, through `python -m src.train` (one run at a
time), and is scored on the test split with its final weights: the rare class's IoU and the mIoU. Weighted `ce`
takes class weights from the training split by both methods of `python -m src.check` (median frequency,
inverse log frequency), written to class-weight files as that command writes them. Results: a markdown table on
stdout and `<out>/results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.data.stats import class_weights  # noqa: E402
from src.data.synthetic import CLASS_NAMES, render  # noqa: E402

RARE = "cross"
LOSSES = {  # name -> overrides of `python -m src.train`; {median_frequency} etc.: that class-weight file
    "ce": ["loss=ce"],
    "ce_median_frequency": ["loss=ce", "loss.class_weights={median_frequency}"],
    "ce_inverse_log": ["loss=ce", "loss.class_weights={inverse_log}"],
    "ce_dice": ["loss=ce_dice"],
    "focal": ["loss=focal"],
    "lovasz": ["loss=lovasz"],
}


def shape_probs(rare_prob: float) -> list[float]:
    return [rare_prob if name == RARE else 1.0 for name in CLASS_NAMES[1:]]


def pixel_statistics(size: int, probs: list[float], seed: int, image_size: int, max_shapes: int, radius):
    """Pixels per class, and pixels of the images in which each class occurs, over the training split."""
    p = np.asarray(probs) / np.sum(probs)
    counts, present = np.zeros(len(CLASS_NAMES), np.int64), np.zeros(len(CLASS_NAMES), np.int64)
    for i in range(size):
        _, mask = render(seed, i, "train", image_size, max_shapes, p, radius)
        c = np.bincount(mask.ravel(), minlength=len(CLASS_NAMES))
        counts += c
        present += (c > 0) * mask.size
    return counts, present


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rare-prob", type=float, default=0.25)
    parser.add_argument("--train-size", type=int, default=48000)
    parser.add_argument("--eval-size", type=int, default=200, help="images in the val and in the test split")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (1 is fastest on a busy CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--max-shapes", type=int, default=3)
    parser.add_argument("--radius", default="0.12,0.28", help="shape radius range, fractions of the image side")
    parser.add_argument("--losses", default=",".join(LOSSES), help=f"comma-separated, from {', '.join(LOSSES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "benchmarks" / "losses")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    probs = shape_probs(args.rare_prob)
    radius = [float(r) for r in args.radius.split(",")]
    counts, present = pixel_statistics(args.train_size, probs, args.seed, args.image_size, args.max_shapes, radius)
    share = counts / counts.sum()
    print("training pixels per class: " + ", ".join(f"{n} {100 * s:.2f}%" for n, s in zip(CLASS_NAMES, share)))
    files, weights = {}, {}
    for method in ("median_frequency", "inverse_log"):  # the two methods of `python -m src.check`
        weights[method] = class_weights(counts, present, method).tolist()
        files[method] = args.out / f"class_weights_synthetic_{method}.json"
        files[method].write_text(
            json.dumps(
                {
                    "dataset": "synthetic",
                    "method": method,
                    "class_names": list(CLASS_NAMES),
                    "weights": weights[method],
                    "pixel_counts": counts.tolist(),
                },
                indent=2,
            )
        )
        print(f"{method} class weights: " + ", ".join(f"{n} {w:.3f}" for n, w in zip(CLASS_NAMES, weights[method])))

    common = [
        f"seed={args.seed}",
        f"data.train_size={args.train_size}",
        f"data.val_size={args.eval_size}",
        f"data.test_size={args.eval_size}",
        f"data.shape_probs=[{','.join(str(p) for p in probs)}]",
        f"data.image_size={args.image_size}",
        f"data.max_shapes={args.max_shapes}",
        f"data.shape_radius=[{args.radius}]",
        f"data.batch_size={args.batch_size}",
        "model=unet_classic",
        f"model.base_channels={args.base_channels}",
        f"model.depth={args.depth}",
        f"optimizer.lr={args.lr}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.accelerator=cpu",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        "logger=none",
        "extras.print_config=false",
        "test=true",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    rows = []
    for name in args.losses.split(","):
        run_dir = args.out / name
        overrides = [o.format(**files) for o in LOSSES[name]]
        cmd = [sys.executable, "-m", "src.train", *common, *overrides, f"hydra.run.dir={run_dir}"]
        start = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.time() - start
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        test = metrics["test"]
        rows.append(
            {
                "loss": name,
                "overrides": overrides,
                "seconds": round(seconds),
                "test_rare_IoU": test["per_class"][RARE]["IoU"],
                "test_mIoU": test["mIoU"],
                "val_rare_IoU": metrics["per_class"][RARE]["IoU"],
                "val_mIoU": metrics["mIoU"],
            }
        )
        print(
            f"{name}: rare IoU {rows[-1]['test_rare_IoU']}, mIoU {rows[-1]['test_mIoU']:.4f} ({seconds:.0f} s)",
            flush=True,
        )

    steps = args.epochs * (args.train_size // args.batch_size)
    print(
        f"\n{RARE} = {100 * share[CLASS_NAMES.index(RARE)]:.2f}% of training pixels; {steps} steps of "
        f"{args.batch_size} images each; test split ({args.eval_size} images), final weights\n"
    )
    print(f"| loss | config | {RARE} IoU (rare) | mIoU | time |\n|---|---|---:|---:|---:|")
    for r in rows:
        rare = "-" if r["test_rare_IoU"] is None else f"{100 * r['test_rare_IoU']:.2f}"
        config = " ".join(r["overrides"]).replace(f"{args.out}/", "")
        print(f"| {r['loss']} | `{config}` | {rare} | {100 * r['test_mIoU']:.2f} | {r['seconds']} s |")
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "pixel_share": dict(zip(CLASS_NAMES, share.tolist())),
                "class_weights": weights,
                "steps": steps,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
