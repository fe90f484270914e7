"""U-Net boundary weighting (Ronneberger et al. 2015, eq. 2), computed from each mask in the data pipeline.

`w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`, where `w_c` is the weight of x's class, and d1, d2
are the distances from x to the nearest and the second-nearest object. Objects are the connected regions of each
non-background class (8-connected), so two touching objects of different classes are two objects. As in the
paper, the border term is added on background pixels: the narrow gaps between nearby objects get a large weight,
which teaches the network to separate them. Ignored pixels get weight 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import cv2
import numpy as np

from src.losses.base import ClassWeights
from src.losses.ce import CrossEntropy


def unet_weight_map(
    mask: np.ndarray,
    class_weights: Sequence[float] | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    background: int = 0,
    ignore_index: int = 255,
) -> np.ndarray:
    """The weight map (H,W) float32 of one label mask (H,W)."""
    mask = np.asarray(mask)
    valid = mask != ignore_index
    if class_weights is None:
        weights = valid.astype(np.float32)
    else:
        table = np.asarray(class_weights, np.float32)
        weights = np.where(valid, table[np.where(valid, mask, 0)], 0).astype(np.float32)
    if w0 <= 0:
        return weights
    # distances of every pixel to its nearest (d1) and second-nearest (d2) object, one object at a time
    d1 = np.full(mask.shape, np.inf, np.float32)
    d2 = np.full(mask.shape, np.inf, np.float32)
    for cls in np.unique(mask[valid]):
        if cls == background:
            continue
        count, regions = cv2.connectedComponents((mask == cls).astype(np.uint8), connectivity=8)
        for region in range(1, count):
            d = cv2.distanceTransform((regions != region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            d2 = np.minimum(d2, np.maximum(d1, d))
            d1 = np.minimum(d1, d)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))  # 0 where there are fewer than two objects
    weights += np.where(valid & (mask == background), border, 0).astype(np.float32)
    return weights


class UNetBoundaryCE(CrossEntropy):
    """`loss=unet_boundary`: cross-entropy weighted per pixel by `unet_weight_map` (weighted mean).

    The map is computed from each training mask in the DataLoader workers (`sample_extras`) and reaches the loss
    as `weight`; batches without it (validation) use the class weights alone. With `w0=0` this is `ce` with the
    same class weights.
    """

    name = "unet_boundary"

    def __init__(
        self,
        w0: float = 10.0,
        sigma: float = 5.0,
        background: int = 0,
        class_weights: ClassWeights = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = 255,
    ):
        super().__init__(class_weights, num_classes, label_smoothing, ignore_index)
        self.w0, self.sigma, self.background = w0, sigma, background

    def sample_extras(self):
        weights = None if self.class_weights is None else tuple(self.class_weights.tolist())
        return {
            "weight": partial(
                unet_weight_map,
                class_weights=weights,
                w0=self.w0,
                sigma=self.sigma,
                background=self.background,
                ignore_index=self.ignore_index,
            )
        }
