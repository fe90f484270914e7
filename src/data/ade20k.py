"""ADE20K (SceneParsing, 150 classes) as downloaded: `data=ade20k`, `data.data_dir=.../ADEChallengeData2016`.

Masks store 0 for "other" (not one of the 150 classes) and 1..150 for the classes. Training labels follow the
`reduce_zero_label` convention every published ADE20K number uses: 0 becomes the ignore index, 1..150 become
0..149.
"""

from __future__ import annotations

import numpy as np

from src.data.files import FilesDataModule, PairDataset, Pairs, allowed_table, list_files, pair_up

SPLITS = {"train": "training", "val": "validation"}
LAYOUT = """  ADEChallengeData2016/
    images/training/ADE_train_00000001.jpg ...        (20,210 images)
    images/validation/ADE_val_00000001.jpg ...        (2,000 images)
    annotations/training/ADE_train_00000001.png ...   (8-bit, 0 = other, 1..150 = classes)
    annotations/validation/ADE_val_00000001.png ..."""
SOURCE = (
    "the MIT Scene Parsing Benchmark, http://sceneparsing.csail.mit.edu/ "
    "(ADEChallengeData2016.zip, http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip)"
)


def reduce_zero_label(raw: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """0 -> ignore, k -> k-1 (values 1..255 shift down by one)."""
    labels = raw.astype(np.int64) - 1
    labels[raw == 0] = ignore_index
    return labels.astype(np.uint8)


class ADE20KDataset(PairDataset):
    allowed = allowed_table(range(151))

    def to_labels(self, raw: np.ndarray, path: str) -> np.ndarray:
        return reduce_zero_label(raw, self.ignore_index)


class ADE20KDataModule(FilesDataModule):
    """ADE20K's training (20,210) and validation (2,000) splits; the test images have no public labels."""

    dataset_class = ADE20KDataset
    layout, source, name, config_name = LAYOUT, SOURCE, "ADE20K", "ade20k"

    def pairs(self, split: str) -> Pairs:
        folder = SPLITS[split]
        root = self.require(f"images/{folder}", f"annotations/{folder}")
        images = list_files(root / "images" / folder, (".jpg",))
        masks = list_files(root / "annotations" / folder, (".png",))
        return pair_up(
            images, masks, lambda k: f"{root}/annotations/{folder}/{k}.png", lambda k: f"{root}/images/{folder}/{k}.jpg"
        )
