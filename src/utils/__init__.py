"""Helpers below the composition layer: composing configs from Python, reports (tables, metrics.json), precision,
cluster settings."""

from src.utils import cluster, precision  # noqa: F401  (register the ${precision:...} and ${cluster_*:...} resolvers)
