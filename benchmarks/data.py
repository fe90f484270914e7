"""Speed of the training data path: images per second out of the training DataLoader, per number of workers.

    python benchmarks/data.py [batches=40] [workers=0,1,2] [data=NAME data.key=value ...]

Any other argument is a `python -m src.train` override, so the pipeline measured is the one a run would use,
e.g. `data=camvid data.data_dir=../shared/data/camvid`. The first batch of each setting (worker start-up) is not
timed. Prints a markdown table.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.run import build_datamodule  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402


def images_per_second(datamodule, batches: int) -> float:
    loader = iter(datamodule.train_dataloader())
    next(loader)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(loader, None)
        if batch is None:
            break
        count += len(batch["image"])
    return count / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
    settings = {"batches": "40", "workers": "0,1,2"}
    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in settings:
            settings[key] = value
        else:
            overrides.append(arg)
    cfg = compose_config("train", overrides)
    print(f"data={cfg.data._target_.rsplit('.', 1)[-1]} batch_size={cfg.data.batch_size} ({' '.join(overrides)})")
    print("| workers | images/s |\n|---:|---:|")
    for workers in (int(w) for w in settings["workers"].split(",")):
        cfg.data.num_workers = workers
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
        print(f"| {workers} | {images_per_second(datamodule, int(settings['batches'])):.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
