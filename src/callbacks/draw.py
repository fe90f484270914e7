"""Pictures of a segmentation as uint8 RGB arrays (H, W, 3), drawn with NumPy and Pillow only: they go to any logger
(W&B, TensorBoard) or to PNG files unchanged.

- `make_palette(n)`: a fixed, distinct colour per class when the dataset has none.
- `panel(image, target, pred, palette, names, ignore_index)`: image | ground truth | prediction | error map, with a
  legend of the classes present.
- `heat_overlay(image, heat)`: a heat map (any size, resized) blended over the image.
- `confusion_image(confmat, names)`: the row-normalised confusion matrix with class names; with many classes only
  those of the most confused pairs (`top_confused`), so 150 classes stay readable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IGNORE_COLOUR = (255, 255, 255)


def make_palette(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) uint8 colours: black for class 0, then well-spread hues (golden-ratio steps), fixed by `seed`."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(n) * 0.618034 + rng.random()) % 1.0
    sat = 0.55 + 0.4 * ((np.arange(n) * 7) % 3) / 2
    val = 0.95 - 0.25 * ((np.arange(n) * 5) % 2)
    out = np.stack([_hsv_to_rgb(h, s, v) for h, s, v in zip(hues, sat, val)]) if n else np.zeros((0, 3))
    if n:
        out[0] = 0
    return out.astype(np.uint8)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Label map (H, W) -> RGB; labels outside the palette (the ignore index) are white."""
    out = np.full((*mask.shape, 3), IGNORE_COLOUR, np.uint8)
    valid = (mask >= 0) & (mask < len(palette))
    out[valid] = palette[mask[valid]]
    return out


def error_map(image: np.ndarray, target: np.ndarray, pred: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """The image dimmed to grey, correct pixels green-tinted, wrong pixels red, ignored pixels white."""
    grey = image.mean(-1, keepdims=True).repeat(3, -1) * 0.45
    out = grey.copy()
    wrong = pred != target
    out[~wrong] = out[~wrong] * 0.6 + np.array([0, 110, 0])
    out[wrong] = np.array([230, 30, 30])
    if ignore_index is not None:
        out[target == ignore_index] = IGNORE_COLOUR
    return out.clip(0, 255).astype(np.uint8)


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font has one size
        return ImageFont.load_default()


def fit(image: np.ndarray, min_side: int, max_side: int, nearest: bool = True) -> np.ndarray:
    """Scale so that the short side is at least `min_side` (by a whole factor, pixels stay sharp) and the long side at
    most `max_side`."""
    h, w = image.shape[:2]
    scale = max(1, -(-min_side // min(h, w)))
    scale = min(scale, max(max_side / max(h, w), 1e-6)) if max(h, w) * scale > max_side else scale
    if scale == 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def legend(entries: Sequence[tuple[str, Sequence[int]]], width: int, font_size: int = 11) -> np.ndarray:
    """Colour swatches with class names, wrapped into rows `width` pixels wide."""
    font = _font(font_size)
    pad, box, row_h = 4, font_size, font_size + 6
    rows, x, y = [], pad, 0
    positions = []
    for name, colour in entries:
        w = box + 4 + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(name, font=font)) + 10
        if x + w > width and x > pad:
            x, y = pad, y + row_h
        positions.append((x, y, name, colour))
        x += w
    rows = y + row_h + pad
    canvas = Image.new("RGB", (width, rows), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for x, y, name, colour in positions:
        draw.rectangle([x, y + 3, x + box, y + 3 + box], fill=tuple(int(c) for c in colour), outline=(0, 0, 0))
        draw.text((x + box + 4, y + 2), name, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def titled(image: np.ndarray, title: str, font_size: int = 11) -> np.ndarray:
    """`image` with a one-line title above it."""
    h = font_size + 6
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + h), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, h))
    ImageDraw.Draw(canvas).text((3, 2), title, fill=(0, 0, 0), font=_font(font_size))
    return np.asarray(canvas)


def stack(images: Sequence[np.ndarray], axis: int, gap: int = 4) -> np.ndarray:
    """Images side by side (axis=1, tops aligned) or one below the other (axis=0, left edges aligned), with white
    gaps and white padding to the largest size across."""
    across = 1 - axis
    size = max(i.shape[across] for i in images)
    parts = []
    for k, im in enumerate(images):
        if k:
            gap_shape = [0, 0, 3]
            gap_shape[axis], gap_shape[across] = gap, size
            parts.append(np.full(gap_shape, 255, np.uint8))
        pad = [(0, 0), (0, 0), (0, 0)]
        pad[across] = (0, size - im.shape[across])
        parts.append(np.pad(im, pad, constant_values=255))
    return np.concatenate(parts, axis=axis)


def hstack(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    return stack(images, axis=1, gap=gap)


def vstack(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    return stack(images, axis=0, gap=gap)


def panel(
    image: np.ndarray,
    target: np.ndarray,
    pred: np.ndarray,
    palette: np.ndarray,
    names: Sequence[str],
    ignore_index: int | None = None,
    min_side: int = 128,
    max_side: int = 512,
) -> np.ndarray:
    """image | ground truth | prediction | error map at the sample's size (small images enlarged, large ones
    shrunk to `max_side`), with a legend of the classes present in ground truth or prediction."""
    cells = [
        image,
        colorize(target, palette, ignore_index),
        colorize(pred, palette),
        error_map(image, target, pred, ignore_index),
    ]
    cells = [fit(c, min_side, max_side) for c in cells]
    labels = ("image", "ground truth", "prediction", "error (red: wrong)")
    row = hstack([titled(c, t) for c, t in zip(cells, labels)])
    present = sorted(set(np.unique(target).tolist()) | set(np.unique(pred).tolist()))
    entries = [(names[c], palette[c]) for c in present if 0 <= c < len(names)]
    if ignore_index is not None and (target == ignore_index).any():
        entries.append(("ignored", IGNORE_COLOUR))
    return vstack([row, legend(entries, row.shape[1])])


def jet(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 of the 'jet' colour map (blue, cyan, yellow, red)."""
    v = np.clip(values, 0, 1)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55, point: tuple[float, float] | None = None):
    """`heat` (any 2-D size, any range) normalised to [0, 1], resized bilinearly to the image, blended over it;
    `point` (y, x as fractions) is marked with a white cross (a query position)."""
    h, w = image.shape[:2]
    heat = np.asarray(heat, np.float32)
    lo, hi = float(heat.min()), float(heat.max())
    heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    heat = np.asarray(Image.fromarray(heat).resize((w, h), Image.BILINEAR))
    out = (image * (1 - alpha) + jet(heat) * alpha).astype(np.uint8)
    if point is not None:
        canvas = Image.fromarray(out)
        y, x = point[0] * h, point[1] * w
        r = max(2, min(h, w) // 16)
        draw = ImageDraw.Draw(canvas)
        draw.line([x - r, y, x + r, y], fill=(255, 255, 255), width=max(1, r // 3))
        draw.line([x, y - r, x, y + r], fill=(255, 255, 255), width=max(1, r // 3))
        out = np.asarray(canvas)
    return out


def normalize_rows(confmat: np.ndarray) -> np.ndarray:
    """Each row (a ground-truth class) divided by its pixel count; rows of absent classes stay 0."""
    cm = np.asarray(confmat, np.float64)
    rows = cm.sum(1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def top_confused(confmat: np.ndarray, k: int) -> list[tuple[int, int, int, float]]:
    """The k off-diagonal (ground truth, prediction) pairs with the most pixels: (gt, pred, pixels, share of the gt
    class's pixels), most pixels first."""
    cm = np.asarray(confmat, np.int64)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = cm.sum(1)
    pairs = []
    for flat in order:
        i, j = divmod(int(flat), cm.shape[1])
        if off[i, j] == 0:
            break
        pairs.append((i, j, int(off[i, j]), float(off[i, j] / rows[i])))
    return pairs


def confusion_classes(confmat: np.ndarray, max_classes: int) -> list[int]:
    """The classes the heat map shows: all when there are at most `max_classes`; otherwise those of the most
    confused pairs, in order of their pixel share."""
    cm = np.asarray(confmat)
    n = cm.shape[0]
    if n <= max_classes:
        return list(range(n))
    chosen: list[int] = []
    for i, j, _, _ in top_confused(cm, 4 * max_classes):
        for c in (i, j):
            if c not in chosen and len(chosen) < max_classes:
                chosen.append(c)
    share = cm.sum(1)
    return sorted(chosen, key=lambda c: -share[c])


def confusion_image(confmat: np.ndarray, names: Sequence[str], max_classes: int = 40, cell: int = 0) -> np.ndarray:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction), blue = 0 to red = 1, with class
    names on both axes and the percentage in each cell when there is room. With more than `max_classes` classes,
    only those of the most confused pairs (see `confusion_classes`)."""
    classes = confusion_classes(confmat, max_classes)
    norm = normalize_rows(confmat)[np.ix_(classes, classes)]
    n = len(classes)
    cell = cell or max(12, min(40, 480 // max(n, 1)))
    font = _font(11)
    label_w = 8 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(names[c], font=font)) for c in classes)
    title_h = 18
    size = (label_w + n * cell + 4, title_h + label_w + n * cell + 4)
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    shown = "" if n == len(names) else f" ({n} most confused of {len(names)} classes)"
    draw.text((2, 2), f"rows: ground truth, columns: prediction{shown}", fill=(0, 0, 0), font=font)
    colours = jet(norm)
    x0, y0 = label_w, title_h + label_w
    for r in range(n):
        draw.text((2, y0 + r * cell + (cell - 11) // 2), names[classes[r]], fill=(0, 0, 0), font=font)
        for c in range(n):
            box = [x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell - 1, y0 + (r + 1) * cell - 1]
            draw.rectangle(box, fill=tuple(int(v) for v in colours[r, c]))
            if cell >= 28 and norm[r, c] >= 0.01:
                ink = (255, 255, 255) if norm[r, c] < 0.3 or norm[r, c] > 0.85 else (0, 0, 0)
                draw.text((box[0] + 2, box[1] + cell // 2 - 6), f"{100 * norm[r, c]:.0f}", fill=ink, font=font)
    for c in range(n):  # column names, written vertically
        text = Image.new("RGB", (label_w, cell), (255, 255, 255))
        ImageDraw.Draw(text).text((4, (cell - 11) // 2), names[classes[c]], fill=(0, 0, 0), font=font)
        canvas.paste(text.rotate(90, expand=True), (x0 + c * cell, title_h))
    return np.asarray(canvas)
