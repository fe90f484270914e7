"""Speed of the training data path: images per second out of the training DataLoader, beside the decode floor.

    python benchmarks/data.py [batches=40] [workers=0,1,2] [floor=true] [reps=3] [threads=1] [host=false]
                              [data=NAME ...]

Any other argument is a `python -m src.train` override, so the pipeline measured is the one a run would use,
e.g. `data=camvid data.data_dir=../shared/data/camvid`. The first batch of each setting (worker start-up) is not
timed. With `floor=true` (file datasets, 0 workers), the decode floor is measured on the same files: OpenCV
decoding image and mask, nothing else. Batch by batch, the loader makes a batch, then the floor decodes that
batch's very files, so that a slow spell of this machine hits both; the loader's ratio to the floor is the median
of the per-batch ratios over `reps` passes of `batches` batches (their quartiles beside it). With a crop size
(`data.crop_size`), the ceiling is measured the same way: the floor's decoding plus what no host pipeline of that
crop size can leave out (one resize of image and mask to the crop, the copy into the batch), as a ratio to the
floor.
`threads` sets torch.set_num_threads and cv2.setNumThreads (1: one core). The device-side transform
(normalisation, photometric distortion: src/data/device.py) runs after the loader, on the device; its cost on this
CPU is printed apart.
`host=true` measures the baseline the device path replaced: ColorJitter and Normalize in the workers (float32
images out of them; see `move_to_host`).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from benchmarks.settings import split_args  # noqa: E402
from src.run import build_datamodule  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402


def loader_rate(datamodule, batches: int) -> float:
    """Images/s out of the training DataLoader (with workers: no pairing, their batches are made ahead)."""
    loader = iter(datamodule.train_dataloader())
    next(loader)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(loader, None)
        if batch is None:
            break
        count += len(batch["image"])
    return count / (time.perf_counter() - start)


def decode_time(dataset, indices: list[int], crop: tuple[int, int] | None = None) -> float:
    """Seconds to decode the image and mask files at `indices` with OpenCV, nothing else (the floor), or with `crop`
    the least any training pipeline of that crop size does on the host (the ceiling): also one resize of image
    (bilinear) and mask (nearest) to the crop, and the copy of the pairs into a batch."""
    size, kept = (crop[1], crop[0]) if crop else None, []
    start = time.perf_counter()
    for k in indices:
        image = cv2.imread(str(dataset.images[k]), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(dataset.masks[k]), cv2.IMREAD_UNCHANGED)
        if size is not None:
            kept.append(
                (
                    cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
                    cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST),
                )
            )
    if kept:
        np.stack([im for im, _ in kept]), np.stack([m for _, m in kept])
    return time.perf_counter() - start


def paired_pass(datamodule, batches: int, crop: tuple[int, int] | None) -> tuple[dict[str, list[float]], list]:
    """0 workers: each batch out of the training DataLoader, then the floor (and with `crop` the ceiling) on that
    batch's files. Returns per batch the seconds of the loader, floor and ceiling and the images in it; and the
    batches."""
    loader = datamodule.train_dataloader()
    # the sampler's order is a function of (seed, epoch): iterating it here gives the loader's own order
    order = [item[0] if isinstance(item, tuple) else item for item in loader.sampler]
    data, size = loader.dataset, loader.batch_size
    times: dict[str, list[float]] = {"loader": [], "floor": [], "ceiling": [], "images": []}
    got = []
    batches_out = iter(loader)
    next(batches_out)
    for b in range(1, batches + 1):
        start = time.perf_counter()
        batch = next(batches_out, None)
        if batch is None:
            break
        times["loader"].append(time.perf_counter() - start)
        got.append(batch)
        files = order[b * size : b * size + len(batch["image"])]
        times["images"].append(len(files))
        times["floor"].append(decode_time(data, files))
        if crop:
            times["ceiling"].append(decode_time(data, files, crop))
    if not got:
        raise SystemExit(
            f"the training split has {len(order)} samples: fewer than 2 batches of {size} (the first is not timed); "
            "lower data.batch_size"
        )
    return times, got


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return q[0], q[2]


def device_rate(datamodule, batches: list) -> float:
    """Images/s of the device-side transform (normalisation, photometric distortion) run on this CPU."""
    start, count = time.perf_counter(), 0
    for batch in batches:
        datamodule.on_after_batch_transfer(batch, 0)
        count += len(batch["image"])
    return count / (time.perf_counter() - start)


def move_to_host(data) -> None:
    """Rewrite a data config to the host-side pipeline the device path replaced (the baseline of `host=true`):
    ColorJitter with `data.photometric`'s settings and Normalize in the workers, float32 images out of them,
    padding with 0 after Normalize."""
    with open_dict(data):
        for key in ("train_transform", "eval_transform"):
            if data.get(key) is None:
                data[key] = {"_target_": "albumentations.Compose", "transforms": []}
            kept = []
            for t in data[key].transforms:
                if t._target_.endswith("PadIfNeeded"):
                    if key == "train_transform" and data.get("photometric"):
                        kept.append({"_target_": "albumentations.ColorJitter", **data.photometric})
                    kept.append({"_target_": "albumentations.Normalize"})
                    t.fill = 0
                kept.append(t)
            if not any(t["_target_"].endswith("Normalize") for t in kept):
                kept.append({"_target_": "albumentations.Normalize"})
            data[key].transforms = kept
        data.photometric = None


def main(argv: list[str]) -> dict:
    settings, overrides = split_args(
        argv, {"batches": "40", "workers": "0,1,2", "floor": "true", "reps": "3", "threads": "1", "host": "false"}
    )
    torch.set_num_threads(int(settings["threads"]))
    cv2.setNumThreads(int(settings["threads"]))
    batches = int(settings["batches"])
    cfg = compose_config("train", overrides)
    if settings["host"] == "true":
        move_to_host(cfg.data)
    print(f"data={cfg.data._target_.rsplit('.', 1)[-1]} batch_size={cfg.data.batch_size} ({' '.join(overrides)})")
    result: dict = {}
    rows = []
    crop = tuple(cfg.data.get("crop_size") or ())
    for workers in (int(w) for w in settings["workers"].split(",")):
        cfg.data.num_workers = workers
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
        data = datamodule.dataset("train")
        with_floor = workers == 0 and settings["floor"] == "true" and hasattr(data, "images")
        if not with_floor:
            result[workers] = loader_rate(datamodule, batches)
            rows.append(f"| {workers} | {result[workers]:.1f} | | | | |")
            continue
        times: dict[str, list[float]] = {}
        for _ in range(int(settings["reps"])):
            run, got = paired_pass(datamodule, batches, crop if len(crop) == 2 else None)
            times = {k: times.get(k, []) + v for k, v in run.items()}
        result[workers] = sum(times["images"]) / sum(times["loader"])
        result["floor"] = sum(times["images"]) / sum(times["floor"])
        ratios = [f / t for f, t in zip(times["floor"], times["loader"])]
        result["ratio"], result["ratio_quartiles"] = statistics.median(ratios), quartiles(ratios)
        result["device"] = device_rate(datamodule, got)
        row = f"| {workers} | {result[workers]:.1f} | {result['floor']:.1f} | {result['ratio']:.2f} |"
        if times["ceiling"]:
            ceilings = [f / c for f, c in zip(times["floor"], times["ceiling"])]
            result["ceiling"], result["ceiling_quartiles"] = statistics.median(ceilings), quartiles(ceilings)
            row += f" {result['ceiling']:.2f} |"
        else:
            row += " |"
        row += f" {result['device']:.1f} |"
        rows.append(row)
    print(
        "\n| workers | loader images/s | decode floor pairs/s | loader / floor | ceiling / floor "
        "| device transform images/s (CPU) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if "ratio" in result:
        low, high = result["ratio_quartiles"]
        print(
            f"loader / decode floor = {result['ratio']:.2f} (0 workers, median of the per-batch ratios, quartiles "
            f"{low:.2f}-{high:.2f}; target >= 0.85)"
        )
    if "ceiling" in result:
        low, high = result["ceiling_quartiles"]
        print(
            f"ceiling / decode floor = {result['ceiling']:.2f} (quartiles {low:.2f}-{high:.2f}; decoding, one resize "
            f"to the crop and the batch copy: the most a pipeline of this crop size can reach; loader / ceiling = "
            f"{result['ratio'] / result['ceiling']:.2f})"
        )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
