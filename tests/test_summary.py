"""python -m src.summary: parameters, FLOPs and output shape of any configs/model entry."""

from __future__ import annotations

import re
import subprocess
import sys

import torch
from conftest import ROOT
from torch import nn

from src.models.net import SegmentationNet, fcn
from src.models.summary import summarize

FCN_TINY = ["model.channels=[8,16,16,32,32]", "model.convs=[1,1,2,2,2]", "model.fc_channels=32"]


def run_summary(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.summary", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_flops_of_a_known_network():
    net = SegmentationNet(nn.Conv2d(3, 4, 3, padding=1), stride=1)
    s = summarize(net, (32, 48))
    assert s["flops"] == 2 * (4 * 3 * 3 * 3) * 32 * 48  # one multiply-add per weight per output pixel
    assert s["params"] == 4 * 3 * 9 + 4 and s["output_shape"] == (1, 4, 32, 48)


def test_cli_prints_params_flops_and_shape(tmp_path):
    done = run_summary("model=fcn8s", *FCN_TINY, "input_size=[64,96]", "num_classes=4")
    assert done.returncode == 0, done.stderr
    net = fcn(4, "8s", channels=[8, 16, 16, 32, 32], convs=[1, 1, 2, 2, 2], fc_channels=32)
    expected = summarize(net, (64, 96))
    params = float(re.search(r"parameters: ([\d.]+) M", done.stdout).group(1))
    flops = float(re.search(r"FLOPs: ([\d.]+) G", done.stdout).group(1))
    assert params == round(expected["params"] / 1e6, 2)
    assert flops == round(expected["flops"] / 1e9, 2) > 0
    assert "output shape: (1, 4, 64, 96)" in done.stdout
    assert not list(ROOT.glob("outputs")) and not (ROOT / ".hydra").exists()  # writes no run folder


def test_cli_mistake_gives_one_line():
    done = run_summary("model=unetplusplus", "model.encoder=mit_b0")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: model.arch=unetplusplus with model.encoder=mit_b0")
    assert "Traceback" not in done.stderr


def test_summary_leaves_the_network_in_its_mode():
    net = fcn(3, "32s", channels=[4, 4, 4, 4, 4], convs=[1, 1, 1, 1, 1], fc_channels=8).train()
    summarize(net, (32, 32))
    assert net.training
    assert torch.is_grad_enabled()
