"""Loggers need no account or network: W&B offline writes its run into the run folder, read back here."""

import json
import logging
import socket
import struct
import time
from pathlib import Path

import pytest
import torch
from google.protobuf.message import DecodeError

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
        if kind == 0 or len(data) < length:  # the end, or a chunk still being written
            break
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            yield record


def finished_records(run_dir: Path, timeout: float = 60) -> list:
    """The records of the run's offline file once it is whole. W&B's service may still be writing the file when
    `wandb.finish()` has returned (a last record cut short, or none yet, was seen under load): read it again until it
    parses whole and holds the run's exit record, or `timeout` has passed (then what is there)."""
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    deadline = time.time() + timeout
    while True:
        try:
            records = list(wandb_records(runs[0]))
            if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
                return records
        except DecodeError:
            if time.time() > deadline:
                raise
        time.sleep(0.5)


def offline_run(run_dir: Path) -> dict:
    """History rows and record kinds of the run's offline file."""
    history, kinds = [], set()
    for record in finished_records(run_dir):
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


# -- no account needed, never a hang, one W&B run across a resume -----------------------------------------------


def test_no_api_key_means_offline_with_one_line(monkeypatch, tmp_path):
    from src.utils import loggers

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    assert "no API key" in loggers.offline_reason()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with socket.socket() as s:  # a port nobody listens on: W&B's server "unreachable"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert "not reachable" in loggers.offline_reason()
    with socket.socket() as server:  # reachable: online
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert loggers.offline_reason() is None


def test_unreachable_name_lookup_does_not_block(monkeypatch):
    """A name lookup that hangs (no DNS) is given up after the probe time, not waited for."""
    from src.utils import loggers

    monkeypatch.setattr(loggers.socket, "create_connection", lambda *a, **k: __import__("time").sleep(30))
    start = __import__("time").monotonic()
    assert loggers.reachable("api.wandb.ai", 443, 0.5) is False
    assert __import__("time").monotonic() - start < 5


def test_wandb_without_key_runs_offline_and_names_follow_the_experiment(train_cfg, tmp_path, monkeypatch, caplog):
    """No WANDB_MODE, no key: the run is logged offline (W&B would otherwise wait at its login prompt)."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    with caplog.at_level(logging.WARNING, logger="src.utils.loggers"):
        train(train_cfg("logger=wandb", "debug=limit", "trainer.max_epochs=1", "tags=[mine]", "callbacks.visuals=null"))
    assert any("wandb sync" in r.getMessage() for r in caplog.records)
    run = json.loads((tmp_path / "run" / "wandb_run.json").read_text())
    assert run["offline"] is True
    records = finished_records(tmp_path / "run")
    info = next(r.run for r in records if r.HasField("run"))
    assert info.run_id == run["id"]
    assert info.display_name == "unet_classic-synthetic" and info.run_group == "train"
    assert list(info.tags) == ["mine", "data:synthetic", "model:unet_classic", "loss:ce"]
    config = {i.key: json.loads(i.value_json) for r in records if r.HasField("config") for i in r.config.update}
    assert config["run"]["model"]["_target_"] == "src.models.net.unet_classic"  # the resolved run config


def test_resume_continues_the_same_wandb_run_with_steps_continuing(train_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    common = ["logger=wandb", "logger.wandb.project=test", "debug=limit", "callbacks.visuals=null", "test=false"]
    common += ["trainer.log_every_n_steps=1"]
    train(train_cfg(*common, "trainer.max_epochs=1", run="first"))
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, weights_only=False)["callbacks"]
    first_id = json.loads((tmp_path / "first" / "wandb_run.json").read_text())["id"]
    assert any(s.get("wandb_run_id") == first_id for s in stored.values())
    train(train_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={ckpt}", run="second"))
    runs = {name: list((tmp_path / name / "wandb").glob("offline-run-*")) for name in ("first", "second")}
    assert [p.name.rsplit("-", 1)[1] for p in runs["first"] + runs["second"]] == [first_id, first_id]
    first, second = offline_run(tmp_path / "first")["history"], offline_run(tmp_path / "second")["history"]
    # W&B's own step counter and the global step both continue (synced into one run, no row is dropped)
    assert min(h["_step"] for h in second) > max(h["_step"] for h in first)
    steps = lambda hist: [h["trainer/global_step"] for h in hist if "train/loss_step" in h]  # noqa: E731
    assert min(steps(second)) > max(steps(first))


def test_log_model_uploads_the_best_checkpoint_as_an_artifact(train_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(train_cfg("logger=wandb", "logger.wandb.log_model=true", "debug=limit", "callbacks.visuals=null"))
    run_id = json.loads((tmp_path / "run" / "wandb_run.json").read_text())["id"]
    records = finished_records(tmp_path / "run")
    artifacts = [r.artifact for r in records if r.HasField("artifact") and r.artifact.type == "model"]
    assert [a.name for a in artifacts] == [f"model-{run_id}"]
    assert set(artifacts[0].aliases) == {"best", "latest"}
    files = [e.path for e in artifacts[0].manifest.contents]
    best = next((tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")).name
    assert files == [best]  # the monitored best, not last.ckpt
