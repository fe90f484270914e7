"""A trained network outside this template: ONNX, TorchScript, or a self-contained model folder.

What the exported graphs take and give: a float image batch (N, 3, H, W) of any N, H, W, normalised as the training
pipeline did (the model card and the ONNX metadata give `mean` and `std` in 0..255 units: x = (rgb - mean) / std),
and logits (N, C, H, W) at the same size; the class of a pixel is the argmax over C. Normalisation stays outside
the graph, so the graph is exactly the network that was trained and evaluated.

`ExportNet` is `SegmentationNet` (src/models/net.py) written for graph capture: it always pads to the stride (a
padding of 0 is a no-op), so that the traced graph holds the padding for every size rather than the branch taken by
the sample input; SegNet's max-unpooling gets a scripted module whose output size follows its input (the tracer
would otherwise freeze the sample's sizes). Every export is checked against PyTorch on inputs of two sizes; above
the tolerance it fails (`ExportMismatch`).

A model folder holds `model.safetensors` (the network's weights), `config.yaml` (the resolved run config),
`labels.json` (class names, palette, ignore index, normalisation) and `README.md` (a model card with the
checkpoint's scores). `python -m src.predict ckpt_path=FOLDER` and `model.pretrained=FOLDER` read it offline.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from src.errors import UserError
from src.models.pretrained import FOLDER_WEIGHTS

FOLDER_CONFIG, FOLDER_LABELS, FOLDER_CARD = "config.yaml", "labels.json", "README.md"
ONNX_HINT = "pip install onnx onnxruntime onnxscript (or pip install -e '.[inference]')"


class ExportMismatch(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


class MaxUnpool(nn.Module):
    """`nn.MaxUnpool2d` for TorchScript tracing: the output size follows the input (2x for SegNet's 2x2 pooling on
    inputs padded to the stride), computed when the graph runs rather than frozen at the sample's size."""

    def __init__(self, kernel_size, stride, padding):
        super().__init__()
        self.kernel_size: list[int] = _pair(kernel_size)
        self.stride: list[int] = _pair(stride)
        self.padding: list[int] = _pair(padding)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding)


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


class ExportNet(nn.Module):
    """The network of a `SegmentationNet`, padded to its stride on every input (see the module docstring)."""

    def __init__(self, net: nn.Module, script_unpool: bool = False):
        super().__init__()
        inner = copy.deepcopy(net.net)
        if script_unpool:
            for module in list(inner.modules()):
                for name, child in list(module.named_children()):
                    if type(child) is nn.MaxUnpool2d:
                        setattr(
                            module, name, torch.jit.script(MaxUnpool(child.kernel_size, child.stride, child.padding))
                        )
        self.net, self.stride, self.min_size = inner, int(net.stride), int(getattr(net, "min_size", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        ph = (self.stride - h % self.stride) % self.stride
        pw = (self.stride - w % self.stride) % self.stride
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out = self.net(x)
        if out.shape[-1] != x.shape[-1] or out.shape[-2] != x.shape[-2]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[:, :, :h, :w]


@dataclass
class Parity:
    """How an exported model's logits compare with PyTorch's on one input."""

    shape: tuple[int, ...]
    max_abs_diff: float
    argmax_agreement: float

    def __str__(self) -> str:
        return (
            f"input {list(self.shape)}: max |logit difference| {self.max_abs_diff:.2e}, "
            f"argmax agreement {100 * self.argmax_agreement:.3f}%"
        )


def sample_inputs(sizes: Sequence[Sequence[int]], seed: int = 0) -> list[torch.Tensor]:
    """Normalised-looking random images, one batch per (n, h, w) size."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, h, w, generator=g) for n, h, w in sizes]


def check_parity(
    reference: nn.Module,
    run: Callable[[torch.Tensor], torch.Tensor],
    inputs: list[torch.Tensor],
    tolerance: float,
    what: str,
) -> list[Parity]:
    """Compare `run(x)` with `reference(x)` on each input; ExportMismatch when the logits differ by more than
    `tolerance` (absolute) or shapes differ."""
    results = []
    with torch.no_grad():
        for x in inputs:
            ref, got = reference(x).float(), torch.as_tensor(run(x)).float()
            if got.shape != ref.shape:
                raise ExportMismatch(
                    f"{what}: output shape {tuple(got.shape)} for input {tuple(x.shape)}, expected {tuple(ref.shape)}."
                )
            p = Parity(
                tuple(x.shape), (got - ref).abs().max().item(), (got.argmax(1) == ref.argmax(1)).float().mean().item()
            )
            results.append(p)
            if not p.max_abs_diff <= tolerance:
                raise ExportMismatch(
                    f"{what} differs from PyTorch on {p}, above the tolerance {tolerance:g}; the export is not usable."
                )
    return results


def export_onnx(net: nn.Module, path: Path, opset: int, sample: torch.Tensor, metadata: dict | None = None) -> str:
    """Writes `net` (a SegmentationNet, eval mode) to `path` as ONNX with dynamic batch, height and width; returns
    the exporter used. The TorchScript-based exporter is tried first (fast); networks it cannot capture (SegNet's
    max-unpooling) go through the dynamo exporter."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise UserError(f"format=onnx needs onnx and onnxruntime, which are not installed: {ONNX_HINT}.") from err
    model = ExportNet(net).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    names = dict(input_names=["image"], output_names=["logits"])
    try:
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=False,
            opset_version=opset,
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch", 2: "height", 3: "width"},
            },
            **names,
        )
        exporter = "torchscript-based"
    except Exception as first:  # noqa: BLE001 - an operator the old exporter lacks: try the dynamo exporter
        try:
            import onnxscript  # noqa: F401
        except ImportError as err:
            raise UserError(
                f"this network needs the dynamo ONNX exporter ({first}); it needs onnxscript: {ONNX_HINT}."
            ) from err
        dims = {0: torch.export.Dim("batch", min=1, max=1024)}
        dims.update({2: torch.export.Dim("height", min=1, max=16384), 3: torch.export.Dim("width", min=1, max=16384)})
        program = torch.onnx.export(
            model, (sample,), dynamo=True, opset_version=opset, dynamic_shapes={"x": dims}, verbose=False, **names
        )
        program.save(str(path))
        exporter = "dynamo"
    if metadata:
        import onnx

        proto = onnx.load(str(path))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(proto, str(path))
    return exporter


def onnx_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """`run(x)`: logits of the ONNX model at `path` under ONNX Runtime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


def export_torchscript(net: nn.Module, path: Path, sample: torch.Tensor) -> nn.Module:
    """Writes `net` as a traced TorchScript module to `path` (sizes stay dynamic: see ExportNet); returns it."""
    model = ExportNet(net, script_unpool=True).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, (sample,), check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return torch.jit.load(str(path))


def time_it(fn: Callable, *args, repeat: int = 3) -> float:
    """Best of `repeat` wall times of fn(*args), in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def palette_of(datamodule, num_classes: int) -> list[list[int]]:
    """The dataset's class colours, or distinct generated ones (the PASCAL VOC colour map) when it has none."""
    if getattr(datamodule, "palette", None) is not None and len(datamodule.palette) >= num_classes:
        return [list(c) for c in datamodule.palette]
    colours = []
    for i in range(num_classes):
        rgb, c = [0, 0, 0], i
        for j in range(8):
            for k in range(3):
                rgb[k] |= ((c >> k) & 1) << (7 - j)
            c >>= 3
        colours.append(rgb)
    return colours


# -- model folders -------------------------------------------------------------------------------------------------
def write_model_folder(
    folder: Path,
    net: nn.Module,
    run_config: DictConfig,
    labels: dict,
    scores: dict | None,
    source: str,
) -> None:
    """Writes the model folder (see the module docstring) into the new folder `folder`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=False)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(folder / FOLDER_WEIGHTS))
    (folder / FOLDER_CONFIG).write_text(OmegaConf.to_yaml(run_config))
    (folder / FOLDER_LABELS).write_text(json.dumps(labels, indent=2))
    (folder / FOLDER_CARD).write_text(model_card(run_config, labels, scores, source))


def model_card(run_config: DictConfig, labels: dict, scores: dict | None, source: str) -> str:
    """A short Markdown model card: what the network is, what it was trained on, its scores, how to run it."""
    model = run_config.model
    arch = model.get("arch") or str(model.get("_target_", "?")).rsplit(".", 1)[-1]
    lines = [
        f"# {arch}"
        + (f" ({model.encoder})" if model.get("encoder") else "")
        + f", {len(labels['class_names'])} classes",
        "",
        f"Exported from `{source}`.",
        f"Data: `{run_config.data.get('_target_', '?')}`; classes: {', '.join(labels['class_names'])}.",
        "",
        "## Input",
        "",
        "A float image batch (N, 3, H, W), RGB, any size, normalised per channel as x = (pixel - mean) / std with "
        f"pixel in 0..255, mean = {labels['mean']}, std = {labels['std']}. Output: logits (N, C, H, W); the "
        f"class is the argmax over C. Label {labels['ignore_index']} was ignored in training.",
        "",
        "## Scores",
        "",
    ]
    if scores:
        summary = {k: v for k, v in scores.items() if isinstance(v, (int, float))}
        lines += ["| metric | value |", "|---|---:|"] + [f"| {k} | {v:.4f} |" for k, v in summary.items()]
        per_class = scores.get("per_class") or {}
        if per_class:
            lines += ["", "| class | IoU |", "|---|---:|"]
            lines += [f"| {name} | {v.get('IoU', float('nan')):.4f} |" for name, v in per_class.items()]
    else:
        lines.append("No scores were found beside the checkpoint (metrics.json of its run folder).")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "python -m src.predict ckpt_path=<this folder> input=images/ output=masks/",
        "python -m src.train model.pretrained=<this folder> ...   # fine-tune from these weights",
        "```",
        "",
    ]
    return "\n".join(lines)


def read_model_folder(folder: Path, key: str = "ckpt_path") -> tuple[DictConfig, dict[str, torch.Tensor]]:
    """(run config, network state dict) of a model folder; a UserError naming the missing file otherwise."""
    missing = [name for name in (FOLDER_WEIGHTS, FOLDER_CONFIG) if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{key}={folder}: a folder here must be a model folder written by python -m src.export format=folder; "
            f"it has no {missing[0]}."
        )
    from safetensors.torch import load_file

    return OmegaConf.load(folder / FOLDER_CONFIG), load_file(str(folder / FOLDER_WEIGHTS), device="cpu")
