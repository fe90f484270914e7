"""Reusable pieces of the entry points: building from config, reports, checks, seeding."""

from src.utils import precision  # noqa: F401  (registers the ${precision:...} config resolver)
