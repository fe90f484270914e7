"""Tiny copies of each dataset in its exact official layout: file names, folders and label encodings.

Each writer returns `Fake(root, raw)`: the folder to give as `data.data_dir`, and the label array written into
every mask file (path -> the values stored, before any convention is applied), so that tests can compare what a
DataModule loads with what was written, pixel by pixel. Masks are vertical stripes of the values a test needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128]  # first colours of the VOC devkit's map


@dataclass
class Fake:
    root: Path
    raw: dict[str, np.ndarray] = field(default_factory=dict)  # mask path -> stored values


def stripes(values, height: int, width: int, shift: int = 0) -> np.ndarray:
    """A (height, width) uint8 mask of vertical stripes cycling through `values`."""
    cols = (np.arange(width) * len(values) // width + shift) % len(values)
    return np.asarray(values, np.uint8)[cols][None, :].repeat(height, 0)


def noise_image(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Writes `array` as an image file; with `palette`, a palette ("P" mode) PNG whose pixels are the indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    if palette is not None:
        im.putpalette(palette + [0] * (768 - len(palette)))  # an "L" image becomes "P", values kept
    im.save(path)


def write_ade20k(tmp: Path, n_train: int = 4, n_val: int = 2) -> Fake:
    """ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_{train,val}_%08d.{jpg,png}; masks
    0 (other), 1, 2, 75 and 150; images of different sizes."""
    fake = Fake(tmp / "ADEChallengeData2016")
    for split, prefix, n in (("training", "train", n_train), ("validation", "val", n_val)):
        for i in range(1, n + 1):
            h, w = 40 + 8 * i, 72 - 4 * i
            name = f"ADE_{prefix}_{i:08d}"
            save(fake.root / "images" / split / f"{name}.jpg", noise_image(i, h, w))
            mask = stripes([0, 1, 2, 75, 150], h, w, shift=i)
            save(fake.root / "annotations" / split / f"{name}.png", mask)
            fake.raw[str(fake.root / "annotations" / split / f"{name}.png")] = mask
    return fake


# a few label ids of the official Cityscapes table with their train ids (others: unlabeled 0, parking 9, caravan 29)
CITYSCAPES_IDS = {0: 255, 7: 0, 8: 1, 9: 255, 11: 2, 24: 11, 26: 13, 29: 255, 33: 18}


def write_cityscapes(tmp: Path, train_ids: bool = True) -> Fake:
    """leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png with gtFine/... _gtFine_labelIds.png
    (and _color.png, _instanceIds.png, _polygons.json as in the download); `train_ids` also writes
    _gtFine_labelTrainIds.png (as createTrainIdLabelImgs does). `raw` holds the labelIds written."""
    fake = Fake(tmp / "cityscapes")
    frames = {"train": [("aachen", 0, 19), ("aachen", 1, 19), ("bochum", 0, 313)], "val": [("frankfurt", 0, 294)]}
    ids = list(CITYSCAPES_IDS)
    for split, items in frames.items():
        for k, (city, seq, frame) in enumerate(items):
            base = f"{city}_{seq:06d}_{frame:06d}"
            save(fake.root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", noise_image(k, 32, 64))
            gt = fake.root / "gtFine" / split / city
            label_ids = stripes(ids, 32, 64, shift=k)
            save(gt / f"{base}_gtFine_labelIds.png", label_ids)
            fake.raw[str(gt / f"{base}_gtFine_labelIds.png")] = label_ids
            if train_ids:
                train = np.vectorize(CITYSCAPES_IDS.get)(label_ids).astype(np.uint8)
                save(gt / f"{base}_gtFine_labelTrainIds.png", train)
                fake.raw[str(gt / f"{base}_gtFine_labelTrainIds.png")] = train
            save(gt / f"{base}_gtFine_color.png", noise_image(99, 32, 64))
            save(gt / f"{base}_gtFine_instanceIds.png", label_ids.astype(np.uint16) * 1000)  # 16-bit, as official
            (gt / f"{base}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": 32, "imgWidth": 64}))
    return fake


def write_voc(tmp: Path, aug: bool = False) -> Fake:
    """VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}; masks are palette
    PNGs holding 0, 1, 4, 15, 20 and 255 (border). `aug`: SegmentationClassAug/ (grayscale) and aug.txt."""
    fake = Fake(tmp / "VOCdevkit" / "VOC2012")
    ids = {"train": ["2007_000032", "2007_000039", "2008_000008"], "val": ["2007_000033", "2007_000042"]}
    values = [0, 1, 4, 15, 20, 255]
    for names in ids.values():
        for k, name in enumerate(names):
            h, w = 36 + 4 * k, 48
            save(fake.root / "JPEGImages" / f"{name}.jpg", noise_image(k, h, w))
            mask = stripes(values, h, w, shift=k)
            path = fake.root / "SegmentationClass" / f"{name}.png"
            save(path, mask, VOC_PALETTE)
            fake.raw[str(path)] = mask
    lists = fake.root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, names in ids.items():
        (lists / f"{split}.txt").write_text("\n".join(names) + "\n")
    if aug:
        extra = ["2008_000123", "2009_000456"]
        for k, name in enumerate(extra):
            save(fake.root / "JPEGImages" / f"{name}.jpg", noise_image(10 + k, 40, 40))
            mask = stripes([0, 7, 12], 40, 40, shift=k)
            path = fake.root / "SegmentationClassAug" / f"{name}.png"
            save(path, mask)
            fake.raw[str(path)] = mask
        (lists / "aug.txt").write_text("\n".join(ids["train"][:1] + extra) + "\n")
    return fake


def write_camvid(tmp: Path, test: bool = False) -> Fake:
    """CamVid/{train,trainannot,val,valannot[,test,testannot]}/<seq>_<frame>.png; masks 0..11 (11 = Unlabelled)."""
    fake = Fake(tmp / "CamVid")
    frames = {
        "train": ["0001TP_006690", "0001TP_006720", "0006R0_f00930", "0016E5_00390"],
        "val": ["0016E5_07959", "0016E5_07961"],
    }
    if test:
        frames["test"] = ["0001TP_008550"]
    for split, names in frames.items():
        for k, name in enumerate(names):
            save(fake.root / split / f"{name}.png", noise_image(k, 36, 48))
            mask = stripes(list(range(12)), 36, 48, shift=k)
            save(fake.root / f"{split}annot" / f"{name}.png", mask)
            fake.raw[str(fake.root / f"{split}annot" / f"{name}.png")] = mask
    return fake


FOLDER_PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
FOLDER_IGNORE_COLOUR = [255, 255, 255]


def write_folder(tmp: Path, mask_mode: str = "index", splits: str = "folders", n: int = 6) -> Fake:
    """images/ and masks/ with matching stems. `splits`: "folders" (images/train, images/val ...), "lists"
    (splits/train.txt, splits/val.txt) or "none". Index masks hold 0, 1, 2; colour masks hold FOLDER_PALETTE
    colours and FOLDER_IGNORE_COLOUR (`raw` then holds the (H,W,3) colours)."""
    fake = Fake(tmp / "folder")
    names = [f"sample_{i:03d}" for i in range(n)]
    split_of = {name: "val" if i % 3 == 2 else "train" for i, name in enumerate(names)}
    for i, name in enumerate(names):
        sub = split_of[name] if splits == "folders" else ""
        index = stripes([0, 1, 2, 3], 32, 40, shift=i)  # 3: the ignore colour in rgb mode
        if mask_mode == "rgb":
            mask = np.array(FOLDER_PALETTE + [FOLDER_IGNORE_COLOUR], np.uint8)[index]
        else:
            mask = np.minimum(index, 2)
        save(fake.root / "images" / sub / f"{name}.png", noise_image(i, 32, 40))
        save(fake.root / "masks" / sub / f"{name}.png", mask)
        fake.raw[str(fake.root / "masks" / sub / f"{name}.png")] = mask
    if splits == "lists":
        (fake.root / "splits").mkdir()
        for split in ("train", "val"):
            (fake.root / "splits" / f"{split}.txt").write_text(
                "\n".join(k for k, s in split_of.items() if s == split) + "\n"
            )
    return fake


def write_mmseg_generic(tmp: Path, n: int = 6) -> Fake:
    """mmsegmentation's generic custom-dataset layout: imgs/<key>_img.jpg, gts/<key>_gt.png (index masks 0, 1, 2),
    split lists splits/{train,val}.txt of keys; plus a stray imgs/notes.txt and a second image of one key without
    the suffix (imgs/<key>.jpg), which must not pair."""
    fake = Fake(tmp / "generic")
    keys = [f"tile_{i:02d}" for i in range(n)]
    for i, key in enumerate(keys):
        save(fake.root / "imgs" / f"{key}_img.jpg", noise_image(i, 30, 44))
        mask = stripes([0, 1, 2], 30, 44, shift=i)
        save(fake.root / "gts" / f"{key}_gt.png", mask)
        fake.raw[str(fake.root / "gts" / f"{key}_gt.png")] = mask
    save(fake.root / "imgs" / f"{keys[0]}.jpg", noise_image(99, 30, 44))
    (fake.root / "imgs" / "notes.txt").write_text("not an image\n")
    (fake.root / "splits").mkdir()
    (fake.root / "splits" / "train.txt").write_text("\n".join(keys[:4]) + "\n")
    (fake.root / "splits" / "val.txt").write_text("\n".join(keys[4:]) + "\n")
    return fake
