"""Dataset statistics behind `python -m src.check`: every mask decoded in worker processes, label values, image
sizes and class pixel frequencies merged over a split, and class weights from those frequencies.

`median_frequency` (SegNet: median(freq) / freq_c, freq_c = pixels of class c / pixels of the images in which c
occurs) and `inverse_log` (ENet: 1 / ln(1.02 + p_c), p_c = the class's share of labelled pixels); a class never seen
gets weight 0.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np

from src.data.files import PairDataset, value_ranges
from src.data.scan import ScanResult, scan_split
from src.errors import UserError

METHODS = ("median_frequency", "inverse_log")


def class_weights(pixel_counts: np.ndarray, present_pixels: np.ndarray, method: str) -> np.ndarray:
    """Weights per class from training-split counts; 0 for a class with no pixels."""
    counts, seen = pixel_counts.astype(np.float64), pixel_counts > 0
    weights = np.zeros(len(counts))
    if not seen.any():
        return weights
    if method == "median_frequency":
        freq = counts[seen] / present_pixels[seen]
        weights[seen] = np.median(freq) / freq
    elif method == "inverse_log":
        weights[seen] = 1.0 / np.log(1.02 + counts[seen] / counts.sum())
    else:
        raise UserError(f"weights={method}: use one of {', '.join(METHODS)} (or leave it out).")
    return weights


def merge(results: list[ScanResult]) -> ScanResult:
    out = ScanResult(pixel_counts=0, present_pixels=0)
    for r in results:
        out.count += r.count
        out.problems += r.problems
        out.sizes.update(r.sizes)
        out.raw_values |= r.raw_values
        out.masks_decoded += r.masks_decoded
        out.pixel_counts = out.pixel_counts + r.pixel_counts
        out.present_pixels = out.present_pixels + r.present_pixels
        out.ignored_pixels += r.ignored_pixels
    return out


def _scan_part(args) -> ScanResult:
    data, num_classes, ignore_index = args
    return scan_split(data, num_classes, ignore_index, decode_images=True)


def scan_all(data: PairDataset, num_classes: int, ignore_index: int, workers: int) -> ScanResult:
    """Every header, every image and every mask of `data` decoded, in `workers` processes (0: this one)."""
    if workers <= 1 or len(data) < 2 * workers:
        return scan_split(data, num_classes, ignore_index, decode_images=True)
    parts = [(data.subset(idx), num_classes, ignore_index) for idx in np.array_split(np.arange(len(data)), workers * 4)]
    with ProcessPoolExecutor(workers) as pool:
        return merge(list(pool.map(_scan_part, parts)))


def describe_values(values: set) -> str:
    if not values:
        return "-"
    if all(isinstance(v, int) for v in values):
        table = np.zeros(max(values) + 1, bool)
        table[list(values)] = True
        return value_ranges(table)
    return f"{len(values)} colours"


def describe_sizes(sizes) -> str:
    common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
    return common + (f", ... {len(sizes)} sizes in all" if len(sizes) > 3 else "")
