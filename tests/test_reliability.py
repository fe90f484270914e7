"""Reliability: nothing a user has is overwritten or half-written, and every mistake is one named line, exit 2.

Each test reproduces one case on data, folders or checkpoints it writes itself and checks the exit status, the
named file or key, that no traceback is printed and, where earlier results exist, that they are byte-identical.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from src.errors import UserError
from src.utils import io as io_mod
from src.utils.io import AtomicCheckpointIO, atomic_write, write_json_new
from src.utils.rundir import claim_dir
from tests.conftest import FAST, ROOT

QUIET = ["logger=none"]


def run(module: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(out: subprocess.CompletedProcess, *named: str, status: int = 2) -> str:
    """The run stopped with `status`, no traceback, and an `error:` line naming every string of `named`."""
    assert out.returncode == status, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stderr[-3000:]
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fake_run_folder(folder: Path) -> dict[str, str]:
    """A finished run's folder (config, checkpoints, metrics, csv); returns its file hashes."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(os.urandom(256))
    (folder / "metrics.json").write_text('{"mIoU": 0.5}')
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text("epoch,val/mIoU\n0,0.5\n")
    return hashes(folder)


# ---------------------------------------------------------------- never lose or corrupt what exists


# same second for both processes: Hydra's ${now:...} is patched to a fixed time, so the folder names collide
SAME_SECOND = (
    "import datetime, runpy, sys, hydra.core.utils as u\n"
    "class Fixed(datetime.datetime):\n"
    "    @classmethod\n"
    "    def now(cls, tz=None): return cls(2001, 2, 3, 4, 5, 6)\n"
    "u.datetime = Fixed\n"
    "sys.argv = ['src.train', *sys.argv[1:]]\n"
    "runpy.run_module('src.train', run_name='__main__')\n"
)


def test_two_runs_started_together_get_two_folders(tmp_path):
    args = [*FAST, *QUIET, "debug=fast_dev_run", f"paths.log_dir={tmp_path}"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAME_SECOND, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = sorted((tmp_path / "train" / "runs").iterdir())
    assert [r.name for r in runs] == ["2001-02-03_04-05-06", "2001-02-03_04-05-06_1"]
    for r in runs:  # each run wrote its own config, log and metrics into its own folder
        assert (r / ".hydra" / "config.yaml").is_file() and "Seed set to" in (r / "train.log").read_text()
        assert str(r) in (r / ".hydra" / "hydra.yaml").read_text()


def test_refused_run_writes_nothing_into_the_earlier_run(tmp_path):
    earlier = tmp_path / "run"
    before = fake_run_folder(earlier)
    out = run("src.train", *FAST, *QUIET, f"hydra.run.dir={earlier}", timeout=120)
    one_line_error(out, str(earlier), "nothing is overwritten")
    assert hashes(earlier) == before


def test_eval_never_writes_into_a_training_run(tmp_path):
    earlier = tmp_path / "run"
    before = fake_run_folder(earlier)
    out = run("src.eval", f"ckpt_path={earlier}/checkpoints/last.ckpt", f"hydra.run.dir={earlier}", timeout=120)
    one_line_error(out, str(earlier), "nothing is overwritten")
    assert hashes(earlier) == before


def test_claim_dir_suffixes_a_taken_timestamp_and_refuses_a_used_explicit_folder(tmp_path):
    base = tmp_path / "runs" / "2001-01-01_00-00-00"
    assert claim_dir(base, explicit=False) == base
    (base / "metrics.json").write_text("{}")
    assert claim_dir(base, explicit=False) == base.with_name(base.name + "_1")
    assert claim_dir(base, explicit=False) == base.with_name(base.name + "_2")
    with pytest.raises(UserError, match="already holds another run"):
        claim_dir(base, explicit=True)
    assert claim_dir(base, explicit=True, resume=True) == base  # ckpt_path=auto continues its own run
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_dir(empty, explicit=True) == empty


def test_run_folder_under_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    out = run("src.train", *FAST, *QUIET, f"hydra.run.dir={tmp_path}/afile/run", timeout=120)
    one_line_error(out, f"{tmp_path}/afile is a file")


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_run_folder_that_cannot_be_created_is_named(tmp_path, monkeypatch, code):
    def refuse(path, *a, **k):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(UserError, match=f"{tmp_path}/run: the run folder cannot be created .*{os.strerror(code)}"):
        claim_dir(tmp_path / "run", explicit=False)


def test_full_disk_run_folder_is_refused_before_training(tmp_path, monkeypatch):
    real_open = open

    def full(path, mode="r", *a, **k):
        if "w" in mode and str(path).endswith(".write_test"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(UserError, match=f"{tmp_path}/run: cannot write into the run folder .No space left on device"):
        claim_dir(tmp_path / "run", explicit=False)


def fill_disk_after(monkeypatch, n_bytes: int):
    """Writes through io's temporary files fail with ENOSPC after `n_bytes` (a disk that fills up mid-write)."""
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.left = f, n_bytes

        def write(self, b):
            if len(b) > self.left:
                self.f.write(b[: self.left])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(b)
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Full(f) if str(path).endswith(".tmp") else f

    monkeypatch.setattr(io_mod, "open", fake_open, raising=False)


def test_full_disk_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.arange(10)}, "epoch": 1}, last)
    before = hashes(last.parent)
    fill_disk_after(monkeypatch, 100)
    with pytest.raises(UserError, match=f"{last}: cannot be written .No space left on device.; the earlier file is"):
        io.save_checkpoint({"state_dict": {"w": torch.arange(10_000)}, "epoch": 2}, last)
    assert hashes(last.parent) == before  # no truncated file, no temporary left behind
    assert torch.load(last, weights_only=False)["epoch"] == 1


def test_full_disk_leaves_metrics_json_whole(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write(path, '{"mIoU": 0.5}')
    fill_disk_after(monkeypatch, 3)
    with pytest.raises(UserError, match="No space left on device"):
        atomic_write(path, '{"mIoU": 0.75, "aAcc": 0.9}')
    assert path.read_text() == '{"mIoU": 0.5}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_result_file_with_other_content_is_not_replaced(tmp_path):
    path = tmp_path / "weights.json"
    write_json_new(path, {"weights": [1, 2]}, "class-weight file", "Choose weights_file=...")
    write_json_new(path, {"weights": [1, 2]}, "class-weight file", "Choose weights_file=...")  # same: fine
    with pytest.raises(UserError, match=f"{path}: a class-weight file with other content.*weights_file="):
        write_json_new(path, {"weights": [3, 4]}, "class-weight file", "Choose weights_file=...")
    assert path.read_text() == '{\n  "weights": [\n    1,\n    2\n  ]\n}'


def test_last_checkpoint_written_when_max_time_stops_before_any_validation(tmp_path):
    run_dir = tmp_path / "run"
    out = run(
        "src.train",
        *FAST,
        *QUIET,
        "trainer.max_epochs=1000",
        "trainer.check_val_every_n_epoch=1000",
        "trainer.max_time=00:00:00:03",
        "test=false",
        f"hydra.run.dir={run_dir}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] > 0 and "state_dict" in ckpt


def test_sigterm_stops_cleanly_with_a_loadable_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [*FAST, *QUIET, "trainer.max_epochs=1000", "data.num_workers=1", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.train", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr + stdout, stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"stopped: SIGTERM received during training; the latest weights are in {last}" in stderr
    assert "state_dict" in torch.load(last, weights_only=False)


# ---------------------------------------------------------------- numbers that cannot work, named before any data


@pytest.mark.parametrize(
    "override,named",
    [
        ("data.batch_size=0", "data.batch_size=0"),
        ("data.batch_size=-4", "data.batch_size=-4"),
        ("data.batch_size=1.5", "data.batch_size=1.5"),
        ("data.batch_size=abc", "data.batch_size=abc"),
        ("+data.eval_batch_size=0", "data.eval_batch_size=0"),
        ("data.num_workers=-1", "data.num_workers=-1"),
        ("module.train_metrics_stride=0", "module.train_metrics_stride=0"),
        ("optimizer.lr=0", "optimizer.lr=0"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0: nothing would be trained"),
        ("loss.class_weights=[1,a,1,1,1,1]", "loss.class_weights=[1, 'a', 1, 1, 1, 1]"),
    ],
)
def test_impossible_numbers_are_named_before_any_data(train_cfg, monkeypatch, override, named):
    from src import run as run_mod
    from src.train import train

    def no_data(*a, **k):
        raise AssertionError("data was built before the config was checked")

    monkeypatch.setattr(run_mod, "instantiate", no_data)
    with pytest.raises(UserError, match=re.escape(named)):
        train(train_cfg(override))


def test_impossible_number_exits_2_without_traceback(tmp_path):
    out = run("src.train", *FAST, *QUIET, "data.batch_size=0", f"hydra.run.dir={tmp_path}/run", timeout=120)
    one_line_error(out, "data.batch_size=0", "whole number of at least 1")


def test_class_weight_file_with_a_non_number_is_named(tmp_path):
    from src.losses.base import load_class_weights

    path = tmp_path / "w.json"
    path.write_text('{"weights": [1, "x", 1]}')
    with pytest.raises(UserError, match=f"class-weight file {path}.*not a number"):
        load_class_weights(str(path), 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_trainer_without_gpu_says_how_to_run_on_cpu(tmp_path):
    out = run(
        "src.train", *FAST[:-4], "trainer=gpu", *QUIET, "extras.print_config=false", f"hydra.run.dir={tmp_path}/r"
    )
    one_line_error(out, "trainer.accelerator=gpu: no GPU is visible", "trainer=cpu")


# ---------------------------------------------------------------- checkpoints: eval and resume


def folder_args(root: Path, classes: int = 3) -> list[str]:
    """FAST's model and trainer on a folder dataset of `classes` classes."""
    return [a for a in FAST if not a.startswith("data.")] + folder_data(root, classes)


def folder_data(root: Path, classes: int = 3) -> list[str]:
    names = ",".join("abcdefgh"[:classes])
    return [
        "data=folder",
        f"data.data_dir={root}",
        f"data.num_classes={classes}",
        f"data.class_names=[{names}]",
        "data.palette=null",
        "data.crop_size=[32,32]",
        "data.num_workers=0",
        "data.batch_size=2",
    ]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """One epoch on a tiny folder dataset (3 classes): (data root, last.ckpt)."""
    from src.train import train
    from tests.conftest import compose_config
    from tests.fake_data import write_folder

    tmp = tmp_path_factory.mktemp("folder_run")
    root = write_folder(tmp).root
    cfg = compose_config("train", [*QUIET, *folder_args(root), "test=false"], tmp / "run")
    train(cfg)
    return root, tmp / "run" / "checkpoints" / "last.ckpt"


def eval_cfg(tmp_path: Path, *overrides: str):
    from tests.conftest import compose_config

    return compose_config("eval", ["logger=none", "trainer.accelerator=cpu", *overrides], tmp_path / "eval")


def test_eval_without_ckpt_path_says_how(tmp_path):
    out = run("src.eval", f"hydra.run.dir={tmp_path}/run", timeout=120)
    one_line_error(out, "ckpt_path is missing", "python -m src.eval ckpt_path=")


def test_eval_of_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("these are my notes, not weights")
    out = run("src.eval", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path}/run", timeout=120)
    one_line_error(out, f"ckpt_path={bad}: not a readable checkpoint")


def test_eval_of_a_truncated_checkpoint(tmp_path, folder_run):
    from src.eval import evaluate

    _, last = folder_run
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(UserError, match=f"ckpt_path={cut}: not a readable checkpoint.*truncated"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={cut}"))


def test_eval_on_data_with_another_number_of_classes(tmp_path, folder_run):
    from src.eval import evaluate

    root, last = folder_run
    cfg = eval_cfg(tmp_path, f"ckpt_path={last}", *folder_data(root, classes=4))
    with pytest.raises(
        UserError,
        match=f"ckpt_path={last} does not fit this data.*trained on 3 classes, the data has 4.*skip_mismatched=true",
    ):
        evaluate(cfg)


def test_eval_split_test_without_a_test_split(tmp_path, folder_run):
    from src.eval import evaluate

    _, last = folder_run
    with pytest.raises(UserError, match="split=test: The folder dataset has no labelled test split.*split=val"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={last}", "split=test"))


def test_eval_after_the_dataset_moved_gives_a_command_that_works(tmp_path, folder_run):
    import shutil

    from src.errors import DataError
    from src.eval import evaluate

    root, last = folder_run
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    shutil.move(root, root.with_name("gone"))
    try:
        with pytest.raises(DataError, match=f"python -m src.eval ckpt_path={last} data_dir=<its new folder>"):
            evaluate(eval_cfg(tmp_path, f"ckpt_path={last}"))
        scores = evaluate(eval_cfg(tmp_path / "again", f"ckpt_path={last}", f"data_dir={moved}"))
        assert 0 <= scores["mIoU"] <= 1
    finally:
        shutil.move(root.with_name("gone"), root)


def test_resume_with_another_model_points_to_pretrained(train_cfg, folder_run):
    from src.train import train

    root, last = folder_run
    cfg = train_cfg(*QUIET, *folder_args(root), "model.base_channels=16", f"ckpt_path={last}", fast=False)
    with pytest.raises(UserError, match=f"ckpt_path={last} does not fit.*model.pretrained={last}.*skip_mismatched"):
        train(cfg)


def test_resume_with_another_dataset_points_to_pretrained(train_cfg, folder_run):
    from src.train import train

    _, last = folder_run
    with pytest.raises(UserError, match=f"ckpt_path={last} is a run of data src.data.folder.*model.pretrained="):
        train(train_cfg(*QUIET, f"ckpt_path={last}"))


# ---------------------------------------------------------------- what a run writes


def test_fast_dev_run_writes_what_the_readme_says_and_train_log_holds_the_log(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert "the run folder holds\n  only `.hydra/`, `train.log` and the `metrics.json` of that one batch" in readme
    run_dir = tmp_path / "run"
    out = run("src.train", *FAST, "debug=fast_dev_run", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "metrics.json", "train.log"]
    log = (run_dir / "train.log").read_text()
    assert "Seed set to 42" in log and "Running in `fast_dev_run` mode" in log


def test_class_weight_file_is_not_replaced_by_other_weights(tmp_path):
    from src.check import check
    from tests.conftest import compose_config
    from tests.test_data_check import FOLDER_4, weights_data

    root, out = weights_data(tmp_path), tmp_path / "w.json"
    args = [*FOLDER_4, f"data.data_dir={root}", f"weights_file={out}", "workers=0"]
    assert check(compose_config("check", [*args, "weights=inverse_log"], tmp_path / "c1")) == 0
    before = out.read_bytes()
    assert check(compose_config("check", [*args, "weights=inverse_log"], tmp_path / "c2")) == 0  # same: fine
    with pytest.raises(UserError, match=f"{out}: a class-weight file with other content.*weights_file=PATH"):
        check(compose_config("check", [*args, "weights=median_frequency"], tmp_path / "c3"))
    assert out.read_bytes() == before


# ---------------------------------------------------------------- src.check


@pytest.mark.parametrize("args,named", [((), "data= is missing"), (("data=camvd",), "data=camvd: no such dataset")])
def test_check_without_or_with_a_misspelt_dataset_exits_2(tmp_path, args, named):
    out = run("src.check", *args, f"hydra.run.dir={tmp_path}/run", timeout=120)
    one_line_error(out, named, "camvid")


def test_worker_error_message_keeps_the_message_not_the_worker_traceback():
    from src.errors import DataError, user_message

    wrapped = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in load\nsrc.errors.DataError: /d/masks/a.png: label values [40] outside 0..5\n'
    )
    assert user_message(wrapped) == "/d/masks/a.png: label values [40] outside 0..5"


# ---------------------------------------------------------------- data: wrong numbers and bad files named


def tiny_folder(root: Path, masks: dict[str, np.ndarray], split: str = "train") -> Path:
    """images/<split>/<name>.png + masks/<split>/<name>.png (10x10), plus one plain val pair."""
    from tests.fake_data import noise_image, save

    for name, mask in {**masks}.items():
        save(root / "images" / split / f"{name}.png", noise_image(0, *mask.shape))
        save(root / "masks" / split / f"{name}.png", mask.astype(np.uint8))
    save(root / "images" / "val" / "v.png", noise_image(1, 10, 10))
    save(root / "masks" / "val" / "v.png", np.zeros((10, 10), np.uint8))
    return root


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def check_cfg(tmp_path: Path, root: Path, classes: int = 3, *extra: str):
    from tests.conftest import compose_config

    names = ",".join("abcdefgh"[:classes])
    args = ["data=folder", f"data.data_dir={root}", f"data.num_classes={classes}", f"data.class_names=[{names}]"]
    return compose_config("check", [*args, "data.palette=null", "workers=0", *extra], tmp_path / "check")


def test_black_white_masks_read_as_ignore_stop_training_with_the_values_hint(tmp_path, train_cfg):
    from src.errors import DataError
    from src.train import train

    stripes = np.where(np.arange(100).reshape(10, 10) % 10 < 4, 255, 0)
    root = tiny_folder(tmp_path / "bw", {"a": stripes, "b": stripes.T})
    args = [a for a in folder_args(root, 2) if not a.startswith("data.class_names")]
    with pytest.raises(DataError, match=r"only the values 0 and 255.*'data.values=\[0,255\]'"):
        train(train_cfg(*QUIET, *args, fast=False))
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training
    # and with data.values=[0,255] the same masks train: 255 is class 1
    from src.run import build_datamodule

    build_datamodule(train_cfg(*QUIET, *args, "data.values=[0,255]", run="ok", fast=False))


def test_check_fails_on_a_dataset_without_pairs(tmp_path):
    from src.check import check

    root = tmp_path / "empty"
    for sub in ("images/train", "images/val", "masks/train", "masks/val"):
        (root / sub).mkdir(parents=True)
    assert check(check_cfg(tmp_path, root)) == 1


def test_check_names_truncated_images_and_masks_and_still_lists_the_rest(tmp_path, capsys):
    from src.check import check

    square = np.arange(100).reshape(10, 10) % 3
    root = tiny_folder(tmp_path / "d", {n: square for n in ("a", "b", "c", "d")})
    truncate(root / "images" / "train" / "a.png")
    truncate(root / "masks" / "train" / "b.png")
    from tests.fake_data import save

    save(root / "masks" / "train" / "c.png", np.zeros((10, 12), np.uint8))  # another problem: size mismatch
    assert check(check_cfg(tmp_path, root)) == 1
    err = capsys.readouterr().err
    assert f"{root}/images/train/a.png: cannot be decoded (truncated or corrupt" in err
    assert f"{root}/masks/train/b.png: cannot" in err
    assert f"{root}/masks/train/c.png: size 12x10 differs" in err


def test_truncated_mask_in_training_is_named(tmp_path, train_cfg):
    from src.train import train

    square = np.arange(100).reshape(10, 10) % 3
    root = tiny_folder(tmp_path / "d", {n: square for n in "abcdef"})
    truncate(root / "masks" / "train" / "e.png")
    with pytest.raises(UserError, match=f"{root}/masks/train/e.png: cannot be read"):
        train(
            train_cfg(*QUIET, *folder_args(root), "data.validate_masks=1", "trainer.num_sanity_val_steps=0", fast=False)
        )


def test_label_out_of_range_is_named_when_read_in_training_and_evaluation(tmp_path, train_cfg, folder_run):
    from src.eval import evaluate
    from src.train import train

    square = np.arange(100).reshape(10, 10) % 3
    bad = square.copy()
    bad[0, 0] = 40
    root = tiny_folder(tmp_path / "d", {"a": square, "b": square, "c": square, "d": bad, "e": square})
    cfg = train_cfg(*QUIET, *folder_args(root), "data.validate_masks=1", "trainer.num_sanity_val_steps=0", fast=False)
    with pytest.raises(UserError, match=rf"{root}/masks/train/d.png: label values \[40\] outside the allowed 0..2"):
        train(cfg)
    _, last = folder_run  # evaluation reads masks the same way
    from tests.fake_data import save

    save(root / "masks" / "train" / "d.png", square.astype(np.uint8))
    save(root / "masks" / "val" / "v.png", bad.astype(np.uint8))
    with pytest.raises(UserError, match=rf"{root}/masks/val/v.png: label values \[40\]"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={last}", f"data_dir={root}"))


def test_duplicate_stems_are_reported(tmp_path):
    from src.errors import DataError
    from src.run import build_datamodule
    from tests.conftest import compose_config
    from tests.fake_data import noise_image, save

    square = np.arange(100).reshape(10, 10) % 3
    root = tiny_folder(tmp_path / "d", {"a": square, "b": square})
    save(root / "images" / "train" / "a.jpg", noise_image(2, 10, 10))
    cfg = compose_config("train", folder_args(root), tmp_path / "run")
    with pytest.raises(DataError, match=f"{root}/images/train/a.png: same name as {root}/images/train/a.jpg"):
        build_datamodule(cfg)
