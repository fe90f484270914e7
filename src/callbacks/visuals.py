"""What a run shows besides its scalars: prediction overlays, the confusion matrix and per-class table, attention maps.

One callback for every logger. After each validation of a training (every `every_n_epochs` epochs):
- overlays: a fixed set of `num_samples` validation samples (evenly spaced over the set, the same every epoch, so a
  dashboard's step slider shows learning), drawn at the sample's original size and orientation (the dataset's
  `load(i)`); the model sees the sample as validation does (`dataset[i]`, moved to the device, then the
  datamodule's `on_after_batch_transfer`). W&B: an interactive `wandb.Image` with prediction and ground-truth masks
  and class labels, plus a panel image | ground truth | prediction | error map with a legend of the classes present.
- confusion: the row-normalised confusion matrix of the whole validation set (the module's, already summed across
  processes) as a heat map with class names (at most `max_matrix_classes`, those of the most confused pairs beyond
  that), a per-class table (IoU, Acc, Dice, pixel share) and the `top_pairs` most confused pairs.
- attention (attention encoders only: SegFormer/MiT, DPT's ViT): for the first `attention_samples` samples, each
  stage's head-averaged attention of a few `query_points` (and the rollout for ViTs), and the class-conditioned
  relevance map (Chefer et al. 2021) of `relevance_class` (default: the largest predicted class other than 0).
  Other networks skip this with one log line.

Where it goes: W&B media for a WandbLogger, images and text for a TensorBoardLogger, PNG files under
<run dir>/visuals/epochNNN/ when neither is there. The confusion matrix and tables are always written as CSV there
too. Under DDP only rank zero draws and logs; all it reads was reduced by every rank beforehand, and nothing it runs
is collective (the model is called outside the DDP wrapper), so no rank waits for another.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from src.callbacks import draw
from src.metrics import scores_from_confmat
from src.models.attention import (
    class_relevance,
    crop_grid,
    has_attention,
    padded_size,
    record_attention,
    rollout,
    rollout_of,
    stage_maps,
)

log = logging.getLogger(__name__)


class Visuals(Callback):
    """Args (each piece switchable; cost bounded by the numbers of samples, classes and query points):
    num_samples: validation samples drawn (0: no overlays).
    overlays, confusion, attention, relevance: switch each piece.
    every_n_epochs: draw after the validation of every n-th epoch.
    attention_samples: how many of the samples get attention maps.
    query_points: (y, x) fractions of the image whose attention is drawn.
    relevance_class: class name or index for the class-conditioned map; None: the largest predicted class
        other than class 0 in each sample (class 0 when nothing else is predicted).
    max_matrix_classes: heat-map size limit (beyond it, the classes of the most confused pairs).
    top_pairs: rows of the most-confused-pairs table.
    min_side, max_side: drawn pictures are enlarged to at least / shrunk to at most this many pixels per side.
    """

    def __init__(
        self,
        num_samples: int = 4,
        overlays: bool = True,
        confusion: bool = True,
        attention: bool = True,
        relevance: bool = True,
        every_n_epochs: int = 1,
        attention_samples: int = 2,
        query_points: Sequence[Sequence[float]] = ((0.25, 0.25), (0.5, 0.5), (0.75, 0.75)),
        relevance_class: str | int | None = None,
        max_matrix_classes: int = 40,
        top_pairs: int = 20,
        min_side: int = 128,
        max_side: int = 512,
    ):
        self.num_samples, self.every_n_epochs = num_samples, max(1, every_n_epochs)
        self.overlays, self.confusion, self.attention, self.relevance = overlays, confusion, attention, relevance
        self.attention_samples = attention_samples
        self.query_points = [tuple(float(v) for v in p) for p in query_points]
        self.relevance_class = relevance_class
        self.max_matrix_classes, self.top_pairs = max_matrix_classes, top_pairs
        self.min_side, self.max_side = min_side, max_side
        self._said_no_attention = False

    # -- when ------------------------------------------------------------------------------------------------
    def on_validation_end(self, trainer, pl_module) -> None:
        # fast_dev_run writes nothing but the run's log and metrics (as Lightning does with its loggers)
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        fitting = trainer.state.fn == "fit"
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        start = time.perf_counter()
        folder = Path(trainer.default_root_dir) / "visuals"
        folder = folder / (f"epoch{trainer.current_epoch:03d}" if fitting else trainer.state.fn.value)
        media = Media()
        if self.confusion:
            self._confusion(pl_module, folder, media)
        if self.num_samples > 0 and (self.overlays or self.attention):
            self._samples(trainer, pl_module, media)
        if fitting:
            route(trainer, media, folder)
        log.info("Visuals: %s drawn in %.2f s", folder.name, time.perf_counter() - start)  # its cost, in the run's log

    # -- what ------------------------------------------------------------------------------------------------
    def _confusion(self, pl_module, folder: Path, media: Media) -> None:
        metrics = getattr(pl_module, "metrics", None)
        metric = metrics["val_"] if metrics is not None and "val_" in metrics else None
        confmat = getattr(metric, "last_confmat", None)
        if confmat is None:
            return
        cm = confmat.numpy().astype(np.int64)
        names = list(getattr(pl_module, "class_names", None) or [str(i) for i in range(len(cm))])
        scores = scores_from_confmat(confmat, names)
        total = max(int(cm.sum()), 1)
        rows = [
            [name, _num(s["IoU"]), _num(s["Acc"]), _num(s["Dice"]), int(cm[i].sum()), cm[i].sum() / total]
            for i, (name, s) in enumerate(scores["per_class"].items())
        ]
        per_class = (["class", "IoU", "Acc", "Dice", "pixels", "pixel share"], rows)
        pairs = (
            ["ground truth", "prediction", "pixels", "share of ground truth"],
            [[names[i], names[j], n, share] for i, j, n, share in draw.top_confused(cm, self.top_pairs)],
        )
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "per_class.csv", *per_class)
        write_csv(folder / "confused_pairs.csv", *pairs)
        write_csv(
            folder / "confusion_matrix.csv",
            ["ground truth \\ prediction", *names],
            [[n, *r] for n, r in zip(names, cm.tolist())],
        )
        media.images["val/confusion_matrix"] = draw.confusion_image(cm, names, self.max_matrix_classes)
        media.tables["val/per_class"] = per_class
        media.tables["val/confused_pairs"] = pairs

    def _samples(self, trainer, pl_module, media: Media) -> None:
        dataset = getattr(trainer.val_dataloaders, "dataset", None)
        if dataset is None or not hasattr(dataset, "load"):
            log.info("Visuals: the validation set has no load(i) (raw image and mask): no overlays drawn.")
            return
        indices = sample_indices(len(dataset), self.num_samples)
        names = list(pl_module.class_names)
        palette = palette_of(trainer.datamodule, len(names))
        ignore = getattr(trainer.datamodule, "ignore_index", None)
        attention = self.attention and has_attention(pl_module)
        if self.attention and not attention and not self._said_no_attention:
            log.info(
                "Visuals: %s has no attention blocks (SegFormer/MiT, ViT): no attention maps.",
                type(pl_module.net).__name__,
            )
            self._said_no_attention = True
        was_training = pl_module.training
        pl_module.eval()
        try:
            for k, index in enumerate(indices):
                image, target = dataset.load(index)
                target = np.asarray(target).astype(np.int64)
                x = model_input(trainer, pl_module, dataset[index])
                with_attention = attention and k < self.attention_samples
                with torch.no_grad(), trainer.precision_plugin.forward_context():
                    if with_attention:
                        with record_attention(pl_module, to_cpu=True) as maps:
                            logits = pl_module(x)
                    else:
                        logits = pl_module(x)
                pred = to_labels(logits, target.shape)
                if self.overlays:
                    media.overlays[f"val/overlay/sample{k}"] = (image, pred, target, names, ignore, f"sample {index}")
                    media.images[f"val/panel/sample{k}"] = draw.panel(
                        image, target, pred, palette, names, ignore, self.min_side, self.max_side
                    )
                if with_attention:
                    media.images[f"val/attention/sample{k}"] = self._attention_panel(pl_module, image, x, maps)
                    if self.relevance:
                        media.images[f"val/relevance/sample{k}"] = self._relevance_panel(
                            pl_module, image, x, pred, names
                        )
        finally:
            pl_module.train(was_training)

    def _sized(self, image: np.ndarray) -> np.ndarray:
        return draw.fit(image, self.min_side, self.max_side, nearest=False)

    def _attention_panel(self, pl_module, image: np.ndarray, x: torch.Tensor, maps) -> np.ndarray:
        """Rows: query points; columns: each stage's head-averaged attention of the query (+ rollout for ViTs)."""
        h, w = x.shape[-2:]
        padded = padded_size(pl_module, h, w)
        fy, fx = h / padded[0], w / padded[1]  # image fractions -> grid fractions
        base = self._sized(image)
        try:
            rolled = rollout(maps)
        except ValueError:
            rolled = None
        rows = []
        for y, xq in self.query_points:
            cells = []
            for stage, amap in stage_maps(maps, y * fy, xq * fx).items():
                heat = crop_grid(amap[0].float(), (h, w), padded).numpy()
                cells.append(draw.titled(draw.heat_overlay(base, heat, point=(y, xq)), f"stage {stage}"))
            if rolled is not None:
                heat = crop_grid(rollout_of(rolled, maps[0], y * fy, xq * fx)[0].float(), (h, w), padded).numpy()
                cells.append(draw.titled(draw.heat_overlay(base, heat, point=(y, xq)), "rollout"))
            rows.append(draw.hstack(cells))
        return draw.vstack(rows)

    def _relevance_panel(self, pl_module, image, x, pred, names) -> np.ndarray:
        cls = self._relevance_class(pred, names)
        rel, _ = class_relevance(pl_module, x, cls)
        h, w = x.shape[-2:]
        padded = padded_size(pl_module, h, w)
        base = self._sized(image)
        cells = [draw.titled(base, f"relevance for '{names[cls]}'")]
        for s, r in enumerate(rel):
            title = f"stage {s}" if len(rel) > 1 else "all blocks"
            cells.append(
                draw.titled(draw.heat_overlay(base, crop_grid(r[0].float().cpu(), (h, w), padded).numpy()), title)
            )
        return draw.hstack(cells)

    def _relevance_class(self, pred: np.ndarray, names: list[str]) -> int:
        if self.relevance_class is not None:
            if isinstance(self.relevance_class, str) and not self.relevance_class.isdigit():
                return names.index(self.relevance_class)
            return int(self.relevance_class)
        counts = np.bincount(pred.ravel(), minlength=len(names))[: len(names)]
        counts[0] = 0 if counts[1:].any() else counts[0]
        return int(counts.argmax())


# -- helpers used by the notebooks too ------------------------------------------------------------------------


class Media:
    """What one validation produced, before it is routed to the loggers."""

    def __init__(self):
        self.images: dict[str, np.ndarray] = {}
        # key -> (image, prediction, ground truth, class names, ignore index, caption): W&B's interactive masks
        self.overlays: dict[str, tuple] = {}
        self.tables: dict[str, tuple[list[str], list[list]]] = {}


def sample_indices(length: int, n: int) -> list[int]:
    """n indices spread evenly over a set of `length` samples, first and last included: the same every time."""
    if length <= 0 or n <= 0:
        return []
    return sorted(set(np.linspace(0, length - 1, min(n, length)).round().astype(int).tolist()))


def palette_of(datamodule, num_classes: int) -> np.ndarray:
    """The dataset's palette (`datamodule.palette`), or a generated one (`draw.make_palette`)."""
    palette = getattr(datamodule, "palette", None)
    if palette is not None and len(palette) >= num_classes:
        return np.asarray(palette, np.uint8)[:, :3]
    return draw.make_palette(num_classes)


def model_input(trainer, pl_module, sample: dict) -> torch.Tensor:
    """A dataset sample as the model sees it in validation: batched, on the device, through the datamodule's
    `on_after_batch_transfer` (where normalisation may happen)."""
    batch = {k: v[None].to(pl_module.device) if torch.is_tensor(v) else v for k, v in sample.items()}
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        batch = datamodule.on_after_batch_transfer(batch, 0)
    return batch["image"]


def to_labels(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(1, C, h, w) logits -> (H, W) labels at the raw mask's size (bilinear on the logits)."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return logits[0].argmax(0).cpu().numpy().astype(np.int64)


def write_csv(path: Path, columns: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def route(trainer, media: Media, folder: Path) -> None:
    """W&B media for WandbLoggers, images and text for TensorBoardLoggers, PNG files in `folder` when neither."""
    step = trainer.global_step
    shown = False
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_metrics(wandb_media(media), step=step)
            shown = True
        elif isinstance(logger, TensorBoardLogger):
            exp = logger.experiment
            for key, image in media.images.items():
                exp.add_image(key, image, step, dataformats="HWC")
            for key, (columns, rows) in media.tables.items():
                exp.add_text(key, markdown_table(columns, rows), step)
            shown = True
    if not shown and media.images:
        folder.mkdir(parents=True, exist_ok=True)
        for key, image in media.images.items():
            Image.fromarray(image).save(folder / (key.removeprefix("val/").replace("/", "_") + ".png"))


def wandb_media(media: Media) -> dict:
    import wandb

    out = {key: wandb.Image(image) for key, image in media.images.items()}
    for key, (image, pred, target, names, ignore, caption) in media.overlays.items():
        labels = dict(enumerate(names))
        gt_labels = dict(labels)
        if ignore is not None and (target == ignore).any():
            gt_labels[int(ignore)] = "ignored"
        out[key] = wandb.Image(
            image,
            caption=caption,
            masks={
                "prediction": {
                    "mask_data": pred.astype(np.uint8 if len(names) < 256 else np.int32),
                    "class_labels": labels,
                },
                "ground_truth": {"mask_data": target.astype(np.int32), "class_labels": gt_labels},
            },
        )
    for key, (columns, rows) in media.tables.items():
        out[key] = wandb.Table(columns=columns, data=rows)
    return out


def markdown_table(columns: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
