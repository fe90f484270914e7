"""Building a run from a composed config: the one composition module every entry point uses.

train, eval, tune, check, summary (and predict/export) all build their objects here, so that a dataset is validated
before any long work, Hydra's instantiation errors are unwrapped into the user's one-line message, and a run never
writes over an earlier one, in one place. This module wires the layers below it (data, models, losses, metrics,
utils); none of them imports it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from lightning import Callback
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from src.errors import UserError, existing_file
from src.models.module import SegmentationModule


def instantiate(cfg, **kwargs):
    """`hydra.utils.instantiate` that lets a user's mistake (a `UserError` raised while building) come out as is,
    not wrapped in Hydra's InstantiationException with a long traceback."""
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None:
            if isinstance(cause, UserError):
                raise cause from None
            cause = cause.__cause__
        raise


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a config group that holds several (callbacks, loggers)."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def build_datamodule(cfg: DictConfig, validate: bool = True):
    """The DataModule of `cfg.data`; with `validate`, its files are checked before anything else happens."""
    datamodule = instantiate(cfg.data, _convert_="partial")
    if validate:
        datamodule.validate()
    return datamodule


def build_module(cfg: DictConfig, datamodule, inferer=None) -> SegmentationModule:
    """The LightningModule: network, loss, optimizer and schedule from `cfg`, labels from the datamodule;
    `inferer` (see build_inferer) is how its evaluation steps apply the network (None: one whole-image pass).

    A loss that needs per-pixel inputs computed from the mask in the data pipeline (e.g. a boundary weight map)
    names them in `loss.sample_extras()`; they are handed to the training dataset here.
    """
    loss = instantiate(cfg.loss)
    if hasattr(loss, "sample_extras"):
        datamodule.sample_extras.update(loss.sample_extras())
    return SegmentationModule(
        net=instantiate(cfg.model),
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        ignore_index=datamodule.ignore_index,
        run_config=OmegaConf.to_container(cfg, resolve=True),
        inferer=inferer,
        **OmegaConf.to_container(cfg.get("module") or OmegaConf.create({}), resolve=True),
    )


def build_inferer(infer_cfg: DictConfig | None, run_cfg: DictConfig, datamodule):
    """The `infer` config group as an `Inferer` (src/models/infer.py) for the run `run_cfg`: a sliding window
    without `crop` takes the run's training crop (`data.crop_size`), and the dense CRF learns the pipeline's
    normalisation (to see the RGB image again)."""
    if infer_cfg is None:
        return None
    infer_cfg = infer_cfg.copy()
    with open_dict(infer_cfg):
        if infer_cfg.get("slide") and infer_cfg.get("crop") is None:
            crop = run_cfg.data.get("crop_size")
            if crop is None:
                raise UserError(
                    "infer=slide: this run's data config has no crop_size; give the window with infer.crop=[h,w]."
                )
            infer_cfg.crop = list(crop)
        infer_cfg.mean, infer_cfg.std = normalisation(datamodule)
    return instantiate(infer_cfg, _convert_="all")


def normalisation(datamodule) -> tuple[list[float], list[float]]:
    """(mean, std) per channel in 0..255 units of the images the network sees: the datamodule's own `mean`/`std`
    if it has them, else the `Normalize` step of its evaluation pipeline, else the 1/255 scaling of SegDataset."""
    if getattr(datamodule, "mean", None) is not None and getattr(datamodule, "std", None) is not None:
        return [float(v) for v in datamodule.mean], [float(v) for v in datamodule.std]
    for step in getattr(datamodule.eval_transform, "transforms", []) or []:
        if type(step).__name__ == "Normalize":
            scale = float(step.max_pixel_value or 1.0)
            mean, std = (list(v) if hasattr(v, "__len__") else [v] * 3 for v in (step.mean, step.std))
            return [float(m) * scale for m in mean], [float(s) * scale for s in std]
    return [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]


def build_trainer(cfg: DictConfig, extra_callbacks: list[Callback] = ()):
    callbacks: list[Callback] = instantiate_list(cfg.get("callbacks")) + list(extra_callbacks)
    loggers: list[Logger] = instantiate_list(cfg.get("logger"))
    if not loggers:  # `logger=none`: LearningRateMonitor would stop the run ("Cannot use ... without a logger")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def finish_loggers(trainer) -> None:
    """Close the W&B run when a task ends (Lightning finalizes its loggers but leaves the W&B run open), so that the
    next run of a sweep, or of the same Python session, starts its own W&B run instead of logging into this one."""
    if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        wandb.finish()


def check_ckpt(ckpt_path: str | Path | None, key: str = "ckpt_path") -> Path | None:
    return existing_file(
        ckpt_path,
        key,
        "Checkpoints of a run are in <run dir>/checkpoints/ (best: epoch*.ckpt, latest: last.ckpt).",
        kind="checkpoint file",
    )


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


def stored_run_config(ckpt_path: Path) -> DictConfig:
    """The resolved training config stored in a checkpoint of this template."""
    return OmegaConf.create(read_checkpoint(ckpt_path)["run_config"])


def read_checkpoint(ckpt_path: Path) -> dict:
    """A checkpoint of this template (its `run_config` and `state_dict`); a UserError naming the file otherwise."""
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - not a torch file at all: the same message for every reason
        raise UserError(f"{ckpt_path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}).") from err
    if not isinstance(ckpt, dict) or "run_config" not in ckpt:
        raise UserError(
            f"{ckpt_path} holds no run config: it was not written by src.train of this template. "
            "Evaluate it through a training config instead: python -m src.train ... "
            f"model.pretrained={ckpt_path} trainer.max_epochs=0."
        )
    return ckpt


def load_trained(path: str | Path, key: str = "ckpt_path"):
    """(run config, network in eval mode with the trained weights, datamodule) from a checkpoint of this template
    or a model folder written by `python -m src.export format=folder`; nothing is downloaded (initial weights named
    in the stored config are not loaded: the trained ones replace them) and the dataset's files are not needed."""
    from src.models.export import FOLDER_CONFIG, read_model_folder

    path = Path(path).expanduser()
    if path.is_dir():
        run_cfg, state = read_model_folder(path, key)
    else:
        path = check_ckpt(path, key)
        ckpt = read_checkpoint(path)
        run_cfg = OmegaConf.create(ckpt["run_config"])
        state = {k[len("net.") :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("net.")}
    with open_dict(run_cfg):
        for name in ("pretrained", "encoder_weights"):
            if name in run_cfg.model:
                run_cfg.model[name] = None
    net = instantiate(run_cfg.model)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(
            f"{key}={path}: its weights do not fit the network its config describes ({str(err).splitlines()[0]}). "
            f"Is {FOLDER_CONFIG if path.is_dir() else 'the checkpoint'} from another version of the template?"
        ) from err
    datamodule = build_datamodule(run_cfg, validate=False)
    return run_cfg, net.eval(), datamodule
