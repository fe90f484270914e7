"""Evaluate a checkpoint: `python -m src.eval ckpt_path=PATH [split=val|test] [data=NAME ...] [infer=slide|tta]`.

The network, loss and data settings come from the config stored in the checkpoint by `src.train`, so a checkpoint
is all that is needed; `data=...` (and `data.key=value`) evaluate it on other data with the same classes. Prints
the table and writes metrics.json into this run's folder.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from src.errors import DataError, UserError, exit_on_user_error
from src.run import (
    build_datamodule,
    build_inferer,
    build_module,
    build_trainer,
    check_ckpt,
    check_weights_fit,
    finish_loggers,
    load_checkpoint,
    stored_run_config,
)
from src.utils.report import print_scores, write_metrics

SPLITS = ("val", "test")


def evaluate(cfg: DictConfig) -> dict:
    """Score the checkpoint `cfg.ckpt_path` on `cfg.split`; returns the scores dict (see src/metrics.py)."""
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split}: use one of {', '.join(SPLITS)}.")
    if OmegaConf.is_missing(cfg, "ckpt_path") or cfg.ckpt_path is None:
        raise UserError(
            "ckpt_path is missing: python -m src.eval ckpt_path=logs/train/runs/<date>/checkpoints/last.ckpt"
        )
    ckpt_path = check_ckpt(cfg.ckpt_path)
    ckpt = load_checkpoint(ckpt_path)
    stored = stored_run_config(ckpt_path, ckpt)
    with open_dict(stored):
        if cfg.get("data") is not None:  # data=NAME given on the command line: evaluate on that data
            stored.data = cfg.data
        elif cfg.get("data_dir"):  # the checkpoint's dataset, moved
            stored.data.data_dir = cfg.data_dir
        stored.trainer = cfg.trainer
        stored.logger = cfg.get("logger")
        stored.callbacks = None
        stored.paths = cfg.paths
        if "pretrained" in stored.model:  # the checkpoint's weights replace any initial weights
            stored.model.pretrained = None
    try:
        datamodule = build_datamodule(stored)
    except DataError as err:
        if cfg.get("data") is not None or "data_dir" not in stored.data or Path(stored.data.data_dir).exists():
            raise
        raise DataError(
            f"{err}\nThe checkpoint's dataset was read from {stored.data.data_dir}; if it moved, evaluate with "
            f"python -m src.eval ckpt_path={ckpt_path} data_dir=<its new folder>"
        ) from None
    datamodule.check_split(cfg.split)  # "test" never silently means "val"
    trained_on = (ckpt.get("run_config") or {}).get("data", {}).get("num_classes")
    fix = (
        f"The checkpoint was trained on {trained_on} classes, the data has {datamodule.num_classes}: evaluate it on "
        "data with the same classes, or fine-tune it on this data first: python -m src.train data=... "
        f"model.pretrained={ckpt_path} model.skip_mismatched=true"
    )
    if trained_on is not None and trained_on != datamodule.num_classes:
        raise UserError(f"ckpt_path={ckpt_path} does not fit this data. {fix}")
    module = build_module(stored, datamodule, inferer=build_inferer(cfg.get("infer"), stored, datamodule))
    check_weights_fit(ckpt, ckpt_path, module, fix)
    trainer = build_trainer(stored)
    run = trainer.test if cfg.split == "test" else trainer.validate
    try:
        run(module, datamodule=datamodule, ckpt_path=str(ckpt_path), verbose=False)
    finally:
        finish_loggers(trainer)
    scores = module.results[cfg.split]
    if trainer.is_global_zero:
        print_scores(scores, title=f"{cfg.split} scores of {ckpt_path.name}")
        write_metrics(Path(cfg.paths.output_dir) / "metrics.json", scores, split=cfg.split, ckpt_path=str(ckpt_path))
    return scores


@hydra.main(version_base="1.3", config_path="../configs", config_name="eval.yaml")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(evaluate, cfg)


if __name__ == "__main__":
    main()
