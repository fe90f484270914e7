"""A weighted sum of losses: `loss=ce_dice`, or any terms with weights in config."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from src.errors import UserError
from src.losses.base import SegLoss


class WeightedSum(nn.Module):
    """`total = sum_k weights[k] * terms[k]`; returns `{"loss": total, "loss_<k>": term k (unweighted)}`.

    Args:
        terms: name -> loss (this package's losses); the name is the log key (`train/loss_<name>`).
        weights: name -> weight; a term without an entry has weight 1.

    Per-pixel inputs from the data pipeline (`weight`) go to every term (the set-level ones do not use them), and
    `sample_extras` collects those of all terms.
    """

    def __init__(self, terms: Mapping[str, SegLoss], weights: Mapping[str, float] | None = None):
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms.items()))
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.terms))
        if unknown:
            raise UserError(f"loss.weights names {unknown}, which are not among loss.terms {list(self.terms)}.")
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.terms}

    def forward(self, logits, target, **extras) -> dict:
        out = {}
        total = 0.0
        for name, term in self.terms.items():
            value = term.value(logits, target, **extras)
            out[f"loss_{name}"] = value.detach()
            total = total + self.weights[name] * value
        return {"loss": total, **out}

    def sample_extras(self) -> dict:
        extras = {}
        for term in self.terms.values():
            extras.update(term.sample_extras())
        return extras
