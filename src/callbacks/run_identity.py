"""A W&B run's identity kept with the training: added by src/run.py's build_trainer whenever a WandbLogger is used.

- The resolved run config goes into the W&B run's config (beside the module's hyperparameters Lightning logs).
- Every checkpoint holds the W&B run id and step, and the run folder holds `wandb_run.json` (id, mode, last step),
  so `ckpt_path=.../last.ckpt` continues the same W&B run (src/utils/loggers.py reads them back).
- Steps continue after a resume: online, W&B continues its own step counter; offline (nothing to ask) the
  resumed run starts its counter after the last step of the run it continues, since W&B drops rows whose step is
  lower than the last one when the two are synced into one run. Plots use `trainer/global_step` as x axis.
- With `logger.wandb.log_model=true`, the best checkpoint (of the ModelCheckpoint with a monitor) is logged at the
  end as the artifact `model-<run id>`, aliases `best` and `latest` (Lightning's own upload would pick whichever
  ModelCheckpoint saved last, here last.ckpt).
Only rank zero touches W&B.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lightning import Callback
from lightning.pytorch.loggers import WandbLogger

from src.utils.loggers import RUN_FILE, checkpoint_run_state, run_file

log = logging.getLogger(__name__)


class RunIdentity(Callback):
    def __init__(self, logger: WandbLogger):
        self.logger = logger
        self.log_best = False
        self.trainer = None

    @property
    def run(self):
        return self.logger.experiment if self.trainer is not None and self.trainer.is_global_zero else None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.trainer = trainer
        if stage != "fit" or not trainer.is_global_zero:
            return
        run = self.run
        config = getattr(pl_module, "run_config", None)
        if config:
            run.config.update({"run": config}, allow_val_change=True)
        if self.logger._log_model is True:  # "all" stays with Lightning
            self.log_best, self.logger._log_model = True, False
        self._write_file()

    def on_train_start(self, trainer, pl_module) -> None:
        run = self.run
        if run is None or not trainer.ckpt_path or not run.offline:
            return
        before = [checkpoint_run_state(trainer.ckpt_path), run_file(Path(trainer.ckpt_path))]
        steps = [s.get("step", 0) for s in before if s.get("id") == run.id]
        if steps and max(steps) >= run.step:
            run.log({"trainer/global_step": trainer.global_step}, step=max(steps) + 1)

    def state_dict(self) -> dict:
        run = self.run
        return {"wandb_run_id": run.id, "wandb_step": run.step} if run is not None else {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._write_file()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write_file()
        if self.log_best and trainer.is_global_zero:
            self._log_best(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._write_file()

    def _write_file(self) -> None:
        run = self.run
        if run is None:
            return
        folder = Path(self.trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        info = {"id": run.id, "project": run.project, "offline": bool(run.offline), "step": run.step}
        (folder / RUN_FILE).write_text(json.dumps(info, indent=2))

    def _log_best(self, trainer) -> None:
        import wandb

        monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) and c.best_model_path]
        if not monitored:
            log.info("W&B: log_model is on but no monitored checkpoint was saved: no model artifact.")
            return
        best = monitored[0]
        score = best.best_model_score.item() if best.best_model_score is not None else None
        artifact = wandb.Artifact(
            f"model-{self.run.id}", type="model", metadata={"monitor": best.monitor, "score": score}
        )
        artifact.add_file(best.best_model_path, name=Path(best.best_model_path).name)
        self.run.log_artifact(artifact, aliases=["best", "latest"])


def identity_callbacks(loggers) -> list[Callback]:
    """The callbacks that keep each W&B logger's run identity (none without W&B)."""
    return [RunIdentity(lg) for lg in loggers if isinstance(lg, WandbLogger)]
