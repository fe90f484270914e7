"""The checks of an on-disk dataset: `scan_split` reads every header (sizes, mask modes) and decodes masks for
their label values. `FilesDataModule.validate()` (before training: a sample of masks) and `python -m src.check`
(every mask, plus statistics) both run it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from src.errors import DataError

if TYPE_CHECKING:
    from src.data.files import PairDataset

INDEX_MODES = ("L", "P", "I", "I;16", "1")  # PIL modes of one-channel (index) images
COLOUR_MODES = ("RGB", "RGBA")


def header(path: str) -> tuple[int, int, str] | None:
    """(width, height, PIL mode) from the file header alone (no decoding); None if unreadable."""
    try:
        with Image.open(path) as im:
            return im.size[0], im.size[1], im.mode
    except (OSError, ValueError):
        return None


def headers(paths: Sequence[str]) -> list[tuple[int, int, str] | None]:
    """Headers of many files; threads hide file-system latency (network file systems, cold caches)."""
    if len(paths) < 64:
        return [header(p) for p in paths]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(header, paths))


def decode_problem(path: str) -> str | None:
    """Why the image file at `path` cannot be decoded in full (a truncated or corrupt file), or None."""
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as err:
        return f"{path}: cannot be decoded (truncated or corrupt: {err})"
    return None


# -- checking ----------------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    """What `scan_split` found in one split."""

    count: int = 0
    problems: list[str] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    raw_values: set = field(default_factory=set)  # values stored in the decoded masks
    masks_decoded: int = 0
    pixel_counts: np.ndarray | None = None  # (C,) pixels per training class
    present_pixels: np.ndarray | None = None  # (C,) pixels of the images in which class c occurs
    ignored_pixels: int = 0


def sample_indices(n: int, limit: int | None) -> np.ndarray:
    """All indices, or `limit` spread evenly over the split."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def scan_split(
    dataset: PairDataset,
    num_classes: int,
    ignore_index: int,
    decode: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    decode_images: bool = False,
) -> ScanResult:
    """Check every header (sizes, mask modes) and decode `decode` masks (None: all) for label values.

    Problems name the file: unreadable files, image/mask size mismatches, colour masks where index masks are
    expected, values outside the dataset's label convention, truncated masks (and images, with `decode_images`).
    """
    n = len(dataset)
    result = ScanResult(
        count=n, pixel_counts=np.zeros(num_classes, np.int64), present_pixels=np.zeros(num_classes, np.int64)
    )
    image_heads, mask_heads = headers(list(dataset.images)), headers(list(dataset.masks))
    bad = set()
    for i, (ih, mh) in enumerate(zip(image_heads, mask_heads)):
        image, mask = dataset.images[i], dataset.masks[i]
        if ih is None or mh is None:
            result.problems.append(f"{image if ih is None else mask}: cannot be read (corrupt or not an image)")
            bad.add(i)
            continue
        result.sizes[ih[:2]] += 1
        if ih[:2] != mh[:2]:
            result.problems.append(f"{mask}: size {mh[0]}x{mh[1]} differs from its image {image} ({ih[0]}x{ih[1]})")
            bad.add(i)
        if mh[2] not in dataset.mask_modes:
            if mh[2] in COLOUR_MODES and INDEX_MODES[0] in dataset.mask_modes:
                why = (
                    "is a colour (RGB) image, but this dataset reads index masks (one class index per pixel: "
                    "8-bit grayscale or palette PNG). Colour-coded masks: data=folder data.mask_mode=rgb with "
                    "data.palette; a grayscale mask saved as RGB: save one channel"
                )
            else:
                why = f"has image mode {mh[2]}; expected one of {', '.join(dataset.mask_modes)}"
            result.problems.append(f"{mask}: {why}")
            bad.add(i)
    for k, i in enumerate(sample_indices(n, decode)):
        if on_progress is not None:
            on_progress(k)
        if i in bad:
            continue
        path = str(dataset.masks[i])
        if decode_images and (problem := decode_problem(str(dataset.images[i]))):
            result.problems.append(problem)
        try:
            raw = dataset.raw_mask(i)
        except DataError as err:  # a truncated mask: named, and the scan goes on to the other files
            result.problems.append(str(err))
            continue
        result.masks_decoded += 1
        problem = dataset.bad_values(raw, path)
        if problem:
            result.problems.append(f"{path}: {problem}")
            continue
        if raw.ndim == 2:
            result.raw_values.update(np.unique(raw).tolist())
        else:  # colour masks: the colours found
            result.raw_values.update(map(tuple, np.unique(raw.reshape(-1, raw.shape[-1]), axis=0).tolist()))
        labels = dataset.to_labels(raw, path).astype(np.int64)
        valid = labels != ignore_index
        counts = np.bincount(labels[valid].ravel(), minlength=num_classes)[:num_classes]
        result.pixel_counts += counts
        result.present_pixels += np.where(counts > 0, labels.size, 0)
        result.ignored_pixels += int((~valid).sum())
    return result


def binary_mask_problem(result: ScanResult, class_names: Sequence[str], ignore_index: int) -> str | None:
    """Masks stored as 0/255 (black/white) read with 255 as the ignore index: the foreground vanishes and the
    scores look perfect. When the masks hold only 0 and the ignore value and a class has no pixel, say so."""
    if ignore_index not in result.raw_values or not result.raw_values <= {0, ignore_index}:
        return None
    empty = [name for name, n in zip(class_names, result.pixel_counts) if n == 0]
    if not empty:
        return None
    return (
        f"the masks hold only the values 0 and {ignore_index} (the ignore index), so class(es) {', '.join(empty)} "
        f"have no pixel: black/white masks stored as 0/{ignore_index}? Read them with 'data.values=[0,{ignore_index}]'"
        " (value of each class), or give masks with one class index per pixel"
    )
