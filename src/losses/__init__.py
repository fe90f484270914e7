"""Segmentation losses, chosen with `loss=<name>` (configs/loss/); see base.py for the shared contract."""

from src.losses.base import SegLoss, load_class_weights
from src.losses.boundary import UNetBoundaryCE, unet_weight_map
from src.losses.ce import CrossEntropy, OhemCrossEntropy
from src.losses.combo import WeightedSum
from src.losses.region import Dice, Focal, Jaccard, Lovasz, Tversky

__all__ = [
    "CrossEntropy",
    "Dice",
    "Focal",
    "Jaccard",
    "Lovasz",
    "OhemCrossEntropy",
    "SegLoss",
    "Tversky",
    "UNetBoundaryCE",
    "WeightedSum",
    "load_class_weights",
    "unet_weight_map",
]
