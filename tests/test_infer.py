"""Inference modes (src/models/infer.py): whole, sliding window (batched, flat or Gaussian), multi-scale + flip."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.errors import UserError
from src.models.crf import dense_crf
from src.models.infer import Inferer, gaussian_weights, window_count, window_starts
from src.models.net import unet_classic


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = unet_classic(num_classes=4, base_channels=4, depth=2).eval()
    return model


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))


def test_window_grid_covers_the_image_and_stays_inside():
    assert window_starts(56, 32, 20) == [0, 20, 24]  # last window moved back to end at the border
    assert window_starts(40, 64, 20) == [0]
    for size, crop, stride in [(100, 32, 7), (33, 32, 32), (512, 128, 85)]:
        starts = window_starts(size, crop, stride)
        covered = torch.zeros(size, dtype=torch.bool)
        for s in starts:
            assert 0 <= s <= size - crop
            covered[s : s + crop] = True
        assert covered.all()
    assert window_count(40, 56, (24, 32), (16, 20)) == 2 * 3


def test_slide_batched_equals_one_window_at_a_time(net, images):
    kwargs = dict(slide=True, crop=(24, 32), stride=(16, 20))
    for weighting in ("flat", "gaussian"):
        one = Inferer(batch_size=1, weighting=weighting, **kwargs)(net, images)
        batched = Inferer(batch_size=5, weighting=weighting, **kwargs)(net, images)
        assert batched.shape == images.shape[:1] + (4,) + images.shape[2:]
        torch.testing.assert_close(batched, one, atol=1e-5, rtol=1e-5)


def test_slide_with_one_window_covering_the_image_equals_whole(net, images):
    whole = net(images)
    for crop in ((40, 56), (64, 64)):  # exactly the image, and larger than it
        out = Inferer(slide=True, crop=crop, stride=crop, weighting="gaussian")(net, images)
        torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


def test_slide_output_differs_from_whole_when_windows_are_smaller(net, images):
    out = Inferer(slide=True, crop=(24, 32), stride=(16, 20))(net, images)
    assert not torch.allclose(out, net(images), atol=1e-3)


def test_gaussian_weights_positive_everywhere_and_peak_in_the_centre():
    for h, w in [(1, 1), (7, 9), (32, 48), (512, 512)]:
        g = gaussian_weights(h, w)
        assert g.shape == (h, w) and torch.isfinite(g).all() and (g > 0).all()
        assert g.max() == pytest.approx(1.0)
        assert g[h // 2, w // 2] == g.max()
    g = gaussian_weights(64, 64)
    # sigma = 1/8 of the side: the border is about 4 sigma from the centre
    # row 0 is 31.5 px from the centre (sigma 8), column 32 is as far from it as the peak pixels
    expected = math.exp(-((31.5 / 8) ** 2 - (0.5 / 8) ** 2) / 2)
    assert g[0, 32].item() == pytest.approx(expected, rel=1e-4)


def test_gaussian_blend_equals_flat_without_overlap_and_differs_with_it(net, images):
    # windows tile the image exactly: every pixel has one window, the weights cancel
    tiled = dict(slide=True, crop=(20, 28), stride=(20, 28))
    torch.testing.assert_close(
        Inferer(weighting="gaussian", **tiled)(net, images), Inferer(weighting="flat", **tiled)(net, images)
    )
    overlap = dict(slide=True, crop=(24, 32), stride=(8, 8))
    gauss, flat = Inferer(weighting="gaussian", **overlap)(net, images), Inferer(**overlap)(net, images)
    assert torch.isfinite(gauss).all()
    assert not torch.allclose(gauss, flat, atol=1e-4)


def test_tta_one_scale_no_flip_equals_whole(net, images):
    whole = net(images)
    torch.testing.assert_close(Inferer(scales=[1.0], flip=False)(net, images), whole)
    # the averaging path with the same view twice: the probabilities are the whole image's
    twice = Inferer(scales=[1.0, 1.0], flip=False)(net, images)
    torch.testing.assert_close(twice.softmax(1), whole.softmax(1), atol=1e-5, rtol=1e-4)


def test_tta_averages_probabilities_of_scaled_and_flipped_views_at_the_input_size(net, images):
    out = Inferer(scales=[0.5, 1.0], flip=True)(net, images)
    assert out.shape[-2:] == images.shape[-2:]
    size = images.shape[-2:]
    expected = torch.zeros_like(out)
    for scale in (0.5, 1.0):
        x = F.interpolate(images, scale_factor=scale, mode="bilinear") if scale != 1 else images
        for flipped in (False, True):
            logits = net(x.flip(-1)).flip(-1) if flipped else net(x)
            expected += F.interpolate(logits, size=size, mode="bilinear").softmax(1) / 4
    torch.testing.assert_close(out.softmax(1), expected, atol=1e-5, rtol=1e-4)


def test_tta_composes_with_slide(net, images):
    crop = dict(slide=True, crop=(24, 32), stride=(16, 20))
    out = Inferer(scales=[1.0], flip=True, **crop)(net, images)
    slide = Inferer(**crop)
    expected = (slide(net, images).softmax(1) + slide(net, images.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(out.softmax(1), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(slide=True, crop=None), "infer.crop"),
        (dict(slide=True, crop=(16, 16), stride=(32, 8)), "infer.stride"),
        (dict(weighting="cosine"), "infer.weighting"),
        (dict(scales=[]), "infer.scales"),
        (dict(batch_size=0), "infer.batch_size"),
    ],
)
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(UserError, match=key):
        Inferer(**kwargs)


def crf_case():
    """A 32x48 image, dark left of column 24 and bright right of it; the network's probabilities put the class
    border at column 16 instead, with confidence falling towards it (0.9 far away, 0.55 next to it)."""
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, 24:] = 255
    cols = np.arange(48)
    p1 = np.where(cols < 16, 0.1 + 0.35 * np.clip((cols - 8) / 8, 0, 1), 0.55 + 0.35 * np.clip((cols - 16) / 8, 0, 1))
    probs = np.stack([1 - p1, p1])[:, None, :].repeat(32, 1).astype(np.float32)
    return probs, image


def test_crf_with_dominating_unary_returns_the_input_labels():
    probs, image = crf_case()
    refined = dense_crf(probs, image, gaussian_compat=0.01, bilateral_compat=0.01)
    assert refined.shape == probs.shape
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(refined.argmax(0), probs.argmax(0))


def test_crf_moves_labels_onto_the_image_edge():
    probs, image = crf_case()
    labels = dense_crf(probs, image, bilateral_sxy=20, bilateral_srgb=10).argmax(0)
    changed = labels != probs.argmax(0)
    assert changed.any()
    cols = np.nonzero(changed.any(0))[0]
    assert cols.min() >= 8 and cols.max() < 24  # only near the edges, towards the image's own edge at 24
    assert (labels[:, :16] == 0).all() and (labels[:, 24:] == 1).all()


def test_inferer_with_crf_returns_log_probabilities_at_the_input_size(net, images):
    out = Inferer(crf=True, crf_params={"iterations": 2})(net, images)
    assert out.shape == (2, 4, 40, 56)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2, 40, 56), atol=1e-3, rtol=0)


def test_crf_missing_library_is_one_clear_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_crf(name, *args, **kwargs):
        if name.startswith("pydensecrf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_crf)
    with pytest.raises(UserError, match="infer.crf=true needs .*pip install pydensecrf2"):
        Inferer(crf=True)
    Inferer(slide=True, crop=(16, 16))  # everything else still works


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["infer=slide"],
        ["infer=slide", "infer.crop=[512,512]", "infer.stride=[341,341]", "infer.weighting=gaussian"],
        ["infer=tta"],
        ["infer=tta", "infer.slide=true"],
        ["infer.crf=true"],
    ],
)
def test_readme_infer_overrides_build_an_inferer(overrides, tmp_path):
    """The README's `infer=...` commands compose for src.eval and src.predict and build the mode they describe."""
    from omegaconf import OmegaConf

    from src.run import build_inferer
    from tests.conftest import compose_config

    run_cfg = OmegaConf.create({"data": {"crop_size": [360, 480]}})
    datamodule = type("DM", (), {"eval_transform": None})()
    for name in ("eval", "predict"):
        cfg = compose_config(
            name, ["ckpt_path=x.ckpt", "input=a", "output=b"][: 1 if name == "eval" else 3] + overrides, tmp_path
        )
        inferer = build_inferer(cfg.infer, run_cfg, datamodule)
        assert inferer.slide == ("infer=slide" in overrides or "infer.slide=true" in overrides)
        if inferer.slide and "infer.crop=[512,512]" not in overrides:
            assert inferer.crop == (360, 480) and inferer.stride == (240, 320)  # the training crop, 2/3 stride
        assert inferer.flip == ("infer=tta" in overrides) and inferer.crf == ("infer.crf=true" in overrides)
