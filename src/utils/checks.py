"""Checks that run before any long work, so a user's mistake ends in one clear message, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """A mistake in the command or config (a wrong value); the message names the key or file and the fix.

    The entry points print it as one line and exit with status 2 (`exit_on_user_error`)."""


def check_ckpt(ckpt_path: str | None, key: str = "ckpt_path") -> Path | None:
    if ckpt_path is None:
        return None
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise UserError(
            f"{key}={ckpt_path}: no such checkpoint file. Checkpoints of a run are in "
            "<run dir>/checkpoints/ (best: epoch*.ckpt, latest: last.ckpt)."
        )
    return path


def check_fresh_output(output_dir: str | Path) -> None:
    """Refuse to write a run into a folder that already holds another run's checkpoints or metrics."""
    out = Path(output_dir)
    taken = [p for p in (out / "checkpoints", out / "metrics.json") if p.exists() and (p.is_file() or any(p.iterdir()))]
    if taken:
        raise UserError(
            f"{out} already holds results of an earlier run ({taken[0].name}); nothing is overwritten. "
            "Choose another folder with hydra.run.dir=..., or resume that run with ckpt_path=.../last.ckpt "
            "(a resumed run writes to a new folder)."
        )


def exit_on_user_error(fn: Callable[..., T], *args) -> T:
    """Run an entry point; a user's mistake prints one line (`error: ...`) and exits with status 2, no traceback."""
    try:
        return fn(*args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
