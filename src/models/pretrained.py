"""Weights from elsewhere: a local file (`model.pretrained=PATH`) and the online hubs (`model.encoder_weights=...`).

`load_pretrained(net, path)` reads a plain state dict (`torch.save(model.state_dict())`), a safetensors file, a
model folder written by `python -m src.export format=folder`, or a Lightning checkpoint of this template (weights
under `state_dict`, prefixed `net.`), finds how the file's keys line up with the network's (the whole network, the
wrapped model, or only its encoder, e.g. an encoder file downloaded from the hub by hand), reports missing and
unexpected keys, and refuses tensors whose shape differs from the network's unless `skip_mismatched=True` (those
keep the network's initial values, e.g. a new head with another class count).

`hub_download(what, fallback)` wraps code that may download from the Hugging Face hub: when the hub cannot be
reached it switches the hub client offline, so that the download fails at once instead of retrying for half a
minute (weights already in the local cache still load), and turns the failure into a `UserError` saying how to
load a local file instead.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from src.errors import UserError, existing_file

log = logging.getLogger(__name__)

# how the keys of a file may be placed in the network (SegmentationNet): as they are, under the wrapped network,
# under its encoder (an smp encoder file), under a timm encoder's model (a timm checkpoint)
KEY_PREFIXES = ("", "net.", "net.encoder.", "net.encoder.model.")
HUB_TIMEOUT_S = 3.0
FOLDER_WEIGHTS = "model.safetensors"  # the weights file of a model folder (src/models/export.py)


@dataclass
class LoadReport:
    """What `load_pretrained` did: keys loaded, the network's keys the file lacks, the file's keys the network
    lacks, and (with skip_mismatched) the keys skipped for their shape."""

    path: str
    prefix: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"model.pretrained={self.path}: loaded {len(self.loaded)} tensors"
            + (f" (file keys placed under '{self.prefix}')" if self.prefix else "")
        ]
        for name, keys in (
            ("missing in the file (keep their initial values)", self.missing),
            ("in the file but not in the network (ignored)", self.unexpected),
            ("skipped for their shape (keep their initial values)", self.skipped),
        ):
            if keys:
                lines.append(f"  {len(keys)} {name}: {_short(keys)}")
        return "\n".join(lines)


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def check_pretrained_path(path: str | Path | None) -> Path | None:
    """Fails before any network is built when model.pretrained names no file (or model folder)."""
    if path is not None and Path(path).expanduser().is_dir():  # a model folder of `python -m src.export format=folder`
        return existing_file(
            Path(path).expanduser() / FOLDER_WEIGHTS,
            "model.pretrained",
            "A folder given as model.pretrained is a model folder written by python -m src.export format=folder.",
        )
    return existing_file(
        path,
        "model.pretrained",
        "Give a state dict (.pt/.pth), a .safetensors file or a checkpoint of this template "
        "(<run dir>/checkpoints/*.ckpt).",
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; a Lightning checkpoint gives its network's weights (without the `net.` of
    the LightningModule attribute)."""
    path = Path(path)
    if path.is_dir():  # a model folder (python -m src.export format=folder): its weights file
        path = path / FOLDER_WEIGHTS
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem means the same thing to the user
        raise UserError(f"model.pretrained={path}: cannot read it as a PyTorch weights file ({err}).") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning checkpoint
        obj = {k[len("net.") :]: v for k, v in obj["state_dict"].items() if k.startswith("net.")}
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # {"model": state_dict, ...} (timm, others)
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"model.pretrained={path}: holds no state dict (a mapping of names to tensors).")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DistributedDataParallel saves "module."


def load_pretrained(net: nn.Module, path: str | Path, skip_mismatched: bool = False) -> LoadReport:
    """Loads the weights file `path` into `net` in place (see the module docstring); returns what it did."""
    weights = read_state_dict(path)
    own = net.state_dict()
    prefix = max(KEY_PREFIXES, key=lambda p: sum(p + k in own for k in weights))
    placed = {prefix + k: v for k, v in weights.items()}
    common = [k for k in placed if k in own]
    if not common:
        raise UserError(
            f"model.pretrained={path}: none of its {len(weights)} keys matches the network's "
            f"(file: {_short(list(weights), 3)}; network: {_short(list(own), 3)}). "
            "Is it the weights of another architecture or encoder?"
        )
    mismatched = [k for k in common if placed[k].shape != own[k].shape]
    if mismatched and not skip_mismatched:
        shapes = "; ".join(f"{k}: file {tuple(placed[k].shape)} vs network {tuple(own[k].shape)}" for k in mismatched)
        raise UserError(
            f"model.pretrained={path}: {len(mismatched)} tensors have another shape than the "
            f"network's: {shapes}. If that is intended (e.g. a new head for another number of "
            "classes), add model.skip_mismatched=true to keep the network's initial values for them."
        )
    report = LoadReport(
        str(path),
        prefix,
        loaded=[k for k in common if k not in mismatched],
        missing=[k for k in own if k not in placed],
        unexpected=[k for k in placed if k not in own],
        skipped=mismatched,
    )
    net.load_state_dict({k: placed[k] for k in report.loaded}, strict=False)
    log.info(report.summary())
    return report


def _reachable(url: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the server at `url` answers an HTTP HEAD request (any status) within `timeout` seconds."""
    result = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            result.append(True)
        except urllib.error.HTTPError:  # it answered, if only with an error status
            result.append(True)
        except Exception:  # noqa: BLE001 - name lookup, refused, timed out, TLS: all mean "not reachable"
            pass

    thread = threading.Thread(target=probe, daemon=True)  # the name lookup itself has no timeout
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result)


def check_reachable(url: str, what: str, fallback: str) -> None:
    """Fail at once (UserError naming `what` and `fallback`) when the host of a download `url` is unreachable."""
    if not _reachable(url):
        raise UserError(
            f"{what}: cannot download {url} (not reachable within {HUB_TIMEOUT_S:.0f} s) and it is not "
            f"in the local cache. {fallback}"
        )


@contextmanager
def hub_download(what: str, fallback: str):
    """Run downloads from the Hugging Face hub inside; if the hub is unreachable, fail at once with a UserError
    naming `what` (e.g. "model.encoder_weights=imagenet for encoder resnet18") and how to do without (`fallback`)."""
    from huggingface_hub import constants

    was_offline = constants.HF_HUB_OFFLINE
    offline = was_offline or not _reachable(constants.ENDPOINT)
    constants.HF_HUB_OFFLINE = offline
    try:
        yield
    except OSError as err:  # huggingface_hub's LocalEntryNotFoundError / OfflineModeIsEnabled, socket errors
        reason = (
            "offline mode (HF_HUB_OFFLINE) is on"
            if was_offline
            else (f"{constants.ENDPOINT} is not reachable" if offline else f"the download failed: {err}")
        )
        raise UserError(
            f"{what}: cannot download the weights ({reason}) and they are not in the local cache. {fallback}"
        ) from err
    finally:
        constants.HF_HUB_OFFLINE = was_offline
