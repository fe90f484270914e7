"""The Visuals callback: what a run shows in W&B (read back from the offline run), TensorBoard and plain files."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from src.callbacks import draw
from src.callbacks.visuals import sample_indices, to_labels
from src.train import train
from tests.conftest import FAST, ROOT
from tests.test_loggers import finished_records, offline_run

NAMES = ["background", "disk", "square", "triangle", "ring", "cross"]
TINY = [
    "data.image_size=32",
    "data.train_size=16",
    "data.val_size=8",
    "data.test_size=8",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "test=false",
    "callbacks.visuals.num_samples=2",
    "callbacks.visuals.attention_samples=1",
    "callbacks.visuals.query_points=[[0.5,0.5]]",
]
CNN = [o for o in FAST if o.startswith(("model", "trainer.accelerator", "callbacks", "extras"))] + TINY
SEGFORMER = [o for o in CNN if not o.startswith("model")] + [
    "model=segformer",
    "model.decoder_segmentation_channels=16",
]


def media_rows(history: list[dict]) -> list[dict]:
    """History rows that hold media, each as key -> {field: value} (W&B flattens media into key/field entries)."""
    rows = []
    for row in history:
        media: dict[str, dict] = {}
        for key, value in row.items():
            for field in ("/_type", "/path", "/width", "/height", "/nrows", "/ncols", "/caption"):
                if key.endswith(field) and "/masks/" not in key:
                    media.setdefault(key[: -len(field)], {})[field[1:]] = value
            if "/masks/" in key and key.endswith("/path"):
                name, mask = key.split("/masks/")
                media.setdefault(name, {}).setdefault("masks", {})[mask.split("/")[0]] = value
        if media:
            rows.append({**media, "trainer/global_step": row.get("trainer/global_step")})
    return rows


def class_labels(run_dir: Path) -> dict[str, dict]:
    """W&B keeps mask class labels in the run config (`_wandb` -> `mask/class_labels`)."""
    labels = {}
    for record in finished_records(run_dir):
        if record.HasField("config"):
            for item in record.config.update:
                if item.key == "_wandb":
                    labels.update(json.loads(item.value_json).get("mask/class_labels", {}))
    return {
        k.split("_wandb_delimeter_")[0] + "/" + k.split("_wandb_delimeter_")[1]: v["value"] for k, v in labels.items()
    }


@pytest.mark.slow
def test_wandb_run_shows_overlays_tables_confusion_and_attention_for_segformer(train_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(train_cfg(*SEGFORMER, "logger=wandb", "logger.wandb.project=test", fast=False))
    run_dir = tmp_path / "run"
    files = next((run_dir / "wandb").glob("offline-run-*/files"))
    rows = media_rows(offline_run(run_dir)["history"])
    assert len(rows) == 2  # once per epoch, none in the sanity check nor in the final evaluation
    assert rows[0]["trainer/global_step"] < rows[1]["trainer/global_step"]
    for row in rows:
        assert {"val/overlay/sample0", "val/overlay/sample1", "val/panel/sample0", "val/confusion_matrix"} <= set(row)
        overlay = row["val/overlay/sample0"]
        assert (overlay["width"], overlay["height"]) == (32, 32)  # the raw sample's size
        assert set(overlay["masks"]) == {"prediction", "ground_truth"}
        mask = np.asarray(__import__("PIL.Image").Image.open(files / overlay["masks"]["ground_truth"]))
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= set(range(6))
        table = json.loads((files / row["val/per_class"]["path"]).read_text())
        assert [r[0] for r in table["data"]] == NAMES  # one row per class
        assert table["columns"] == ["class", "IoU", "Acc", "Dice", "pixels", "pixel share"]
        assert sum(r[5] for r in table["data"]) == pytest.approx(1.0)
        # attention: only the first sample (attention_samples=1)
        assert {"val/attention/sample0", "val/relevance/sample0"} <= set(row)
        assert "val/attention/sample1" not in row
        assert row["val/confusion_matrix"]["_type"] == "image-file"
    labels = class_labels(run_dir)
    assert labels["val/overlay/sample0/prediction"] == {str(i): n for i, n in enumerate(NAMES)}
    # the CSV copies are always written
    with open(run_dir / "visuals" / "epoch001" / "per_class.csv") as f:
        assert [r["class"] for r in csv.DictReader(f)] == NAMES
    matrix = np.loadtxt(
        run_dir / "visuals" / "epoch001" / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 7)
    )
    assert matrix.sum() == 8 * 32 * 32  # every validation pixel, once


def test_csv_only_run_writes_pngs_and_a_cnn_gets_no_attention(train_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="src.callbacks.visuals"):
        train(train_cfg(*CNN, "logger=csv", fast=False))
    folder = tmp_path / "run" / "visuals"
    for epoch in ("epoch000", "epoch001"):
        names = sorted(p.name for p in (folder / epoch).glob("*.png"))
        assert names == ["confusion_matrix.png", "panel_sample0.png", "panel_sample1.png"], names
    assert not list(folder.rglob("attention*")) and not list(folder.rglob("relevance*"))
    said = [r for r in caplog.records if "no attention blocks" in r.getMessage()]
    assert len(said) == 1  # one line, not one per epoch
    # the final evaluation of the best checkpoint writes its tables, no pictures
    assert sorted(p.name for p in (folder / "validate").iterdir()) == [
        "confused_pairs.csv",
        "confusion_matrix.csv",
        "per_class.csv",
    ]


def test_tensorboard_event_file_holds_the_images(train_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(train_cfg(*CNN, "logger=tensorboard", fast=False))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    images = events.Tags()["images"]
    assert {"val/panel/sample0", "val/panel/sample1", "val/confusion_matrix"} <= set(images)
    assert len(events.Images("val/panel/sample0")) == 2  # one per epoch
    assert "val/per_class/text_summary" in events.Tags()["tensors"]
    assert not (tmp_path / "run" / "visuals" / "epoch000" / "panel_sample0.png").exists()  # not written twice


@pytest.mark.slow
def test_two_processes_one_wandb_run_media_once_per_epoch(tmp_path):
    """DDP on two CPU processes: the run finishes (no rank waits on another), one W&B run, media once per epoch."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "src.train", *CNN, "trainer=cpu", "trainer.devices=2", "logger=wandb"]
    args += ["logger.wandb.project=test", f"hydra.run.dir={run_dir}"]
    env = {**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    rows = media_rows(offline_run(run_dir)["history"])
    assert len(rows) == 2
    matrix = np.loadtxt(
        run_dir / "visuals" / "epoch001" / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 7)
    )
    assert matrix.sum() == 8 * 32 * 32  # both ranks' halves of the validation set, summed


# -- drawing ------------------------------------------------------------------------------------------------


def test_samples_are_fixed_and_spread():
    assert sample_indices(200, 4) == [0, 66, 133, 199] == sample_indices(200, 4)
    assert sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(0, 4) == []


def test_labels_keep_the_raw_size_and_orientation():
    logits = torch.zeros(1, 3, 4, 8)
    logits[0, 1, :, :4] = 1  # left half class 1
    logits[0, 2, :, 4:] = 1  # right half class 2
    labels = to_labels(logits, (10, 20))
    assert labels.shape == (10, 20)
    assert (labels[:, :9] == 1).all() and (labels[:, 11:] == 2).all()


def test_panel_has_four_views_and_a_legend_of_present_classes():
    image = np.full((20, 30, 3), 100, np.uint8)
    target = np.zeros((20, 30), np.int64)
    target[5:10, 5:10] = 2
    target[0] = 255
    pred = np.zeros_like(target)
    palette = draw.make_palette(5)
    out = draw.panel(image, target, pred, palette, ["a", "b", "c", "d", "e"], 255, min_side=60)
    # small images are enlarged by a whole factor (x3 here) and shown four times
    assert out.shape[1] == 4 * 90 + 3 * 4 and out.shape[0] > 60
    assert len({tuple(c) for c in palette}) == 5


def test_confusion_image_stays_readable_at_150_classes():
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(100, 1000, 150))
    cm[3, 7] = cm[10, 3] = cm[20, 21] = 500  # the most confused pairs
    pairs = draw.top_confused(cm, 3)
    assert [(i, j) for i, j, _, _ in pairs] == [(3, 7), (10, 3), (20, 21)]
    assert set(draw.confusion_classes(cm, 40)) == {3, 7, 10, 20, 21}
    image = draw.confusion_image(cm, [f"class{i}" for i in range(150)], max_classes=40)
    assert image.shape[0] < 1000 and image.shape[1] < 1000
    small = draw.confusion_image(np.eye(6, dtype=int) * 5, NAMES)
    assert small.ndim == 3 and small.shape[2] == 3
    assert draw.normalize_rows(np.array([[1, 3], [0, 0]])).tolist() == [[0.25, 0.75], [0.0, 0.0]]
