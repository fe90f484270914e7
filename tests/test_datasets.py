"""Every on-disk DataModule reads a tiny copy of its dataset in the official layout (tests/fake_data.py): label
conventions pixel by pixel, tensors and batches, the pipelines' padding and crops, then a fast_dev_run training."""

from __future__ import annotations

import importlib
from pathlib import Path

import albumentations as A
import cv2
import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from src.check import check
from src.data.base import reseed_transform
from src.data.transforms import PadIfNeeded, RandomRescaleCrop, label_counts
from src.errors import UserError
from src.eval import evaluate
from src.run import instantiate
from src.train import train
from tests.conftest import compose_config
from tests.fake_data import (
    CITYSCAPES_IDS,
    FOLDER_IGNORE_COLOUR,
    FOLDER_PALETTE,
    write_ade20k,
    write_camvid,
    write_cityscapes,
    write_folder,
    write_mmseg_generic,
    write_voc,
)
from tests.scoring import INDEPENDENT, IndependentScores

# small enough for a CPU: tiny crops and rescale references, a tiny classic U-Net
SMALL = ["data.batch_size=2", "data.crop_size=[32,32]", "data.num_workers=0", "data.pin_memory=false"]
TINY_RUN = [
    "model=unet_classic",
    "model.base_channels=8",
    "model.depth=2",
    "trainer.accelerator=cpu",
    "callbacks.rich_progress_bar=null",
    "callbacks.model_summary=null",
    "extras.print_config=false",
]


def cityscapes_expected(raw: np.ndarray, path: str) -> np.ndarray:
    if path.endswith("_gtFine_labelIds.png"):
        return np.vectorize(CITYSCAPES_IDS.get)(raw)
    return raw


def folder_rgb_expected(raw: np.ndarray, path: str) -> np.ndarray:
    out = np.full(raw.shape[:2], -1)
    for c, colour in enumerate(FOLDER_PALETTE + [FOLDER_IGNORE_COLOUR]):
        out[(raw == colour).all(-1)] = c if c < len(FOLDER_PALETTE) else 255
    assert (out >= 0).all()
    return out


# case -> (data config, writer, expected training labels from (stored values, mask path), overrides)
CASES = {
    "ade20k": (
        "ade20k",
        write_ade20k,
        lambda raw, p: np.where(raw == 0, 255, raw.astype(int) - 1),
        ["data.scale=[128,32]"],
    ),
    "cityscapes": ("cityscapes", write_cityscapes, cityscapes_expected, ["data.scale=[64,32]"]),
    "cityscapes_labelIds_only": (
        "cityscapes",
        lambda t: write_cityscapes(t, train_ids=False),
        cityscapes_expected,
        ["data.scale=[64,32]"],
    ),
    "voc": ("voc", write_voc, lambda raw, p: raw, ["data.scale=[128,32]"]),
    "voc_aug": ("voc", lambda t: write_voc(t, aug=True), lambda raw, p: raw, ["data.scale=[128,32]", "data.aug=true"]),
    "camvid": ("camvid", write_camvid, lambda raw, p: np.where(raw == 11, 255, raw), ["data.scale=[48,36]"]),
    "folder_index": (
        "folder",
        write_folder,
        lambda raw, p: raw,
        ["data.num_classes=3", "data.class_names=[a,b,c]", "data.palette=null"],
    ),
    "folder_rgb_lists": (
        "folder",
        lambda t: write_folder(t, "rgb", "lists"),
        folder_rgb_expected,
        [
            "data.num_classes=3",
            "data.class_names=[a,b,c]",
            "data.mask_mode=rgb",
            f"data.palette={FOLDER_PALETTE}".replace(" ", ""),
            f"data.ignore_colors=[{FOLDER_IGNORE_COLOUR}]".replace(" ", ""),
        ],
    ),
    "folder_no_splits": (
        "folder",
        lambda t: write_folder(t, splits="none", n=10),
        lambda raw, p: raw,
        ["data.num_classes=3", "data.class_names=[a,b,c]", "data.palette=null"],
    ),
}


def datamodule(tmp_path: Path, case: str):
    name, writer, _, overrides = CASES[case]
    fake = writer(tmp_path / "data")
    cfg = compose_config("train", [f"data={name}", f"data.data_dir={fake.root}", *SMALL, *overrides], tmp_path / "c")
    return hydra.utils.instantiate(cfg.data, _convert_="partial"), fake


@pytest.mark.parametrize("case", list(CASES))
def test_labels_pixel_by_pixel_and_tensors(case, tmp_path):
    dm, fake = datamodule(tmp_path, case)
    expected = CASES[case][2]
    dm.validate()
    seen = set()
    for split in ("train", "val"):
        data = dm.dataset(split)
        assert len(data) > 0
        # file lists are NumPy string arrays, not lists of Python objects that forked workers copy on access
        assert data.images.dtype.kind == "U" and data.masks.dtype.kind == "U"
        for i in range(len(data)):
            path = str(data.masks[i])
            seen.add(path)
            image, labels = data.load(i)
            want = expected(fake.raw[path], path)
            assert image.dtype == np.uint8 and image.shape == want.shape + (3,)
            np.testing.assert_array_equal(labels, want, err_msg=path)
            # evaluation samples: uint8 image (3,H,W) that the device normalises, the mask at the original size,
            # labels untouched
            sample = dm.dataset("val")[i] if split == "val" else None
            if sample is not None:
                assert sample["image"].dtype == torch.uint8 and sample["image"].shape[0] == 3
                assert dm.network_input(sample["image"][None]).dtype == torch.float32
                assert sample["mask"].dtype == torch.long
                assert torch.equal(sample["mask"], torch.from_numpy(want).long())
    if case == "cityscapes":  # the train ids files win over the label ids when both exist
        assert all(p.endswith("_gtFine_labelTrainIds.png") for p in seen)
    if case == "voc_aug":  # train.txt's own annotations, SBD's for the extra ids, nothing listed twice
        train = dm.dataset("train")
        assert len(train) == 5 and len(set(train.images.tolist())) == 5
        assert sum("SegmentationClassAug" in p for p in train.masks.tolist()) == 2
    if case == "folder_no_splits":
        assert len(dm.dataset("train")) == 8 and len(dm.dataset("val")) == 2
        assert not set(dm.dataset("train").images.tolist()) & set(dm.dataset("val").images.tolist())

    batch = next(iter(dm.train_dataloader()))  # uint8 out of the workers, normalised once on the device
    assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert dm.on_after_batch_transfer(batch, 0)["image"].dtype == torch.float32
    assert batch["mask"].shape == (2, 32, 32) and batch["mask"].dtype == torch.uint8  # uint8 until the loss
    values = set(batch["mask"].unique().tolist())
    assert values <= set(range(dm.num_classes)) | {255}


def test_evaluation_resizes_the_image_only(tmp_path):
    """ADE20K evaluation: short side resized to data.scale's short edge, the mask kept at its original size."""
    dm, fake = datamodule(tmp_path, "ade20k")
    sample, (_, labels) = dm.dataset("val")[0], dm.dataset("val").load(0)
    assert min(sample["image"].shape[-2:]) == 32 and sample["mask"].shape == labels.shape
    assert sample["image"].shape[-2:] != sample["mask"].shape


@pytest.mark.parametrize("name", ["ade20k", "cityscapes", "voc", "camvid", "folder"])
def test_training_pipeline_pads_masks_with_the_ignore_index(name, tmp_path):
    """An image smaller than the crop is padded: image with the mean colour (0 once normalised on the device), mask
    with 255, never 0."""
    overrides = ["data.crop_size=[64,64]"] + ([] if name == "folder" else ["data.scale=[16,16]"])
    cfg = compose_config("train", [f"data={name}", *overrides], tmp_path / "c")
    transform = hydra.utils.instantiate(cfg.data.train_transform)
    transform.set_random_seed(0)
    for _ in range(5):
        out = transform(image=np.full((12, 12, 3), 200, np.uint8), mask=np.ones((12, 12), np.uint8))
        mask, image = out["mask"], out["image"]
        assert mask.shape == (64, 64) and set(np.unique(mask).tolist()) == {1, 255}
        assert image.dtype == np.uint8 and (image[mask == 255] == [124, 116, 104]).all()


def test_file_datasets_share_one_training_pipeline(tmp_path):
    """configs/data/pipeline/mmseg.yaml is the one place of the training augmentation: every on-disk dataset
    composes the same steps, with its own sizes."""
    steps = {}
    for name in ["ade20k", "cityscapes", "voc", "camvid", "folder"]:
        cfg = compose_config("train", [f"data={name}"], tmp_path / name)
        steps[name] = [t._target_ for t in cfg.data.train_transform.transforms]
        assert cfg.data.train_transform.transforms[0].height == cfg.data.crop_size[0]
    assert len({tuple(s) for s in steps.values()}) == 1, steps
    assert steps["voc"][0] == "src.data.transforms.RandomRescaleCrop"


def test_random_rescale_without_reference_scale_uses_the_image_size():
    """data=folder (scale: null): a keep-ratio rescale by r in [0.5, 2] of each image's own size (a crop larger
    than any rescaled image: nothing is cut)."""
    rescale = A.Compose([RandomRescaleCrop(500, 500, scale=None, ratio_range=(0.5, 2.0))])
    rescale.set_random_seed(0)
    heights = []
    for _ in range(50):
        out = rescale(image=np.zeros((40, 60, 3), np.uint8), mask=np.zeros((40, 60), np.uint8))
        h, w = out["mask"].shape
        assert out["image"].shape[:2] == (h, w) and 20 <= h <= 80 and abs(w / h - 1.5) < 0.05
        heights.append(h)
    assert min(heights) < 30 and max(heights) > 65


@pytest.mark.parametrize("ratio", [0.6, 1.0, 1.7])
def test_crop_first_equals_rescale_then_crop(ratio):
    """The crop of the rescaled image, made from the source pixels under it: the same content (a smooth image,
    so the rounding of the window to whole source pixels shows as a small difference) and the same mask."""
    yy, xx = np.mgrid[0:90, 0:120]
    image = np.stack([yy * 2, xx * 2, (yy + xx)], -1).astype(np.uint8)
    mask = ((yy // 30) * 4 + xx // 30).astype(np.uint8)  # a 3x4 grid of classes
    crop = RandomRescaleCrop(60, 80, scale=None, ratio_range=(ratio, ratio), cat_max_ratio=1.0)
    for seed in range(20):
        crop.set_random_seed(seed)
        params = crop.get_params_dependent_on_data({"shape": image.shape}, {"image": image, "mask": mask})
        out = {"image": crop.apply(image, **params), "mask": crop.apply_to_mask(mask, **params)}
        size = (int(90 * ratio + 0.5), int(120 * ratio + 0.5))
        big = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        big_mask = cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST)
        top, left = round(params["window"][0] * size[0] / 90), round(params["window"][1] * size[1] / 120)
        h, w = out["mask"].shape
        assert (h, w) == (min(60, size[0]), min(80, size[1]))
        expected = big[top : top + h, left : left + w].astype(int)
        assert np.abs(out["image"].astype(int) - expected).mean() < 3 * max(ratio, 1)
        assert (out["mask"] == big_mask[top : top + h, left : left + w]).mean() > 0.9


def test_each_transform_of_a_sample_draws_from_its_own_stream():
    """albumentations seeds every transform of a Compose alike, so their draws coincide (flips only ever came with
    downscales); reseed_transform gives each its own stream: flip and rescale ratio are independent."""
    pipeline = A.Compose([RandomRescaleCrop(500, 500, scale=None), A.HorizontalFlip(p=0.5)])
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :20] = 255
    sizes, flips = [], []
    for seed in range(400):
        reseed_transform(pipeline, seed)
        out = pipeline(image=image)["image"]
        sizes.append(out.shape[0])
        flips.append(out[0, 0, 0] == 0)
    sizes, flips = np.array(sizes), np.array(flips)
    assert 0.4 < flips.mean() < 0.6
    assert abs(np.corrcoef(sizes, flips)[0, 1]) < 0.15
    reseed_transform(pipeline, 7)
    first = pipeline(image=image)["image"]
    reseed_transform(pipeline, 7)
    assert np.array_equal(pipeline(image=image)["image"], first)  # still a function of the seed


def test_cat_max_ratio_crop_avoids_crops_of_one_class():
    """A 40x40 class-1 corner in a 100x100 class-0 mask: with cat_max_ratio 0.75 most 40x40 crops hold both
    classes in balance; a plain random crop rarely does."""
    mask = np.zeros((100, 100), np.uint8)
    mask[:40, :40] = 1
    image = np.zeros((100, 100, 3), np.uint8)

    def balanced_share(ratio: float) -> float:
        crop = A.Compose([RandomRescaleCrop(40, 40, scale=None, ratio_range=(1.0, 1.0), cat_max_ratio=ratio)])
        crop.set_random_seed(0)
        hits = 0
        for _ in range(300):
            m = crop(image=image, mask=mask)["mask"]
            assert m.shape == (40, 40)
            hits += np.bincount(m.ravel(), minlength=2).max() / m.size < 0.75
        return hits / 300

    plain, balanced = balanced_share(1.0), balanced_share(0.75)
    assert plain < 0.3 and balanced > 0.6, (plain, balanced)


def test_cat_max_ratio_counted_on_a_grid_picks_the_crops_a_full_count_picks():
    """The class shares of a candidate crop are counted on a grid of >= 64 rows and columns of its window: on
    masks of overlapping shapes (8 classes, regions of all sizes) the crops drawn are those of a full count (a
    grid of 16 already differs in 2% of the draws, one of 4 in 12%; a plain random crop in 20%)."""
    rng = np.random.default_rng(0)
    picked = {0: [], 64: [], "plain": []}
    for _ in range(20):
        mask = np.full((360, 480), 255, np.uint8)
        for _ in range(12):
            c, y, x = int(rng.integers(0, 8)), int(rng.integers(0, 360)), int(rng.integers(0, 480))
            axes = (int(rng.integers(10, 200)), int(rng.integers(10, 200)))
            if rng.random() < 0.5:
                cv2.ellipse(mask, (x, y), axes, float(rng.integers(0, 180)), 0, 360, c, -1)
            else:
                cv2.rectangle(mask, (x, y), (x + axes[0], y + axes[1]), c, -1)
        image = np.zeros((*mask.shape, 3), np.uint8)
        for grid in picked:
            ratio, k = (1.0, 0) if grid == "plain" else (0.75, grid)
            crop = RandomRescaleCrop(256, 256, scale=(480, 360), cat_max_ratio=ratio, count_grid=k)
            for seed in range(10):
                crop.set_random_seed(seed)
                data = {"image": image, "mask": mask}
                picked[grid].append(crop.get_params_dependent_on_data({"shape": mask.shape}, data))
    same = {grid: np.mean([a == b for a, b in zip(picked[0], picked[grid])]) for grid in (64, "plain")}
    assert same[64] >= 0.99 and same["plain"] < 0.9, same


@pytest.mark.parametrize("dtype,ignore", [(np.uint8, 255), (np.int64, 255), (np.int64, -1), (np.uint8, 0)])
def test_label_counts_match_a_sort_based_count(dtype, ignore):
    labels = np.random.default_rng(0).integers(-1 if ignore < 0 else 0, 12, (37, 41)).astype(dtype)
    labels[:5] = ignore if ignore >= 0 or dtype != np.uint8 else 0
    values, counts = np.unique(labels, return_counts=True)
    assert label_counts(labels, ignore).tolist() == counts[values != ignore].tolist()


@pytest.mark.parametrize("height, width", [(5, 7), (8, 10), (12, 4), (9, 13)])
def test_pad_if_needed_is_albumentations_own_without_the_copy_of_what_fits(height, width):
    args = dict(min_height=8, min_width=10, position="top_left", border_mode=0, fill=(1, 2, 3), fill_mask=255)
    rng = np.random.default_rng(height)
    image, mask = rng.integers(0, 256, (height, width, 3), np.uint8), rng.integers(0, 12, (height, width), np.uint8)
    ours, library = PadIfNeeded(**args)(image=image, mask=mask), A.PadIfNeeded(**args)(image=image, mask=mask)
    for key in ("image", "mask"):
        np.testing.assert_array_equal(ours[key], library[key])
    fits = height >= 8 and width >= 10
    assert np.shares_memory(ours["image"], image) == fits and np.shares_memory(ours["mask"], mask) == fits


@pytest.mark.parametrize("case", ["ade20k", "cityscapes_labelIds_only", "voc", "camvid", "folder_index"])
def test_fast_dev_run(case, train_cfg, tmp_path):
    name, writer, _, overrides = CASES[case]
    fake = writer(tmp_path / "data")
    cfg = train_cfg(
        "debug=fast_dev_run",
        f"data={name}",
        f"data.data_dir={fake.root}",
        *SMALL,
        *overrides,
        *TINY_RUN,
        *INDEPENDENT,
        fast=False,
    )
    IndependentScores.runs.clear()
    results = train(cfg)
    assert results["val"]["mIoU"] == pytest.approx(IndependentScores.runs[-1], abs=1e-9)  # NumPy, from scratch
    assert len(results["val"]["per_class"]) == cfg.data.num_classes


# experiment -> (writer, overrides that shrink it for a CPU: no pretrained weights, small crops)
EXPERIMENTS = {
    "segformer_ade": (write_ade20k, ["data.scale=[128,64]"]),
    "deeplabv3plus_cityscapes": (write_cityscapes, ["data.scale=[64,32]"]),
    "deeplabv3plus_voc": (lambda t: write_voc(t, aug=True), ["data.scale=[128,64]"]),
    "unet_camvid": (write_camvid, ["data.scale=[48,36]"]),
}


@pytest.mark.parametrize(
    "experiment", [pytest.param(e, marks=[pytest.mark.slow] if "deeplab" in e else []) for e in EXPERIMENTS]
)
def test_experiment_fast_dev_run(experiment, train_cfg, tmp_path):
    """Each published-recipe experiment runs end to end on its tiny fake dataset (its network, optimizer settings,
    schedule and pipelines); unet_camvid first writes its class weights with the check."""
    writer, overrides = EXPERIMENTS[experiment]
    fake = writer(tmp_path / "data")
    common = [
        f"data.data_dir={fake.root}",
        f"paths.data_dir={tmp_path / 'data'}",
        "data.batch_size=2",
        "data.crop_size=[64,64]",
        "data.num_workers=0",
        "data.pin_memory=false",
        *overrides,
    ]
    if experiment == "unet_camvid":
        cfg = compose_config(
            "check", ["data=camvid", *common, "weights=median_frequency", "workers=0"], tmp_path / "check"
        )
        assert check(cfg) == 0
    cfg = train_cfg(
        f"experiment={experiment}",
        "debug=fast_dev_run",
        "model.encoder_weights=null",
        "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null",
        "extras.print_config=false",
        *common,
        *INDEPENDENT,
        fast=False,
    )
    IndependentScores.runs.clear()
    results = train(cfg)
    assert results["val"]["mIoU"] == pytest.approx(IndependentScores.runs[-1], abs=1e-9)


@pytest.mark.parametrize("name", ["ade20k", "cityscapes", "voc", "camvid", "synthetic"])
def test_class_names_and_palette_live_in_the_dataset_module_and_agree_with_the_config(name, tmp_path):
    """The fixed benchmarks state their classes once (CLASS_NAMES, PALETTE of src/data/<name>.py); the YAML's
    num_classes (interpolated by model and loss configs) agrees with them, and the DataModule uses them."""
    module = importlib.import_module(f"src.data.{name}")
    names, palette = module.CLASS_NAMES, module.PALETTE
    cfg = compose_config("train", [f"data={name}"], tmp_path)
    assert cfg.data.num_classes == len(names) == len(palette)
    assert len(set(names)) == len(names) and all(isinstance(n, str) and n for n in names)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette)
    dm = hydra.utils.instantiate(cfg.data, _convert_="partial")
    assert dm.class_names == list(names) and dm.palette == [list(c) for c in palette]


def test_wrong_num_classes_for_a_benchmark_names_the_fix(tmp_path):
    cfg = compose_config("train", ["data=camvid", "data.num_classes=12"], tmp_path)
    with pytest.raises(UserError, match=r"data.num_classes is 12 but CamVid has 11 classes .*data.num_classes=11"):
        instantiate(cfg.data, _convert_="partial")
    renamed = compose_config("train", ["data=camvid", f"data.class_names=[{','.join('abcdefghijk')}]"], tmp_path)
    assert hydra.utils.instantiate(renamed.data, _convert_="partial").class_names == list("abcdefghijk")


def test_a_missing_split_is_an_error_naming_the_splits_available(tmp_path):
    """ADE20K has no labelled test split: asking for it (the test loader, `python -m src.eval split=test`) stops
    with the splits there are, never scores val under the name "test"."""
    dm, fake = datamodule(tmp_path, "ade20k")
    assert dm.splits() == ["train", "val"]
    message = r"split=test: ADE20K has no labelled test split \(it has train, val\)"
    with pytest.raises(UserError, match=message):
        dm.setup("test")
    # through the evaluation entry point, with a checkpoint's stored run config
    cfg = compose_config("train", ["data=ade20k", f"data.data_dir={fake.root}", *SMALL], tmp_path / "c")
    ckpt = tmp_path / "model.ckpt"
    torch.save(
        {
            "run_config": {
                k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg
                if k != "hydra"
            },
            "state_dict": {},
        },
        ckpt,
    )
    with pytest.raises(UserError, match=message):
        evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "split=test"], tmp_path / "e"))


GENERIC = ["data=folder", "data.num_classes=3", "data.class_names=[a,b,c]", "data.palette=null"]
GENERIC += ["data.image_dir=imgs", "data.mask_dir=gts", "data.mask_suffix=_gt"]


@pytest.mark.parametrize("image_suffix", ["_img", "_img.jpg"])
def test_folder_reads_mmsegmentation_generic_layout_without_renaming(image_suffix, tmp_path):
    """imgs/<key>_img.jpg + gts/<key>_gt.png with splits/*.txt of keys: data.image_dir, data.mask_dir,
    data.image_suffix, data.mask_suffix (the suffix with or without its extension, as mmsegmentation writes it)."""
    fake = write_mmseg_generic(tmp_path / "data")
    cfg = compose_config(
        "train", [*GENERIC, f"data.image_suffix={image_suffix}", f"data.data_dir={fake.root}", *SMALL], tmp_path / "c"
    )
    dm = instantiate(cfg.data, _convert_="partial")
    dm.validate()
    train, val = dm.dataset("train"), dm.dataset("val")
    assert [Path(p).name for p in train.images] == [f"tile_{i:02d}_img.jpg" for i in range(4)]
    assert [Path(p).name for p in val.masks] == ["tile_04_gt.png", "tile_05_gt.png"]
    for data in (train, val):
        for i, mask_path in enumerate(data.masks):
            image, labels = data.load(i)
            assert image.shape == (30, 44, 3)
            np.testing.assert_array_equal(labels, fake.raw[mask_path])
    assert dm.splits() == ["train", "val"]


def test_folder_names_the_expected_file_with_its_suffixes(tmp_path):
    fake = write_mmseg_generic(tmp_path / "data")
    (fake.root / "gts" / "tile_02_gt.png").unlink()
    cfg = compose_config("train", [*GENERIC, "data.image_suffix=_img", f"data.data_dir={fake.root}"], tmp_path / "c")
    with pytest.raises(UserError, match=rf"tile_02_img.jpg: no mask \(expected {fake.root}/gts/tile_02_gt.png\)"):
        instantiate(cfg.data, _convert_="partial").dataset("train")
    missing = compose_config("train", [*GENERIC, f"data.data_dir={fake.root}", "data.mask_dir=labels"], tmp_path / "d")
    with pytest.raises(
        UserError, match=r"(?s)has no folder labels.*imgs/<name>.jpg\|png\|tif \.\.\.    labels/<name>_gt"
    ):
        instantiate(missing.data, _convert_="partial").dataset("train")
