"""Files written whole or not at all: a write goes to a temporary file beside its final name, then is renamed.

A full disk, a crash or a kill in the middle of a write leaves the earlier file as it was (or no file), never a
truncated one: the rename (`os.replace`) is atomic on one file system. Checkpoints go through `AtomicCheckpointIO`
(a Lightning CheckpointIO plugin), metrics.json, class-weight files and finder results through `atomic_write`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.errors import UserError


def _write_via_temp(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        kept = "the earlier file is unchanged" if path.exists() else "nothing was written"
        raise UserError(
            f"{path}: cannot be written ({err.strerror or err}); {kept}. Free space or choose another folder."
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` whole or not at all (temporary file + rename); an OSError becomes a UserError."""
    payload = data.encode() if isinstance(data, str) else data
    _write_via_temp(Path(path), lambda f: f.write(payload))


def write_json_new(path: str | Path, obj: Any, what: str, hint: str) -> None:
    """Write `obj` as JSON to `path`, refusing to replace a different file there (the same content is fine).

    `what` names the file for the message (e.g. "class-weight file"), `hint` says how to write elsewhere.
    """
    path = Path(path)
    text = json.dumps(obj, indent=2)
    if path.exists() and path.read_text(errors="replace") != text:
        raise UserError(f"{path}: a {what} with other content is already there; nothing is overwritten. {hint}")
    atomic_write(path, text)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, but a checkpoint is complete or absent: saved to `.<name>.<pid>.tmp`
    beside its final name, then renamed over it, so the previous `last.ckpt` stays whole until the new one is."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        buffer = io.BytesIO()  # serialised first (as Lightning does): a failing write is then a plain OSError
        torch.save(checkpoint, buffer)
        _write_via_temp(Path(path), lambda f: f.write(buffer.getbuffer()))
