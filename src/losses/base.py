"""What every loss here shares: the call signature, the dict it returns, ignored pixels, class weights.

A loss is called as `loss(logits (N,C,H,W), target (N,H,W) long, weight=None)`, where `weight` is an optional
per-pixel map (N,H,W) computed in the data pipeline (see `sample_extras`), and returns
`{"loss": total, "loss_<name>": total}` (a weighted sum returns one entry per term). Pixels whose target is
`ignore_index` take part in neither the value nor the gradient; a batch with no labelled pixel gives 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from src.errors import UserError

ClassWeights = Sequence[float] | str | Path | None


class SegLoss(nn.Module):
    """Base class: subclasses set `name` and implement `compute(logits, target, weight) -> scalar`.

    `compute` only sees batches with at least one labelled pixel.
    """

    name = "loss"

    def __init__(self, ignore_index: int = 255):
        super().__init__()
        self.ignore_index = ignore_index

    def compute(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def value(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar loss (what a weighted sum adds up)."""
        target = target.long()  # batches carry uint8 masks
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0  # nothing labelled: zero value, zero gradient (not NaN)
        return self.compute(logits, target, weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> dict:
        total = self.value(logits, target, weight)
        return {"loss": total, f"loss_{self.name}": total.detach()}

    def sample_extras(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """Per-pixel inputs this loss needs, computed from each training mask in the DataLoader workers."""
        return {}


def load_class_weights(class_weights: ClassWeights, num_classes: int | None) -> torch.Tensor | None:
    """One weight per class, from a list or from the JSON file `python -m src.check` writes.

    The file holds `{"dataset", "method", "class_names", "weights", "pixel_counts"}`. A vector whose length is not
    `num_classes` (data.num_classes), a missing file or a negative weight raise `UserError` naming the source.
    """
    if class_weights is None:
        return None
    where = "set it with loss.class_weights (or loss.terms.<term>.class_weights in a weighted sum such as ce_dice)"
    if isinstance(class_weights, (str, Path)):
        path = Path(class_weights).expanduser()
        if not path.is_file():
            raise UserError(
                f"loss.class_weights={class_weights}: no such file. Write it with "
                "`python -m src.check` (it saves the class weights of the training split), "
                "or give a list of weights, one per class."
            )
        try:
            data = json.loads(path.read_text())
            values = data["weights"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(
                f"{path} is not a class-weight file (a JSON object with a 'weights' list, as "
                f"`python -m src.check` writes): {err!r}"
            ) from None
        source = f"the class-weight file {path} (dataset {data.get('dataset')!r}, method {data.get('method')!r})"
        fix = (
            "write the file again with `python -m src.check` for this dataset, or point "
            "loss.class_weights to the file of this dataset"
        )
    else:
        values = list(class_weights)
        source = f"the class-weight list {values}"
        fix = f"give one weight per class, in class order ({where})"
    if num_classes is not None and len(values) != num_classes:
        raise UserError(f"{source} has {len(values)} weights but data.num_classes is {num_classes}: {fix}.")
    try:
        weights = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise UserError(f"{source} holds a value that is not a number: {fix}.") from None
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise UserError(f"{source} holds a negative or non-finite weight ({weights.tolist()}): {fix}.")
    return weights
