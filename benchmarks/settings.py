"""The command line of the key=value benchmarks (data.py, step.py): their own settings, and the rest as
`python -m src.train` overrides."""

from __future__ import annotations


def split_args(argv: list[str], defaults: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(settings: `defaults` updated by the arguments that name one of its keys, the other arguments as config
    overrides)."""
    settings, overrides = dict(defaults), []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in settings:
            settings[key] = value
        else:
            overrides.append(arg)
    return settings, overrides
