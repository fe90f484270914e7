"""Find a learning rate or the largest batch size: `python -m src.tune mode=lr_find|batch_size [experiment=...]`.

Builds the same datamodule and module as `src.train` from the same config (configs/tune.yaml includes
configs/train.yaml) and runs Lightning's `Tuner`. The result is printed and written into the run folder:
`lr_find.json` (suggested LR, and the LR/loss curve; `lr_find.png` too when matplotlib is installed) or
`batch_size.json`. Nothing is trained for keeps and no checkpoint is written.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, OmegaConf

from src.errors import UserError, exit_on_user_error
from src.run import build_datamodule, build_module, build_trainer
from src.utils.io import atomic_write

MODES = ("lr_find", "batch_size")


def tune(cfg: DictConfig) -> dict:
    """Run the finder `cfg.mode` names; returns what it writes to <run dir>/<mode>.json."""
    if cfg.mode not in MODES:
        raise UserError(f"mode={cfg.mode}: use mode=lr_find or mode=batch_size.")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    trainer = build_trainer(cfg)
    tuner = Tuner(trainer)
    settings = OmegaConf.to_container(cfg[cfg.mode], resolve=True)
    if cfg.mode == "lr_find":
        finder = tuner.lr_find(module, datamodule=datamodule, update_attr=False, **settings)
        suggestion = finder.suggestion()
        result = {
            "mode": "lr_find",
            "suggested_lr": suggestion,
            "settings": settings,
            "lr": finder.results["lr"],
            "loss": finder.results["loss"],
        }
        message = (
            f"suggested learning rate: {suggestion:.3g} (use optimizer.lr={suggestion:.3g})"
            if suggestion
            else "no suggestion: the loss curve is too short or flat; raise lr_find.num_training"
        )
        if importlib.util.find_spec("matplotlib") is not None:  # optional: the plot needs matplotlib
            finder.plot(suggest=True).savefig(output_dir / "lr_find.png", dpi=100)
            message += f"\nplot: {output_dir / 'lr_find.png'}"
    else:
        found = tuner.scale_batch_size(module, datamodule=datamodule, batch_arg_name="batch_size", **settings)
        result = {"mode": "batch_size", "batch_size": found, "settings": settings}
        message = (
            f"largest batch size that fits: {found} (use data.batch_size={found}; the search stops at "
            "the training set's size)"
        )
    path = output_dir / f"{cfg.mode}.json"
    atomic_write(path, json.dumps(result, indent=2))  # whole or not at all, in this run's own folder
    print(f"{message}\nsaved: {path}")
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="tune.yaml")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(tune, cfg)


if __name__ == "__main__":
    main()
