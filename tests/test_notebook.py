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
