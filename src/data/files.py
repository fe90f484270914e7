"""What an on-disk dataset is made of: reading image and mask files, listing and pairing them, and the two base
classes a dataset subclasses.

`PairDataset` and `FilesDataModule` are what every on-disk dataset here shares (ade20k, cityscapes, voc, camvid,
folder); each of those files adds its layout (which files pair with which, `FilesDataModule.pairs`) and its label
convention (`PairDataset.to_labels` and the raw values it accepts). The checks of `validate()` live in `scan.py`.

File lists are NumPy string arrays, not Python lists of objects: forked DataLoader workers then share them
without copy-on-access growth of their memory over epochs.
"""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
from PIL import Image

from src.data.base import SegDataModule, SegDataset
from src.data.scan import INDEX_MODES, binary_mask_problem, scan_split
from src.data.transforms import value_counts
from src.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_LISTED = 5  # problems named in a validate() message


# -- reading -----------------------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes to RGB (no BGR -> RGB pass)


def _read(path: str) -> tuple[bytes, np.ndarray | None]:
    """The file's bytes, and the file decoded when it is an 8-bit, non-palette PNG: by libpng through imagecodecs
    (about 1.6x faster than OpenCV's PNG decoder on the CamVid frames: benchmarks/data.py), in the stored channel
    order (gray, gray+alpha, RGB, RGBA), as PIL reads it. None for the rest: palette PNGs (masks want their
    indices: PIL), 16-bit ones, other formats, and truncated files (the caller's own reader names the file)."""
    with open(path, "rb") as f:
        data = f.read()
    # IHDR: bit depth at byte 24, colour type at 25 (3: palette)
    if not data.startswith(PNG_SIGNATURE) or len(data) < 26 or data[24] != 8 or data[25] == 3:
        return data, None
    try:
        return data, imagecodecs.png_decode(data)
    except imagecodecs.PngError:
        return data, None


def read_image(path: str) -> np.ndarray:
    """RGB uint8 (H,W,3); EXIF orientation ignored so the image stays aligned with its mask."""
    data, image = _read(path)
    if image is not None:
        if image.ndim == 3 and image.shape[2] in (2, 4):
            image = image[..., :-1]  # alpha dropped, as OpenCV's IMREAD_COLOR does
        if image.ndim == 2 or image.shape[2] == 1:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        return np.ascontiguousarray(image)
    flags = (IMREAD_RGB or cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise DataError(f"{path}: cannot be read as an image (corrupt or not an image file).")
    return image if IMREAD_RGB else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: str) -> np.ndarray:
    """The stored values: palette PNGs give their indices (not colours), RGB files give (H,W,3).

    A truncated or corrupt file is a DataError naming it (PIL's own error names no file)."""
    data, mask = _read(path)
    if mask is not None:
        return mask
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.array(im)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as a mask (truncated or corrupt: {err}).") from None


class Found(dict):
    """key -> path, as `list_files` returns it, with the files it left out because another had the same key."""

    duplicates: list[str]


# -- listing and pairing ------------------------------------------------------------------------------------
def list_files(
    folder: Path,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    recursive: bool = False,
    key: Callable[[Path], str | None] | None = None,
) -> dict[str, str]:
    """key -> path of the files in `folder` with one of `suffixes` (key: the stem, or `key(path)`; None skips)."""
    found = Found()
    found.duplicates = []
    paths = folder.rglob("*") if recursive else (Path(e.path) for e in os.scandir(folder) if e.is_file())
    for path in sorted(paths):
        if path.suffix.lower() not in suffixes:
            continue
        k = key(path) if key else path.stem
        if k is None:
            continue
        if k in found:  # a.jpg and a.png: which one pairs with the mask is not for us to guess
            found.duplicates.append(f"{path}: same name as {found[k]}; keep one of them (the other is not used)")
        else:
            found[k] = str(path)
    return found


@dataclass
class Pairs:
    """Images and masks of one split, in matching order, and what did not pair up."""

    images: np.ndarray
    masks: np.ndarray
    problems: list[str] = field(default_factory=list)


def pair_up(
    images: dict[str, str],
    masks: dict[str, str],
    expected_mask: Callable[[str], str],
    expected_image: Callable[[str], str],
) -> Pairs:
    """Pairs by key; every image without a mask and every mask without an image is a problem naming it."""
    keys = sorted(images.keys() & masks.keys())
    problems = [f"{images[k]}: no mask (expected {expected_mask(k)})" for k in sorted(images.keys() - masks.keys())]
    problems += [f"{masks[k]}: no image (expected {expected_image(k)})" for k in sorted(masks.keys() - images.keys())]
    problems += getattr(images, "duplicates", []) + getattr(masks, "duplicates", [])
    return Pairs(
        np.array([images[k] for k in keys], dtype=str), np.array([masks[k] for k in keys], dtype=str), problems
    )


def pairs_from_list(
    ids: Sequence[str], image_path: Callable[[str], str], mask_path: Callable[[str], str], list_file: str
) -> Pairs:
    """Pairs for the ids of a split list file; an id whose image or mask is missing is a problem."""
    images, masks, problems = [], [], []
    for i in ids:
        image, mask = image_path(i), mask_path(i)
        missing = [p for p in (image, mask) if not os.path.isfile(p)]
        if missing:
            problems += [f"{p}: missing (listed as {i!r} in {list_file})" for p in missing]
        else:
            images.append(image)
            masks.append(mask)
    return Pairs(np.array(images, dtype=str), np.array(masks, dtype=str), problems)


def read_list(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def value_ranges(allowed: np.ndarray) -> str:
    """'0..150' or '0..18, 255' from a boolean table of allowed values."""
    values, parts = np.flatnonzero(allowed), []
    start = prev = None
    for v in list(values) + [None]:
        if start is not None and (v is None or v != prev + 1):
            parts.append(str(start) if start == prev else f"{start}..{prev}")
            start = None
        if v is not None and start is None:
            start = v
        prev = v
    return ", ".join(parts)


def allowed_table(*ranges: range | Sequence[int], size: int = 256) -> np.ndarray:
    table = np.zeros(size, bool)
    for r in ranges:
        table[list(r)] = True
    return table


# -- the dataset -------------------------------------------------------------------------------------------
class PairDataset(SegDataset):
    """Image/mask file pairs. A dataset states its label convention by overriding `to_labels` and `allowed`.

    `mask_modes`: the PIL modes its mask files may have (index masks by default; an RGB file there is an error).
    """

    mask_modes: tuple[str, ...] = INDEX_MODES
    allowed = allowed_table(range(256))  # raw mask values accepted (index = value)
    num_classes: int | None = None  # set by the DataModule: labels at or above it stop the run, naming the file

    def __init__(
        self, images: np.ndarray, masks: np.ndarray, transform: Callable | None = None, ignore_index: int = 255
    ):
        super().__init__(transform)
        self.images, self.masks = np.asarray(images, dtype=str), np.asarray(masks, dtype=str)
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        path = str(self.masks[index])
        return read_image(str(self.images[index])), self.labels(read_mask(path), path)

    def labels(self, raw: np.ndarray, path: str) -> np.ndarray:
        """The checked training labels of a stored mask (`to_labels`, `check_labels`). An 8-bit index mask takes
        one table lookup for its labels and, only when its maximum reaches a value that is not allowed, one more
        for the check (0.08 ms against 0.47 ms for a 480x360 CamVid mask: a histogram and a `to_labels` pass)."""
        table = self.label_table(path) if raw.dtype == np.uint8 and raw.ndim == 2 else None
        if table is not None:
            bad = np.ones(256, bool)
            allowed = self.allowed_values(path)[:256]
            bad[: len(allowed)] = ~allowed
            if self.num_classes is not None:
                bad |= (table >= self.num_classes) & (table != self.ignore_index)
            first = int(bad.argmax()) if bad.any() else 256
            if first == 256 or int(raw.max()) < first or not cv2.LUT(raw, bad.view(np.uint8)).any():
                return cv2.LUT(raw, table)
        labels = self.to_labels(raw, path)
        self.check_labels(raw, labels, path)  # the full check: names the file and the values
        return labels

    def label_table(self, path: str) -> np.ndarray | None:
        """`to_labels` as a 256-entry table (stored 8-bit value -> label), for the lookup of `labels`; None where
        a mask's labels are not a function of each stored value alone."""
        return self.to_labels(np.arange(256, dtype=np.uint8)[None], path)[0]

    def check_labels(self, raw: np.ndarray, labels: np.ndarray, path: str) -> None:
        """A stored value outside the dataset's convention, or a label outside 0..C-1 and the ignore index, stops
        the run naming the file (the sample checked before training may not have seen it). Cheap: one table
        lookup of the stored values and the labels' maximum."""
        if raw.ndim == 2 and np.issubdtype(raw.dtype, np.integer) and raw.size:
            table = self.allowed_values(path)
            counts = value_counts(raw)  # one linear pass; None: a negative value
            present = np.flatnonzero(counts) if counts is not None else None
            if present is None or present[-1] >= len(table) or not table[present].all():
                raise DataError(
                    f"{path}: {self.bad_values(raw, path)}. Fix the mask (python -m src.check lists every such file)."
                )
        if self.num_classes is None or labels.size == 0 or int(labels.max()) < self.num_classes:
            return
        bad = labels[(labels >= self.num_classes) & (labels != self.ignore_index)]
        if bad.size:
            raise DataError(
                f"{path}: label values {np.unique(bad)[:10].tolist()} outside the classes 0..{self.num_classes - 1} "
                f"and the ignore index {self.ignore_index}. Fix the mask, or check data.num_classes; "
                "python -m src.check lists every such file."
            )

    def raw_mask(self, index: int) -> np.ndarray:
        """The values stored in mask file `index` (before `to_labels`)."""
        return read_mask(str(self.masks[index]))

    def subset(self, index: np.ndarray) -> PairDataset:
        """The same dataset restricted to the pairs at `index`."""
        part = copy.copy(self)
        part.images, part.masks = self.images[index], self.masks[index]
        return part

    def to_labels(self, raw: np.ndarray, path: str) -> np.ndarray:
        """Stored values -> training labels 0..C-1 / ignore index (uint8)."""
        return raw.astype(np.uint8)

    def allowed_values(self, path: str) -> np.ndarray:
        """Boolean table of the raw values a mask file may hold (e.g. 0..150 for ADE20K)."""
        return self.allowed

    def bad_values(self, raw: np.ndarray, path: str) -> str | None:
        """A description of the values of `raw` outside the convention, or None."""
        table = self.allowed_values(path)
        values = np.unique(raw)
        bad = [int(v) for v in values if v < 0 or v >= len(table) or not table[v]]
        if not bad:
            return None
        return f"label values {bad[:10]} outside the allowed {value_ranges(table)}"


class FilesDataModule(SegDataModule):
    """A DataModule over image/mask files below `data_dir`.

    A subclass sets `dataset_class`, `layout` (the expected folder tree, shown when something is missing) and
    `source` (where the dataset is officially obtained), and implements `pairs(split)`.

    Args:
        data_dir: the dataset's root folder.
        crop_size, scale: the training crop (h, w) and the reference rescale (long, short) edges; not used here,
            the config's pipelines refer to them (`${data.crop_size}`) so that one override changes them all.
        validate_masks: masks decoded per split by `validate()` before training (all headers are read);
            `python -m src.check` decodes every mask.
    """

    dataset_class: type[PairDataset] = PairDataset
    layout = ""
    source = ""
    config_name = "<name>"  # the data config (configs/data/<config_name>.yaml)

    def __init__(
        self,
        data_dir: str,
        crop_size: Sequence[int] | None = None,
        scale: Sequence[int] | None = None,
        validate_masks: int = 64,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir).expanduser()
        self.crop_size, self.scale, self.validate_masks = crop_size, scale, validate_masks

    # -- what a subclass implements ------------------------------------------------------------------------
    def pairs(self, split: str) -> Pairs:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------
    def require(self, *folders: str, files: Sequence[str] = ()) -> Path:
        """The root, after checking that it and the given sub-folders and files exist; else a message that shows
        the expected layout and where the dataset is obtained."""
        root = self.data_dir
        missing = [root / r for r in ("",) + folders if not (root / r).is_dir()]
        missing += [root / f for f in files if not (root / f).is_file()]
        if missing:
            if missing[0] == root:
                what = "does not exist"
            else:
                relative = missing[0].relative_to(root)
                what = f"has no {'folder ' if str(relative) in folders else 'file '}{relative}"
            raise DataError(
                f"data.data_dir={root} {what}. {self.name} is expected in this layout:\n{self.layout}\n"
                f"Obtain it from {self.source}, then set data.data_dir=<the folder shown as the root above>."
            )
        return root

    def make_dataset(self, split: str, transform: Callable | None) -> PairDataset:
        pairs = self.pairs(split)
        if pairs.problems:
            raise DataError(self.problem_message(split, pairs.problems))
        if len(pairs.images) == 0:
            raise DataError(
                f"{self.name}: the {split} split below {self.data_dir} has no image/mask pairs; "
                f"expected layout:\n{self.layout}"
            )
        data = self.dataset_class(
            pairs.images, pairs.masks, transform, ignore_index=self.ignore_index, **self.dataset_kwargs()
        )
        data.num_classes = self.num_classes
        return data

    def dataset_kwargs(self) -> dict:
        """Further arguments of `dataset_class` (e.g. a palette)."""
        return {}

    def problem_message(self, split: str, problems: list[str], sampled: bool = False) -> str:
        lines = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        scope = " (masks sampled; the full scan decodes every mask)" if sampled else ""
        return (
            f"{self.name}, {split} split: {len(problems)} problem(s) in {self.data_dir}{scope}:\n{lines}{more}\n"
            "Fix or remove these files. `python -m src.check data="
            f"{self.config_name} data.data_dir={self.data_dir}` lists every problem of the whole dataset."
        )

    def validate(self) -> None:
        """Before training: every pair present, every header (sizes, mask modes), `validate_masks` masks per split
        decoded for their label values. Raises `DataError` naming the first bad files."""
        for split in self.splits():
            data = self.dataset(split)
            result = scan_split(data, self.num_classes, self.ignore_index, decode=self.validate_masks)
            if split == "train" and (problem := binary_mask_problem(result, self.class_names, self.ignore_index)):
                result.problems.append(f"{self.data_dir}: {problem}")
            if result.problems:
                raise DataError(self.problem_message(split, result.problems, sampled=result.masks_decoded < len(data)))
