"""Every run gets a folder of its own, claimed before Hydra writes anything into it.

Hydra names the run folder by the time to the second and creates it with `exist_ok=True`, so two runs started in
the same second (a shell loop, two users, a sweep) would share one folder, and a refused run would already have
rewritten the earlier run's `.hydra/*.yaml`. `ClaimRunDir` is a Hydra callback (configs/hydra/default.yaml): its
`on_run_start`/`on_multirun_start` run before Hydra creates the folder or saves the config. It claims the folder
with `os.mkdir`, which fails when the folder exists, so exactly one process gets it; a timestamped folder that is
taken gets a suffix (`_1`, `_2`, ...). A folder named explicitly (`hydra.run.dir=...`, `hydra.sweep.dir=...`) is used
only if it is new or empty (or with `ckpt_path=auto`, which continues its own run); otherwise the run stops there
with one line, before anything is written. A folder that cannot be created or written stops the run the same way,
with the path and the reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from src.errors import UserError

PROBE = ".write_test"


def _is_child_rank() -> bool:
    """A process started for another rank of the same run (Lightning's DDP children, torchrun, srun): the folder is
    rank 0's, already claimed."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "RANK", "SLURM_PROCID", "NODE_RANK"))


def _check_writable(folder: Path) -> None:
    probe = folder / PROBE
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UserError(
            f"{folder}: cannot write into the run folder ({err.strerror or err}). "
            "Free space, fix its permissions, or choose another with hydra.run.dir=..."
        ) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def _make_parents(folder: Path) -> None:
    blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(
            f"{folder}: the run folder cannot be created, {blocker} is a file. "
            "Choose another place with hydra.run.dir=... (or paths.log_dir=...)."
        )
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{folder}: the run folder cannot be created ({err.strerror or err}). "
            "Choose a writable place with hydra.run.dir=... (or paths.log_dir=...)."
        ) from None


def claim_dir(folder: str | Path, explicit: bool, resume: bool = False) -> Path:
    """Create `folder` for this process alone and return it (a new name with a suffix when a timestamped one is
    taken). An `explicit` folder that exists must be empty, unless `resume` (ckpt_path=auto continues its run)."""
    folder = Path(folder)
    _make_parents(folder)
    candidate, n = folder, 0
    while True:
        try:
            os.mkdir(candidate)
            break
        except FileExistsError:
            if explicit:
                if not candidate.is_dir():
                    raise UserError(
                        f"{candidate}: a file is there, not a run folder; choose another with hydra.run.dir=..."
                    ) from None
                if resume or not any(candidate.iterdir()):
                    break
                raise UserError(
                    f"{candidate} already holds another run ({sorted(p.name for p in candidate.iterdir())[0]}, ...); "
                    "nothing is overwritten. Choose a new folder with hydra.run.dir=... (or leave it out: each run "
                    "gets its own), or continue that run with ckpt_path=auto."
                ) from None
            n += 1
            candidate = folder.with_name(f"{folder.name}_{n}")
        except OSError as err:
            raise UserError(
                f"{candidate}: the run folder cannot be created ({err.strerror or err}). "
                "Choose a writable place with hydra.run.dir=... (or paths.log_dir=...)."
            ) from None
    _check_writable(candidate)
    return candidate


def _given(config: DictConfig, key: str) -> bool:
    """Whether the command line (or Lightning's DDP launcher) set `key` explicitly."""
    return any(str(o).split("=", 1)[0].lstrip("+~") == key for o in config.hydra.overrides.hydra)


class ClaimRunDir(Callback):
    """Hydra callback: claim `hydra.run.dir` (or `hydra.sweep.dir` for -m) before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._claim(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._claim(config, "sweep")

    def _claim(self, config: DictConfig, mode: str) -> None:
        if _is_child_rank():
            return
        key = f"hydra.{mode}.dir"
        try:
            folder = claim_dir(
                os.path.abspath(str(config.hydra[mode].dir)),
                explicit=_given(config, key),
                resume=str(OmegaConf.select(config, "ckpt_path", default=None, throw_on_missing=False)) == "auto",
            )
        except UserError as err:  # Hydra would print a traceback and exit 1: say it in one line, exit 2
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra[mode].dir = str(folder)
        if mode == "sweep":  # each job's config is composed again from these overrides (Hydra's load_sweep_config)
            with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
                config.hydra.overrides.hydra.append(f"{key}={folder}")
