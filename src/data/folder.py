"""Any dataset of `images/` and `masks/` with matching file names: `data=folder data.data_dir=...`.

Splits, first match wins:
  1. split folders: `images/{train,val[,test]}/` and `masks/{train,val[,test]}/`;
  2. split lists: `splits/{train,val[,test]}.txt`, one file stem per line, over flat `images/` and `masks/`;
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

from src.data.files import FilesDataModule, PairDataset, Pairs, list_files, pair_up, read_list
from src.data.scan import COLOUR_MODES, INDEX_MODES
from src.errors import DataError

LAYOUT = """  <root>/
    images/<name>.jpg|png|tif ...    masks/<name><mask_suffix>.png ...   (matching names)
  with optional split folders images/{train,val,test}/ + masks/{train,val,test}/,
  or split lists splits/{train,val,test}.txt (one name per line)"""
SOURCE = "your own data"


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
    mask_suffix: a mask is named <image stem><mask_suffix>.<ext>, e.g. "_mask".
    val_fraction: without split folders or lists, this share of the files is validation.
    """

    dataset_class = FolderDataset
    layout, source, name, config_name = LAYOUT, SOURCE, "The folder dataset", "folder"

    def __init__(
        self,
        mask_mode: Literal["index", "rgb"] = "index",
        values: Sequence[int] | None = None,
        ignore_colors: Sequence[Sequence[int]] = (),
        mask_suffix: str = "",
        val_fraction: float = 0.2,
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
        root = self.require("images", "masks")
        if (root / "images" / "train").is_dir():
            return "folders"
        return "lists" if (root / "splits" / "train.txt").is_file() else "fraction"

    @property
    def has_test(self) -> bool:
        root = self.data_dir
        return (root / "images" / "test").is_dir() or (root / "splits" / "test.txt").is_file()

    def _pair(self, images_dir: Path, masks_dir: Path) -> Pairs:
        suffix = self.mask_suffix

        def mask_key(p: Path) -> str | None:
            return p.stem[: -len(suffix)] if suffix and p.stem.endswith(suffix) else (None if suffix else p.stem)

        images, masks = list_files(images_dir), list_files(masks_dir, key=mask_key)
        return pair_up(images, masks, lambda k: f"{masks_dir}/{k}{suffix}.png", lambda k: f"{images_dir}/{k}.<ext>")

    def pairs(self, split: str) -> Pairs:
        kind, root = self.split_kind(), self.data_dir
        if kind == "folders":
            self.require(f"images/{split}", f"masks/{split}")
            return self._pair(root / "images" / split, root / "masks" / split)
        pairs = self._pair(root / "images", root / "masks")
        stems = np.array([Path(p).stem for p in pairs.images], dtype=str)
        if kind == "lists":
            self.require(files=[f"splits/{split}.txt"])
            listed = read_list(root / "splits" / f"{split}.txt")
            missing = sorted(set(listed) - set(stems.tolist()))
            keep = np.isin(stems, listed)
            problems = [
                f"{root}/splits/{split}.txt: lists {m!r}, which has no image/mask pair in images/ and masks/"
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
