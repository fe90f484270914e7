"""Inference modes and export: speed, and accuracy on real frames.

    python benchmarks/inference.py --ckpt CKPT [--size 360 480] [--images 8] [--threads 2]
                                   [--eval-batches 5] [--out DIR]

Speed (random normalised images of `--size`, the checkpoint's network, CPU, `--threads` threads): images/s of
whole-image inference, of the sliding window with its windows batched (`infer.batch_size=8`) and one at a time
(batch 1, as mmsegmentation runs it; the script checks that both give the same logits and prints the ratio), of
multi-scale + flip (the `infer=tta` scales), and of the same network under ONNX Runtime against PyTorch.

Accuracy (`--eval-batches` > 0): `src.eval` on the first `--eval-batches` validation batches of the checkpoint's own
dataset (its `data.eval_batch_size` images each: 4 for CamVid), once per mode: whole, slide (flat), slide
(Gaussian), TTA, whole + dense CRF. The sliding window uses the checkpoint's training crop (or `--crop h w`) and a
stride of 2/3 of it (the `infer=slide` defaults). Results: markdown tables on stdout and `<out>/results.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.eval import evaluate  # noqa: E402
from src.models.export import export_onnx, onnx_runner  # noqa: E402
from src.models.infer import Inferer, window_count  # noqa: E402
from src.run import build_inferer, load_trained  # noqa: E402
from src.utils.compose import compose_config  # noqa: E402

TTA_SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
MODES = {  # name -> overrides of `python -m src.eval`
    "whole": ["infer=whole"],
    "slide (flat)": ["infer=slide"],
    "slide (gaussian)": ["infer=slide", "infer.weighting=gaussian"],
    "tta (6 scales + flip)": ["infer=tta"],
    "whole + CRF": ["infer=whole", "infer.crf=true"],
}


def rate(fn, images: torch.Tensor, repeat: int = 2) -> float:
    """Images per second of fn over `images` one image at a time (best of `repeat` passes)."""
    best = float("inf")
    with torch.no_grad():
        fn(images[:1])  # warm-up
        for _ in range(repeat):
            t = time.perf_counter()
            for i in range(len(images)):
                fn(images[i : i + 1])
            best = min(best, time.perf_counter() - t)
    return len(images) / best


def speed(ckpt: Path, size, n: int, out: Path, crop=None) -> dict:
    from omegaconf import OmegaConf

    run_cfg, net, datamodule = load_trained(ckpt)
    images = torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(0))
    slide_cfg = OmegaConf.load(ROOT / "configs" / "infer" / "whole.yaml")
    slide_cfg.slide, slide_cfg.name, slide_cfg.crop = True, "slide", crop
    batched = build_inferer(slide_cfg, run_cfg, datamodule)
    one = Inferer(slide=True, crop=batched.crop, stride=batched.stride, batch_size=1)
    with torch.no_grad():
        diff = (batched(net, images[:2]) - one(net, images[:2])).abs().max().item()
    rows = {
        "whole": rate(lambda x: net(x), images),
        f"slide, windows batched ({batched.batch_size})": rate(lambda x: batched(net, x), images),
        "slide, one window at a time": rate(lambda x: one(net, x), images),
        "tta (6 scales + flip)": rate(lambda x: Inferer(scales=TTA_SCALES, flip=True)(net, x), images),
    }
    onnx_path = out / "model.onnx"
    export_onnx(net, onnx_path, 17, images[:1])
    session = onnx_runner(onnx_path)
    rows["whole, ONNX Runtime"] = rate(session, images)
    return {
        "size": list(size),
        "threads": torch.get_num_threads(),
        "crop": list(batched.crop),
        "stride": list(batched.stride),
        "windows": window_count(*size, batched.crop, batched.stride),
        "slide_batched_vs_one_max_abs_diff": diff,
        "images_per_s": rows,
    }


def accuracy(ckpt: Path, images: int, out: Path, crop=None) -> dict:
    rows = {}
    for name, overrides in MODES.items():
        run_dir = out / name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "plus")
        cfg = compose_config(
            "eval",
            [f"ckpt_path={ckpt}", "logger=none", "extras.print_config=false", "trainer.enable_progress_bar=false",
             f"trainer.limit_val_batches={images}", *overrides]
            + ([f"infer.crop=[{crop[0]},{crop[1]}]"] if crop else []),
            run_dir,
        )  # fmt: skip
        t = time.perf_counter()
        scores = evaluate(cfg)
        rows[name] = {"mIoU": scores["mIoU"], "aAcc": scores["aAcc"], "seconds": time.perf_counter() - t}
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("--size", nargs=2, type=int, default=[360, 480])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--eval-batches", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crop", nargs=2, type=int, default=None, help="window (h w); default: the training crop")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="inference_benchmark_"))
    out.mkdir(parents=True, exist_ok=True)
    results = {"ckpt": str(args.ckpt), "speed": speed(args.ckpt, args.size, args.images, out, args.crop)}
    s = results["speed"]
    print(f"\nSpeed: {s['size'][0]}x{s['size'][1]} images, {s['threads']} CPU threads; sliding window {s['crop']} "
          f"stride {s['stride']} = {s['windows']} windows; batched vs one at a time: max |logit difference| "
          f"{s['slide_batched_vs_one_max_abs_diff']:.1e}\n")  # fmt: skip
    print("| mode | images/s | vs whole |\n|---|---:|---:|")
    for name, value in s["images_per_s"].items():
        print(f"| {name} | {value:.2f} | {value / s['images_per_s']['whole']:.2f} |")
    if args.eval_batches > 0:
        results["accuracy"] = accuracy(args.ckpt, args.eval_batches, out, args.crop)
        print(f"\nAccuracy: src.eval on the first {args.eval_batches} validation batches\n")
        print("| mode | mIoU | aAcc | seconds |\n|---|---:|---:|---:|")
        for name, row in results["accuracy"].items():
            print(f"| {name} | {100 * row['mIoU']:.2f} | {100 * row['aAcc']:.2f} | {row['seconds']:.0f} |")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{out / 'results.json'}")


if __name__ == "__main__":
    main()
