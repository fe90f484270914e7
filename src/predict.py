"""Label images with a trained model: `python -m src.predict ckpt_path=CKPT input=DIR|FILE|GLOB output=DIR`.

For every image `<stem>.<ext>` it writes `<output>/<stem>.png`, a palette PNG whose pixel values are the class
indices, at the image's original size (the palette is the dataset's, or a generated one), and with `overlay=true`
`<output>/overlay/<stem>.jpg` (the image with the classes' colours blended in). The network and the evaluation
pipeline come from the config stored in the checkpoint (or in a model folder of `src.export format=folder`);
`infer=slide|tta` as in `src.eval`. Images of one size are batched together; unreadable files are skipped, named,
and listed at the end (exit status 2). An output folder that exists and is not empty is refused.
"""

from __future__ import annotations

import glob
import sys
from collections import defaultdict
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader

from src.data.base import SegDataset
from src.data.files import IMAGE_SUFFIXES, read_image
from src.data.scan import header
from src.errors import UserError, exit_on_user_error
from src.models.export import palette_of
from src.models.infer import Inferer
from src.run import build_inferer, load_trained


class ImageFiles(SegDataset):
    """The images to label, through the evaluation pipeline exactly as evaluation samples go (a blank mask stands
    in for the missing one). A file that cannot be decoded gives `{"error": message}` instead of stopping the run."""

    def __init__(self, paths: list[Path], transform):
        super().__init__(transform)
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int):
        image = read_image(str(self.paths[index]))
        return image, np.zeros(image.shape[:2], np.uint8)

    def __getitem__(self, index: int) -> dict:
        try:
            sample = super().__getitem__(index)
        except Exception as err:  # noqa: BLE001 - a corrupt file must not stop the others
            return {"index": index, "error": str(err)}
        sample.pop("mask")
        sample["index"] = index
        return sample


def collate(samples: list[dict]) -> dict:
    good = [s for s in samples if "error" not in s]
    batch = {"failed": [(s["index"], s["error"]) for s in samples if "error" in s], "index": [s["index"] for s in good]}
    if good:
        batch["image"] = torch.stack([s["image"] for s in good])
    return batch


def list_inputs(spec: str) -> list[Path]:
    """The image files named by `input=`: a folder (its image files), a file, or a glob pattern."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"input={spec}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
        return files
    if path.is_file():
        return [path]
    files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        raise UserError(f"input={spec}: no such file or folder, and no file matches it as a pattern.")
    return files


def check_output(output: str) -> Path:
    out = Path(output).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output={out} already exists and is not empty; nothing is overwritten. Choose a new folder.")
    return out


def size_batches(sizes: dict[int, tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of indices of images of one size (so they stack), in input order within each size."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, size in sizes.items():
        groups[size].append(index)
    return [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def predict(cfg: DictConfig) -> dict:
    """Label `cfg.input` into `cfg.output`; returns {"written": [paths], "skipped": [(path, reason)]}."""
    files = list_inputs(str(cfg.input))
    out = check_output(str(cfg.output))
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise UserError(f"input={cfg.input}: {stems[f.stem]} and {f} would both be written as {f.stem}.png.")
        stems[f.stem] = f
    run_cfg, net, datamodule = load_trained(cfg.ckpt_path)
    inferer = build_inferer(cfg.get("infer"), run_cfg, datamodule) or Inferer()
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else "cpu")
    if cfg.device not in ("auto", None):
        device = torch.device(cfg.device)
    net.to(device)
    num_classes = datamodule.num_classes
    palette = palette_of(datamodule, num_classes)

    skipped: list[tuple[Path, str]] = []
    sizes: dict[int, tuple[int, int]] = {}
    for i, f in enumerate(files):
        head = header(str(f))
        if head is None:
            skipped.append((f, "not readable as an image"))
            print(f"skipped {f}: not readable as an image", file=sys.stderr)
        else:
            sizes[i] = (head[1], head[0])
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overlay:
        (out / "overlay").mkdir(exist_ok=True)
    data = ImageFiles(files, datamodule.eval_transform)
    loader = DataLoader(
        data,
        batch_sampler=size_batches(sizes, int(cfg.batch_size)),
        collate_fn=collate,
        num_workers=int(cfg.num_workers),
    )
    written: list[Path] = []
    from tqdm import tqdm

    with tqdm(total=len(sizes), desc=f"predict ({inferer.name})", unit="img", disable=not cfg.progress) as bar:
        for batch in loader:
            for index, reason in batch["failed"]:
                skipped.append((files[index], reason))
                tqdm.write(f"skipped {files[index]}: {reason}", file=sys.stderr)
            if batch["index"]:
                # the datamodule's device-side step (e.g. normalising uint8 images) runs as in training
                images = datamodule.on_after_batch_transfer({"image": batch["image"].to(device)}, 0)["image"]
                with torch.no_grad():
                    logits = inferer(net, images)
                for index, scores in zip(batch["index"], logits):
                    written.append(write_outputs(cfg, out, files[index], sizes[index], scores, palette))
            bar.update(len(batch["index"]) + len(batch["failed"]))
    print(f"wrote {len(written)} masks to {out}" + (f"; skipped {len(skipped)} unreadable" if skipped else ""))
    if skipped:
        names = ", ".join(f"{p} ({r})" for p, r in skipped[:5]) + (
            f", ... {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        raise UserError(
            f"skipped {len(skipped)} unreadable image(s): {names}; the other {len(written)} masks are in {out}."
        )
    return {"written": written, "skipped": skipped}


def write_outputs(cfg, out: Path, image: Path, size: tuple[int, int], scores: torch.Tensor, palette) -> Path:
    """The mask (and overlay) of one image from its logits, resized to the image's original `size`."""
    if scores.shape[-2:] != size:
        scores = F.interpolate(scores[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    labels = scores.argmax(0).cpu().numpy()
    if cfg.overlay:
        write_overlay(out / "overlay" / f"{image.stem}.jpg", image, labels, palette, cfg.overlay_alpha)
    return write_mask(out / f"{image.stem}.png", labels, [v for c in palette for v in c][:768])


def write_mask(path: Path, labels: np.ndarray, flat_palette: list[int]) -> Path:
    """A palette PNG whose pixel values are the class indices (16-bit grayscale for more than 256 classes)."""
    if labels.max(initial=0) > 255:
        Image.fromarray(labels.astype(np.uint16)).save(path)
        return path
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(flat_palette + [0] * (768 - len(flat_palette)))
    im.save(path)
    return path


def write_overlay(path: Path, image_path: Path, labels: np.ndarray, palette: list[list[int]], alpha: float) -> None:
    image = read_image(str(image_path)).astype(np.float32)
    colours = np.asarray(palette, np.float32)[labels]
    Image.fromarray(((1 - alpha) * image + alpha * colours).round().astype(np.uint8)).save(path, quality=90)


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict.yaml")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(predict, cfg)


if __name__ == "__main__":
    main()
