"""Cityscapes (fine annotations, 19 training classes) as downloaded: `data=cityscapes`.

Reads `*_gtFine_labelTrainIds.png` (0..18, 255 = ignore) where they exist (cityscapesScripts'
`createTrainIdLabelImgs` writes them); otherwise the `*_gtFine_labelIds.png` of the download, mapped to train ids
with the official table (cityscapesscripts/helpers/labels.py), so no preprocessing step is needed.
"""

from __future__ import annotations

import numpy as np

from src.data.files import FilesDataModule, PairDataset, Pairs, allowed_table, list_files, pair_up

# fmt: off
CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
PALETTE = (  # the colour of each class in the official visualisations (RGB)
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# fmt: on
IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS, LABEL_IDS = "_gtFine_labelTrainIds.png", "_gtFine_labelIds.png"
# label id -> train id, from the official table; every id not listed (unlabeled, ego vehicle, rectification
# border, out of roi, static, dynamic, ground, parking, rail track, guard rail, bridge, tunnel, polegroup,
# caravan, trailer, license plate) is ignored
ID_TO_TRAIN_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
LAYOUT = """  <root>/
    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (or only _gtFine_labelIds.png)"""
SOURCE = (
    "https://www.cityscapes-dataset.com/downloads/ (leftImg8bit_trainvaltest.zip and "
    "gtFine_trainvaltest.zip, unzipped into the same root)"
)


def id_to_train_id(ignore_index: int = 255) -> np.ndarray:
    """A 256-entry lookup table: labelIds value -> train id (ignore for every other value)."""
    table = np.full(256, ignore_index, np.uint8)
    for label_id, train_id in ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


class CityscapesDataset(PairDataset):
    # labelIds files hold ids 0..33 (255: the license plate's id -1 as stored by some tools); trainIds 0..18, 255
    allowed_ids = allowed_table(range(34), [255])
    allowed = allowed_table(range(19), [255])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = id_to_train_id(self.ignore_index)

    def to_labels(self, raw: np.ndarray, path: str) -> np.ndarray:
        if path.endswith(LABEL_IDS):
            return self.table[raw]
        return raw.astype(np.uint8)

    def allowed_values(self, path: str) -> np.ndarray:
        return self.allowed_ids if path.endswith(LABEL_IDS) else self.allowed


def _key(path, suffix: str) -> str | None:
    """`<city>/<city>_<seq>_<frame>` for a file of the given kind, None for other files (colour, instances...)."""
    return f"{path.parent.name}/{path.name[: -len(suffix)]}" if path.name.endswith(suffix) else None


class CityscapesDataModule(FilesDataModule):
    """Cityscapes train (2,975) and val (500); the test labels are withheld (evaluation server)."""

    CLASS_NAMES, PALETTE = CLASS_NAMES, PALETTE
    dataset_class = CityscapesDataset
    layout, source, name, config_name = LAYOUT, SOURCE, "Cityscapes", "cityscapes"

    def pairs(self, split: str) -> Pairs:
        root = self.require(f"leftImg8bit/{split}", f"gtFine/{split}")
        gt = root / "gtFine" / split
        images = list_files(root / "leftImg8bit" / split, (".png",), True, lambda p: _key(p, IMAGE_SUFFIX))
        masks = list_files(gt, (".png",), True, lambda p: _key(p, LABEL_IDS))
        masks.update(list_files(gt, (".png",), True, lambda p: _key(p, TRAIN_IDS)))  # train ids win
        return pair_up(
            images,
            masks,
            lambda k: f"{gt}/{k}{TRAIN_IDS} or {gt}/{k}{LABEL_IDS}",
            lambda k: f"{root}/leftImg8bit/{split}/{k}{IMAGE_SUFFIX}",
        )
