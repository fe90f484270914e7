"""Every architecture behind one interface: each configs/model/*.yaml builds, gives logits at the input size,
trains and round-trips its state dict; the classic networks do what their papers say; mistakes get one clear
message."""

from __future__ import annotations

import socket
import time

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, compose_config

from src.errors import UserError
from src.models.net import smp_net
from src.run import instantiate

MODEL_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))
NUM_CLASSES = 6  # data=synthetic
TINY_VGG = ["model.channels=[8,16,16,32,32]", "model.convs=[1,1,2,2,2]"]
# smaller widths/encoders for speed; each keeps its architecture's own code path
SMALL = {
    "unet": ["model.decoder_channels=[32,16,16,8,8]"],
    "unetplusplus": ["model.encoder=resnet18", "model.decoder_channels=[32,16,16,8,8]"],
    "manet": ["model.encoder=resnet18", "model.decoder_channels=[32,16,16,8,8]", "model.decoder_pab_channels=8"],
    "linknet": ["model.encoder=resnet18"],
    "fpn": ["model.encoder=resnet18", "model.decoder_pyramid_channels=32", "model.decoder_segmentation_channels=32"],
    "pspnet": ["model.encoder=resnet18", "model.psp_out_channels=32"],
    "deeplabv3": ["model.encoder=resnet18", "model.decoder_channels=32"],
    "deeplabv3plus": ["model.encoder=resnet18", "model.decoder_channels=32"],
    "pan": ["model.encoder=resnet18", "model.decoder_channels=16"],
    "upernet": ["model.encoder=resnet18", "model.decoder_channels=32"],
    "segformer": ["model.decoder_segmentation_channels=32"],
    "dpt": [
        "model.encoder=tu-vit_tiny_patch16_224",
        "model.decoder_intermediate_channels=[16,32,64,64]",
        "model.decoder_fusion_channels=16",
    ],
    "fcn32s": [*TINY_VGG, "model.fc_channels=32"],
    "fcn16s": [*TINY_VGG, "model.fc_channels=32"],
    "fcn8s": [*TINY_VGG, "model.fc_channels=32"],
    "segnet": TINY_VGG,
    "unet_classic": ["model.base_channels=8"],
}


def build(*overrides: str):
    """The network of configs/train.yaml with `overrides`, as src.train builds it (a UserError comes out as is)."""
    cfg = compose_config("train", list(overrides))
    return instantiate(cfg.model)


def batch(h: int = 100, w: int = 140, n: int = 2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, h, w, generator=g), torch.randint(0, NUM_CLASSES, (n, h, w), generator=g)


def test_every_architecture_has_a_config():
    expected = {
        "unet",
        "unetplusplus",
        "manet",
        "linknet",
        "fpn",
        "pspnet",
        "deeplabv3",
        "deeplabv3plus",
        "pan",
        "upernet",
        "segformer",
        "dpt",
        "fcn32s",
        "fcn16s",
        "fcn8s",
        "segnet",
        "unet_classic",
    }
    assert expected <= set(MODEL_CONFIGS)
    for name in MODEL_CONFIGS:
        cfg = compose_config("train", [f"model={name}"]).model
        assert cfg.num_classes == NUM_CLASSES and cfg.pretrained is None
        assert cfg.get("encoder_weights", None) is None


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_contract(name):
    torch.manual_seed(0)
    net = build(f"model={name}", *SMALL.get(name, []))
    x, y = batch()
    net.train()
    torch.manual_seed(1)  # the same dropout / drop-path draws for both losses
    logits = net(x)
    assert logits.shape == (2, NUM_CLASSES, 100, 140)
    assert torch.isfinite(logits).all()

    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    before = F.cross_entropy(logits, y)
    before.backward()
    opt.step()
    with torch.no_grad():
        torch.manual_seed(1)
        after = F.cross_entropy(net(x), y)
    assert after < before, f"{name}: loss {before.item():.4f} -> {after.item():.4f} after one step"

    torch.manual_seed(123)
    fresh = build(f"model={name}", *SMALL.get(name, []))
    fresh.load_state_dict(net.state_dict())
    net.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(net(x), fresh(x))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_config_as_shipped_builds(name):
    """The default encoders and widths of each config (no test overrides) build and run at an odd size."""
    net = build(f"model={name}").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 70, 90)).shape == (1, NUM_CLASSES, 70, 90)


@pytest.mark.parametrize(
    "overrides, stride",
    [
        (["model.encoder_output_stride=8", "model.decoder_atrous_rates=[12,24,36]"], 8),
        (["model.encoder_output_stride=16", "model.decoder_atrous_rates=[6,12,18]"], 16),
    ],
)
@pytest.mark.parametrize("arch", ["deeplabv3", "deeplabv3plus"])
def test_deeplab_output_stride_and_rates_from_config(arch, overrides, stride):
    net = build(f"model={arch}", "model.encoder=resnet18", *overrides)
    rates = [int(o.split("[")[1].split(",")[0]) for o in overrides if "rates" in o]
    aspp_dilations = [
        m.dilation[0] for m in net.net.decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation[0] > 1
    ]
    assert net.stride == stride == net.net.encoder.output_stride
    assert rates[0] in aspp_dilations  # the first atrous rate reached the ASPP
    feats = net.net.encoder(torch.randn(1, 3, 64, 64))
    assert feats[-1].shape[-1] == 64 // stride


def test_fcn8s_fuses_pool4_and_pool3_skips():
    torch.manual_seed(0)
    net = build("model=fcn8s", *SMALL["fcn8s"]).eval()
    fcn = net.net
    x, _ = batch(64, 96, n=1)
    with torch.no_grad():
        ref = net(x)
        for skip in ("score_pool4", "score_pool3"):
            handle = getattr(fcn, skip).register_forward_pre_hook(lambda m, a: (a[0] + torch.randn_like(a[0]),))
            assert not torch.allclose(net(x), ref), f"{skip} does not reach the output"
            handle.remove()

        # one pool3 cell (stride 8) changed: only the output pixels its 16x16 upsampling kernel covers change
        def bump(module, args):
            feats = args[0].clone()
            feats[..., 3, 5] += 10.0
            return (feats,)

        handle = fcn.score_pool3.register_forward_pre_hook(bump)
        changed = (net(x) - ref).abs().amax(dim=(0, 1)) > 1e-6
        handle.remove()
    rows, cols = changed.nonzero(as_tuple=True)
    assert len(rows) > 0
    assert rows.min() >= 8 * 3 - 4 and rows.max() <= 8 * 3 + 11
    assert cols.min() >= 8 * 5 - 4 and cols.max() <= 8 * 5 + 11


def test_fcn_variants_differ_in_their_skips():
    for variant, skips in (("32s", set()), ("16s", {"score_pool4"}), ("8s", {"score_pool4", "score_pool3"})):
        fcn = build(f"model=fcn{variant}", *SMALL[f"fcn{variant}"]).net
        assert {n for n in ("score_pool4", "score_pool3") if hasattr(fcn, n)} == skips
        assert all(isinstance(m, torch.nn.ConvTranspose2d) for n, m in fcn.named_children() if n.startswith("up"))


def test_segnet_unpools_with_the_encoder_indices():
    torch.manual_seed(0)
    # train mode: BatchNorm normalises with batch statistics (at init, eval-mode BN passes a signal that has
    # faded through 26 randomly initialised layers, and the output is mostly the head's bias)
    net = build("model=segnet", *SMALL["segnet"]).train()
    segnet = net.net
    x, _ = batch(64, 96, n=1)
    # no skip concatenation: each decoder stage takes exactly the width of its encoder stage
    assert [stage[0].in_channels for stage in segnet.decoder] == [32, 32, 16, 16, 8]
    with torch.no_grad():
        ref = net(x)
        # the same pooled values, put back at other positions: the output must change
        handle = segnet.pool.register_forward_hook(lambda m, a, out: (out[0], out[1].flip(-1)))
        moved = net(x)
        handle.remove()
        assert (moved - ref).abs().max() > 0.01 * ref.abs().max()
        assert torch.equal(net(x), ref)


@pytest.mark.parametrize("mode", ["transposed", "bilinear", "nearest", "pixel_shuffle"])
def test_unet_upsampling_modes_build_and_train(mode):
    torch.manual_seed(0)
    net = build("model=unet_classic", "model.base_channels=8", "model.depth=3", f"model.upsampling={mode}")
    x, y = batch(40, 56)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert net(x).shape == (2, NUM_CLASSES, 40, 56)
    assert losses[-1] < losses[0]


def test_unknown_upsampling_is_named():
    with pytest.raises(UserError, match="model.upsampling='cubic'.*pixel_shuffle"):
        build("model=unet_classic", "model.upsampling=cubic")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["model=unetplusplus", "model.encoder=mit_b0"],
            r"model.arch=unetplusplus with model.encoder=mit_b0.*segformer",
        ),
        (["model=linknet", "model.encoder=mit_b0"], r"model.encoder=mit_b0"),
        (["model=dpt", "model.encoder=resnet18"], r"tu-vit"),
        (["model=deeplabv3", "model.encoder=vgg11"], r"dilat.*resnet"),
        (["model=unet", "model.encoder=tu-vit_tiny_patch16_224"], r"model=dpt"),
        (["model=deeplabv3plus", "model.encoder=resnet18", "model.encoder_output_stride=32"], r"8 or 16"),
    ],
)
def test_incompatible_encoder_and_arch_get_a_clear_message(overrides, expected):
    with pytest.raises(UserError, match=expected):
        build(*overrides)


@pytest.mark.parametrize("encoder, close", [("resnet19", "resnet18"), ("tu-convnext_tinyy", "tu-convnext_tiny")])
def test_unknown_encoder_names_close_ones_and_how_to_list(encoder, close):
    with pytest.raises(UserError) as err:
        build("model=unet", f"model.encoder={encoder}")
    assert close in str(err.value) and "get_encoder_names" in str(err.value) and "timm.list_models" in str(err.value)


@pytest.fixture
def silent_hub(monkeypatch, tmp_path):
    """A hub endpoint that accepts connections and never answers (a black-holed network), an empty cache."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    yield constants
    server.close()


@pytest.mark.parametrize("offline", [True, False])
def test_imagenet_weights_without_hub_fail_fast(silent_hub, monkeypatch, offline):
    """No hub: a UserError naming model.pretrained within seconds (measured without this: 30 s of retries for
    an smp encoder, 52 s for a timm one)."""
    monkeypatch.setattr(silent_hub, "HF_HUB_OFFLINE", offline)
    for arch, encoder in (("unet", "resnet18"), ("unet", "tu-resnet18"), ("segformer", "mit_b0")):
        start = time.perf_counter()
        with pytest.raises(UserError, match=r"model.encoder_weights=imagenet.*model.pretrained=") as err:
            smp_net(arch, encoder, encoder_weights="imagenet", num_classes=3)
        assert time.perf_counter() - start < 10
        assert "huggingface.co/" in str(err.value)  # where to get the file by hand
        assert ("offline mode" if offline else "not reachable") in str(err.value)
        assert silent_hub.HF_HUB_OFFLINE is offline  # restored


def test_incompatible_pair_is_refused_before_any_download(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr("src.models.net.hub_download", no_download)
    with pytest.raises(UserError, match="dilat"):
        smp_net("deeplabv3", "vgg11", encoder_weights="imagenet", num_classes=3)


@pytest.mark.slow
def test_fcn_imagenet_vgg16_is_convolutionalised(tmp_path, monkeypatch):
    """encoder_weights=imagenet: torchvision's VGG16 (a random stand-in in the local hub cache) becomes the FCN
    backbone, its Linear fc6/fc7 reshaped into 7x7 and 1x1 convolutions."""
    import torchvision

    from src.models.net import fcn

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16()
    torch.save(vgg.state_dict(), tmp_path / "checkpoints" / url.split("/")[-1])
    net = fcn(NUM_CLASSES, "8s", encoder_weights="imagenet").net
    assert torch.equal(net.encoder.stages[0][0].weight, vgg.features[0].weight)
    assert torch.equal(net.encoder.stages[4][4].weight, vgg.features[28].weight)  # conv5_3
    assert torch.equal(net.encoder.fc[0].weight, vgg.classifier[0].weight.view(4096, 512, 7, 7))
    assert torch.equal(net.encoder.fc[3].weight[..., 0, 0], vgg.classifier[3].weight)
    # fc6 as a convolution on pool5 == the Linear layer on the flattened 7x7 pool5 (the FCN equivalence)
    pool5 = torch.randn(1, 512, 7, 7)
    conv = torch.nn.functional.conv2d(pool5, net.encoder.fc[0].weight, net.encoder.fc[0].bias)
    assert torch.allclose(conv.flatten(), vgg.classifier[0](pool5.flatten(1)).flatten(), atol=1e-4)


def test_vgg_weights_unreachable_fail_fast(tmp_path, monkeypatch):
    from src.models.net import fcn, segnet

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    monkeypatch.setattr("src.models.pretrained._reachable", lambda url, timeout=3.0: False)
    for factory in (fcn, segnet):
        with pytest.raises(UserError, match=r"download.pytorch.org.*model.pretrained=PATH"):
            factory(NUM_CLASSES, encoder_weights="imagenet")
    with pytest.raises(UserError, match="VGG16 layout"):
        segnet(NUM_CLASSES, channels=[8, 16, 16, 32, 32], encoder_weights="imagenet")


def test_segnet_encoder_takes_vgg16_bn_layer_by_layer():
    import torchvision

    from src.models.nets.segnet import SegNet
    from src.models.nets.vgg import copy_vgg_features

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16_bn()
    for m in vgg.features:
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()  # distinguishable from a fresh BatchNorm
    segnet = SegNet(NUM_CLASSES)
    copy_vgg_features(vgg, segnet.encoder)
    theirs = [m for m in vgg.features if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    ours = [m for m in segnet.encoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    assert len(theirs) == len(ours) == 26
    for a, b in zip(theirs, ours):
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


@pytest.mark.parametrize("name", ["unet_small", "segnet", "fcn8s", "deeplabv3plus", "segformer"])
def test_channels_last_gives_the_same_logits(name):
    """`module.channels_last` (on by default) changes the memory layout only: same logits, any input size."""
    from src.models.module import SegmentationModule

    torch.manual_seed(0)
    net = build(f"model={name}", *SMALL.get(name, [])).eval()
    x = torch.randn(2, 3, 50, 70)
    with torch.no_grad():
        expected = net(x)
        module = SegmentationModule(net, loss=None, optimizer=None, num_classes=NUM_CLASSES, channels_last=True)
        assert next(p for p in net.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(module(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_train_metrics_count_every_kth_pixel_of_every_kth_row(stride):
    """`module.train_metrics_stride`: the training confusion matrix counts the pixels (i, j) with i and j multiples
    of k, ignored ones left out; the loss still sees every pixel."""
    import numpy as np

    from src.losses.ce import CrossEntropy
    from src.models.module import SegmentationModule

    torch.manual_seed(0)
    net = build("model=unet_small").eval()
    module = SegmentationModule(
        net, loss=CrossEntropy(), optimizer=None, num_classes=NUM_CLASSES, train_metrics_stride=stride
    )
    module.log = lambda *a, **k: None
    images, mask = torch.randn(2, 3, 32, 32), torch.randint(0, NUM_CLASSES, (2, 32, 32), dtype=torch.uint8)
    mask[:, :5] = 255
    module.training_step({"image": images, "mask": mask}, 0)
    with torch.no_grad():
        pred = module(images).argmax(1)[:, ::stride, ::stride].flatten().numpy()
    gt = mask[:, ::stride, ::stride].flatten().long().numpy()
    keep = gt != 255
    expected = np.bincount(gt[keep] * NUM_CLASSES + pred[keep], minlength=NUM_CLASSES**2)
    assert module.metrics["train_"].confmat.flatten().tolist() == expected.tolist()
    rows = [r for r in range(0, 32, stride) if r >= 5]  # rows 0..4 are ignored
    assert expected.sum() == 2 * len(rows) * len(range(0, 32, stride))


def test_train_losses_are_logged_at_the_log_steps_and_as_the_epochs_sample_mean(tmp_path):
    """`train/loss_step` is the step's loss on the steps the loggers write (every `log_every_n_steps`), and
    `train/loss_epoch` the epoch's mean over samples (batches of 2, 2 and 1 weigh 2:2:1), summed by the module
    between the steps it hands to `self.log`."""
    import csv
    import functools

    import lightning as L
    from torch import nn
    from torch.utils.data import DataLoader

    from src.losses.ce import CrossEntropy
    from src.models.module import SegmentationModule

    torch.manual_seed(0)
    samples = [{"image": torch.randn(3, 8, 8), "mask": torch.randint(0, 3, (8, 8))} for _ in range(5)]
    module = SegmentationModule(
        nn.Conv2d(3, 3, 1), CrossEntropy(), functools.partial(torch.optim.SGD), lr=0.5, num_classes=3
    )
    seen = []  # (loss, batch size) of every step, as training computed it

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((outputs["loss"].item(), len(batch["mask"])))

    trainer = L.Trainer(
        max_epochs=2,
        log_every_n_steps=2,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="run"),
        callbacks=[Record()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(samples, batch_size=2))
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    step_values = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    epoch_values = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert [n for _, n in seen] == [2, 2, 1, 2, 2, 1]
    assert step_values == pytest.approx([loss for loss, _ in seen[1::2]], rel=1e-6)
    means = [sum(loss * n for loss, n in seen[e : e + 3]) / 5 for e in (0, 3)]
    assert epoch_values == pytest.approx(means, rel=1e-6)
