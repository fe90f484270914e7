"""Print a network's size and cost: `python -m src.summary model=NAME [input_size=[H,W]] [num_classes=C]`.

Parameters, FLOPs and output shape for one input (src/models/summary.py); writes no files.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.errors import exit_on_user_error
from src.models.summary import format_summary, summarize
from src.run import instantiate


def summary(cfg: DictConfig) -> None:
    net = instantiate(cfg.model)
    h, w = cfg.input_size
    in_channels = cfg.model.get("in_channels", 3)
    s = summarize(net, (h, w), cfg.batch_size, in_channels)
    name = HydraConfig.get().runtime.choices.get("model", "?")
    encoder = cfg.model.get("encoder")
    print(format_summary(name + (f" (encoder {encoder})" if encoder else ""), s, (cfg.batch_size, in_channels, h, w)))


@hydra.main(version_base="1.3", config_path="../configs", config_name="summary.yaml")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(summary, cfg)


if __name__ == "__main__":
    main()
