"""Export a trained model: `python -m src.export ckpt_path=CKPT format=onnx|torchscript|folder output=PATH`.

- onnx: an ONNX graph with dynamic batch, height and width (opset `opset`), checked with ONNX Runtime against
  PyTorch on inputs of two sizes (`check_sizes`); the largest |logit difference| and the argmax agreement are
  printed, and the export fails above `tolerance`.
- torchscript: a traced TorchScript module (sizes stay dynamic), with the same check.
- folder: a self-contained model folder (weights as safetensors, the resolved config, class names and palette, a
  model card with the checkpoint's scores) that `python -m src.predict ckpt_path=FOLDER` and `model.pretrained=FOLDER`
  load with no network.

The graphs take float images normalised as in training (mean/std in the model card and the ONNX metadata) and
return logits at the input size (src/models/export.py). An existing output is never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.errors import UserError, exit_on_user_error
from src.models.export import (
    ExportMismatch,
    check_parity,
    export_onnx,
    export_torchscript,
    onnx_runner,
    palette_of,
    sample_inputs,
    write_model_folder,
)
from src.run import load_trained, normalisation

FORMATS = ("onnx", "torchscript", "folder")


def labels_of(run_cfg, datamodule) -> dict:
    mean, std = normalisation(datamodule)
    return {
        "class_names": list(datamodule.class_names),
        "palette": palette_of(datamodule, datamodule.num_classes),
        "ignore_index": int(datamodule.ignore_index),
        "mean": mean,
        "std": std,
    }


def scores_beside(ckpt_path: Path) -> dict | None:
    """The scores of the checkpoint's run (<run>/metrics.json beside <run>/checkpoints/), if there."""
    for candidate in (ckpt_path.parent.parent / "metrics.json", ckpt_path.parent / "metrics.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def export(cfg: DictConfig) -> dict:
    """Export `cfg.ckpt_path` as `cfg.format` to `cfg.output`; returns {"path", "parity": [Parity, ...]}."""
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format}: use one of {', '.join(FORMATS)}.")
    out = Path(str(cfg.output)).expanduser()
    if out.exists():
        raise UserError(f"output={out} already exists; nothing is overwritten. Choose a new path.")
    ckpt_path = Path(str(cfg.ckpt_path)).expanduser()
    run_cfg, net, datamodule = load_trained(ckpt_path)
    labels = labels_of(run_cfg, datamodule)
    if cfg.format == "folder":
        write_model_folder(out, net, run_cfg, labels, scores_beside(ckpt_path), source=str(ckpt_path))
        print(f"wrote the model folder {out} (weights, config, labels, model card)")
        return {"path": out, "parity": []}
    inputs = sample_inputs([tuple(s) for s in cfg.check_sizes])
    try:
        if cfg.format == "onnx":
            meta = {"class_names": labels["class_names"], "mean": labels["mean"], "std": labels["std"]}
            exporter = export_onnx(net, out, int(cfg.opset), inputs[0], metadata=meta)
            what, run = f"ONNX ({exporter} exporter, opset {cfg.opset}) under ONNX Runtime", onnx_runner(out)
        else:
            what, run = "TorchScript", export_torchscript(net, out, inputs[0])
        parity = check_parity(net, run, inputs, float(cfg.tolerance), what)
    except ExportMismatch:
        bad = out.with_name(out.name + ".failed")
        if out.exists():
            out.replace(bad)
        raise
    for p in parity:
        print(f"{what} vs PyTorch, {p}")
    print(
        f"wrote {out}; input: float images (N, 3, H, W) normalised with mean {labels['mean']} and std {labels['std']}"
    )
    return {"path": out, "parity": parity}


@hydra.main(version_base="1.3", config_path="../configs", config_name="export.yaml")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(export, cfg)


if __name__ == "__main__":
    main()
