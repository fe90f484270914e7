"""The benchmark scripts run (on tiny settings; what they measure is not asserted, only that they measure it)."""

import importlib.util
import json
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT


def test_data_benchmark_prints_a_row_per_worker_setting(capsys):
    spec = importlib.util.spec_from_file_location("data_benchmark", ROOT / "benchmarks" / "data.py")
    data_benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data_benchmark)
    data_benchmark.main(["batches=3", "workers=0,1", "data.train_size=64", "data.batch_size=8"])
    rows = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")
    ]
    assert len(rows) == 2 and all(float(r.split("|")[2]) > 0 for r in rows)


def test_losses_benchmark_writes_its_table(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "losses.py"),
            "--train-size",
            "64",
            "--eval-size",
            "8",
            "--losses",
            "ce,ce_median_frequency",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["loss"] for r in results["rows"]] == ["ce", "ce_median_frequency"]
    assert (tmp_path / "class_weights_synthetic_median_frequency.json").is_file()
    assert "| ce |" in out.stdout


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_benchmark_prints_both_sides_and_the_ratio(capsys):
    result = load_benchmark("step").main(
        ["steps=6", "warmup=1", "reps=1", "model.base_channels=4", "model.depth=1", "data.image_size=32"]
    )
    out = capsys.readouterr().out
    assert result["bare_ms"] > 0 and result["template_ms"] > 0 and result["ratio"] > 0
    assert "| all 4 steps |" in out and "template / bare = " in out


def test_data_benchmark_prints_the_decode_floor_and_the_ratio(tmp_path, capsys):
    from tests.fake_data import write_camvid

    fake = write_camvid(tmp_path / "data")
    result = load_benchmark("data").main(
        [
            "batches=2",
            "workers=0",
            "reps=1",
            "data=camvid",
            f"data.data_dir={fake.root}",
            "data.batch_size=2",
            "data.crop_size=[32,32]",
            "data.scale=[48,36]",
            "data.num_workers=0",
        ]
    )
    out = capsys.readouterr().out
    assert result["floor"] > 0 and result["ratio"] > 0 and "loader / decode floor = " in out


def test_data_benchmark_pairs_each_batch_with_the_decode_of_its_own_files(tmp_path, monkeypatch):
    """The floor of a batch decodes the files that batch was made from (the sampler's seeds tell them apart)."""
    from src.run import build_datamodule
    from tests.conftest import compose_config
    from tests.fake_data import write_camvid

    fake = write_camvid(tmp_path / "data")
    overrides = ["data=camvid", f"data.data_dir={fake.root}", "data.batch_size=1", "data.num_workers=0"]
    datamodule = build_datamodule(compose_config("train", overrides, tmp_path / "cfg"))
    datamodule.setup("fit")
    benchmark, decoded = load_benchmark("data"), []
    monkeypatch.setattr(benchmark, "decode_time", lambda data, files, crop=None: decoded.append(files) or 1e-3)
    times, got = benchmark.paired_pass(datamodule, 3, None)
    seed_of = dict(iter(datamodule.train_dataloader().sampler))  # index -> this epoch's seed
    assert len(got) == 3 and times["images"] == [1, 1, 1] and len(times["loader"]) == 3
    assert [[seed_of[i] for i in files] for files in decoded] == [batch["seed"].tolist() for batch in got]


def test_ade_like_copy_has_ade20k_labels_and_feeds_the_data_benchmark(tmp_path, capsys):
    """benchmarks/ade_like.py writes a CamVid-layout dataset in ADE20K's layout (JPEG images, labels + 1, CamVid's
    unlabelled as ADE20K's "other"): read back through the ADE20K dataset, the labels are CamVid's."""
    import hydra

    from tests.conftest import compose_config
    from tests.fake_data import write_camvid

    fake = write_camvid(tmp_path / "data")
    root = load_benchmark("ade_like").write(fake.root, tmp_path / "ade", short=36, count=4)
    cfg = compose_config("train", ["data=ade20k", f"data.data_dir={root}"], tmp_path / "cfg")
    train = hydra.utils.instantiate(cfg.data, _convert_="partial").dataset("train")
    assert len(train) == 4 and all(p.endswith(".jpg") for p in train.images.tolist())
    for i, name in enumerate(sorted(p for p in fake.raw if "/trainannot/" in p)[:4]):
        image, labels = train.load(i)
        assert image.shape == (36, 48, 3)
        np.testing.assert_array_equal(labels, np.where(fake.raw[name] == 11, 255, fake.raw[name]))
    result = load_benchmark("data").main(
        ["batches=1", "workers=0", "reps=1", "data=ade20k", f"data.data_dir={root}", "data.batch_size=1"]
        + ["data.crop_size=[32,32]", "data.scale=[64,36]", "data.num_workers=0"]
    )
    assert result["floor"] > 0 and result["ratio"] > 0 and "loader / decode floor = " in capsys.readouterr().out
