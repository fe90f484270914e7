"""The user-error types and the one-line exit: the bottom layer, importing nothing of the project.

A user's mistake (a wrong value, a missing or malformed file) raises `UserError` (or `DataError` for the data) with a
message that names the key or file and the fix; every entry point runs through `exit_on_user_error`, which prints it
as one line and exits with status 2, no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """A mistake in the command or config (a wrong value); the message names the key or file and the fix."""


class DataError(UserError):
    """A problem with the user's data: the message names the file or key and the fix."""


class Stopped(Exception):
    """The run was stopped from outside (SIGTERM from a scheduler or `kill`); the message says what was saved."""

    signum = 15


def existing_file(path: str | Path | None, key: str, hint: str, kind: str = "file") -> Path | None:
    """`path` as a Path if it names a file; None stays None; otherwise a UserError naming `key`, then `hint`."""
    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"{key}={path}: no such {kind}. {hint}")
    return file


def user_message(err: UserError) -> str:
    """The message of `err`; one raised in a DataLoader worker comes back as "Caught DataError in DataLoader worker
    process 0. Original Traceback ...: DataError: <message>": keep the message, drop the worker's traceback."""
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:
        marker = f"{type(err).__name__}: "
        if marker in text:
            text = text[text.rindex(marker) + len(marker) :].rstrip()
    return text


def exit_on_user_error(fn: Callable[..., T], *args) -> T:
    """Run an entry point; a user's mistake prints one line (`error: ...`) and exits with status 2, no traceback.

    A stop by SIGTERM (Lightning raises its SIGTERMException, a SystemExit with status 0, after saving what its
    callbacks save) prints one line and exits with 128 + 15, as a process killed by SIGTERM does: never 0.
    """
    try:
        return fn(*args)
    except UserError as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        sys.exit(2)
    except Stopped as err:
        print(f"stopped: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except SystemExit as err:
        if type(err).__name__ != "SIGTERMException":
            raise
        print("stopped: SIGTERM received; nothing more was done.", file=sys.stderr)
        sys.exit(128 + Stopped.signum)
