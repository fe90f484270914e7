"""The built-in dataset: textured shapes on textured backgrounds, drawn on the fly from a seed (no files).

A region's class follows from its shape alone. Colours and textures (flat, stripes, checkerboard, noise) are drawn
independently of the class, for the shapes and the background alike, so colour or texture statistics carry no
information about the label: a model that scores well has learned shapes. Shapes vary in scale, rotation and
aspect, overlap and occlude each other, and a ring's hole shows the background behind it (context).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np

from src.data.base import SegDataModule, SegDataset
from src.errors import DataError

CLASS_NAMES = ("background", "disk", "square", "triangle", "ring", "cross")
PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48))
SPLITS = {"train": 0, "val": 1, "test": 2}


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """An (size, size, 3) uint8 texture whose kind and colours are drawn independently of any class.

    The second colour is the first one shifted by a moderate random amount, so a region reads as one surface.
    """
    c1 = rng.integers(0, 256, 3).astype(np.float32)
    c2 = np.clip(c1 + rng.normal(0, 40, 3), 0, 255).astype(np.float32)
    kind = rng.choice(4, p=(0.4, 0.2, 0.2, 0.2))
    if kind == 0:
        return np.broadcast_to(c1.astype(np.uint8), (size, size, 3)).copy()
    yy, xx = _grid(size)
    if kind == 1:  # stripes at a random angle and period
        theta, period = rng.uniform(0, np.pi), rng.uniform(3, 10)
        t = (np.sin((2 * np.pi / period) * (xx * np.cos(theta) + yy * np.sin(theta))) > 0)[..., None]
    elif kind == 2:  # checkerboard
        cell = rng.integers(2, 7)
        t = (((xx // cell) + (yy // cell)) % 2 == 0)[..., None]
    else:  # blotchy noise: coarse random field, upsampled
        coarse = rng.random((size // 8 + 1, size // 8 + 1)).astype(np.float32)
        t = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)[..., None]
    return (c2 + (c1 - c2) * t).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, cls: int, size: int, radius=(0.12, 0.28)) -> np.ndarray:
    """A boolean mask of one shape of class `cls` at a random place, rotation and scale (radius a fraction of
    the image side, drawn uniformly from the range `radius`)."""
    m = np.zeros((size, size), np.uint8)
    r = rng.uniform(*radius) * size
    cx, cy = rng.uniform(r * 0.5, size - r * 0.5, 2)
    angle = rng.uniform(0, 2 * np.pi)

    def poly(points):
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = (np.asarray(points, np.float64) * r) @ rot.T + (cx, cy)
        cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)

    centre = (int(round(cx * 16)), int(round(cy * 16)))
    if cls == 1:  # disk
        cv2.circle(m, centre, int(round(r * 16)), 1, -1, shift=4)
    elif cls == 2:  # square
        poly([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)])
    elif cls == 3:  # triangle
        poly(
            [
                (1.25 * np.cos(a), 1.25 * np.sin(a))
                for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3)
            ]
        )
    elif cls == 4:  # ring: a disk with a hole through which the background shows
        cv2.circle(m, centre, int(round(r * 16)), 1, -1, shift=4)
        cv2.circle(m, centre, int(round(r * rng.uniform(0.45, 0.65) * 16)), 0, -1, shift=4)
    elif cls == 5:  # cross (plus sign)
        w = rng.uniform(0.3, 0.45)
        poly(
            [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
        )
    return m.astype(bool)


def render(
    seed: int,
    index: int,
    split: str = "train",
    size: int = 64,
    max_shapes: int = 4,
    shape_probs=None,
    radius=(0.12, 0.28),
):
    """Draw sample `index` of `split`: deterministic in (seed, split, index). Returns (image, mask).

    `shape_probs`: the probability of each shape class (disk..cross) per drawn shape; uniform when None
    (a variant with one rare class sets it low for that class).
    """
    rng = np.random.default_rng([seed, SPLITS[split], index])
    image = _texture(rng, size)
    mask = np.zeros((size, size), np.int64)
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.choice(np.arange(1, len(CLASS_NAMES)), p=shape_probs))
        region = _shape_mask(rng, cls, size, radius)
        image[region] = _texture(rng, size)[region]
        mask[region] = cls
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(2, 12))
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image, mask


class SyntheticDataset(SegDataset):
    def __init__(
        self,
        length: int,
        split: str,
        seed: int,
        size: int,
        max_shapes: int,
        shape_probs=None,
        transform: Callable | None = None,
        shape_radius=(0.12, 0.28),
    ):
        super().__init__(transform)
        self.length, self.split, self.seed, self.size, self.max_shapes = length, split, seed, size, max_shapes
        self.shape_radius = tuple(shape_radius)
        self.shape_probs = None if shape_probs is None else np.asarray(shape_probs, np.float64) / np.sum(shape_probs)

    def __len__(self) -> int:
        return self.length

    def load(self, index: int):
        return render(self.seed, index, self.split, self.size, self.max_shapes, self.shape_probs, self.shape_radius)


class SyntheticDataModule(SegDataModule):
    """`data=synthetic`: shapes whose class follows from their form; sizes of each split from config."""

    has_test = True
    name = "the synthetic data"
    CLASS_NAMES, PALETTE = CLASS_NAMES, PALETTE

    def __init__(
        self,
        train_size: int = 2000,
        val_size: int = 200,
        test_size: int = 200,
        image_size: int = 64,
        max_shapes: int = 4,
        data_seed: int = 0,
        shape_probs=None,
        shape_radius=(0.12, 0.28),
        **kwargs,
    ):
        kwargs.setdefault("num_classes", len(CLASS_NAMES))
        super().__init__(**kwargs)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.image_size, self.max_shapes, self.data_seed = image_size, max_shapes, data_seed
        if shape_probs is not None and len(shape_probs) != len(CLASS_NAMES) - 1:
            raise DataError(
                f"data.shape_probs needs {len(CLASS_NAMES) - 1} values (one per shape class "
                f"{', '.join(CLASS_NAMES[1:])}); got {len(shape_probs)}."
            )
        if len(shape_radius) != 2 or not 0 < shape_radius[0] <= shape_radius[1]:
            raise DataError(f"data.shape_radius needs [min, max] fractions of the image side; got {shape_radius}.")
        self.shape_probs, self.shape_radius = shape_probs, tuple(shape_radius)

    def make_dataset(self, split, transform):
        return SyntheticDataset(
            self.sizes[split],
            split,
            self.data_seed,
            self.image_size,
            self.max_shapes,
            self.shape_probs,
            transform,
            self.shape_radius,
        )
