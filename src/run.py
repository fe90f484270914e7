"""Building a run from a composed config: the one composition module every entry point uses.

train, eval, tune, check, summary (and predict/export) all build their objects here, so that a dataset is validated
before any long work, Hydra's instantiation errors are unwrapped into the user's one-line message, and a run never
writes over an earlier one, in one place. This module wires the layers below it (data, models, losses, metrics,
utils); none of them imports it.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
from hydra.errors import InstantiationException
from lightning import Callback
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from src.callbacks.run_identity import identity_callbacks
from src.errors import UserError, existing_file
from src.models.module import SegmentationModule
from src.utils.io import AtomicCheckpointIO
from src.utils.loggers import logger_configs


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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_config(cfg: DictConfig) -> None:
    """Refuse values that cannot work, naming the key, before any data is read or any object is built.

    Batch sizes, workers, the train metrics' stride, the learning rate, the epoch budget of a training run,
    class-weight lists, and an accelerator that is not there. Keys a config does not have (e.g. src.check's) are
    skipped.
    """
    data = cfg.get("data") or {}
    for key in ("batch_size", "eval_batch_size"):
        value = data.get(key)
        if value is None and key == "eval_batch_size":
            continue
        if not _is_int(value) or value < 1:
            raise UserError(f"data.{key}={value}: must be a whole number of at least 1 (images per device and step).")
    workers = data.get("num_workers", 0)
    if not _is_int(workers) or workers < 0:
        raise UserError(f"data.num_workers={workers}: must be 0 (load in the main process) or more worker processes.")
    stride = (cfg.get("module") or {}).get("train_metrics_stride", 1)
    if not _is_int(stride) or stride < 1:
        raise UserError(
            f"module.train_metrics_stride={stride}: must be a whole number of at least 1 (1: train metrics on every "
            "pixel, k: on every k-th pixel of every k-th row)."
        )
    lr = (cfg.get("optimizer") or {}).get("lr")
    if "optimizer" in cfg and (not _is_number(lr) or lr <= 0):
        raise UserError(f"optimizer.lr={lr}: must be a number above 0, e.g. optimizer.lr=1e-3.")
    trainer = cfg.get("trainer") or {}
    epochs = trainer.get("max_epochs")
    if epochs is not None and (not _is_int(epochs) or epochs < -1):
        raise UserError(f"trainer.max_epochs={epochs}: must be a whole number (-1: no limit).")
    if cfg.get("task_name") == "train" and epochs == 0 and (trainer.get("max_steps") or -1) <= 0:
        raise UserError(
            "trainer.max_epochs=0: nothing would be trained. Give trainer.max_epochs=1 or more; to score a "
            "checkpoint use python -m src.eval ckpt_path=PATH."
        )
    loss = cfg.get("loss") or {}
    for where, node in [("loss", loss)] + [(f"loss.terms.{k}", v) for k, v in (loss.get("terms") or {}).items()]:
        weights = node.get("class_weights") if hasattr(node, "get") else None
        if OmegaConf.is_list(weights) and not all(_is_number(w) for w in weights):
            raise UserError(f"{where}.class_weights={list(weights)}: every weight must be a number, one per class.")
    accelerator = str(trainer.get("accelerator", ""))
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                f"trainer.accelerator={accelerator}: no GPU is visible to PyTorch (torch.cuda.is_available() is "
                "False; check nvidia-smi and CUDA_VISIBLE_DEVICES). To run on the CPU: trainer=cpu."
            )


def build_datamodule(cfg: DictConfig, validate: bool = True):
    """The DataModule of `cfg.data`; with `validate`, its files are checked before anything else happens.

    The config's values are checked first (`check_config`): this is the first thing every entry point builds.
    A loss that needs per-pixel inputs computed from each training mask in the data pipeline (e.g. the boundary
    weight map of `loss=unet_boundary`) names them in `loss.sample_extras()`; the DataModule is built with them.
    """
    check_config(cfg)
    extras = sample_extras(instantiate(cfg.loss)) if cfg.get("loss") else {}
    datamodule = instantiate(cfg.data, _convert_="partial", sample_extras=extras)
    if validate:
        datamodule.validate()
    return datamodule


def sample_extras(loss) -> dict:
    """What `loss` needs added to training samples (name -> fn(mask)); none for a loss without `sample_extras`."""
    return dict(loss.sample_extras()) if hasattr(loss, "sample_extras") else {}


def build_module(cfg: DictConfig, datamodule, inferer=None) -> SegmentationModule:
    """The LightningModule: network, loss, optimizer and schedule from `cfg`, labels from the datamodule;
    `inferer` (see build_inferer) is how its evaluation steps apply the network (None: one whole-image pass)."""
    loss = instantiate(cfg.loss)
    module = SegmentationModule(
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
    if cfg.get("trainer", {}).get("compile"):
        module.net.compile()  # in place: parameter names, checkpoints and the module's API stay as they are
    return module


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
    """(mean, std) per channel in 0..255 units of the images the network sees: the `Normalize` step of the
    evaluation pipeline when it normalises on the host, else the datamodule's device-side normalisation
    (`datamodule.batch_transform`, in 0..1 units), else the 1/255 scaling of SegDataset."""
    for step in getattr(datamodule.eval_transform, "transforms", []) or []:
        if type(step).__name__ == "Normalize":
            scale = float(step.max_pixel_value or 1.0)
            mean, std = (list(v) if hasattr(v, "__len__") else [v] * 3 for v in (step.mean, step.std))
            return [float(m) * scale for m in mean], [float(s) * scale for s in std]
    device = getattr(datamodule, "batch_transform", None)
    if device is not None:
        return [255.0 * float(v) for v in device.mean], [255.0 * float(v) for v in device.std]
    return [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]


def build_trainer(cfg: DictConfig, extra_callbacks: list[Callback] = ()):
    callbacks: list[Callback] = instantiate_list(cfg.get("callbacks")) + list(extra_callbacks)
    loggers: list[Logger] = [instantiate(c) for c in logger_configs(cfg)]  # W&B: offline without key/network
    callbacks += identity_callbacks(loggers)  # W&B run id in checkpoints: a resumed run continues the same run
    if not loggers:  # `logger=none`: LearningRateMonitor would stop the run ("Cannot use ... without a logger")
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.pop("compile", None)  # the template's option (build_module), not the Trainer's
    # the config's plugins (cluster=slurm: SLURMEnvironment without Lightning's auto-requeue) and checkpoints
    # written beside their final name and renamed: complete or absent, never truncated
    plugins = [instantiate(p) for p in trainer_cfg.pop("plugins", None) or []] + [AtomicCheckpointIO()]
    return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False, plugins=plugins)


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


def load_checkpoint(ckpt_path: Path, key: str = "ckpt_path") -> dict:
    """The checkpoint at `ckpt_path` on the CPU; a file that is not one (or is truncated) is a UserError."""
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, not a pickle, another format: torch raises many kinds
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{key}={ckpt_path}: not a readable checkpoint ({reason[:160]}); it may be truncated (an interrupted "
            "copy or a full disk). Use another checkpoint of that run, e.g. last.ckpt or the epoch*.ckpt beside it."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(
            f"{key}={ckpt_path}: not a Lightning checkpoint (no state_dict); a plain weights file goes into "
            "model.pretrained=PATH instead."
        )
    return ckpt


def check_weights_fit(ckpt: dict, ckpt_path: Path, module, fix: str, key: str = "ckpt_path") -> None:
    """Refuse a checkpoint whose tensors do not fit `module` (another model or another number of classes), with
    the first differing tensors named and `fix` (what to run instead)."""
    ours = module.state_dict()
    theirs = ckpt["state_dict"]
    shapes = [
        f"{k}: {list(theirs[k].shape)} in the checkpoint, {list(v.shape)} here"
        for k, v in ours.items()
        if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    missing = [k for k in ours if k not in theirs]
    if shapes or missing:
        what = "; ".join(shapes[:2]) if shapes else f"missing {', '.join(missing[:2])}"
        count = f"{len(shapes)} tensor(s) of another shape, {len(missing)} missing"
        raise UserError(f"{key}={ckpt_path} does not fit this model and data ({count}: {what}). {fix}")


def check_resume(cfg: DictConfig, ckpt_path: Path, module) -> None:
    """Refuse to resume from a checkpoint of another model or dataset (Lightning would stop with a long
    size-mismatch traceback, or carry on with another dataset's optimizer state)."""
    ckpt = load_checkpoint(ckpt_path)
    fix = (
        f"Resuming needs the model and data of that run (its settings: {ckpt_path.parent.parent}/.hydra/config.yaml)."
        f" To start a new run from its weights: model.pretrained={ckpt_path} (with model.skip_mismatched=true for a "
        "head with another number of classes)."
    )
    stored = ckpt.get("run_config") or {}
    for group in ("model", "data"):
        theirs, ours = (stored.get(group) or {}).get("_target_"), cfg[group].get("_target_")
        if theirs and theirs != ours:
            raise UserError(f"ckpt_path={ckpt_path} is a run of {group} {theirs}, this run's is {ours}. {fix}")
    check_weights_fit(ckpt, ckpt_path, module, fix)


def stored_run_config(ckpt_path: Path, ckpt: dict | None = None) -> DictConfig:
    """The resolved training config stored in a checkpoint of this template."""
    ckpt = ckpt if ckpt is not None else load_checkpoint(ckpt_path)
    if "run_config" not in ckpt:
        raise UserError(
            f"{ckpt_path} holds no run config: it was not written by src.train of this template. "
            "Evaluate it through a training config instead: python -m src.train ... "
            f"model.pretrained={ckpt_path} trainer.max_epochs=0."
        )
    return OmegaConf.create(ckpt["run_config"])


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
        ckpt = load_checkpoint(path, key)
        run_cfg = stored_run_config(path, ckpt)
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
