"""Losses (src/losses/): each against a formula written here in NumPy, ignored pixels, class weights, configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, ROOT, compose_config

from src.errors import UserError
from src.losses import (
    CrossEntropy,
    Dice,
    Focal,
    Jaccard,
    Lovasz,
    OhemCrossEntropy,
    Tversky,
    UNetBoundaryCE,
    WeightedSum,
    unet_weight_map,
)
from src.run import build_datamodule, build_module, instantiate
from tests.scoring import INDEPENDENT, IndependentScores

IGNORE = 255
C = 4  # class 3 never occurs in the targets below
LOSS_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "loss").glob("*.yaml"))


def random_case(seed: int = 0, n: int = 2, h: int = 6, w: int = 7):
    """Logits (float64) and a target with ignored pixels and class 3 absent."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, h, w, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, C - 1, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < 0.25] = IGNORE
    return logits, target


# -- independent computations (NumPy) ----------------------------------------------------------------------
def np_softmax(x):  # x: (N,C,H,W) -> probabilities over axis 1
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def flat(logits, target):
    """(P,C) logits and (P,) labels of the labelled pixels."""
    x = logits.numpy().transpose(0, 2, 3, 1).reshape(-1, C)
    y = target.numpy().reshape(-1)
    keep = y != IGNORE
    return x[keep], y[keep]


def np_ce(logits, target, class_weights=None, smoothing=0.0):
    x, y = flat(logits, target)
    logp = x - x.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    w = np.ones(C) if class_weights is None else np.asarray(class_weights, np.float64)
    per = (1 - smoothing) * w[y] * -logp[np.arange(len(y)), y] + smoothing * (-(logp * w).sum(1)) / C
    return per.sum() / w[y].sum()


def np_region(logits, target, alpha, beta, class_weights=None):
    """smp's convention: per-class soft scores over the batch, absent classes 0, mean over all classes."""
    x, y = flat(logits, target)
    p = np_softmax(x[:, :, None, None])[:, :, 0, 0]
    onehot = np.eye(C)[y]
    tp, fp, fn = (p * onehot).sum(0), (p * (1 - onehot)).sum(0), ((1 - p) * onehot).sum(0)
    loss = (1 - tp / (tp + alpha * fp + beta * fn)) * (onehot.sum(0) > 0)
    w = np.ones(C) if class_weights is None else np.asarray(class_weights, np.float64)
    return (loss * w).sum() / w.sum()


def np_focal(logits, target, gamma, alpha=None):
    """Sigmoid focal loss per class, mean over labelled pixels, then over classes."""
    x, y = flat(logits, target)
    losses = []
    for c in range(C):
        t = (y == c).astype(np.float64)
        prob = 1 / (1 + np.exp(-x[:, c]))
        bce = -(t * np.log(prob) + (1 - t) * np.log(1 - prob))
        pt = np.where(t == 1, prob, 1 - prob)
        loss = (1 - pt) ** gamma * bce
        if alpha is not None:
            loss = loss * (alpha * t + (1 - alpha) * (1 - t))
        losses.append(loss.mean())
    return np.mean(losses)


def np_lovasz_softmax(logits, target):
    """Lovasz-softmax (Berman et al. 2018, Alg. 1 and eq. 12) over the classes present in the labels."""
    x, y = flat(logits, target)
    p = np_softmax(x[:, :, None, None])[:, :, 0, 0]
    losses = []
    for c in range(C):
        fg = (y == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - p[:, c])
        order = np.argsort(-errors, kind="stable")
        e, g = errors[order], fg[order]
        # Jaccard loss of the set made of the i first (worst) pixels, for i = 1..P, and its increments
        intersection = g.sum() - np.cumsum(g)
        union = g.sum() + np.cumsum(1 - g)
        jac = 1 - intersection / union
        grad = np.diff(np.concatenate([[0.0], jac]))
        losses.append(np.dot(e, grad))
    return np.mean(losses)


# -- each loss against its formula ----------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("class_weights", [None, [0.5, 2.0, 1.0, 3.0]])
def test_cross_entropy_matches_formula(class_weights, smoothing):
    logits, target = random_case()
    loss = CrossEntropy(class_weights=class_weights, num_classes=C, label_smoothing=smoothing)
    out = loss(logits, target)
    assert out["loss"].item() == pytest.approx(np_ce(logits, target, class_weights, smoothing), rel=1e-10)
    assert out["loss_ce"].item() == out["loss"].item()
    # the same as torch's own module on the same inputs
    ref = torch.nn.CrossEntropyLoss(
        weight=None if class_weights is None else torch.tensor(class_weights).double(),
        ignore_index=IGNORE,
        label_smoothing=smoothing,
    )(logits, target)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-10)


@pytest.mark.parametrize(
    ("cls", "kwargs", "alpha", "beta"),
    [
        (Dice, {}, 0.5, 0.5),
        (Jaccard, {}, 1.0, 1.0),
        (Tversky, {"alpha": 0.3, "beta": 0.7}, 0.3, 0.7),
    ],
)
@pytest.mark.parametrize("class_weights", [None, [0.5, 2.0, 1.0, 3.0]])
def test_region_losses_match_formula(cls, kwargs, alpha, beta, class_weights):
    logits, target = random_case(1)
    loss = cls(class_weights=class_weights, num_classes=C, **kwargs)
    expected = np_region(logits, target, alpha, beta, class_weights)
    assert loss(logits, target)["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_tversky_gamma_is_a_power():
    logits, target = random_case(2)
    base = Tversky(alpha=0.3, beta=0.7)(logits, target)["loss"].item()
    assert Tversky(alpha=0.3, beta=0.7, gamma=2.0)(logits, target)["loss"].item() == pytest.approx(base**2, rel=1e-5)


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, None), (1.5, 0.25)])
def test_focal_matches_formula(gamma, alpha):
    logits, target = random_case(3)
    value = Focal(gamma=gamma, alpha=alpha)(logits, target)["loss"].item()
    assert value == pytest.approx(np_focal(logits, target, gamma, alpha), rel=1e-5)


def test_lovasz_matches_formula():
    logits, target = random_case(4)
    assert Lovasz()(logits, target)["loss"].item() == pytest.approx(np_lovasz_softmax(logits, target), rel=1e-5)
    # per image: the mean of the images' losses
    per_image = np.mean([np_lovasz_softmax(logits[i : i + 1], target[i : i + 1]) for i in range(len(target))])
    assert Lovasz(per_image=True)(logits, target)["loss"].item() == pytest.approx(per_image, rel=1e-5)


def test_ohem_matches_formula_and_keeps_expected_pixels():
    logits, target = random_case(5, n=2, h=10, w=10)
    x, y = flat(logits, target)
    p_true = np_softmax(x[:, :, None, None])[:, :, 0, 0][np.arange(len(y)), y]
    valid = len(y)
    for thresh, min_kept in [(0.7, 10), (0.05, 10), (0.0, 25), (1.01, 5), (0.5, valid + 10)]:
        loss = OhemCrossEntropy(thresh=thresh, min_kept=min_kept)
        kept = loss.kept(logits, target)
        below = int((p_true < thresh).sum())
        expected = valid if valid <= min_kept else max(below, min_kept)
        assert int(kept.sum()) == expected, (thresh, min_kept)
        assert not kept[target == IGNORE].any()
        # the loss is the mean cross-entropy over exactly those pixels: the hardest ones
        hard = np.sort(p_true)[:expected]
        assert np.sort(p_true[kept.numpy()[target.numpy() != IGNORE]]) == pytest.approx(hard)
        ce = -np.log(p_true)
        ohem = ce[np.isin(p_true, hard)].mean()
        assert loss(logits, target)["loss"].item() == pytest.approx(ohem, rel=1e-9)


def test_unet_boundary_reduces_to_weighted_ce():
    logits, target = random_case(6)
    weights = [0.5, 2.0, 1.0, 3.0]
    ce = CrossEntropy(class_weights=weights, num_classes=C)(logits, target)["loss"]
    boundary = UNetBoundaryCE(w0=0.0, class_weights=weights, num_classes=C)
    maps = torch.stack([torch.from_numpy(boundary.sample_extras()["weight"](t.numpy())) for t in target])
    # without a map (validation batches) and with a map whose border term is 0: class-weighted cross-entropy
    assert boundary(logits, target)["loss"].item() == pytest.approx(ce.item(), rel=1e-10)
    assert boundary(logits, target, weight=maps)["loss"].item() == pytest.approx(ce.item(), rel=1e-5)
    # with any map: the weighted mean sum(w * ce) / sum(w) over labelled pixels
    rand = torch.rand(target.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x, y = flat(logits, target)
    logp = np.log(np_softmax(x[:, :, None, None])[:, :, 0, 0])
    w = rand.numpy().reshape(-1)[target.numpy().reshape(-1) != IGNORE]
    expected = (w * -logp[np.arange(len(y)), y]).sum() / w.sum()
    assert boundary(logits, target, weight=rand)["loss"].item() == pytest.approx(expected, rel=1e-10)


def test_weighted_sum_is_sum_of_weighted_parts():
    logits, target = random_case(7)
    ce, dice = CrossEntropy(), Dice()
    combo = WeightedSum({"ce": ce, "dice": dice}, {"ce": 0.3, "dice": 2.5})
    out = combo(logits, target)
    parts = ce(logits, target)["loss"].item(), dice(logits, target)["loss"].item()
    assert out["loss_ce"].item() == pytest.approx(parts[0]) and out["loss_dice"].item() == pytest.approx(parts[1])
    assert out["loss"].item() == pytest.approx(0.3 * parts[0] + 2.5 * parts[1], rel=1e-6)
    assert set(out) == {"loss", "loss_ce", "loss_dice"}
    with pytest.raises(ValueError, match="lovasz"):
        WeightedSum({"ce": ce}, {"lovasz": 1.0})


# -- the U-Net boundary weight map ------------------------------------------------------------------------------
def brute_force_weight_map(mask, class_weights, w0, sigma):
    """Distances to every pixel of each object by brute force (objects here: one per class id > 0)."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dists = []
    for obj in [v for v in np.unique(mask) if v != 0]:
        pts = np.argwhere(mask == obj)
        d = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2).min(-1)
        dists.append(d)
    d1, d2 = np.sort(np.stack(dists), axis=0)[:2]
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return np.asarray(class_weights)[mask] + np.where(mask == 0, border, 0)


def test_boundary_map_peaks_in_the_gap_and_is_the_class_weight_far_away():
    mask = np.zeros((48, 48), np.int64)
    mask[18:30, 8:20] = 1  # two squares of class 1, 3 pixels apart (columns 20, 21, 22)
    mask[18:30, 23:35] = 1
    mask[0, 47] = IGNORE
    weights = [0.5, 2.0]
    wmap = unet_weight_map(mask, class_weights=weights, w0=10.0, sigma=5.0)
    assert wmap.dtype == np.float32 and wmap.shape == mask.shape
    peak = np.unravel_index(np.argmax(wmap), wmap.shape)
    assert 18 <= peak[0] < 30 and 20 <= peak[1] <= 22  # in the gap
    assert wmap[24, 21] == pytest.approx(0.5 + 10 * np.exp(-((2 + 2) ** 2) / 50), rel=1e-5)  # d1 = d2 = 2
    assert wmap[47, 0] == pytest.approx(0.5, abs=1e-6)  # far from both: the background's class weight
    assert wmap[24, 12] == pytest.approx(2.0)  # inside an object: its class weight
    assert wmap[0, 47] == 0.0  # ignored
    # against brute-force distances (each square its own object id)
    objects = np.where(mask == IGNORE, 0, mask)
    objects[18:30, 23:35] = 2
    expected = brute_force_weight_map(objects, [0.5, 2.0, 2.0], 10.0, 5.0)
    labelled = mask != IGNORE
    np.testing.assert_allclose(wmap[labelled], expected[labelled], rtol=1e-5, atol=1e-6)


def test_boundary_map_one_object_has_no_border_term():
    mask = np.zeros((20, 20), np.int64)
    mask[5:10, 5:10] = 2
    np.testing.assert_array_equal(unet_weight_map(mask), np.ones((20, 20), np.float32))


# -- every config in configs/loss/ ----------------------------------------------------------------------------
def make_loss(name: str):
    cfg = compose_config("train", [f"loss={name}"])
    return instantiate(cfg.loss)


def call(loss, logits, target):
    """Call a loss as the LightningModule does: with the per-pixel extras its data pipeline would add."""
    extras = {
        k: torch.stack([torch.from_numpy(fn(t.numpy())) for t in target]) for k, fn in loss.sample_extras().items()
    }
    return loss(logits, target, **extras)


@pytest.mark.parametrize("name", LOSS_CONFIGS)
def test_config_zero_gradient_at_ignored_pixels(name):
    loss = make_loss(name)
    g = torch.Generator().manual_seed(8)
    target = torch.randint(0, 5, (2, 12, 12), generator=g)  # 6 classes, class 5 absent
    target[torch.rand(2, 12, 12, generator=g) < 0.25] = IGNORE
    target[0, :3] = IGNORE
    logits = torch.randn(2, 6, 12, 12, dtype=torch.float64, generator=g, requires_grad=True)
    out = call(loss, logits, target)
    assert torch.isfinite(out["loss"]) and any(k.startswith("loss_") for k in out)
    out["loss"].backward()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert (logits.grad[ignored] == 0).all()
    assert logits.grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("name", LOSS_CONFIGS)
def test_config_all_pixels_ignored_gives_zero(name):
    loss = make_loss(name)
    logits = torch.randn(2, 6, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), IGNORE)
    out = call(loss, logits, target)
    assert out["loss"].item() == 0.0
    out["loss"].backward()
    assert (logits.grad == 0).all()


@pytest.mark.parametrize("name", LOSS_CONFIGS)
def test_config_trains_fast_dev_run(name, train_cfg):
    from src.train import train

    IndependentScores.runs.clear()
    results = train(train_cfg(f"loss={name}", "debug=fast_dev_run", *INDEPENDENT))
    assert results["val"]["mIoU"] == pytest.approx(IndependentScores.runs[-1], abs=1e-9)  # NumPy, from scratch


# -- class weights: list or file, and the length check --------------------------------------------------------
def weight_file(path: Path, weights, dataset="synthetic") -> Path:
    path.write_text(
        json.dumps(
            {
                "dataset": dataset,
                "method": "median_frequency",
                "class_names": [f"c{i}" for i in range(len(weights))],
                "weights": weights,
                "pixel_counts": [100] * len(weights),
            }
        )
    )
    return path


def test_class_weights_from_file_equal_list(tmp_path):
    weights = [0.5, 2.0, 1.0, 3.0]
    path = weight_file(tmp_path / "class_weights.json", weights)
    logits, target = random_case(9)
    from_file = CrossEntropy(class_weights=str(path), num_classes=C)(logits, target)["loss"]
    from_list = CrossEntropy(class_weights=weights, num_classes=C)(logits, target)["loss"]
    assert from_file.item() == from_list.item() == pytest.approx(np_ce(logits, target, weights))
    assert Dice(class_weights=path, num_classes=C)(logits, target)["loss"].item() == pytest.approx(
        np_region(logits, target, 0.5, 0.5, weights), rel=1e-5
    )


def test_wrong_length_class_weights_name_numbers_and_source(tmp_path):
    with pytest.raises(UserError, match=r"class-weight list \[1, 2\] has 2 weights but data.num_classes is 6"):
        CrossEntropy(class_weights=[1, 2], num_classes=6)
    path = weight_file(tmp_path / "cw.json", [1.0] * 5, dataset="camvid")
    with pytest.raises(UserError, match=rf"{path}.*'camvid'.*has 5 weights but data.num_classes is 6"):
        Focal(class_weights=str(path), num_classes=6)
    with pytest.raises(UserError, match="no such file.*src.check"):
        Dice(class_weights=str(tmp_path / "missing.json"), num_classes=6)
    with pytest.raises(UserError, match="negative"):
        CrossEntropy(class_weights=[1, -1], num_classes=2)


@pytest.mark.parametrize("where", ["loss.class_weights=[1,2,3]", "loss=ce_dice loss.terms.ce.class_weights=[1,2,3]"])
def test_wrong_length_class_weights_stop_the_run_with_a_message(tmp_path, where):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "src.train", *FAST, *where.split(), f"hydra.run.dir={tmp_path / 'run'}", "logger=none"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "has 3 weights but data.num_classes is 6" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- batch extras: what the DataModule adds, what the module hands the loss ------------------------------------
def small_run(train_cfg, *overrides):
    cfg = train_cfg("data.train_size=4", "data.batch_size=4", "data.num_workers=0", *overrides)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    return datamodule, build_module(cfg, datamodule)


def test_unet_boundary_training_batch_carries_its_map_and_weights_the_loss(train_cfg):
    """The DataModule is built with the loss's extras: the training batch holds the map (with its border term),
    the module hands it to the loss, and the value is the map-weighted mean, not plain cross-entropy."""
    datamodule, module = small_run(train_cfg, "loss=unet_boundary")
    assert set(datamodule.sample_extras) == {"weight"} and module.loss_keys == ("weight",)
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    weight, mask = batch["weight"], batch["mask"]
    assert weight.shape == mask.shape and weight.max() > 2.0  # 1 + the border term between nearby shapes
    for k in range(len(mask)):  # the map of each augmented training mask
        expected = unet_weight_map(mask[k].numpy(), w0=10.0, sigma=5.0)
        np.testing.assert_allclose(weight[k].numpy(), expected, rtol=1e-5, atol=1e-6)
    logits = module(batch["image"]).double()
    value = module._loss(logits, batch, "train").item()
    plain = CrossEntropy()(logits, mask)["loss"].item()
    ce = torch.nn.functional.cross_entropy(logits, mask.long(), ignore_index=IGNORE, reduction="none")
    expected = ((weight * ce).sum() / weight[mask != IGNORE].sum()).item()
    assert value == pytest.approx(expected, rel=1e-6)
    assert abs(value - plain) > 1e-3 * plain, (value, plain)
    assert "weight" not in next(iter(datamodule.val_dataloader()))  # evaluation batches carry no map


@pytest.mark.parametrize("name", LOSS_CONFIGS)
def test_unrelated_batch_keys_never_reach_the_loss(name, train_cfg):
    """A batch key no loss declares (a file name, an index) leaves every loss working and its value unchanged."""
    _, module = small_run(train_cfg, f"loss={name}")
    g = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 6, (2, 16, 16), generator=g)
    logits = torch.randn(2, 6, 16, 16, generator=g, dtype=torch.float64)
    extras = module.loss.sample_extras() if hasattr(module.loss, "sample_extras") else {}
    declared = {k: torch.stack([torch.from_numpy(fn(m.numpy())) for m in mask]) for k, fn in extras.items()}
    batch = {"image": torch.zeros(2, 3, 16, 16), "mask": mask, **declared}
    batch |= {"name": ["a.png", "b.png"], "index": torch.arange(2)}
    expected = call(module.loss, logits, mask)["loss"].item()
    assert module._loss(logits, batch, "train").item() == pytest.approx(expected, rel=1e-9)
    assert module._loss(logits, batch, "val").item() == pytest.approx(expected, rel=1e-9)


def test_training_batch_without_the_declared_extra_is_an_error(train_cfg):
    """A DataModule built without the loss's extras would silently train plain cross-entropy: it stops instead."""
    _, module = small_run(train_cfg, "loss=unet_boundary")
    batch = {"image": torch.zeros(1, 3, 8, 8), "mask": torch.zeros(1, 8, 8, dtype=torch.long)}
    with pytest.raises(RuntimeError, match=r"needs \['weight'\] in every training batch"):
        module._loss(torch.zeros(1, 6, 8, 8), batch, "train")
    assert torch.isfinite(module._loss(torch.zeros(1, 6, 8, 8), batch, "val"))  # evaluation: class weights alone
