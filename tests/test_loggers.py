"""Loggers need no account or network: W&B offline writes its run into the run folder, read back here."""

import json
import struct
from pathlib import Path

import pytest

from src.train import train
from tests.scoring import INDEPENDENT, IndependentScores


def wandb_records(path: Path):
    """The protobuf records of an offline run file (run-*.wandb): a LevelDB-style log of 32 KiB blocks after a
    7-byte header; each chunk has a 7-byte header (crc, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, part = path.read_bytes(), 7, b""
    assert raw.startswith(b":W&B")
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            yield record


def offline_run(run_dir: Path) -> dict:
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    history, kinds = [], set()
    for record in wandb_records(runs[0]):
        kinds.add(record.WhichOneof("record_type"))
        if record.HasField("history"):
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return {"history": history, "kinds": kinds}


def test_wandb_offline_runs_hold_the_logged_metrics_one_run_each(train_cfg, tmp_path, monkeypatch):
    """Two trainings in one process (as in a sweep) give two finished W&B runs: WandbLogger would otherwise reuse
    the first, still open, run for the second."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = train(train_cfg("logger=wandb", "logger.wandb.project=test", run="a"))
    second = train(train_cfg("logger=wandb", "logger.wandb.project=test", "seed=1", run="b"))
    for run, results in (("a", first), ("b", second)):
        logged = offline_run(tmp_path / run)
        assert "exit" in logged["kinds"]  # the run was finished
        last_val = [h for h in logged["history"] if "val/mIoU" in h][-1]
        assert last_val["val/mIoU"] == pytest.approx(results["val"]["mIoU"], abs=1e-6)
        keys = set().union(*logged["history"])
        assert {"train/loss_epoch", "train/mIoU", "val/IoU/disk"} <= keys, keys


@pytest.mark.parametrize("logger", ["tensorboard", "none", "many"])
def test_other_loggers_train(logger, train_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    IndependentScores.runs.clear()
    results = train(train_cfg(f"logger={logger}", "debug=limit", *INDEPENDENT))
    assert results["val"]["mIoU"] == pytest.approx(IndependentScores.runs[-1], abs=1e-9)  # NumPy, from scratch
