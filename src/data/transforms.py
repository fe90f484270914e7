"""albumentations transforms the dataset configs need beyond the library's own (mmsegmentation's semantics).

- `RandomRescaleCrop`: a keep-ratio rescale to a reference scale (long, short) times a random ratio, then a random
  crop that is redrawn (up to 10 times) while one class covers more than `cat_max_ratio` of its labelled pixels
  (mmseg's `RandomResize(scale, ratio_range, keep_ratio=True)` + `RandomCrop(cat_max_ratio=0.75)`), crop first,
  so only the pixels kept are resized.
- `ResizeImage`: the evaluation resize; the image only, so that metrics are computed on the mask at its original
  size (the LightningModule resizes the logits back to the mask).

Randomness comes from each transform's `py_random`, which the per-sample reseeding in `src/data/base.py` sets
(`reseed_transform`), so it covers these transforms too. Padding to the crop size is `PadIfNeeded`, the
library's own with `fill_mask=<ignore index>` in the config (its default `fill_mask=0` would label padding as
class 0), less the copy it makes of an image that needs no padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from albumentations import PadIfNeeded as _PadIfNeeded
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


class PadIfNeeded(_PadIfNeeded):
    """albumentations' `PadIfNeeded`, returning an image or mask that needs no padding as it is: the library copies
    it through `cv2.copyMakeBorder` with zero borders (0.15 ms per 512x512 image and mask)."""

    def apply(self, img: np.ndarray, pad_top: int, pad_bottom: int, pad_left: int, pad_right: int, **params):
        if pad_top == pad_bottom == pad_left == pad_right == 0:
            return img
        return super().apply(img, pad_top, pad_bottom, pad_left, pad_right, **params)

    def apply_to_mask(self, mask: np.ndarray, pad_top: int, pad_bottom: int, pad_left: int, pad_right: int, **params):
        if pad_top == pad_bottom == pad_left == pad_right == 0:
            return mask
        return super().apply_to_mask(mask, pad_top, pad_bottom, pad_left, pad_right, **params)


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


class RandomRescaleCrop(DualTransform):
    """mmsegmentation's `RandomResize(scale, ratio_range, keep_ratio=True)` then `RandomCrop(crop_size,
    cat_max_ratio)`, done crop-first: the crop is drawn in the rescaled image's coordinates and only the source
    pixels under it are resized (masks: nearest neighbour), so the cost follows the crop's size, not the rescaled
    image's (a Cityscapes frame at ratio 2 is 8 Mpx for a 0.5 Mpx crop). The crop's window is rounded to whole
    source pixels: its scale may differ from the drawn one by one source pixel over its size.

    Args:
        height, width: the crop; an image smaller than it after rescaling is returned whole in that dimension
            (follow with `PadIfNeeded`).
        scale: the reference (long, short) edges of the keep-ratio rescale, e.g. (2048, 512) for ADE20K, (2048,
            1024) for Cityscapes; None: the image's own size (images of many sizes, as in `data=folder`).
        ratio_range: the rescale factor r is uniform in it.
        cat_max_ratio: the crop is redrawn (up to `max_tries` draws) while one class covers more than this share
            of its labelled pixels; a crop with a single class is redrawn too. 1.0: a plain random crop.
        count_grid: the shares are counted at source resolution on every k-th pixel of every k-th row of the
            window, k = max(1, min(window height, width) // count_grid), so on a grid of at least `count_grid`
            rows and columns (64: 0.05 ms instead of 0.27 for a window of 100k pixels, and the same decisions as
            a full count on 560 ADE20K-layout windows; tests/test_datasets.py). 0: every pixel.
    """

    def __init__(
        self,
        height: int,
        width: int,
        scale: Sequence[int] | None = (2048, 512),
        ratio_range: Sequence[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        max_tries: int = 10,
        interpolation: int = cv2.INTER_LINEAR,
        count_grid: int = 64,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.height, self.width = height, width
        self.scale = tuple(scale) if scale is not None else None
        self.ratio_range, self.cat_max_ratio = tuple(ratio_range), cat_max_ratio
        self.ignore_index, self.max_tries, self.interpolation = ignore_index, max_tries, interpolation
        if count_grid < 0:
            raise ValueError(f"RandomRescaleCrop count_grid={count_grid}: must be 0 (count every pixel) or more.")
        self.count_grid = count_grid

    def _window(self, shape: tuple[int, int], rescaled: tuple[int, int], size: tuple[int, int]) -> tuple[int, ...]:
        """A random `size` crop of the rescaled image, as (top, left, bottom, right) of the source image."""
        box = []
        for n, m, c in zip(shape, rescaled, size):
            start = self.py_random.randint(0, m - c)
            first = min(int(start * n / m), n - 1)
            box.append((first, max(first + 1, min(n, round((start + c) * n / m)))))
        return box[0][0], box[1][0], box[0][1], box[1][1]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        ratio = self.py_random.uniform(*self.ratio_range)
        shape = params["shape"][:2]
        if self.scale is None:
            rescaled = (int(shape[0] * ratio + 0.5), int(shape[1] * ratio + 0.5))
        else:
            rescaled = rescale_size(*shape, [s * ratio for s in self.scale])
        size = (min(self.height, rescaled[0]), min(self.width, rescaled[1]))
        window = self._window(shape, rescaled, size)
        mask = data.get("mask")
        if mask is None or self.cat_max_ratio >= 1.0 or size == rescaled:  # (the last: the whole image)
            return {"window": window, "size": size}
        for _ in range(self.max_tries - 1):
            top, left, bottom, right = window
            k = max(1, min(bottom - top, right - left) // self.count_grid) if self.count_grid else 1
            counts = label_counts(mask[top:bottom:k, left:right:k], self.ignore_index)
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
            window = self._window(shape, rescaled, size)
        return {"window": window, "size": size}

    def apply(self, img: np.ndarray, window: tuple[int, ...], size: tuple[int, int], **params: Any) -> np.ndarray:
        return _resize(img[window[0] : window[2], window[1] : window[3]], size, self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, window: tuple[int, ...], size: tuple[int, int], **params) -> np.ndarray:
        return _resize(mask[window[0] : window[2], window[1] : window[3]], size, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        names = ("height", "width", "scale", "ratio_range", "cat_max_ratio", "ignore_index", "max_tries")
        return (*names, "interpolation", "count_grid")
