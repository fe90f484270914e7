"""Networks as the LightningModule sees them: any size in, logits of the same size out.

`SegmentationNet` wraps a network that needs its input divisible by a stride: it pads to the multiple by
repeating the border pixels and crops the logits back. (Zero padding makes whole patches constant; in SegFormer's
MiT their patch-embedding LayerNorm then normalises a near-constant vector, and at initialisation the gradient of
the first patch embedding's bias was 15864 instead of under 1 on a 100x140 input.)

The factories here are the `_target_`s of `configs/model/`: `smp_net` builds any segmentation_models_pytorch
architecture by name with any encoder it accepts; `unet_classic`, `fcn` and `segnet` build the classic networks
written in `src/models/nets/`. Each takes `pretrained` (a local weights file, src/models/pretrained.py) and
`skip_mismatched`.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from src.errors import UserError
from src.models.pretrained import check_pretrained_path, hub_download, load_pretrained

ENCODER_LIST_HELP = (
    'List them with: python -c "import segmentation_models_pytorch as smp; print(smp.encoders.get_encoder_names())"'
    " (smp encoders), or python -c \"import timm; print(timm.list_models('*convnext*'))\" for timm models, "
    "used as tu-<name>."
)


ENCODER_NAMES = ("encoder", "backbone")


def find_encoder(net: nn.Module) -> tuple[str, nn.Module] | None:
    """The network's encoder and its path in `net`: the first sub-module named `encoder` or `backbone` (smp's
    naming, and the classic networks' here); None if it has none. Head learning rate, layer-wise decay, freezing
    and the model summary all mean this module by "encoder"."""
    for name, module in net.named_modules():
        if name.split(".")[-1] in ENCODER_NAMES:
            return name, module
    return None


class SegmentationNet(nn.Module):
    """Pads inputs to a multiple of `stride` (and to at least `min_size` per side), runs `net`, crops the logits
    back to the input size.

    The wrapped network stays reachable as `.net` (its `encoder`, if it has one, is the backbone the optimizer
    settings refer to).
    """

    def __init__(self, net: nn.Module, stride: int = 32, min_size: int = 0):
        super().__init__()
        self.net, self.stride, self.min_size = net, stride, min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-max(h, self.min_size)) % self.stride, (-max(w, self.min_size)) % self.stride
        ph, pw = ph + max(self.min_size - h, 0), pw + max(self.min_size - w, 0)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out = self.net(x)
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out[..., :h, :w]


def finish(
    net: nn.Module, stride: int, pretrained: str | None, skip_mismatched: bool, min_size: int = 0
) -> SegmentationNet:
    """Wraps `net` to pad to `stride` (and `min_size`), then loads `pretrained` (a local file) into it if given."""
    wrapped = SegmentationNet(net, stride=stride, min_size=min_size)
    if pretrained is not None:
        load_pretrained(wrapped, pretrained, skip_mismatched=skip_mismatched)
    return wrapped


def check_encoder(arch: str, encoder: str) -> None:
    """A clear message for an unknown architecture or encoder name, with the close names and how to list all."""
    import segmentation_models_pytorch as smp
    import timm

    archs = list(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() not in archs:
        raise UserError(f"model.arch={arch!r} is not an smp architecture; known: {', '.join(archs)}.")
    if encoder.startswith("tu-"):
        name = encoder[3:]
        if not timm.is_model(name):
            close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5)
            raise UserError(
                f"model.encoder={encoder}: timm has no model {name!r}"
                + (f" (close: {', '.join('tu-' + c for c in close)})" if close else "")
                + f". {ENCODER_LIST_HELP}"
            )
        return
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        close = difflib.get_close_matches(encoder, names, n=5)
        raise UserError(
            f"model.encoder={encoder}: smp has no such encoder"
            + (f" (close: {', '.join(close)})" if close else "")
            + f"; any timm model works as tu-<name>. {ENCODER_LIST_HELP}"
        )


def incompatible(arch: str, encoder: str, reason: str) -> UserError:
    """The message for an encoder (or setting) the architecture cannot use: smp's reason plus what to choose."""
    hint = ""
    if arch == "dpt":
        hint = "DPT takes timm vision transformers only: e.g. model.encoder=tu-vit_base_patch16_224.augreg_in21k."
    elif "downsampling pattern" in reason:
        hint = (
            "Plain vision transformers (one resolution throughout) work with model=dpt only; for this "
            "architecture choose a CNN or a hierarchical encoder (resnet50, mit_b2, tu-convnext_tiny, ...)."
        )
    elif "dilated" in reason:
        hint = (
            "This architecture dilates the encoder's last stages (output stride 8/16); choose an encoder that "
            "supports it (resnet*, resnext*, efficientnet-*, mobilenet_v2, mit_b*, most tu- CNNs)."
        )
    elif encoder.startswith("mit_b"):
        hint = "MiT encoders work with unet, manet, fpn, pspnet, deeplabv3(plus), pan, upernet and segformer."
    return UserError(f"model.arch={arch} with model.encoder={encoder}: {reason.rstrip('.!')}. {hint}".rstrip())


def plain(value):
    """Hydra hands lists and dicts over as OmegaConf containers; smp wants plain ones."""
    return OmegaConf.to_container(value) if isinstance(value, (ListConfig, DictConfig)) else value


def smp_net(
    arch: str,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
    num_classes: int = 2,
    in_channels: int = 3,
    stride: int | None = None,
    pretrained: str | None = None,
    skip_mismatched: bool = False,
    **kwargs,
) -> SegmentationNet:
    """Any segmentation_models_pytorch architecture (`arch` as smp names it, e.g. "unet", "deeplabv3plus") with
    encoder `encoder` (an smp encoder name or tu-<timm model>); further keyword arguments go to the smp class
    (e.g. encoder_output_stride, decoder_atrous_rates). `encoder_weights` ("imagenet", or another tag smp knows
    for that encoder) downloads through smp/timm; for tu- encoders any non-null value means timm's default
    pretrained tag (or the tag in the name, tu-<model>.<tag>).
    """
    import segmentation_models_pytorch as smp

    arch = arch.lower()
    check_encoder(arch, encoder)
    check_pretrained_path(pretrained)
    kwargs = {k: plain(v) for k, v in kwargs.items()}
    weights = (True if encoder_weights else None) if encoder.startswith("tu-") else encoder_weights
    args = dict(encoder_name=encoder, in_channels=in_channels, classes=num_classes, **kwargs)

    def build(weights):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*prefix tokens.*")  # DPT readout notice
                return smp.create_model(arch, encoder_weights=weights, **args)
        except (ValueError, KeyError, AssertionError) as err:
            raise incompatible(arch, encoder, str(err.args[0] if err.args else err)) from err
        except TypeError as err:  # an argument this architecture does not take
            raise UserError(f"model={arch}: {err}. Remove that key from the model config.") from err

    if weights is None:
        net = build(None)
    else:
        try:  # the arch/encoder pair is checked before any download, on the meta device (no memory, no init)
            with torch.device("meta"):
                build(None)
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - some encoders cannot be built on meta (MiT calls .item()): skip the check
            pass
        with hub_download(
            f"model.encoder_weights={encoder_weights} for encoder {encoder}",
            local_weights_hint(encoder, encoder_weights),
        ):
            net = build(weights)
    if stride is None:
        stride = getattr(net.encoder, "output_stride", 32)
        if arch == "dpt":  # DPT's coarsest level halves the patch grid, so the grid must be even
            stride *= 2
    # PAN's feature pyramid attention max-pools the deepest features 3 times: they need 8 pixels per side
    min_size = 8 * getattr(net.encoder, "output_stride", 32) if arch == "pan" else 0
    return finish(net, stride, pretrained, skip_mismatched, min_size)


def local_weights_hint(encoder: str, weights) -> str:
    """How to get the encoder's weights without the hub: where the file lives, and model.pretrained."""
    import segmentation_models_pytorch as smp
    import timm

    url = None
    if encoder.startswith("tu-"):
        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is not None and cfg.hf_hub_id:
            url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    else:
        settings = smp.encoders.encoders[encoder]["pretrained_settings"].get(weights)
        if settings:
            url = f"https://huggingface.co/{settings['repo_id']}/resolve/main/model.safetensors"
    where = f"download {url} where the internet is reachable, then " if url else "with the encoder's weights file, "
    return (
        f"To train without the hub: {where}run with model.encoder_weights=null model.pretrained=/path/to/"
        "model.safetensors (encoder-only files are placed under the encoder). Weights already in the "
        "Hugging Face cache (~/.cache/huggingface) load offline."
    )


def unet_classic(
    num_classes: int,
    in_channels: int = 3,
    base_channels: int = 64,
    depth: int = 4,
    upsampling: str = "transposed",
    pretrained: str | None = None,
    skip_mismatched: bool = False,
) -> SegmentationNet:
    """The original U-Net (src/models/nets/unet.py), padded to its stride."""
    from src.models.nets.unet import UNet

    check_pretrained_path(pretrained)
    net = UNet(num_classes, in_channels, base_channels, depth, upsampling)
    return finish(net, net.stride, pretrained, skip_mismatched)


def fcn(
    num_classes: int,
    variant: str = "8s",
    in_channels: int = 3,
    channels: Sequence[int] = (64, 128, 256, 512, 512),
    convs: Sequence[int] = (2, 2, 3, 3, 3),
    fc_channels: int = 4096,
    dropout: float = 0.5,
    encoder_weights: str | None = None,
    pretrained: str | None = None,
    skip_mismatched: bool = False,
) -> SegmentationNet:
    """FCN-32s/16s/8s on a VGG backbone (src/models/nets/fcn.py)."""
    from src.models.nets.fcn import FCN

    check_pretrained_path(pretrained)
    net = FCN(num_classes, variant, in_channels, plain(channels), plain(convs), fc_channels, dropout, encoder_weights)
    return finish(net, net.stride, pretrained, skip_mismatched)


def segnet(
    num_classes: int,
    in_channels: int = 3,
    channels: Sequence[int] = (64, 128, 256, 512, 512),
    convs: Sequence[int] = (2, 2, 3, 3, 3),
    encoder_weights: str | None = None,
    pretrained: str | None = None,
    skip_mismatched: bool = False,
) -> SegmentationNet:
    """SegNet with max-unpooling by the encoder's pooling indices (src/models/nets/segnet.py)."""
    from src.models.nets.segnet import SegNet

    check_pretrained_path(pretrained)
    net = SegNet(num_classes, in_channels, plain(channels), plain(convs), encoder_weights)
    return finish(net, net.stride, pretrained, skip_mismatched)
