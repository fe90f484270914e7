"""The device-side batch transform (src/data/device.py): uint8 batches out of the loader, normalisation and the
photometric distortion after the transfer, seeded per sample, masks untouched; the same distribution as the host
pipeline it replaces (albumentations' ColorJitter + Normalize)."""

import albumentations as A
import numpy as np
import torch

from src.data.device import BatchTransform, uniform
from src.data.synthetic import render
from src.run import build_datamodule
from tests.conftest import compose_config

JITTER = {"brightness": 0.25, "contrast": 0.5, "saturation": 0.5, "hue": 0.1, "p": 0.5}


def sample_images(n: int = 96, size: int = 32) -> np.ndarray:
    return np.stack([render(0, i, "train", size, 3)[0] for i in range(n)])


def test_normalisation_equals_albumentations_normalize():
    images = sample_images(8)
    host = np.stack([A.Normalize()(image=im)["image"] for im in images]).transpose(0, 3, 1, 2)
    device = BatchTransform()(torch.from_numpy(images).permute(0, 3, 1, 2))
    torch.testing.assert_close(device, torch.from_numpy(host), rtol=1e-5, atol=1e-5)
    floats = torch.from_numpy(host)
    assert BatchTransform()(floats) is floats  # normalised on the host already: passed through


def test_photometric_distribution_matches_color_jitter():
    """Per-image mean, std and colourfulness over a fixed-seed sample: device vs albumentations on the host."""
    images = sample_images()
    jitter = A.Compose([A.ColorJitter(**JITTER), A.Normalize()])
    jitter.set_random_seed(0)
    host = torch.from_numpy(np.stack([jitter(image=im)["image"] for im in images]).transpose(0, 3, 1, 2))
    device = BatchTransform(photometric=JITTER)(
        torch.from_numpy(images).permute(0, 3, 1, 2), torch.arange(len(images)) * 7919
    )
    plain = BatchTransform()(torch.from_numpy(images).permute(0, 3, 1, 2))

    def stats(x):
        return {
            "mean": x.mean((1, 2, 3)),
            "std": x.std((1, 2, 3)),
            "chroma": (x - x.mean(1, keepdim=True)).abs().mean((1, 2, 3)),
        }

    h, d, p = stats(host), stats(device), stats(plain)
    for key in h:
        # the averages agree, and so does the spread the distortion adds to them
        assert abs(d[key].mean() - h[key].mean()) < 0.06, (key, d[key].mean(), h[key].mean())
        spread_host, spread_device = (h[key] - p[key]).abs().mean(), (d[key] - p[key]).abs().mean()
        assert 0.6 < spread_device / spread_host < 1.6, (key, spread_device, spread_host)
    changed = (device - plain).abs().flatten(1).amax(1) > 1e-3
    assert 0.3 < changed.float().mean() < 0.7  # p=0.5 of the images are distorted


def test_photometric_is_seeded_per_sample():
    images = torch.from_numpy(sample_images(6)).permute(0, 3, 1, 2)
    transform = BatchTransform(photometric={**JITTER, "p": 1.0})
    seeds = torch.tensor([1, 2, 3, 4, 5, 6])
    first = transform(images, seeds)
    assert torch.equal(first, transform(images, seeds))  # same seeds, same images
    # a sample's distortion depends on its own seed, not on the batch it is in
    torch.testing.assert_close(transform(images[[3, 1]], seeds[[3, 1]]), first[[3, 1]])
    other = transform(images, seeds + 100)
    assert ((other - first).abs().flatten(1).amax(1) > 1e-3).all()
    u = uniform(torch.arange(20_000), 0)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 0.2887) < 0.01


def test_loader_hands_uint8_and_the_hook_leaves_masks_alone(tmp_path):
    cfg = compose_config(
        "train", ["data.train_size=16", "data.batch_size=8", f"+data.photometric={JITTER}".replace("'", "")], tmp_path
    )
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["mask"].dtype == torch.uint8 and "seed" in batch
    # stacked without a host transpose: (N,3,H,W) in channels-last memory, the samples' pixels unchanged
    assert batch["image"].is_contiguous(memory_format=torch.channels_last) and batch["image"].shape[1] == 3
    train = datamodule.dataset("train")
    sampler = datamodule.train_dataloader().sampler
    for k, item in enumerate(list(iter(sampler))[:8]):
        sample = train[item]
        assert torch.equal(batch["image"][k], sample["image"]) and torch.equal(batch["mask"][k], sample["mask"])
    cfg.data.num_workers = 2  # the same batch built in a worker process (shared memory)
    worker_batch = next(iter(build_datamodule(cfg).train_dataloader()))
    assert (
        torch.equal(worker_batch["image"], batch["image"]) and worker_batch["image"].stride() == batch["image"].stride()
    )
    out = datamodule.on_after_batch_transfer(batch, 0)
    assert out["image"].dtype == torch.float32 and "seed" not in out and "seed" in batch
    assert torch.equal(out["mask"], batch["mask"])  # photometric changes never touch the labels
    labels = set(out["mask"].unique().tolist())
    assert labels <= set(range(datamodule.num_classes)) | {255}
    again = datamodule.on_after_batch_transfer(batch, 0)
    assert torch.equal(again["image"], out["image"])
    val = next(iter(datamodule.val_dataloader()))
    assert "seed" not in val  # evaluation batches: normalised, never distorted
    torch.testing.assert_close(
        datamodule.on_after_batch_transfer(val, 0)["image"], datamodule.network_input(val["image"])
    )
