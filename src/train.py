"""Train a segmentation model: `python -m src.train [experiment=NAME] [key=value ...]`.

Composes the config, seeds, builds datamodule, model, callbacks, loggers and trainer, fits (or resumes from
`ckpt_path`), evaluates the best checkpoint on val (and test), prints the table, writes metrics.json into the run
folder and returns the value of `optimized_metric` for sweeps.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from src.data.base import EpochSeed
from src.errors import Stopped, exit_on_user_error
from src.run import (
    build_datamodule,
    build_module,
    build_trainer,
    check_ckpt,
    check_fresh_output,
    check_resume,
    finish_loggers,
)
from src.utils.cluster import StopAtStepOn, newest_checkpoint, publish_run_dir, torchrun_run_dir_args
from src.utils.report import print_config, print_scores, write_metrics


def train(cfg: DictConfig) -> dict:
    """Run training as `cfg` says; returns {"val": scores, "test": scores (if run)}."""
    output_dir = Path(cfg.paths.output_dir)
    publish_run_dir(output_dir)  # torchrun: the other ranks write into rank 0's folder
    if cfg.get("ckpt_path") == "auto":  # continue this folder's run from its newest checkpoint, if it has one
        ckpt_path = newest_checkpoint(output_dir)
    else:
        ckpt_path = check_ckpt(cfg.get("ckpt_path"))
        check_fresh_output(output_dir)
    if cfg.get("extras", {}).get("print_config"):
        print_config(cfg)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    if ckpt_path is not None:
        check_resume(cfg, ckpt_path, module)
    trainer = build_trainer(cfg, extra_callbacks=[EpochSeed(cfg.seed)])

    try:
        try:
            with StopAtStepOn(signal.SIGUSR2):  # SLURM's time-limit warning under submitit
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException:  # Lightning's, a SystemExit(0): say it, with what to resume from, and exit 143
            last = output_dir / "checkpoints" / "last.ckpt"
            saved = f"the latest weights are in {last}; continue with ckpt_path={last}" if last.is_file() else ""
            raise Stopped(f"SIGTERM received during training; {saved or 'no checkpoint was written'}.") from None
        # the best checkpoint of the monitored callback (not last.ckpt's); none in fast_dev_run or without a
        # monitored metric: evaluate the weights in memory
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "") or None
        results = {}
        trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        results["val"] = module.results["val"]
        if cfg.get("test") and getattr(datamodule, "has_test", False):
            trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
            results["test"] = module.results["test"]
        if trainer.is_global_zero:
            for split, scores in results.items():
                print_scores(scores, title=f"{split} scores ({'best checkpoint' if best else 'final weights'})")
            extra = {"split": "val", "ckpt_path": best}
            if "test" in results:
                extra["test"] = results["test"]
            write_metrics(output_dir / "metrics.json", results["val"], **extra)
    finally:
        finish_loggers(trainer)
    return results


@hydra.main(version_base="1.3", config_path="../configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    results = exit_on_user_error(train, cfg)
    metric = cfg.get("optimized_metric")
    return results["val"][metric] if metric else None


if __name__ == "__main__":
    sys.argv += torchrun_run_dir_args(sys.argv)
    main()
