"""The loggers of a run, from `cfg.logger`: W&B needs no account, never waits, and keeps its run across resumes.

- No API key configured (no WANDB_API_KEY, no `wandb login` entry in ~/.netrc) and no WANDB_MODE set: W&B logs
  offline into the run folder (W&B itself would stop at an interactive prompt); one log line says so and how to
  upload the run later with `wandb sync`.
- A key but the W&B server unreachable: offline as well, decided within seconds (W&B itself retries for minutes).
- Run name, group and tags follow the experiment when the config leaves them null (see configs/logger/wandb.yaml).
- Resuming from a checkpoint of a W&B run (`ckpt_path=.../last.ckpt`): the same W&B run id, so the resumed
  training continues that run (src/callbacks/run_identity.py stores the id in every checkpoint).
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

RUN_FILE = "wandb_run.json"  # in the run folder: the W&B run's id, mode and last step (src/callbacks/run_identity.py)
PROBE_SECONDS = 5.0


def logger_configs(cfg: DictConfig) -> list[DictConfig]:
    """The `_target_` entries of `cfg.logger`, the W&B one completed by `wandb_settings`."""
    out = []
    for entry in (cfg.get("logger") or {}).values():
        if not (isinstance(entry, DictConfig) and "_target_" in entry):
            continue
        if str(entry._target_).endswith("WandbLogger"):
            entry = entry.copy()
            with open_dict(entry):
                for key, value in wandb_settings(cfg, entry).items():
                    entry[key] = value
        out.append(entry)
    return out


def wandb_settings(cfg: DictConfig, entry: DictConfig) -> dict:
    """Settings the WandbLogger gets besides its config: offline when W&B cannot be reached, name/group/tags from the
    experiment, and the run id to resume."""
    out: dict = {}
    if not entry.get("offline") and not os.environ.get("WANDB_MODE"):
        reason = offline_reason()
        if reason:
            out["offline"] = True
            folder = Path(entry.get("save_dir") or ".") / "wandb"
            log.warning(
                "W&B: %s; logging offline into %s. Upload later with: wandb sync %s",
                reason,
                folder,
                folder / "offline-run-*",
            )
    out.update(run_names(cfg, entry))
    run_id = previous_run_id(cfg.get("ckpt_path")) if cfg.get("task_name") == "train" else None  # not eval's
    if run_id and not entry.get("id") and not entry.get("version"):
        out["id"], out["resume"] = run_id, "allow"
        log.info("W&B: resuming run %s (from the checkpoint)", run_id)
    return out


def offline_reason() -> str | None:
    """Why W&B cannot log online here (no API key, server unreachable), or None when it can."""
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = urlparse(base).hostname or "api.wandb.ai"
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has(host):
        return "no API key configured (WANDB_API_KEY or `wandb login`)"
    port = urlparse(base).port or (80 if base.startswith("http://") else 443)
    if not reachable(host, port, PROBE_SECONDS):
        return f"{host} is not reachable"
    return None


def _netrc_has(host: str) -> bool:
    try:
        path = os.environ.get("NETRC") or None
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to host:port opens within `timeout` seconds (name lookup included: it runs in a
    thread, since a lookup can block longer than any socket timeout)."""
    result: list[bool] = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def run_names(cfg: DictConfig, entry: DictConfig) -> dict:
    """name, group and tags of the W&B run where the config leaves them null: the experiment's name (or
    <model>-<data> without one) as name and group, and tags `data:...`, `model:...`, `loss:...` added to cfg.tags."""
    choices = _choices(cfg)
    experiment = choices.get("experiment")
    default = (
        experiment or "-".join(str(choices[k]) for k in ("model", "data") if choices.get(k)) or cfg.get("task_name")
    )
    out = {}
    if entry.get("name") is None:
        out["name"] = default
    if entry.get("group") is None:
        out["group"] = experiment or cfg.get("task_name")
    tags = list(entry.get("tags") or [])
    tags += [
        f"{k}:{choices[k]}" for k in ("data", "model", "loss") if choices.get(k) and f"{k}:{choices[k]}" not in tags
    ]
    out["tags"] = tags
    return out


def _choices(cfg: DictConfig) -> dict:
    """Hydra's chosen config names (experiment, data, model, ...), from the composed config or the running app."""
    try:
        choices = cfg.hydra.runtime.choices
        return {str(k): v for k, v in OmegaConf.to_container(choices).items()}
    except Exception:  # noqa: BLE001  (no Hydra config in this cfg)
        pass
    try:
        from hydra.core.hydra_config import HydraConfig

        return {str(k): v for k, v in OmegaConf.to_container(HydraConfig.get().runtime.choices).items()}
    except Exception:  # noqa: BLE001
        return {}


def previous_run_id(ckpt_path: str | None) -> str | None:
    """The W&B run id of the training that wrote `ckpt_path`: stored in the checkpoint by RunIdentity, or in the
    run folder it lies in (<run dir>/checkpoints/x.ckpt -> <run dir>/wandb_run.json)."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return None
    state = checkpoint_run_state(ckpt_path)
    return state.get("id") or run_file(Path(ckpt_path)).get("id")


def checkpoint_run_state(ckpt_path: str | Path) -> dict:
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001  (not a zip checkpoint: read it without mmap)
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    for state in (ckpt.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("wandb_run_id"):
            return {"id": state["wandb_run_id"], "step": state.get("wandb_step", 0)}
    return {}


def run_file(ckpt_path: Path) -> dict:
    """The wandb_run.json of the run folder a checkpoint lies in ({} when there is none)."""
    path = ckpt_path.resolve().parent.parent / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
