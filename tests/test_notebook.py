"""notebooks/quickstart.ipynb runs from top to bottom (its code cells, in order, in its own folder)."""

import json
import os

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    notebook = json.loads((ROOT / "notebooks" / "quickstart.ipynb").read_text())
    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    monkeypatch.chdir(ROOT / "notebooks")
    monkeypatch.setenv("NOTEBOOK_RUN_DIR", str(tmp_path))
    namespace: dict = {}
    for cell in code:
        exec(compile(cell, "quickstart.ipynb", "exec"), namespace)  # noqa: S102
    size = namespace["dm"].image_size
    assert namespace["grid"].size == (size * 8 * 3, size * 2 * 3)
    assert 0.0 <= namespace["scores"]["mIoU"] <= 1.0
    assert (tmp_path / "run000" / "metrics.json").is_file() and os.listdir(tmp_path / "run000" / "checkpoints")


def run_notebook(name: str, tmp_path, monkeypatch) -> dict:
    notebook = json.loads((ROOT / "notebooks" / name).read_text())
    monkeypatch.chdir(ROOT / "notebooks")
    monkeypatch.setenv("NOTEBOOK_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), name, "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.slow
def test_dataset_explorer_runs(tmp_path, monkeypatch):
    ns = run_notebook("dataset_explorer.ipynb", tmp_path, monkeypatch)
    assert ns["samples"].size[0] > 0 and ns["chart"].shape[2] == 3
    assert ns["share"].sum() == pytest.approx(1.0) and ns["counts"].sum() == 200 * 48 * 48


@pytest.mark.slow
def test_prediction_viewer_runs(tmp_path, monkeypatch):
    ns = run_notebook("prediction_viewer.ipynb", tmp_path, monkeypatch)
    scores = [s for s, *_ in ns["per_image"]]
    assert len(scores) == 24 and scores == sorted(scores)  # every validation image, worst first
    assert ns["worst"].size[0] > 4 * 48


@pytest.mark.slow
def test_attention_explorer_runs(tmp_path, monkeypatch):
    ns = run_notebook("attention_explorer.ipynb", tmp_path, monkeypatch)
    assert len(ns["maps"]) == 8  # MiT-B0: 4 stages x 2 blocks
    for picture in ("stages", "rollout_picture", "relevance"):
        assert ns[picture].size[0] > 0
