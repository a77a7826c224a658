"""Losses of the KL-VAE stage: KL term, LPIPS, PatchGAN discriminator with hinge loss.

The stage follows the LDM autoencoder recipe (Rombach et al. 2022, App. G;
Esser et al. 2021 for the adversarial part)::

    L = |x - x_hat|_1 + w_p * LPIPS(x, x_hat) + w_kl * KL(q(z|x) || N(0, I))
        + lambda * w_d * L_G,       lambda = ||grad L_rec|| / ||grad L_G||   (VQGAN eq. 7)

LPIPS (Zhang et al. 2018): VGG16 features at relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3, unit-normalised over channels, squared differences weighted
per channel by learned 1x1 "linear heads", averaged over space and summed.
Torchvision is not installed (and must not be), so the VGG16 feature stack is
written here with torchvision's layer indices so that its weights load as is.

Weight files (no download ever happens; without a file LPIPS is off):

* one file holding everything with the ``lpips`` package's names, i.e. the
  ``state_dict()`` of ``lpips.LPIPS(net="vgg")``: ``net.slice1.0.weight`` ...
  ``net.slice5.28.bias`` and ``lin0.model.1.weight`` ... ``lin4.model.1.weight``
  (``.safetensors``, ``.pt`` or ``.pth``); :func:`save_lpips` writes this format;
* or two public files: torchvision's ``vgg16-397923af.pth`` (``features.N.weight``,
  the classifier is ignored) plus the ``lpips`` package's linear heads
  ``lpips/weights/v0.1/vgg.pth`` (``lin0.model.1.weight`` ...).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError

#: channels of VGG16's relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
#: torchvision ``vgg16().features`` index ranges that end at those ReLUs
_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
#: torchvision vgg16 "D" configuration: conv widths, "M" = 2x2 max pool
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _vgg16_features() -> list[nn.Module]:
    """torchvision's ``vgg16().features[:30]`` layer by layer (indices match its state dict)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return layers


class _ScalingLayer(nn.Module):
    """Maps [-1,1] images to the ImageNet statistics LPIPS' VGG expects."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _VGG16Slices(nn.Module):
    def __init__(self):
        super().__init__()
        layers = _vgg16_features()
        for n, (start, stop) in enumerate(_SLICES, start=1):
            block = nn.Sequential()
            for index in range(start, stop):
                block.add_module(str(index), layers[index])
            setattr(self, f"slice{n}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for n in range(1, len(_SLICES) + 1):
            x = getattr(self, f"slice{n}")(x)
            features.append(x)
        return features


class _LinearHead(nn.Module):
    """Per-channel non-negative weights of one feature level (``linK.model.1.weight``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """Learned perceptual distance; frozen, always in eval mode (dropout off).

    Shapes: two image batches [N,3,H,W] in [-1,1] -> distances [N].
    """

    def __init__(self):
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = _VGG16Slices()
        for n, channels in enumerate(LPIPS_CHANNELS):
            setattr(self, f"lin{n}", _LinearHead(channels))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats_x = self.net(self.scaling_layer(x))
        feats_y = self.net(self.scaling_layer(y))
        total = x.new_zeros(x.shape[0])
        for n, (fx, fy) in enumerate(zip(feats_x, feats_y)):
            diff = (_unit_normalize(fx) - _unit_normalize(fy)) ** 2
            total = total + getattr(self, f"lin{n}")(diff).mean(dim=(1, 2, 3))
        return total


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def _torchvision_to_lpips_name(key: str) -> str | None:
    """``features.7.weight`` -> ``net.slice2.7.weight``; None for layers LPIPS does not use."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "features":
        return None
    index = int(parts[1])
    for n, (start, stop) in enumerate(_SLICES, start=1):
        if start <= index < stop:
            return f"net.slice{n}.{index}.{parts[2]}"
    return None


def _read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(path, what, "file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
        raise WeightsError(path, what, f"cannot be read ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(path, what, "is not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_lpips(path: str | Path, vgg16_path: str | Path | None = None) -> LPIPS:
    """LPIPS with weights from one combined file, or linear heads + torchvision VGG16 file.

    ``path``: lpips-package names (full model state dict), or only the linear
    heads (``vgg.pth``) when ``vgg16_path`` (torchvision ``vgg16-*.pth``) is given.
    Torchvision names (``features.N.weight``) are accepted in either file.
    """
    what = "LPIPS weights"
    lpips = LPIPS()
    state: dict[str, torch.Tensor] = {}
    files = [Path(path)] + ([Path(vgg16_path)] if vgg16_path is not None else [])
    for file in files:
        for key, value in _read_tensors(file, what).items():
            name = _torchvision_to_lpips_name(key) or key
            if name in lpips.state_dict():
                state[name] = value
    own = lpips.state_dict()
    needed = [k for k in own if not k.startswith("scaling_layer.")]
    missing = [k for k in needed if k not in state]
    if missing:
        has_heads = any(k.startswith("lin") for k in state)
        hint = ("the VGG16 features are missing: also give torchvision's vgg16-397923af.pth"
                if has_heads else "the linear heads are missing: give the lpips package's weights/v0.1/vgg.pth")
        raise WeightsError(files[0], what, f"{len(missing)} tensors missing (e.g. '{missing[0]}'); {hint}")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise WeightsError(files[0], what, f"'{key}' has shape {tuple(value.shape)}, "
                               f"expected {tuple(own[key].shape)}")
    lpips.load_state_dict(state, strict=False)
    return lpips


def save_lpips(lpips: LPIPS, path: str | Path) -> Path:
    """Save all LPIPS tensors with the lpips package's names in one safetensors file."""
    from safetensors.torch import save_file

    from ..config import make_folder
    from ..files import atomic_target

    path = Path(path)
    make_folder(path.parent)
    with atomic_target(path) as tmp:
        save_file({k: v.contiguous() for k, v in lpips.state_dict().items()}, str(tmp))
    return path


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017): a grid of real/fake logits.

    ``num_layers`` stride-2 4x4 convolutions (widths base, 2*base, ... capped at
    8*base), then two stride-1 4x4 convolutions down to one logit per patch.
    GroupNorm (gcd(norm_groups, width) groups) replaces the original BatchNorm
    so that the logits of a sample do not depend on what else is in its batch
    (real and fake batches are scored in separate passes).

    Shapes: images [N,3,H,W] -> logits [N,1,h,w].
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3,
                 norm_groups: int = 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2)]
        channels = base_channels
        for n in range(1, num_layers + 1):
            out = base_channels * min(2 ** n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=False),
                       nn.GroupNorm(math.gcd(norm_groups, out), out), nn.LeakyReLU(0.2)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DCGAN init: conv weights N(0, 0.02), norm scales N(1, 0.02), biases zero."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))]) (Lim & Ye 2017, hinge GAN)."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-E[D(x_hat)]."""
    return -fake_logits.mean()


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor, pixel_values_per_sample: int) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent elements, averaged over the batch,
    divided by the number of pixel values per sample.

    The LDM recipe sums both the reconstruction and the KL term per sample; we
    average the reconstruction per pixel value instead, so dividing the KL by
    the same count keeps the LDM meaning of the KL weight (1e-6 for SD v1).

    Shapes: mean, logvar [N,C,h,w] -> scalar.
    """
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(dim=1).mean() / pixel_values_per_sample


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """lambda = ||d rec / d w_L|| / (||d gan / d w_L|| + 1e-4) at the decoder's last layer (VQGAN eq. 7).

    Balances the adversarial gradient against the reconstruction gradient; detached.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
