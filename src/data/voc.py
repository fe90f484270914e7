"""Pascal VOC 2012 segmentation (21 classes) as downloaded: `data=voc`, `data.data_dir=.../VOCdevkit/VOC2012`.

`SegmentationClass/*.png` are palette PNGs: their pixel values are the class indices (0 background, 1..20), the
palette only colours them; 255 marks object borders and "difficult" regions and is ignored. With the SBD
augmented set (`SegmentationClassAug/` and `ImageSets/Segmentation/aug.txt`, as prepared by mmsegmentation's
`tools/dataset_converters/voc_aug.py`) training uses train.txt + aug.txt (10,582 images), the usual "trainaug".
"""

from __future__ import annotations

from src.data.files import FilesDataModule, PairDataset, Pairs, allowed_table, pairs_from_list, read_list
from src.errors import DataError

# fmt: off
CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
PALETTE = (  # the colour of each class in the official visualisations (RGB)
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128), (128, 128, 128),
    (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128),
    (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128),
)
# fmt: on
LAYOUT = """  VOCdevkit/VOC2012/
    JPEGImages/2007_000032.jpg ...
    SegmentationClass/2007_000032.png ...          (palette PNG: 0..20, 255 = border)
    ImageSets/Segmentation/train.txt, val.txt      (one image id per line)
    optional: SegmentationClassAug/*.png and ImageSets/Segmentation/aug.txt (the SBD augmented set)"""
SOURCE = (
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar); the augmented set: "
    "SBD, http://home.bharathh.info/pubs/codes/SBD/download.html, converted with mmsegmentation's "
    "tools/dataset_converters/voc_aug.py"
)


class VOCDataset(PairDataset):
    allowed = allowed_table(range(21), [255])


class VOCDataModule(FilesDataModule):
    """VOC 2012 train (1,464; 10,582 with `aug`) and val (1,449); the test labels are withheld.

    Args:
        aug: use the SBD augmented training set: "auto" (when present), true (required), false.
    """

    CLASS_NAMES, PALETTE = CLASS_NAMES, PALETTE
    dataset_class = VOCDataset
    layout, source, name, config_name = LAYOUT, SOURCE, "Pascal VOC 2012", "voc"

    def __init__(self, aug: bool | str = "auto", **kwargs):
        super().__init__(**kwargs)
        if aug not in (True, False, "auto"):
            raise DataError(f"data.aug={aug!r}: use true, false or auto.")
        self.aug = aug

    def use_aug(self) -> bool:
        aug_files = ("SegmentationClassAug", "ImageSets/Segmentation/aug.txt")
        if self.aug is True:
            self.require(aug_files[0], files=aug_files[1:])
        present = (self.data_dir / aug_files[0]).is_dir() and (self.data_dir / aug_files[1]).is_file()
        return present and self.aug is not False

    def pairs(self, split: str) -> Pairs:
        root = self.require("JPEGImages", "SegmentationClass", files=[f"ImageSets/Segmentation/{split}.txt"])
        lists = root / "ImageSets" / "Segmentation"
        listed = f"{lists / split}.txt"
        ids = read_list(lists / f"{split}.txt")
        official = set(ids)
        problems = []
        if split == "train" and self.use_aug():
            val = set(read_list(lists / "val.txt")) if (lists / "val.txt").is_file() else set()
            extra = [i for i in dict.fromkeys(read_list(lists / "aug.txt")) if i not in official]
            leaked = [i for i in extra if i in val]
            if leaked:
                problems.append(
                    f"{lists / 'aug.txt'}: lists {len(leaked)} validation image(s) (e.g. {leaked[0]}); "
                    "training on them inflates the val scores. Rebuild aug.txt without val.txt's ids."
                )
            ids, listed = ids + extra, f"{listed} or aug.txt"

        def mask(i: str) -> str:  # the official annotation where there is one, else SBD's
            folder = "SegmentationClass" if i in official else "SegmentationClassAug"
            return f"{root}/{folder}/{i}.png"

        pairs = pairs_from_list(ids, lambda i: f"{root}/JPEGImages/{i}.jpg", mask, listed)
        pairs.problems = problems + pairs.problems
        return pairs
