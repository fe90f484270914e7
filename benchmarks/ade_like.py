"""Write an ADE20K-layout copy of a CamVid-layout dataset, to measure the ADE20K training pipeline without ADE20K.

    python benchmarks/ade_like.py SRC DST [short=512] [count=120]

SRC holds CamVid's train/ and trainannot/ (SegNet's layout); DST becomes DST/ADEChallengeData2016 with
images/training/ADE_train_%08d.jpg (JPEG, quality 90, as ADE20K ships its images) resized so the short side is
`short` (ADE20K's images are mostly 512 on the short side), and annotations/training/ADE_train_%08d.png (the class
indices + 1; CamVid's "unlabelled" 11 becomes ADE20K's 0, "other"), resized with nearest neighbour. The first
`count` frames are written, and the first of them again as validation/. Then:

    python benchmarks/data.py data=ade20k data.data_dir=DST/ADEChallengeData2016 workers=0

Only for measuring: the copy inherits the source's licence (CamVid: CC BY-NC), so write it outside the project.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.settings import split_args  # noqa: E402

UNLABELLED = 11  # CamVid's ignore value


def write(src: Path, dst: Path, short: int, count: int) -> Path:
    root = dst / "ADEChallengeData2016"
    frames = sorted((src / "train").glob("*.png"))[:count]
    if not frames:
        raise SystemExit(f"{src}/train/: no PNG frames (expected CamVid in SegNet's layout)")
    for split, prefix, chosen in (("training", "train", frames), ("validation", "val", frames[:1])):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(chosen, 1):
            image = cv2.imread(str(frame), cv2.IMREAD_COLOR)
            mask = cv2.imread(str(src / "trainannot" / frame.name), cv2.IMREAD_UNCHANGED)
            if image is None or mask is None:
                raise SystemExit(f"{frame}: unreadable, or {src / 'trainannot' / frame.name} missing")
            h, w = image.shape[:2]
            size = (round(w * short / min(h, w)), round(h * short / min(h, w)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
            ade = np.where(mask == UNLABELLED, 0, mask.astype(np.int64) + 1).astype(np.uint8)
            name = f"ADE_{prefix}_{i:08d}"
            cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            cv2.imwrite(str(root / "annotations" / split / f"{name}.png"), ade)
    return root


if __name__ == "__main__":
    settings, paths = split_args(sys.argv[1:], {"short": "512", "count": "120"})
    if len(paths) != 2:
        raise SystemExit(__doc__)
    print(write(Path(paths[0]), Path(paths[1]), int(settings["short"]), int(settings["count"])))
