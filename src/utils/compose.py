"""Compose the project's Hydra configs from Python (notebooks, tests), as the command line would."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def compose_config(name: str, overrides: list[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """configs/<name>.yaml with command-line style `overrides`; the run folder is `output_dir` (Hydra's too).

    `compose_config("train", ["model=segformer"], "runs/a")` is what `python -m src.train model=segformer
    hydra.run.dir=runs/a` builds; pass the result to `src.train.train` or `src.eval.evaluate`.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=name, return_hydra_config=True, overrides=list(overrides))
    if output_dir is not None:
        output_dir = Path(output_dir).resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num = 0
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir.parent / "logs")
    HydraConfig().set_config(cfg)
    return cfg
