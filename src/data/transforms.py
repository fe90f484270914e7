"""albumentations transforms the dataset configs need beyond the library's own (mmsegmentation's semantics).

- `RandomRescale`: rescale image and mask, keeping the aspect ratio, to fit a reference scale (long, short) times
  a random ratio (mmseg's `RandomResize(scale, ratio_range, keep_ratio=True)`).
- `ResizeImage`: the evaluation resize; the image only, so that metrics are computed on the mask at its original
  size (the LightningModule resizes the logits back to the mask).
- `CatMaxRatioCrop`: a random crop that retries (up to 10 times) while one class covers more than `cat_max_ratio`
  of the labelled pixels of the crop (mmseg's `RandomCrop(cat_max_ratio=0.75)`).

Randomness comes from each transform's `py_random`, which `A.Compose.set_random_seed` sets, so the per-worker
reseeding in `src/data/base.py` covers these transforms too. Padding to the crop size is the library's
`A.PadIfNeeded(..., fill_mask=<ignore index>)` in the config (its default `fill_mask=0` would label padding as
class 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from albumentations.core.transforms_interface import DualTransform, ImageOnlyTransform


def rescale_size(height: int, width: int, scale: Sequence[float]) -> tuple[int, int]:
    """(h, w) after a keep-ratio rescale into `scale` = (long, short) edges (mmcv's `rescale_size`)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def _resize(img: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    if img.shape[:2] == size:
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=interpolation)


class RandomRescale(DualTransform):
    """Keep-ratio rescale into `scale` x r, r uniform in `ratio_range` (masks: nearest neighbour).

    Args:
        scale: the reference (long, short) edges, e.g. (2048, 512) for ADE20K, (2048, 1024) for Cityscapes;
            None: the image's own size (images of many sizes, as in `data=folder`), i.e. a plain rescale by r.
        ratio_range: the range of r.
    """

    def __init__(
        self,
        scale: Sequence[int] | None = (2048, 512),
        ratio_range: Sequence[float] = (0.5, 2.0),
        interpolation: int = cv2.INTER_LINEAR,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.scale = tuple(scale) if scale is not None else None
        self.ratio_range, self.interpolation = tuple(ratio_range), interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        ratio = self.py_random.uniform(*self.ratio_range)
        height, width = params["shape"][:2]
        if self.scale is None:
            return {"size": (int(height * ratio + 0.5), int(width * ratio + 0.5))}
        return {"size": rescale_size(height, width, [s * ratio for s in self.scale])}

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return _resize(img, size, self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return _resize(mask, size, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "ratio_range", "interpolation")


class ResizeImage(ImageOnlyTransform):
    """Evaluation: keep-ratio rescale of the image alone into `scale` = (long, short), e.g. (2048, 512).

    The mask keeps its original size; predictions are resized back to it before metrics (as published results
    are computed).
    """

    def __init__(self, scale: Sequence[int] = (2048, 512), interpolation: int = cv2.INTER_LINEAR, p: float = 1.0):
        super().__init__(p=p)
        self.scale, self.interpolation = tuple(scale), interpolation

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return _resize(img, rescale_size(*img.shape[:2], self.scale), self.interpolation)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "interpolation")


def value_counts(values: np.ndarray) -> np.ndarray | None:
    """counts[v]: how often v occurs in an integer array, in linear time (np.unique sorts: several ms on a
    512x512 mask; OpenCV's histogram for uint8 is about twice np.bincount's speed); None when a value is negative."""
    if values.dtype == np.uint8 and values.ndim == 2 and values.size < 2**24:  # float32 counts stay exact
        return cv2.calcHist([values], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    flat = values.ravel()
    if flat.size and flat.dtype.kind == "i" and flat.min() < 0:
        return None
    return np.bincount(flat)


def label_counts(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """Pixel counts of the labels present, the ignore index left out."""
    counts = value_counts(labels)
    if counts is None:
        values, counts = np.unique(labels, return_counts=True)
        return counts[values != ignore_index]
    if 0 <= ignore_index < len(counts):
        counts[ignore_index] = 0
    return counts[counts > 0]


class CatMaxRatioCrop(DualTransform):
    """Random (height, width) crop; redrawn up to `max_tries` times while one class covers more than
    `cat_max_ratio` of the crop's labelled pixels (a crop with a single class is redrawn too).

    An image smaller than the crop is cropped to its own size in that dimension; follow with `A.PadIfNeeded`.
    `cat_max_ratio=1.0` is a plain random crop.
    """

    def __init__(
        self,
        height: int,
        width: int,
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        max_tries: int = 10,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.height, self.width, self.cat_max_ratio = height, width, cat_max_ratio
        self.ignore_index, self.max_tries = ignore_index, max_tries

    def _draw(self, height: int, width: int) -> tuple[int, int, int, int]:
        top = self.py_random.randint(0, max(height - self.height, 0))
        left = self.py_random.randint(0, max(width - self.width, 0))
        return top, left, min(top + self.height, height), min(left + self.width, width)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        box = self._draw(height, width)
        mask = data.get("mask")
        if mask is None or self.cat_max_ratio >= 1.0 or (height <= self.height and width <= self.width):
            return {"box": box}  # (the last: the whole image is the only crop there is)
        for _ in range(self.max_tries - 1):
            counts = label_counts(mask[box[0] : box[2], box[1] : box[3]], self.ignore_index)
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
            box = self._draw(height, width)
        return {"box": box}

    def apply(self, img: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        return img[box[0] : box[2], box[1] : box[3]]

    def apply_to_mask(self, mask: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        return mask[box[0] : box[2], box[1] : box[3]]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "max_tries")
