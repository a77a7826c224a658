"""AudioCLIP's audio head (ESResNeXt-FBSP), the network behind the paper-era FAD.

Guzhov et al. 2022, "AudioCLIP: Extending CLIP to Image, Text and Audio"; the
audio head is ESResNeXt-FBSP (Guzhov et al. 2021): a trainable
"frequency B-spline" (FBSP) time-frequency transform, log power in dB, the
frequency axis cut into 3 bands used as 3 image channels, then ResNeXt-50
(32x4d) with attention gates, pooled and projected to 1024-d.

Configuration of ``AudioCLIP-Full-Training.pt`` (as MM-Diffusion's evaluator
builds it): 44.1 kHz mono, 1.6 s = 70,560 samples; frames of 1654 samples,
hop 561, periodic Blackman-Harris window, zero-padded to 2048; 1025 FBSP
bins, normalized; attention on. Parameter names match the checkpoint's
``audio.*`` entries (``fbsp.m``, ``conv1.weight``, ``layer1.0.conv2.weight``,
``att1.conv_depth.weight``, ``fc.bias``, ...), so those load with strict=True.

Input scale: the network first maps [-32768, 32767] to [-1, 1], i.e. it wants
int16-range samples. :func:`audioclip_embeddings` multiplies [-1, 1] audio by
32768 unless told to reproduce the released evaluator, which fed [-1, 1]
audio directly (about -90 dB).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import get_window
from torch import nn

from ..errors import DataError, WeightsError
from ..weights import load_state_dict_file
from .weights import randomize_weights_

AUDIOCLIP_WHAT = "AudioCLIP audio feature net (ESResNeXt-FBSP, AudioCLIP-Full-Training.pt)"
AUDIOCLIP_SAMPLE_RATE = 44100
AUDIOCLIP_EMBEDDING_DIM = 1024
N_FFT = 2048
WIN_LENGTH = 1654
HOP_LENGTH = 561
LOG10_EPS = 1e-18
FBSP_EPS = 1e-8


class LinearFBSP(nn.Module):
    """Trainable complex "DFT" whose kernels are windowed by a sinc raised to a power.

    Bin k: weights(t) = sqrt(fb_k) * sinc(fb_k t / m_k) ** m_k * exp(-i fc_k t),
    t on pi * linspace(-1, 1, n_in); divided by sqrt(n_in) when normalized.
    ``bias`` is kept (empty) only because the checkpoint holds it.

    Shapes: frames [..., n_in] (real) -> spectrum [..., out_features, 2] (re, im).
    """

    def __init__(self, out_features: int, normalized: bool = True):
        super().__init__()
        self.out_features = out_features
        self.normalized = normalized
        self.m = nn.Parameter(torch.zeros(out_features))
        self.fb = nn.Parameter(torch.ones(out_features))
        self.fc = nn.Parameter(torch.arange(out_features, dtype=torch.get_default_dtype()))
        self.bias = nn.Parameter(torch.empty(0))

    @staticmethod
    def _complex_power(base: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
        """base ** exponent for (re, im) pairs in the last dim, written as the released code does."""
        magnitude_sq = ((base[..., 0] ** 2 + base[..., 1] ** 2) ** 0.5) ** 2  # sqrt then square, bit for bit
        phase = base[..., 1].atan2(base[..., 0])
        p_re, p_im = exponent[..., 0], exponent[..., 1]
        magnitude = magnitude_sq ** (0.5 * p_re) * torch.exp(-p_im * phase)
        angle = p_re * phase + 0.5 * p_im * magnitude_sq.log()
        return magnitude.unsqueeze(-1) * torch.stack((angle.cos(), angle.sin()), dim=-1)

    def kernels(self, in_features: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Complex kernels: [out_features, in_features, 2]."""
        t = math.pi * torch.linspace(-1.0, 1.0, in_features, dtype=dtype, device=device).reshape(1, -1, 1) + FBSP_EPS
        m, fb, fc = (p.reshape(-1, 1, 1) for p in (self.m, self.fb, self.fc))
        kernel = torch.cat((torch.cos(fc * t), -torch.sin(fc * t)), dim=-1)
        x = fb * t / (m + FBSP_EPS)
        sinc = torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)
        window = self._complex_power(torch.cat((sinc, torch.zeros_like(sinc)), dim=-1),
                                     torch.cat((m, torch.zeros_like(m)), dim=-1))
        weights = fb.sqrt() * torch.cat((
            window[..., :1] * kernel[..., :1] - window[..., 1:] * kernel[..., 1:],
            window[..., :1] * kernel[..., 1:] + window[..., 1:] * kernel[..., :1],
        ), dim=-1)  # fmt: skip
        return weights / in_features**0.5 if self.normalized else weights

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        weights = self.kernels(frames.shape[-1], frames.dtype, frames.device)
        return torch.stack((F.linear(frames, weights[..., 0]), F.linear(frames, weights[..., 1])), dim=-1)


class Attention2d(nn.Module):
    """Gate: max-pool the block input to the block output size, depthwise + pointwise conv, BN, sigmoid."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], padding: tuple[int, int]):
        super().__init__()
        self.conv_depth = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels)
        self.conv_point = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return torch.sigmoid(self.bn(self.conv_point(self.conv_depth(F.adaptive_max_pool2d(x, size)))))


class Bottleneck(nn.Module):
    """ResNeXt bottleneck (torchvision layout: conv1/bn1, grouped conv2/bn2, conv3/bn3, downsample)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, groups: int = 32, base_width: int = 4):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ESResNeXtFBSP(nn.Module):
    """AudioCLIP audio head.

    Shapes: audio [B, N] (int16 range, 44.1 kHz) -> embedding [B, 1024] (raw, not normalised).
    """

    def __init__(self, embed_dim: int = AUDIOCLIP_EMBEDDING_DIM):
        super().__init__()
        self.fbsp = LinearFBSP(N_FFT // 2 + 1, normalized=True)
        window = get_window("blackmanharris", WIN_LENGTH, fftbins=True)
        self.register_buffer("window", torch.from_numpy(window).to(torch.get_default_dtype()))
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes, layers = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = [Bottleneck(inplanes, planes, stride)] + [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            inplanes = planes * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.att1 = Attention2d(64, 256, (3, 1), (1, 0))
        self.att2 = Attention2d(256, 512, (1, 5), (0, 2))
        self.att3 = Attention2d(512, 1024, (3, 1), (1, 0))
        self.att4 = Attention2d(1024, 2048, (1, 5), (0, 2))
        self.att5 = Attention2d(2048, 2048, (3, 5), (1, 2))
        self.fc = nn.Linear(2048, embed_dim)

    def log_power_bands(self, audio: torch.Tensor) -> torch.Tensor:
        """int16-range audio [B, N] -> dB power [B, 3, 341, F]: bins 0-340, 341-681, 682-1022 as channels."""
        x = (audio.to(torch.get_default_dtype()) + 32768.0) * 2.0 / 65535.0 - 1.0  # [-32768, 32767] -> [-1, 1]
        frames = _frame_signal(x, WIN_LENGTH, HOP_LENGTH) * self.window  # [B, F, 1654]
        pad = N_FFT - WIN_LENGTH
        frames = F.pad(frames, [pad // 2, pad - pad // 2])  # [B, F, 2048]
        spec = self.fbsp(frames).transpose(-2, -3)  # [B, 1025, F, 2]
        band = spec.shape[-3] // 3
        spec = spec[:, :3 * band].reshape(x.shape[0], 3, band, *spec.shape[-2:])  # [B, 3, 341, F, 2]
        power = spec[..., 0] ** 2 + spec[..., 1] ** 2
        power = torch.where(power > 0.0, power, torch.full_like(power, LOG10_EPS))
        return torch.log10(power) * 10.0

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(self.log_power_bands(audio)))))
        for layer, gate in ((self.layer1, self.att1), (self.layer2, self.att2),
                            (self.layer3, self.att3), (self.layer4, self.att4)):
            out = layer(x)
            x = out * gate(x, out.shape[-2:])
        x = F.adaptive_avg_pool2d(x, 1) * self.att5(x, (1, 1))
        return self.fc(torch.flatten(x, 1))


def _frame_signal(signal: torch.Tensor, frame_length: int, hop_length: int) -> torch.Tensor:
    """Frames covering the whole signal, zero-padded on both sides (left half rounded down).

    Shapes: [B, N] -> [B, 1 + ceil((N - frame_length) / hop_length), frame_length].
    """
    length = signal.shape[-1]
    count = 1 if length <= frame_length else 1 + math.ceil((length - frame_length) / hop_length)
    missing = (count - 1) * hop_length + frame_length - length
    if missing > 0:
        signal = F.pad(signal, [missing // 2, missing - missing // 2])
    return signal.unfold(-1, frame_length, hop_length)


def random_audioclip(seed: int) -> ESResNeXtFBSP:
    """Seeded random weights (He-normal convolutions, identity BN, plain-DFT FBSP), for tests and smoke runs."""
    return randomize_weights_(ESResNeXtFBSP(), seed, bias_std=0.0)


def load_audioclip(path: str | Path) -> ESResNeXtFBSP:
    """Load the audio head from ``AudioCLIP-Full-Training.pt`` (its ``audio.*`` entries), strict.

    A file holding only the head's own keys (no ``audio.`` prefix) is accepted too.
    """
    state = load_state_dict_file(path, AUDIOCLIP_WHAT)
    if any(k.startswith("audio.") for k in state):
        state = {k[len("audio."):]: v for k, v in state.items() if k.startswith("audio.")}
    with torch.device("meta"):  # no initialisation: every tensor comes from the file
        model = ESResNeXtFBSP()
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise WeightsError(path, AUDIOCLIP_WHAT, f"audio.* entries do not fit: {detail}") from exc
    return model.float().eval()


@torch.inference_mode()
def audioclip_embeddings(model: ESResNeXtFBSP, audio: np.ndarray, sample_rate: int,
                         int16_range: bool = True) -> np.ndarray:
    """Raw 1024-d embedding of one clip: float64 [1, 1024].

    ``audio``: mono float in [-1, 1] at 44.1 kHz. ``int16_range`` multiplies by
    32768 first (what the network expects); False reproduces MM-Diffusion's
    released evaluator, which passed [-1, 1] samples.
    """
    if sample_rate != AUDIOCLIP_SAMPLE_RATE:
        raise DataError(f"AudioCLIP needs {AUDIOCLIP_SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    samples = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None]
    if samples.ndim != 2:
        raise DataError(f"AudioCLIP: expected mono audio [N], got shape {tuple(samples.shape[1:])}")
    samples = samples.to(next(model.parameters()).device)
    return model(samples * 32768.0 if int16_range else samples).double().cpu().numpy()
