"""What every dataset here shares: index-mask samples, an albumentations pipeline, loaders that reseed per worker.

A dataset subclasses `SegDataset` and implements `__len__` and `load(i)`; a DataModule subclasses `SegDataModule`
and implements `make_dataset(split, transform)`. Everything else (batching, worker seeding, epoch-wise shuffling
that survives a resume) lives here once.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from src.data.device import IMAGENET_MEAN, IMAGENET_STD, BatchTransform
from src.errors import DataError, UserError


class SegDataset(Dataset):
    """A sample is `{"image": uint8 (3,H,W), "mask": (H,W)}` after `transform` (plus `"seed"`, an int, when indexed
    by `EpochSampler` for training). Masks are `mask_dtype`: uint8 when every label fits (the DataModule sets it),
    made `long` by the loss and the metrics.

    `load(i)` returns the raw pair: an RGB uint8 array (H,W,3) and an integer mask (H,W) already in training labels
    (0..C-1, ignore index elsewhere). Label conventions of each dataset are applied inside `load`, once.
    """

    def __init__(self, transform: Callable | None = None):
        self.transform = transform
        # name -> fn(mask after transform) -> per-pixel array, added to the sample under that name (computed in
        # the workers, e.g. a loss's boundary weight map); the DataModule gives its training dataset the
        # `sample_extras` it was built with
        self.extras: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    mask_dtype = np.int64

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        if isinstance(index, tuple):  # (index, augmentation seed) from EpochSampler
            index, seed = index
            reseed_transform(self.transform, seed)
        else:
            seed = None
        image, mask = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        # uint8 stays uint8 (normalised on the device: src/data/device.py); a pipeline that normalised on the
        # host hands over float32. (3,H,W) is a view of the (H,W,3) array, not a copy: `collate` stacks the
        # stored order and the batch is a channels-last (N,3,H,W) tensor, the layout the network runs in.
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        sample = {
            "image": image if image.dtype == torch.uint8 else image.float(),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=self.mask_dtype)),
        }
        if seed is not None:  # the device-side augmentations of this sample draw from it too
            sample["seed"] = seed
        for name, fn in self.extras.items():
            sample[name] = torch.from_numpy(np.ascontiguousarray(fn(mask)))
        return sample


class EpochSampler(Sampler):
    """Yields `(index, sample_seed)`: the order and each sample's augmentation seed depend on (seed, epoch) alone.

    So epoch k of a run resumed from a checkpoint replays exactly what an uninterrupted run did, whatever the
    number of DataLoader workers, and no two workers or epochs repeat each other's augmentations (albumentations
    keeps its own RNG, copied into every forked worker, so without reseeding every worker and every epoch would
    draw the same augmentations). Lightning calls `set_epoch` before
    each training epoch. With `shuffle=False` (evaluation) it yields plain indices in order. `skip` drops that many
    of this rank's first items from the next iterator only: a run resumed in the middle of an epoch (preemption)
    continues with the very samples an uninterrupted run would have drawn next (set by `EpochSeed`).

    Under torch.distributed it also shards: training pads to a multiple of the world size (every rank needs the
    same number of steps); evaluation does not pad, so no sample is counted twice (DistributedSampler's padding
    counts padded samples twice and changes the metrics). The trainer therefore runs with
    `use_distributed_sampler=False`.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True, epoch: int = 0):
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, epoch
        self.iterated_epoch: int | None = None  # the epoch of the last iterator made (see EpochSeed)
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def _world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def __len__(self) -> int:
        world, rank = self._world()
        if self.shuffle:
            return -(-self.length // world)
        return len(range(rank, self.length, world))

    def __iter__(self):
        self.iterated_epoch = self.epoch
        skip, self.skip = self.skip, 0
        world, rank = self._world()
        if not self.shuffle:
            return iter(range(rank, self.length, world)[skip:])
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=g).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.length,), generator=g).tolist()
        items = list(zip(order, seeds))
        items += items[: len(self) * world - len(items)]
        return iter(items[rank::world][skip:])


class EpochSeed(L.Callback):
    """Before training step i of epoch k, seed the global RNGs (dropout, any model randomness) from (seed, k, i).

    The data side is seeded per sample by `EpochSampler`; together, what happens in a training step depends on
    (seed, epoch, step) alone, not on how many steps this process has run before, so a run resumed from any
    checkpoint, one written at an epoch's end or one written mid-epoch when SLURM preempted it (SIGTERM), ends with
    the weights of an uninterrupted run. Two Lightning details need mending for that: on a resume, Lightning makes
    the first epoch's data iterator before it restores the epoch counter (and before it calls `set_epoch`), so that
    iterator would replay epoch 0's order; and mid-epoch it would start the epoch's order again from its first
    batch. The iterator is remade here in both cases, mid-epoch without the batches already trained on.
    """

    def __init__(self, seed: int):
        self.seed = seed

    @staticmethod
    def _loaders(trainer) -> list[DataLoader]:
        loaders = trainer.train_dataloader
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        return [dl for dl in loaders if isinstance(getattr(dl, "sampler", None), EpochSampler)]

    @staticmethod
    def _remake_iterator(trainer) -> None:
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is not None:
            iter(fetcher)  # what Lightning itself does at the start of every later epoch

    def on_train_start(self, trainer, pl_module) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # batches of this epoch trained on
        loaders = self._loaders(trainer)
        if not (trainer.fit_loop.restarted_mid_epoch and 0 < done < trainer.num_training_batches and loaders):
            return
        for dl in loaders:
            dl.sampler.set_epoch(trainer.current_epoch)
            dl.sampler.skip = done * dl.batch_size
        self._remake_iterator(trainer)
        # Lightning cannot know that these loaders resume exactly; its warning would say the opposite
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if any(dl.sampler.iterated_epoch not in (None, dl.sampler.epoch) for dl in self._loaders(trainer)):
            self._remake_iterator(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        s = (self.seed * 1_000_003 + trainer.current_epoch * 100_003 + batch_idx) % 2**32
        if pl_module.device.type == "cpu":  # torch.manual_seed also queues CUDA's seeding: 0.1 ms a step here
            torch.default_generator.manual_seed(s)
        else:
            torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)


def collate(samples: list[dict]) -> dict:
    """`default_collate`, except that images are stacked in their stored (H,W,3) order (one plain copy each, into
    shared memory in a worker, as default_collate does) and handed over as a channels-last (N,3,H,W) view;
    stacking (3,H,W) views would transpose every image on the host."""
    if not (samples and isinstance(samples[0], Mapping) and "image" in samples[0]):
        return default_collate(samples)
    batch = default_collate([{k: v for k, v in s.items() if k != "image"} for s in samples])
    batch["image"] = default_collate([s["image"].permute(1, 2, 0) for s in samples]).permute(0, 3, 1, 2)
    return batch


def seed_worker(worker_id: int) -> None:
    """Seed NumPy's and Python's global RNGs in each DataLoader worker from the seed PyTorch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def reseed_transform(transform, seed: int) -> None:
    """Seed an albumentations pipeline for one sample, every transform in it from its own stream.

    albumentations' `Compose.set_random_seed(s)` gives every transform the same seed, so their draws coincide:
    the first number RandomRescale draws (its ratio) is the one HorizontalFlip compares with p, and flipped crops
    were always the downscaled ones (correlation -0.86 over 400 samples; tests/test_datasets.py). Here transform
    k of the pipeline (in order, nested pipelines included) is seeded from (seed, k)."""
    if transform is None or not hasattr(transform, "set_random_seed"):
        return
    todo, k = [transform], 0
    while todo:
        t = todo.pop(0)
        s = seed * 256 + k
        t.seed, t.random_generator, t.py_random = s, np.random.default_rng(s), random.Random(s)
        todo += [c for c in getattr(t, "transforms", []) if hasattr(c, "set_random_seed")]
        k += 1


class SegDataModule(L.LightningDataModule):
    """Thin DataModule: the dataset class, its label conventions, its pipelines per split.

    Args:
        num_classes: number of training classes (labels 0..num_classes-1).
        class_names: one name per class (printed in tables and written to metrics.json); None: the dataset's own
            `CLASS_NAMES` (a fixed benchmark states its classes and `PALETTE` in its module; its YAML gives only
            `num_classes`, which other configs interpolate).
        ignore_index: the label that takes no part in loss or metrics.
        train_transform / eval_transform: albumentations pipelines (instantiated by Hydra from config).
        batch_size / eval_batch_size: samples per device and step.
        num_workers: DataLoader worker processes.
        mean, std, photometric: the device-side batch transform (`src.data.device.BatchTransform`): normalisation
            (per channel, of images in [0, 1]) and the photometric distortion of training batches (ColorJitter's
            brightness, contrast, saturation, hue, p; None: none), run in `on_after_batch_transfer`.
        seed: seeds the epoch-wise shuffle.
        sample_extras: name -> fn(training mask after the pipeline) -> per-pixel array, added to every training
            sample under that name (computed in the DataLoader workers), e.g. the boundary weight map of
            `loss=unet_boundary`: `loss.sample_extras()`, given here by `src.run.build_datamodule`. Fixed when the
            DataModule is built; evaluation samples get none.
    """

    has_test = False  # subclasses with a labelled test split set this
    name = "this dataset"  # in messages
    CLASS_NAMES: Sequence[str] | None = None  # a fixed benchmark's classes and colours (see class_names)
    PALETTE: Sequence[Sequence[int]] | None = None

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        train_transform: Callable | None = None,
        eval_transform: Callable | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        photometric: dict | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        palette: Sequence[Sequence[int]] | None = None,
        sample_extras: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    ):
        super().__init__()
        if class_names is None and self.CLASS_NAMES is None:
            raise DataError(f"data.class_names is not set: give one name per class ({num_classes}).")
        if class_names is None:
            class_names = self.CLASS_NAMES
            if len(class_names) != num_classes:
                raise DataError(
                    f"data.num_classes is {num_classes} but {self.name} has {len(class_names)} classes "
                    f"({type(self).__module__}.CLASS_NAMES): set data.num_classes={len(class_names)}, or give "
                    "data.class_names with one name per class."
                )
        if len(class_names) != num_classes:
            raise DataError(
                f"data.class_names has {len(class_names)} names but data.num_classes is {num_classes}: "
                "give one name per class."
            )
        if palette is None and self.PALETTE is not None and len(self.PALETTE) == num_classes:
            palette = self.PALETTE
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.palette = [list(c) for c in palette] if palette is not None else None
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.batch_transform = BatchTransform(mean, std, photometric)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self.datasets: dict[str, SegDataset] = {}
        self.sample_extras = MappingProxyType(dict(sample_extras or {}))  # read-only: given when built

    # -- the one hook a dataset implements --------------------------------------------------------------
    def make_dataset(self, split: str, transform: Callable | None) -> SegDataset:
        raise NotImplementedError

    def validate(self) -> None:
        """Check the data before any long work starts; raise `DataError` naming the file and the fix."""

    def splits(self) -> list[str]:
        """The labelled splits this dataset has (validated before training, scanned by the check)."""
        return ["train", "val"] + (["test"] if self.has_test else [])

    # -- shared ------------------------------------------------------------------------------------------
    def check_split(self, split: str) -> None:
        """A `UserError` naming the split and the splits available, unless this dataset has `split` labelled."""
        splits = self.splits()
        if split not in splits:
            raise UserError(
                f"split={split}: {self.name} has no labelled {split} split (it has {', '.join(splits)}); "
                f"choose one of those, e.g. split={splits[-1]}."
            )

    def dataset(self, split: str) -> SegDataset:
        if split not in self.datasets:
            self.check_split(split)
            transform = self.train_transform if split == "train" else self.eval_transform
            self.datasets[split] = self.make_dataset(split, transform)
            if split == "train":
                self.datasets[split].extras = dict(self.sample_extras)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
            self.dataset("val")
        if stage == "validate":
            self.dataset("val")
        if stage == "test":
            self.dataset("test")

    def _loader(self, split: str, train: bool) -> DataLoader:
        data = self.dataset(split)
        data.mask_dtype = np.uint8 if max(self.num_classes - 1, self.ignore_index) <= 255 else np.int64
        return DataLoader(
            data,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochSampler(len(data), seed=self.seed, shuffle=train),
            drop_last=train and len(data) > self.batch_size,
            num_workers=self.num_workers,
            worker_init_fn=seed_worker,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )

    def network_input(self, images: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 images (N,3,H,W), on any device -> the network's input (normalised float32): what training,
        evaluation and inference feed the network. With `seeds` (one per image), also the photometric distortion
        of training."""
        return self.batch_transform(images, seeds)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Lightning calls this on every batch once it is on the device: the device-side transform runs here
        (training batches carry their samples' seeds; they are consumed here)."""
        if isinstance(batch, dict) and "image" in batch:
            batch = dict(batch)
            batch["image"] = self.network_input(batch["image"], batch.pop("seed", None))
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, or the validation split of a dataset without a labelled test split."""
        return self._loader("test" if self.has_test else "val", train=False)
