"""src.predict on a tiny trained checkpoint: masks at the original size that score like src.eval, bad inputs, and
src.eval's inference modes end to end."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.errors import UserError
from src.eval import evaluate
from src.predict import predict
from src.train import train
from tests.conftest import ROOT, compose_config
from tests.fake_data import noise_image, save, write_ade20k

# ADE20K's layout: validation images of two sizes, evaluation resize (short side 64 here) and 150 classes
ADE = [
    "data=ade20k",
    "model=unet_small",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.crop_size=[32,32]",
    "data.scale=[128,64]",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "logger=none",
    "test=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "extras.print_config=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, fake ADE20K root) of a one-epoch run."""
    tmp = tmp_path_factory.mktemp("predict")
    fake = write_ade20k(tmp, n_train=4, n_val=3)
    train(compose_config("train", ADE + [f"data.data_dir={fake.root}"], tmp / "run"))
    return next((tmp / "run" / "checkpoints").glob("epoch*.ckpt")), fake.root


def predict_cfg(ckpt, input, output, *overrides):
    return compose_config(
        "predict",
        [f"ckpt_path={ckpt}", f"input={input}", f"output={output}", "progress=false", "num_workers=0", *overrides],
        Path(output).parent / "hydra",
    )


def numpy_scores(pred: list[np.ndarray], target: list[np.ndarray], num_classes: int, ignore: int) -> dict:
    """aAcc and mIoU (NaN for classes absent from both, then nanmean) from one confusion matrix."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for p, t in zip(pred, target):
        keep = t != ignore
        cm += np.bincount(t[keep].astype(np.int64) * num_classes + p[keep], minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return {"aAcc": tp.sum() / cm.sum(), "mIoU": np.nanmean(iou)}


def test_predicted_masks_score_like_eval(trained, tmp_path):
    ckpt, root = trained
    val = root / "images" / "validation"
    result = predict(predict_cfg(ckpt, val, tmp_path / "masks", "overlay=true"))
    images = sorted(val.glob("*.jpg"))
    assert sorted(p.name for p in result["written"]) == [f"{p.stem}.png" for p in images]
    preds, targets = [], []
    for image in images:
        mask = Image.open(tmp_path / "masks" / f"{image.stem}.png")
        assert mask.mode == "P" and mask.size == Image.open(image).size  # class indices at the original size
        assert (tmp_path / "masks" / "overlay" / f"{image.stem}.jpg").is_file()
        preds.append(np.array(mask).astype(np.int64))
        raw = np.array(Image.open(root / "annotations" / "validation" / f"{image.stem}.png")).astype(np.int64)
        targets.append(np.where(raw == 0, 255, raw - 1))  # ADE20K: 0 is "other" (ignored), classes 1..150
    mine = numpy_scores(preds, targets, 150, 255)
    scores = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "extras.print_config=false"], tmp_path / "eval"))
    assert scores["aAcc"] == pytest.approx(mine["aAcc"], abs=1e-9)
    assert scores["mIoU"] == pytest.approx(mine["mIoU"], abs=1e-9)


def test_mixed_sizes_and_an_unreadable_file_are_named_and_skipped(trained, tmp_path):
    ckpt, _ = trained
    inputs = tmp_path / "in"
    for i, (h, w) in enumerate([(30, 40), (30, 40), (47, 33), (64, 64)]):
        save(inputs / f"img{i}.png", noise_image(i, h, w))
    (inputs / "broken.png").write_bytes(b"not a png")
    (inputs / "notes.txt").write_text("not an image: not listed")
    with pytest.raises(UserError, match=r"skipped 1 unreadable image\(s\): .*broken\.png"):
        predict(predict_cfg(ckpt, inputs, tmp_path / "out", "batch_size=2"))
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["img0.png", "img1.png", "img2.png", "img3.png"]  # the readable ones are all written
    assert Image.open(tmp_path / "out" / "img2.png").size == (33, 47)


def test_slide_and_tta_predict_and_evaluate(trained, tmp_path):
    ckpt, root = trained
    val = root / "images" / "validation"
    whole = predict(predict_cfg(ckpt, val, tmp_path / "whole"))["written"]
    # one window covering the (resized) image: the same masks as whole
    covering = predict(predict_cfg(ckpt, val, tmp_path / "cover", "infer=slide", "infer.crop=[512,512]"))["written"]
    for a, b in zip(whole, covering):
        np.testing.assert_array_equal(np.array(Image.open(a)), np.array(Image.open(b)))

    def scores(name, *overrides):
        cfg = compose_config("eval", [f"ckpt_path={ckpt}", "extras.print_config=false", *overrides], tmp_path / name)
        return evaluate(cfg)

    base, cover = scores("e0"), scores("e1", "infer=slide", "infer.crop=[512,512]")
    assert cover["mIoU"] == pytest.approx(base["mIoU"], abs=1e-12) and cover["aAcc"] == base["aAcc"]
    for other in (scores("e2", "infer=slide"), scores("e3", "infer=tta", "infer.scales=[0.75,1.0]")):
        assert 0.0 <= other["mIoU"] <= 1.0 and 0.0 <= other["aAcc"] <= 1.0


def test_a_glob_and_a_single_file(trained, tmp_path):
    ckpt, root = trained
    val = root / "images" / "validation"
    one = sorted(val.glob("*.jpg"))[0]
    assert [p.name for p in predict(predict_cfg(ckpt, one, tmp_path / "a"))["written"]] == [f"{one.stem}.png"]
    written = predict(predict_cfg(ckpt, f"{val}/*_00000002.jpg", tmp_path / "b"))["written"]
    assert [p.name for p in written] == ["ADE_val_00000002.png"]


def test_bad_inputs_each_one_line_naming_the_path(trained, tmp_path):
    ckpt, root = trained
    val = root / "images" / "validation"
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.png").write_bytes(b"")
    plain = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, plain)
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    cases = [
        (predict_cfg(ckpt, tmp_path / "empty", tmp_path / "o1"), str(tmp_path / "empty")),
        (predict_cfg(ckpt, tmp_path / "nothing*.png", tmp_path / "o2"), "nothing"),
        (predict_cfg(ckpt, val, tmp_path / "taken"), str(tmp_path / "taken")),
        (predict_cfg(plain, val, tmp_path / "o3"), str(plain)),  # a checkpoint of another template
        (predict_cfg(text, val, tmp_path / "o4"), str(text)),
        (predict_cfg(tmp_path / "none.ckpt", val, tmp_path / "o5"), "none.ckpt"),
    ]
    for cfg, path in cases:
        with pytest.raises(UserError, match=path.replace("*", r"\*")):
            predict(cfg)
    assert list((tmp_path / "taken").iterdir()) == [tmp_path / "taken" / "x.png"]  # nothing written there


def test_cli_refuses_an_existing_output_folder_with_one_line(trained, tmp_path):
    ckpt, root = trained
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.png").write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "src.predict", f"ckpt_path={ckpt}", f"input={root}/images/validation",
         f"output={tmp_path / 'taken'}", f"hydra.run.dir={tmp_path / 'h'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "taken") in lines[0] and "Traceback" not in proc.stderr
