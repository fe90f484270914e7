"""Helpers below the composition layer: composing configs from Python, reports (tables, metrics.json), precision."""

from src.utils import precision  # noqa: F401  (registers the ${precision:...} config resolver)
