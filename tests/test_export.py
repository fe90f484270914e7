"""Export (src/models/export.py, src/export.py): ONNX and TorchScript parity on two input sizes for an smp model,
FCN-8s and SegNet; the export fails above the tolerance; model folders load in src.predict and model.pretrained."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from src.errors import UserError
from src.export import export
from src.models.export import (
    ExportMismatch,
    check_parity,
    export_onnx,
    export_torchscript,
    onnx_runner,
    read_model_folder,
    sample_inputs,
)
from src.models.net import fcn, segnet, smp_net, unet_classic
from src.models.pretrained import load_pretrained
from src.predict import predict
from src.train import train
from tests.conftest import FAST, ROOT, compose_config

SIZES = [(1, 40, 56), (2, 33, 71)]  # two sizes, neither a multiple of the stride, batch 1 and 2
TINY_VGG = dict(channels=[4, 4, 8, 8, 8], convs=[1, 1, 1, 1, 1])
NETS = {
    "smp_unet": lambda: smp_net("unet", encoder="resnet18", num_classes=3, decoder_channels=[16, 8, 8, 8, 8]),
    "fcn8s": lambda: fcn(num_classes=3, variant="8s", fc_channels=16, **TINY_VGG),
    "segnet": lambda: segnet(num_classes=3, **TINY_VGG),
}


def tiny(name):
    torch.manual_seed(0)
    net = NETS[name]().eval()
    for m in net.modules():  # non-trivial batch-norm statistics, so that eval-mode normalisation is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.mark.parametrize("name", ["smp_unet", "fcn8s"])
def test_onnx_parity_on_two_sizes(name, tmp_path):
    net = tiny(name)
    inputs = sample_inputs(SIZES)
    export_onnx(net, tmp_path / "m.onnx", 17, inputs[0])
    results = check_parity(net, onnx_runner(tmp_path / "m.onnx"), inputs, 1e-4, "onnx")
    assert [r.shape for r in results] == [(1, 3, 40, 56), (2, 3, 33, 71)]
    assert all(r.max_abs_diff < 1e-4 and r.argmax_agreement > 0.999 for r in results)


@pytest.mark.slow
def test_onnx_parity_segnet_max_unpooling(tmp_path):
    """SegNet's max-unpooling needs the dynamo exporter (minutes on a busy CPU)."""
    net = tiny("segnet")
    inputs = sample_inputs(SIZES)
    assert export_onnx(net, tmp_path / "m.onnx", 18, inputs[0]) == "dynamo"
    results = check_parity(net, onnx_runner(tmp_path / "m.onnx"), inputs, 1e-4, "onnx")
    assert all(r.max_abs_diff < 1e-4 for r in results)


@pytest.mark.parametrize("name", ["smp_unet", "fcn8s", "segnet"])
def test_torchscript_parity_on_two_sizes(name, tmp_path):
    net = tiny(name)
    inputs = sample_inputs(SIZES)
    loaded = export_torchscript(net, tmp_path / "m.pt", inputs[0])
    results = check_parity(net, loaded, inputs, 1e-4, "torchscript")
    assert all(r.max_abs_diff < 1e-4 and r.argmax_agreement > 0.999 for r in results)


def test_parity_check_fails_loudly_above_the_tolerance():
    net = unet_classic(num_classes=3, base_channels=4, depth=2).eval()
    inputs = sample_inputs(SIZES)
    with pytest.raises(ExportMismatch, match="above the tolerance"):
        check_parity(net, lambda x: net(x) + 0.01, inputs, 1e-3, "perturbed")
    with pytest.raises(ExportMismatch, match="output shape"):
        check_parity(net, lambda x: net(x)[..., :-1], inputs, 1e-3, "cropped")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    train(compose_config("train", FAST + ["logger=none", "test=false", "data.val_size=8"], tmp / "run"))
    return next((tmp / "run" / "checkpoints").glob("epoch*.ckpt"))


def export_cfg(ckpt, fmt, output, *overrides):
    return compose_config(
        "export", [f"ckpt_path={ckpt}", f"format={fmt}", f"output={output}", *overrides], output.parent / "h"
    )


def test_cli_onnx_and_torchscript_from_a_checkpoint(ckpt, tmp_path, capsys):
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        result = export(export_cfg(ckpt, fmt, tmp_path / name))
        assert result["path"].is_file() and len(result["parity"]) == 2
        assert all(p.max_abs_diff < 1e-3 for p in result["parity"])
    printed = capsys.readouterr().out
    assert "max |logit difference|" in printed and "argmax agreement" in printed
    import onnx

    meta = {p.key for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert meta == {"class_names", "mean", "std"}
    with pytest.raises(UserError, match="model.onnx"):  # never overwritten
        export(export_cfg(ckpt, "onnx", tmp_path / "model.onnx"))


def test_model_folder_predicts_like_the_checkpoint_and_loads_as_pretrained(ckpt, tmp_path):
    folder = tmp_path / "model"
    export(export_cfg(ckpt, "folder", folder))
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.yaml", "labels.json", "README.md"}
    card = (folder / "README.md").read_text()
    assert "mIoU" in card and "mean" in card
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 40 + 8 * i, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    outs = []
    for name, source in (("a", ckpt), ("b", folder)):
        cfg = compose_config(
            "predict",
            [f"ckpt_path={source}", f"input={images}", f"output={tmp_path / name}", "progress=false", "num_workers=0"],
            tmp_path / f"h{name}",
        )
        outs.append([np.array(Image.open(p)) for p in predict(cfg)["written"]])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    # model.pretrained=FOLDER: the same weights, into a freshly built network
    run_cfg, state = read_model_folder(folder)
    net = unet_classic(num_classes=6, base_channels=8, depth=2, pretrained=str(folder))  # model.pretrained=FOLDER
    report = load_pretrained(unet_classic(num_classes=6, base_channels=8, depth=2), folder)
    assert not report.missing and not report.unexpected
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_bad_format_and_missing_model_folder_files(ckpt, tmp_path):
    with pytest.raises(UserError, match="format=tflite"):
        export(export_cfg(ckpt, "tflite", tmp_path / "x"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="model.safetensors"):
        read_model_folder(tmp_path / "empty")


def test_inference_benchmark_prints_its_tables(ckpt, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("inference_benchmark", ROOT / "benchmarks" / "inference.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main([f"--ckpt={ckpt}", "--size", "32", "48", "--images", "2", "--eval-batches", "2", "--crop", "16", "24",
                "--threads", "1", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["speed"]["slide_batched_vs_one_max_abs_diff"] < 1e-4
    assert set(results["accuracy"]) == set(bench.MODES)
    assert "| slide, one window at a time |" in out and "| whole + CRF |" in out
