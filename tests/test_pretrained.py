"""model.pretrained=PATH: plain state dicts, safetensors and Lightning checkpoints of this template load into the
network; missing/unexpected keys are reported; shape mismatches are refused unless model.skip_mismatched=true."""

from __future__ import annotations

import functools
import logging

import lightning as L
import pytest
import torch
from conftest import compose_config
from safetensors.torch import save_file
from torch import nn

from src.errors import UserError
from src.models.module import SegmentationModule
from src.models.net import smp_net, unet_classic
from src.models.pretrained import load_pretrained
from src.run import instantiate

TINY = ["model=unet_classic", "model.base_channels=4", "model.depth=2"]


def build(*overrides: str):
    cfg = compose_config("train", [*TINY, *overrides])
    return instantiate(cfg.model)


def same_weights(a: nn.Module, b: nn.Module, skip: str = "\0") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if skip not in k)


def trained_source() -> nn.Module:
    torch.manual_seed(0)
    net = build()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))  # far from any fresh initialisation
    return net


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_state_dict_files_load(tmp_path, fmt):
    source = trained_source()
    path = tmp_path / f"weights.{fmt}"
    if fmt == "pt":
        torch.save(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    torch.manual_seed(1)
    assert not same_weights(build(), source)
    net = build(f"model.pretrained={path}")
    assert same_weights(net, source)
    x = torch.randn(1, 3, 20, 28)
    assert torch.equal(net.eval()(x), source.eval()(x))


def test_lightning_checkpoint_of_this_template_loads(tmp_path):
    source = trained_source()
    module = SegmentationModule(
        net=source, loss=nn.CrossEntropyLoss(), num_classes=6, optimizer=functools.partial(torch.optim.SGD), lr=0.1
    )
    data = [{"image": torch.randn(2, 3, 16, 16), "mask": torch.randint(0, 6, (2, 16, 16))}]
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    assert all(k.startswith(("net.", "metrics.", "loss.")) for k in torch.load(ckpt, weights_only=True)["state_dict"])

    net = build(f"model.pretrained={ckpt}")
    assert same_weights(net, module.net)  # the weights after the training step, not before


def test_missing_and_unexpected_keys_are_reported(tmp_path, caplog):
    source = trained_source()
    state = source.state_dict()
    dropped = "net.head.bias"
    del state[dropped]
    state["net.extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    net = build()
    with caplog.at_level(logging.INFO, logger="src.models.pretrained"):
        report = load_pretrained(net, path)
    assert report.missing == [dropped] and report.unexpected == ["net.extra.weight"] and report.skipped == []
    assert len(report.loaded) == len(state) - 1
    assert dropped in caplog.text and "net.extra.weight" in caplog.text
    assert same_weights(net, source, skip=dropped)


def test_mismatched_head_refused_then_skipped_on_request(tmp_path):
    source = trained_source()  # 6 classes
    path = tmp_path / "six_classes.pt"
    torch.save(source.state_dict(), path)
    with pytest.raises(UserError) as err:
        build("data.num_classes=3", f"model.pretrained={path}")
    assert "net.head.weight: file (6, 4, 1, 1) vs network (3, 4, 1, 1)" in str(err.value)
    assert "model.skip_mismatched=true" in str(err.value)

    torch.manual_seed(2)
    fresh = build("data.num_classes=3")
    torch.manual_seed(2)
    net = build("data.num_classes=3", f"model.pretrained={path}", "model.skip_mismatched=true")
    own, src = net.state_dict(), source.state_dict()
    for key, value in own.items():
        if key.startswith("net.head."):
            assert torch.equal(value, fresh.state_dict()[key])  # kept its initial values
        else:
            assert torch.equal(value, src[key])


def test_encoder_only_file_goes_under_the_encoder(tmp_path):
    """An encoder weights file (as downloaded by hand from the hub) loads into an smp network's encoder."""
    torch.manual_seed(0)
    source = smp_net("unet", "resnet18", num_classes=3)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.net.encoder.state_dict(), str(path))
    torch.manual_seed(1)
    net = smp_net("unet", "resnet18", num_classes=3, pretrained=str(path))
    assert same_weights(net.net.encoder, source.net.encoder)
    assert not same_weights(net.net.decoder, source.net.decoder)
    report = load_pretrained(net, path)
    assert report.prefix == "net.encoder." and report.unexpected == []
    assert all(k.startswith(("net.decoder.", "net.segmentation_head.")) for k in report.missing)


def test_unusable_files_get_a_clear_message(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        unet_classic(6, base_channels=4, depth=2, pretrained=str(tmp_path / "nope.pt"))
    other = tmp_path / "other.pt"
    torch.save({"features.0.weight": torch.zeros(3)}, other)
    with pytest.raises(UserError, match="none of its 1 keys matches"):
        build(f"model.pretrained={other}")
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(UserError, match="cannot read it"):
        build(f"model.pretrained={text}")
