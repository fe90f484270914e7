"""Any dataset of `images/` and `masks/` with matching file names: `data=folder data.data_dir=...`.

The folder names (`data.image_dir`, `data.mask_dir`) and the name endings (`data.image_suffix`,
`data.mask_suffix`) are options, so layouts such as mmsegmentation's generic one (`imgs/x_img.jpg` with
`gts/x_gt.png`, split lists in `splits/`) load as they are. An image and a mask pair when their names agree
once the suffixes are taken off (the key, `x` above).

Splits, first match wins:
  1. split folders: `images/{train,val[,test]}/` and `masks/{train,val[,test]}/`;
  2. split lists: `splits/{train,val[,test]}.txt`, one key per line, over flat `images/` and `masks/`;
  3. neither: a fixed `val_fraction` of the flat folders (drawn once with a fixed seed) is validation.

Masks are index masks (one class index per pixel; `values` maps stored values to classes, e.g. [0, 255] for
binary masks saved black/white) or, with `mask_mode: rgb`, colour masks whose colours are `palette[c]` for class c
(`ignore_colors` become the ignore index).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from src.data.files import IMAGE_SUFFIXES, FilesDataModule, PairDataset, Pairs, list_files, pair_up, read_list
from src.data.scan import COLOUR_MODES, INDEX_MODES
from src.errors import DataError

LAYOUT = """  <root>/
    {image_dir}/<name>{image_suffix}.jpg|png|tif ...    {mask_dir}/<name>{mask_suffix}.png ...   (matching names)
  with optional split folders {image_dir}/{{train,val,test}}/ + {mask_dir}/{{train,val,test}}/,
  or split lists splits/{{train,val,test}}.txt (one name per line)
  (folder names: data.image_dir, data.mask_dir; name endings: data.image_suffix, data.mask_suffix)"""
SOURCE = "your own data"


def key_of(suffix: str):
    """The key of a file name: its stem less `suffix` (e.g. "_gt"), or, for a suffix with an image extension (as
    mmsegmentation writes them, e.g. "_img.jpg"), the whole name less `suffix`; None for files without it."""
    if not suffix:
        return lambda p: p.stem
    if Path(suffix).suffix.lower() in IMAGE_SUFFIXES:
        return lambda p: p.name[: -len(suffix)] if p.name.endswith(suffix) else None
    return lambda p: p.stem[: -len(suffix)] if p.stem.endswith(suffix) else None


def colour_codes(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> one int per colour."""
    rgb = rgb[..., :3].astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class FolderDataset(PairDataset):
    """Index masks through the lookup table `lut` (stored value -> label), or RGB masks through `colours`."""

    def __init__(self, *args, lut: np.ndarray | None = None, colours: dict[tuple, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mask_modes = COLOUR_MODES if colours is not None else INDEX_MODES
        self.lut = lut
        if lut is not None:  # stored values of a class, and the ignore value itself
            self.allowed = lut != self.ignore_index
            self.allowed[self.ignore_index] = True
        if colours is not None:
            codes = colour_codes(np.array(list(colours.keys()), np.uint8).reshape(-1, 3))
            order = np.argsort(codes)
            self.codes, self.code_labels = codes[order], np.array(list(colours.values()), np.uint8)[order]

    def _colour_lookup(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = colour_codes(raw)
        idx = np.searchsorted(self.codes, codes).clip(max=len(self.codes) - 1)
        return self.code_labels[idx], self.codes[idx] == codes

    def to_labels(self, raw: np.ndarray, path: str) -> np.ndarray:
        if self.lut is None:
            labels, known = self._colour_lookup(raw)
        else:
            known = raw < len(self.lut)
            labels = self.lut[np.where(known, raw, 0)]
        return np.where(known, labels, self.ignore_index).astype(np.uint8)

    def label_table(self, path: str) -> np.ndarray | None:
        return None if self.lut is None else super().label_table(path)  # colour masks: no per-value table

    def bad_values(self, raw: np.ndarray, path: str) -> str | None:
        if self.lut is not None:
            problem = super().bad_values(raw, path)
            return problem and f"{problem} (data.num_classes, data.values)"
        if raw.ndim != 3:
            return "is a one-channel mask, but data.mask_mode=rgb expects colour masks"
        _, known = self._colour_lookup(raw)
        if known.all():
            return None
        unknown = np.unique(raw[..., :3][~known], axis=0)[:5].tolist()
        return f"colours {unknown} are in neither data.palette nor data.ignore_colors"


class FolderDataModule(FilesDataModule):
    """Args (besides the common ones):
    mask_mode: "index" (one value per pixel) or "rgb" (colour masks, mapped through `palette`).
    values: index masks: the stored value of each class (default: value c is class c).
    ignore_colors: rgb masks: colours that become the ignore index.
    image_dir, mask_dir: the folders of the images and of the masks below data_dir.
    image_suffix, mask_suffix: an image is named <key><image_suffix>.<ext>, its mask <key><mask_suffix>.<ext>,
        e.g. "_img" and "_gt" (with the extension, e.g. "_img.jpg", only files with that ending count).
    val_fraction: without split folders or lists, this share of the files is validation.
    """

    dataset_class = FolderDataset
    source, name, config_name = SOURCE, "The folder dataset", "folder"
    layout = LAYOUT.format(image_dir="images", mask_dir="masks", image_suffix="", mask_suffix="")

    def __init__(
        self,
        mask_mode: Literal["index", "rgb"] = "index",
        values: Sequence[int] | None = None,
        ignore_colors: Sequence[Sequence[int]] = (),
        mask_suffix: str = "",
        val_fraction: float = 0.2,
        image_dir: str = "images",
        mask_dir: str = "masks",
        image_suffix: str = "",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mask_mode not in ("index", "rgb"):
            raise DataError(f"data.mask_mode={mask_mode!r}: use index or rgb.")
        if mask_mode == "rgb" and (self.palette is None or len(self.palette) != self.num_classes):
            raise DataError(
                f"data.mask_mode=rgb needs data.palette with one [r, g, b] per class "
                f"({self.num_classes}); got {None if self.palette is None else len(self.palette)}."
            )
        if values is not None and len(values) != self.num_classes:
            raise DataError(f"data.values needs one stored value per class ({self.num_classes}); got {len(values)}.")
        if self.num_classes > 255 or self.ignore_index > 255:
            raise DataError("data.num_classes and data.ignore_index must be at most 255 (8-bit label maps).")
        self.mask_mode, self.values, self.ignore_colors = mask_mode, values, [list(c) for c in ignore_colors]
        self.mask_suffix, self.val_fraction = mask_suffix, val_fraction
        self.image_dir, self.mask_dir, self.image_suffix = image_dir, mask_dir, image_suffix
        self.layout = LAYOUT.format(
            image_dir=image_dir, mask_dir=mask_dir, image_suffix=image_suffix, mask_suffix=mask_suffix
        )

    def dataset_kwargs(self) -> dict:
        if self.mask_mode == "rgb":
            colours = {tuple(c): i for i, c in enumerate(self.palette)}
            colours.update({tuple(c): self.ignore_index for c in self.ignore_colors})
            return {"colours": colours}
        values = list(range(self.num_classes)) if self.values is None else list(self.values)
        lut = np.full(max(256, max(values) + 1), self.ignore_index, np.uint8)
        lut[values] = np.arange(self.num_classes)
        return {"lut": lut}

    # -- splits ---------------------------------------------------------------------------------------------
    def split_kind(self) -> str:
        root = self.require(self.image_dir, self.mask_dir)
        if (root / self.image_dir / "train").is_dir():
            return "folders"
        return "lists" if (root / "splits" / "train.txt").is_file() else "fraction"

    @property
    def has_test(self) -> bool:
        root = self.data_dir
        return (root / self.image_dir / "test").is_dir() or (root / "splits" / "test.txt").is_file()

    def _pair(self, images_dir: Path, masks_dir: Path) -> tuple[Pairs, np.ndarray]:
        """The pairs of two folders and their keys."""
        mask_end = self.mask_suffix if Path(self.mask_suffix).suffix else f"{self.mask_suffix}.png"
        image_end = self.image_suffix if Path(self.image_suffix).suffix else f"{self.image_suffix}.<ext>"
        images = list_files(images_dir, key=key_of(self.image_suffix))
        masks = list_files(masks_dir, key=key_of(self.mask_suffix))
        pairs = pair_up(images, masks, lambda k: f"{masks_dir}/{k}{mask_end}", lambda k: f"{images_dir}/{k}{image_end}")
        return pairs, np.array(sorted(images.keys() & masks.keys()), dtype=str)

    def pairs(self, split: str) -> Pairs:
        kind, root = self.split_kind(), self.data_dir
        if kind == "folders":
            self.require(f"{self.image_dir}/{split}", f"{self.mask_dir}/{split}")
            return self._pair(root / self.image_dir / split, root / self.mask_dir / split)[0]
        pairs, stems = self._pair(root / self.image_dir, root / self.mask_dir)
        if kind == "lists":
            self.require(files=[f"splits/{split}.txt"])
            listed = read_list(root / "splits" / f"{split}.txt")
            missing = sorted(set(listed) - set(stems.tolist()))
            keep = np.isin(stems, listed)
            problems = [
                f"{root}/splits/{split}.txt: lists {m!r}, which has no image/mask pair in {self.image_dir}/ and "
                f"{self.mask_dir}/"
                for m in missing
            ]
        else:  # a fixed share is validation, the same on every run
            order = np.random.default_rng(0).permutation(len(stems))
            val = np.zeros(len(stems), bool)
            val[order[: int(round(len(stems) * self.val_fraction))]] = True
            keep, problems = (val if split == "val" else ~val), []
            if split == "test":
                keep = np.zeros(len(stems), bool)
        return Pairs(pairs.images[keep], pairs.masks[keep], pairs.problems + problems)
