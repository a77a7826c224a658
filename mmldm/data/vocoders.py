"""Vocoders: log-mel spectrogram [B, M, L] -> waveform [B, L * hop].

Every vocoder takes the natural-log mel magnitudes of :func:`mmldm.data.audio_image.log_mel`
(HiFi-GAN convention) and has ``sample_rate`` and ``hop`` attributes (the
:class:`Vocoder` protocol). Two kinds:

* :class:`GriffinLim`: built in, no weights. Inverts the mel filterbank by a
  non-negative least-squares solve, then recovers a phase with fast Griffin-Lim
  (Perraudin, Balazs & Sondergaard 2013). Robotic but pitch-faithful: good for
  tests, previews and the synthetic dataset.
* :class:`HiFiGAN`: the HiFi-GAN generator (Kong et al. 2020) with the layer
  names of the public release (github.com/jik876/hifi-gan, ``models.Generator``),
  so its released checkpoints load with :func:`load_hifigan`: the training
  ``g_XXXXXXXX`` files and the universal V1 generator ``generator_universal.pth.tar``
  (``{"generator": state_dict}`` with weight-norm ``weight_g`` / ``weight_v``
  tensors, folded into plain weights on loading), each with its ``config.json``.
  That is the vocoder the paper uses (Sec. 3.1). The universal V1 generator fits
  the ``"hifigan-22k"`` audio preset exactly.

:func:`build_vocoder` picks one from a string ("griffin-lim" or a checkpoint
path) and checks it fits the :class:`~mmldm.data.audio_image.AudioConfig`.
:func:`log_mel_distance` and :func:`multi_resolution_stft_distance` measure how
close a vocoded wave is to the original (``benchmarks/vocoders.py``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from ..config import atomic_write_text
from ..errors import ConfigError, DataError, WeightsError
from .audio_image import AudioConfig, log_mel, mel_filterbank

__all__ = [
    "Vocoder",
    "GriffinLim",
    "HiFiGANConfig",
    "HiFiGAN",
    "load_hifigan",
    "save_hifigan",
    "build_vocoder",
    "log_mel_distance",
    "multi_resolution_stft_distance",
    "STFTDistance",
    "STFT_RESOLUTIONS",
]


@runtime_checkable
class Vocoder(Protocol):
    """Anything that turns log-mels [B, M, L] into waves [B, L * hop] at ``sample_rate``."""

    sample_rate: int
    hop: int

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor: ...


def _check_log_mel(log_mel: torch.Tensor, n_mels: int, who: str) -> torch.Tensor:
    if log_mel.ndim == 2:
        log_mel = log_mel.unsqueeze(0)
    if log_mel.ndim != 3 or log_mel.shape[1] != n_mels:
        raise DataError(f"{who}: expected a log-mel of shape [B, {n_mels}, L], got {tuple(log_mel.shape)}")
    return log_mel


# ================================================================ Griffin-Lim
class GriffinLim(nn.Module):
    """Mel -> linear magnitude by non-negative least squares, then fast Griffin-Lim.

    1. Magnitude: ``S >= 0`` minimising ``||A S - mel||^2`` for the mel filterbank
       ``A`` [M, K], by ``nnls_iters`` multiplicative updates (Lee & Seung 2001)
       ``S <- S * (A^T mel) / (A^T A S)`` from ``S = A^T mel``. Unlike a clamped
       pseudo-inverse, S is non-negative by construction and stays exactly zero
       in STFT bins that no sounding mel band covers.
    2. Phase: fast Griffin-Lim (Perraudin et al. 2013):
       ``c_n = P_C(P_A(t_{n-1}))``, ``t_n = c_n + momentum * (c_n - c_{n-1})``,
       with ``P_A`` the magnitude projection and ``P_C`` = STFT(iSTFT(.)).

    The initial phase is uniform random from a ``torch.Generator`` (the one passed
    to :meth:`forward` for the whole batch, else for every row a fresh one seeded with
    ``seed``, so a row's wave does not depend on the batch it is vocoded in), or all zero
    with ``init="zero"``; either way the output is deterministic. Pure torch: runs on
    whatever device the module and input are on.
    """

    def __init__(
        self,
        cfg: AudioConfig,
        n_iter: int = 32,
        momentum: float = 0.99,
        init: Literal["random", "zero"] = "random",
        seed: int = 0,
        nnls_iters: int = 100,
    ):
        super().__init__()
        if n_iter < 1 or nnls_iters < 1:
            raise ConfigError(f"griffin-lim: n_iter and nnls_iters must be >= 1, got {n_iter}, {nnls_iters}")
        if not 0 <= momentum < 1:
            raise ConfigError(f"griffin-lim: momentum must be in [0, 1), got {momentum}")
        if init not in ("random", "zero"):
            raise ConfigError(f"griffin-lim: init must be 'random' or 'zero', got {init!r}")
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.hop = cfg.hop
        self.n_iter = n_iter
        self.momentum = momentum
        self.init = init
        self.seed = seed
        self.nnls_iters = nnls_iters
        basis = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.register_buffer("mel_basis", basis, persistent=False)  # [M, K]
        self.register_buffer("window", torch.hann_window(cfg.win), persistent=False)

    def mel_to_magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Non-negative least-squares linear magnitude [B, K, L] of log-mel [B, M, L]."""
        basis = self.mel_basis.to(torch.float32)
        mel = torch.exp(log_mel.float())
        numerator = basis.T @ mel  # A^T mel: [K, M] @ [B, M, L] -> [B, K, L]
        magnitude = numerator.clone()
        for _ in range(self.nnls_iters):
            # A^T (A S), cheaper than forming the [K, K] Gram matrix since M < K
            denominator = basis.T @ (basis @ magnitude)
            magnitude = magnitude * numerator / denominator.clamp_min(1e-12)
        return magnitude

    def _stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(
            wave, self.cfg.n_fft, hop_length=self.hop, win_length=self.cfg.win, window=self.window,
            center=True, pad_mode="reflect", return_complex=True,
        )

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(
            spec, self.cfg.n_fft, hop_length=self.hop, win_length=self.cfg.win, window=self.window,
            center=True, length=length,
        )

    @torch.no_grad()
    def forward(self, log_mel: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Shapes: log_mel [B, M, L] (or [M, L]) -> wave [B, L * hop] in [-1, 1]."""
        log_mel = _check_log_mel(log_mel, self.cfg.n_mels, "griffin-lim")
        magnitude = self.mel_to_magnitude(log_mel.to(self.mel_basis.device))  # [B, K, L]
        frames = magnitude.shape[-1]
        # Our analysis frames are centred on samples t*hop + hop/2 (see log_mel);
        # torch's centred STFT puts them on t*hop. Griffin-Lim runs on the wave
        # shifted by hop/2, which has exactly `frames` centred frames.
        half_hop = self.hop // 2
        length = frames * self.hop - half_hop
        if self.init == "zero":
            phase = torch.ones_like(magnitude, dtype=torch.complex64)
        else:
            if generator is None:  # every row as if vocoded alone
                row = magnitude.shape[1:]
                angles = torch.cat([torch.rand(row, generator=torch.Generator().manual_seed(self.seed))[None]
                                    for _ in range(len(magnitude))])
            else:
                angles = torch.rand(magnitude.shape, generator=generator, device=generator.device)
            phase = torch.polar(torch.ones_like(angles), 2 * math.pi * angles).to(magnitude.device)
        previous = torch.zeros_like(phase)
        for _ in range(self.n_iter):
            rebuilt = self._stft(self._istft(magnitude * phase, length))
            accelerated = rebuilt - (self.momentum / (1 + self.momentum)) * previous
            phase = accelerated / accelerated.abs().clamp_min(1e-16)
            previous = rebuilt
        wave = self._istft(magnitude * phase, length)
        return F.pad(wave, (half_hop, 0)).clamp(-1.0, 1.0)


# ================================================================ HiFi-GAN
_HIFIGAN_WHAT = "HiFi-GAN generator checkpoint (g_XXXXXXXX or generator_*.pth.tar) with config.json beside it"
_LRELU_SLOPE = 0.1  # between layers; the last activation uses torch's default 0.01, as the public code


@dataclass(frozen=True)
class HiFiGANConfig:
    """The generator and feature keys of a public HiFi-GAN ``config.json``.

    Training keys of that file (batch_size, learning_rate, ...) are ignored. The
    optional STFT/mel keys, when present, are checked against the audio config by
    :func:`build_vocoder`.
    """

    resblock: str
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    num_mels: int
    sampling_rate: int
    hop_size: int
    n_fft: int | None = None
    win_size: int | None = None
    fmin: float | None = None
    fmax: float | None = None

    def __post_init__(self) -> None:
        def fail(problem: str) -> None:
            raise ConfigError(f"HiFi-GAN config: {problem}")

        if self.resblock not in ("1", "2"):
            fail(f"resblock must be '1' or '2', got {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes) or not self.upsample_rates:
            fail("upsample_rates and upsample_kernel_sizes must be non-empty and of equal length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            fail("resblock_kernel_sizes and resblock_dilation_sizes must be non-empty and of equal length")
        if math.prod(self.upsample_rates) != self.hop_size:
            fail(f"the upsample rates {list(self.upsample_rates)} multiply to {math.prod(self.upsample_rates)}, not hop_size {self.hop_size}")
        if self.upsample_initial_channel < 2 ** len(self.upsample_rates):
            fail(f"upsample_initial_channel {self.upsample_initial_channel} is too small for {len(self.upsample_rates)} upsamplings")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "HiFi-GAN config") -> HiFiGANConfig:
        """Build from a parsed ``config.json`` (extra keys ignored)."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            if field.name not in data or data[field.name] is None:
                if field.default is None:  # optional key
                    continue
                raise ConfigError(f"{source}: missing key '{field.name}'")
            values[field.name] = data[field.name]
        try:
            values["resblock"] = str(values["resblock"])
            for key in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
                values[key] = tuple(int(v) for v in values[key])
            values["resblock_dilation_sizes"] = tuple(tuple(int(d) for d in ds) for ds in values["resblock_dilation_sizes"])
            for key in ("upsample_initial_channel", "num_mels", "sampling_rate", "hop_size", "n_fft", "win_size"):
                if key in values:
                    values[key] = int(values[key])
            for key in ("fmin", "fmax"):
                if key in values:
                    values[key] = float(values[key])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: bad value ({exc})") from None
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> HiFiGANConfig:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(path, _HIFIGAN_WHAT, "config.json not found")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightsError(path, "HiFi-GAN config.json", f"not readable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise WeightsError(path, "HiFi-GAN config.json", "must hold a JSON object")
        try:
            return cls.from_mapping(data, source=str(path))
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if str(path) in message else f"{message} ({path})") from None

    def to_json_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        for key in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            out[key] = list(out[key])
        out["resblock_dilation_sizes"] = [list(d) for d in out["resblock_dilation_sizes"]]
        return out


def _conv_padding(kernel_size: int, dilation: int) -> int:
    """'Same' padding of a stride-1 dilated convolution."""
    return (kernel_size * dilation - dilation) // 2


class _ResBlock1(nn.Module):
    """Per dilation d: x + conv2(lrelu(conv1_d(lrelu(x)))), public names convs1 / convs2."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=_conv_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=_conv_padding(kernel_size, 1))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            x = x + conv2(F.leaky_relu(conv1(F.leaky_relu(x, _LRELU_SLOPE)), _LRELU_SLOPE))
        return x


class _ResBlock2(nn.Module):
    """Per dilation d: x + conv_d(lrelu(x)), public name convs (HiFi-GAN V3)."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=_conv_padding(kernel_size, d))
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, _LRELU_SLOPE))
        return x


class HiFiGAN(nn.Module):
    """HiFi-GAN generator (Kong et al. 2020, Fig. 1 / Sec. 2.1), public layer layout.

    ``conv_pre`` (M -> C, kernel 7), then per upsampling stage i a leaky ReLU, a
    transposed convolution ``ups[i]`` (C/2^i -> C/2^(i+1), stride u_i) and the mean
    of the stage's multi-receptive-field ResBlocks ``resblocks[i*K : (i+1)*K]``;
    finally leaky ReLU, ``conv_post`` (-> 1 channel, kernel 7) and tanh.

    Built with weight normalisation (``torch.nn.utils.parametrizations``) so it can
    be trained; :func:`load_hifigan` removes it for inference. Input is the
    natural-log mel of :func:`~mmldm.data.audio_image.log_mel`.

    A log-mel longer than ``chunk_frames`` frames is synthesised in chunks of that
    many frames, each with :meth:`receptive_frames` frames of real context on both
    sides, then cropped and joined: the same wave as in one piece (every output
    sample sees all the input it depends on), in bounded memory. A 10-minute wave at
    22,050 Hz in one piece would hold several tensors of 32 channels x 13 M samples.
    """

    def __init__(self, config: HiFiGANConfig, use_weight_norm: bool = True, chunk_frames: int | None = 512):
        super().__init__()
        if chunk_frames is not None and (isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int)
                                         or chunk_frames < 1):
            raise ValueError(f"HiFi-GAN chunk_frames must be a positive integer or None, got {chunk_frames!r}")
        self.chunk_frames = chunk_frames
        self.config = config
        self.sample_rate = config.sampling_rate
        self.hop = config.hop_size
        self.num_mels = config.num_mels
        channels = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(config.num_mels, channels, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(channels // 2**i, channels // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes))
        )
        block = _ResBlock1 if config.resblock == "1" else _ResBlock2
        self.resblocks = nn.ModuleList(
            block(channels // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
        )
        self.conv_post = nn.Conv1d(channels // 2 ** len(self.ups), 1, 7, 1, padding=3)
        self.initialize_weights()
        if use_weight_norm:
            for conv in self._convs():
                weight_norm(conv)  # dim 0, as the public torch.nn.utils.weight_norm calls

    def _convs(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]

    def initialize_weights(self) -> None:
        """Public HiFi-GAN init: all convolution weights N(0, 0.01), biases as torch's default."""
        for conv in self._convs():
            nn.init.normal_(conv.weight, 0.0, 0.01)

    @property
    def has_weight_norm(self) -> bool:
        return any(parametrize.is_parametrized(conv, "weight") for conv in self._convs())

    def remove_weight_norm(self) -> HiFiGAN:
        """Fold ``g * v / ||v||`` into plain weights (inference); returns self."""
        for conv in self._convs():
            if parametrize.is_parametrized(conv, "weight"):
                parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        return self

    def receptive_frames(self) -> int:
        """Mel frames on either side of a frame that can reach its output samples (an upper bound).

        The reach of each layer in its own samples, divided by its samples per mel frame:
        conv_pre (kernel 7), per stage the transposed convolution (``max(k - 1 - p, p) / u``
        input samples) and the widest ResBlock (the sum of its convolutions' half spans),
        and conv_post. Universal V1: 14 frames, half of them the first stage's ResBlocks.
        """
        cfg = self.config
        reach = 3.0  # conv_pre: kernel 7, one frame per sample
        rate = 1  # samples per mel frame at the current layer
        for u, k in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
            padding = (k - u) // 2
            reach += max(k - 1 - padding, padding) / u / rate
            rate *= u
            spans = []
            for size, dilations in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                half = (size - 1) // 2
                per_dilation = [half * d + (half if cfg.resblock == "1" else 0) for d in dilations]  # convs1 (+ convs2)
                spans.append(sum(per_dilation))
            reach += max(spans) / rate
        reach += 3 / rate  # conv_post: kernel 7
        return math.ceil(reach)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Shapes: log_mel [B, M, L] (or [M, L]) -> wave [B, L * hop] in [-1, 1]."""
        log_mel = _check_log_mel(log_mel, self.num_mels, "HiFi-GAN")
        frames = log_mel.shape[-1]
        if self.chunk_frames is None or frames <= self.chunk_frames:
            return self._synthesise(log_mel)
        context = self.receptive_frames()
        pieces = []
        for start in range(0, frames, self.chunk_frames):
            end = min(start + self.chunk_frames, frames)
            first, last = max(0, start - context), min(frames, end + context)
            wave = self._synthesise(log_mel[..., first:last])  # [B, (last - first) * hop]
            pieces.append(wave[..., (start - first) * self.hop : (end - first) * self.hop])
        return torch.cat(pieces, dim=-1)

    def _synthesise(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The generator on one piece: [B, M, L] -> [B, L * hop]."""
        kernels = len(self.config.resblock_kernel_sizes)
        x = self.conv_pre(log_mel.to(self.conv_pre.bias.dtype))  # [B, C, L]
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, _LRELU_SLOPE))  # [B, C / 2^(i+1), L * u_0 * ... * u_i]
            x = sum(block(x) for block in self.resblocks[i * kernels : (i + 1) * kernels]) / kernels
        x = torch.tanh(self.conv_post(F.leaky_relu(x)))  # [B, 1, L * hop]
        return x.squeeze(1)


# Parameter names: the public checkpoints were written with the old
# torch.nn.utils.weight_norm ("<conv>.weight_g" = g, "<conv>.weight_v" = v); the
# current parametrisation calls the same tensors original0 / original1.
_OLD_TO_NEW = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_NEW_TO_OLD = {new: old for old, new in _OLD_TO_NEW.items()}


def _to_parametrized_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        out[f"{prefix}.{_OLD_TO_NEW[leaf]}" if leaf in _OLD_TO_NEW else key] = value
    return out


_RELEASE_NAME = re.compile(r"generator_\w+\.(pth\.tar|pth|pt)")  # e.g. generator_universal.pth.tar


def _resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or a folder holding ``g_XXXXXXXX`` files (the highest step is
    taken) or else exactly one released ``generator_<name>.pth.tar`` (or .pth / .pt)."""
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        candidates = sorted(
            (p for p in files if re.fullmatch(r"g_\d+(\.pt|\.pth)?", p.name)),
            key=lambda p: int(re.sub(r"\D", "", p.name)),
        )
        if candidates:
            return candidates[-1]
        released = sorted(p for p in files if _RELEASE_NAME.fullmatch(p.name))
        if len(released) > 1:
            names = ", ".join(p.name for p in released)
            raise WeightsError(path, _HIFIGAN_WHAT, f"folder holds several generator files ({names}): name one")
        if not released:
            raise WeightsError(path, _HIFIGAN_WHAT, "folder holds no g_XXXXXXXX file nor a generator_*.pth.tar")
        return released[0]
    if not path.is_file():
        raise WeightsError(path, _HIFIGAN_WHAT, "checkpoint file not found")
    return path


def load_hifigan(checkpoint_path: str | Path, config_path: str | Path | None = None) -> HiFiGAN:
    """Load a public-format HiFi-GAN generator for inference (weight norm removed, eval mode, frozen).

    Args:
        checkpoint_path: a ``torch.save``d dict ``{"generator": state_dict}`` as the
            public release ``g_XXXXXXXX`` files (a bare state dict is accepted too),
            or the folder holding it.
        config_path: its ``config.json``; default: ``config.json`` beside the checkpoint.
    """
    checkpoint = _resolve_checkpoint(Path(checkpoint_path))
    config = HiFiGANConfig.from_json(Path(config_path) if config_path else checkpoint.parent / "config.json")
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise WeightsError(checkpoint, _HIFIGAN_WHAT, f"not a loadable torch checkpoint ({type(exc).__name__})") from None
    state = payload.get("generator", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(checkpoint, _HIFIGAN_WHAT, "holds no generator state dict ({'generator': ...})")
    parametrized = any(key.endswith(("weight_g", "original0")) for key in state)
    model = HiFiGAN(config, use_weight_norm=parametrized)
    ours = set(model.state_dict())
    if state and not ours & set(_to_parametrized_names(state) if parametrized else state):
        first = next(iter(state))
        raise WeightsError(checkpoint, _HIFIGAN_WHAT,
                           f"not a HiFi-GAN generator: none of its {len(state)} tensors has a generator layer name "
                           f"(first: '{first}')")
    try:
        result = model.load_state_dict(_to_parametrized_names(state) if parametrized else state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), "shape mismatch")
        raise WeightsError(checkpoint, _HIFIGAN_WHAT, f"does not match its config.json: {first}") from None
    problems = [f"missing {k}" for k in result.missing_keys[:3]] + [f"unexpected {k}" for k in result.unexpected_keys[:3]]
    if problems:
        raise WeightsError(checkpoint, _HIFIGAN_WHAT, f"does not match its config.json: {', '.join(problems)}")
    return model.remove_weight_norm().eval().requires_grad_(False)


def save_hifigan(model: HiFiGAN, checkpoint_path: str | Path) -> Path:
    """Write ``model`` in the public release format: ``{"generator": state_dict}`` with
    ``weight_g`` / ``weight_v`` names, and ``config.json`` in the same folder.

    A model whose weight norm was removed is written with ``v = w`` and ``g = ||w||``
    (norm over all but dim 0), which gives back the same weights.
    """
    checkpoint_path = Path(checkpoint_path)
    state = {}
    for key, value in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        if key.endswith(tuple(_NEW_TO_OLD)):
            base, _, _ = key.rpartition(".parametrizations.weight.")
            state[f"{base}.{_NEW_TO_OLD[key[len(base) + 1:]]}"] = value
        elif leaf == "weight":
            dims = tuple(range(1, value.ndim))
            state[f"{prefix}.weight_g"] = value.norm(dim=dims, keepdim=True)
            state[f"{prefix}.weight_v"] = value
        else:
            state[key] = value
    from ..config import make_folder
    from ..files import atomic_target, disk_full_as_error, torch_save

    with disk_full_as_error(checkpoint_path):
        make_folder(checkpoint_path.parent)
    with atomic_target(checkpoint_path) as tmp:
        torch_save({"generator": {k: v.detach().cpu().contiguous() for k, v in state.items()}}, tmp)
    atomic_write_text(checkpoint_path.parent / "config.json", json.dumps(model.config.to_json_dict(), indent=2) + "\n")
    return checkpoint_path


# ================================================================ factory
def build_vocoder(spec: str | Path, cfg: AudioConfig) -> Vocoder:
    """``"griffin-lim"`` -> :class:`GriffinLim`; anything else is a HiFi-GAN checkpoint path.

    A HiFi-GAN must have been trained on exactly ``cfg``'s mels: num_mels,
    sampling_rate and hop_size must match (and n_fft, win_size, fmin, fmax when its
    config.json gives them), else :class:`ConfigError` naming the key.
    """
    if str(spec) == "griffin-lim":
        return GriffinLim(cfg)
    model = load_hifigan(spec)
    for key, want in _mel_settings(cfg).items():
        have = getattr(model.config, key)
        if have is not None and not math.isclose(float(have), float(want)):
            fitting = _fitting_presets(model.config)
            hint = (f"the audio preset {' or '.join(repr(n) for n in fitting)}" if fitting
                    else "the matching audio settings")
            raise ConfigError(
                f"HiFi-GAN vocoder {spec}: its config.json has {key}={have:g} but the audio config needs {want:g}; "
                f"use a vocoder trained on these mel settings or {hint}"
            )
    return model


def _mel_settings(cfg: AudioConfig) -> dict[str, float]:
    """The audio config's values under the names of a HiFi-GAN config.json."""
    return {
        "num_mels": cfg.n_mels, "sampling_rate": cfg.sample_rate, "hop_size": cfg.hop,
        "n_fft": cfg.n_fft, "win_size": cfg.win, "fmin": cfg.fmin, "fmax": cfg.fmax,
    }


def _fitting_presets(config: HiFiGANConfig) -> list[str]:
    """Names of the audio presets whose mels a HiFi-GAN with ``config`` was trained on."""
    names = []
    for name in AudioConfig.preset_names():
        settings = _mel_settings(AudioConfig.preset(name))
        if all(getattr(config, key) is None or math.isclose(float(getattr(config, key)), float(value))
               for key, value in settings.items()):
            names.append(name)
    return names


# ================================================================ distances to the original
#: (n_fft, hop) of :func:`multi_resolution_stft_distance`; each window is n_fft samples long
STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))
_STFT_POWER_FLOOR = 1e-7  # Parallel WaveGAN's clamp of |X|^2 before the square root and the log


def _aligned(reference: torch.Tensor, estimate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both waves as [B, N] float32, trimmed to the shorter (a vocoder returns L * hop samples)."""
    pair = []
    for name, wave in (("reference", reference), ("estimate", estimate)):
        if not isinstance(wave, torch.Tensor) or wave.ndim not in (1, 2):
            shape = tuple(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__
            raise DataError(f"{name} wave: expected a tensor [N] or [B, N], got {shape}")
        pair.append(wave.reshape(-1, wave.shape[-1]).float())
    reference, estimate = pair
    if reference.shape[0] != estimate.shape[0]:
        raise DataError(f"reference and estimate waves: batch sizes differ "
                        f"({reference.shape[0]} vs {estimate.shape[0]})")
    length = min(reference.shape[-1], estimate.shape[-1])
    return reference[:, :length], estimate[:, :length].to(reference.device)


def log_mel_distance(reference: torch.Tensor, estimate: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Mean absolute difference of the :func:`~mmldm.data.audio_image.log_mel` of two waves.

    HiFi-GAN's "mel error" (Kong et al. 2020), in natural-log units (1 = 8.69 dB), over all
    mel bins and frames of ``cfg``'s analysis. Pass a copy of ``cfg`` with ``fmax`` at Nyquist
    to judge the whole band (the HiFi-GAN validation's ``fmax_for_loss: null``).

    Shapes: reference, estimate [N] or [B, N] (trimmed to the shorter) -> [B].
    """
    reference, estimate = _aligned(reference, estimate)
    return (log_mel(estimate, cfg) - log_mel(reference, cfg)).abs().mean(dim=(1, 2))


@dataclass(frozen=True)
class STFTDistance:
    """Multi-resolution STFT distance of Yamamoto et al. 2020 (Parallel WaveGAN), per item [B].

    ``spectral_convergence``: ``||X| - |Y||_F / ||X||_F``; ``log_magnitude``: mean
    ``|log|X| - log|Y||``; each averaged over the resolutions. ``total`` is their sum, the
    Parallel WaveGAN auxiliary loss.
    """

    spectral_convergence: torch.Tensor
    log_magnitude: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.spectral_convergence + self.log_magnitude


def multi_resolution_stft_distance(
    reference: torch.Tensor, estimate: torch.Tensor, resolutions: tuple[tuple[int, int], ...] = STFT_RESOLUTIONS,
) -> STFTDistance:
    """:class:`STFTDistance` of ``estimate`` to ``reference`` over ``(n_fft, hop)`` resolutions.

    Magnitudes as Parallel WaveGAN's: centred Hann-window STFT (window = n_fft),
    ``sqrt(clamp(|X|^2, 1e-7))``, so bins below -70 dB of a full-scale bin of 1 count as equal.

    Shapes: reference, estimate [N] or [B, N] (trimmed to the shorter) -> fields [B].
    """
    reference, estimate = _aligned(reference, estimate)
    convergence = torch.zeros(reference.shape[0], device=reference.device)
    log_magnitude = torch.zeros_like(convergence)
    for n_fft, hop in resolutions:
        if reference.shape[-1] <= n_fft // 2:
            raise DataError(f"waves of {reference.shape[-1]} samples are too short for an STFT of {n_fft} points")
        window = torch.hann_window(n_fft, device=reference.device)

        def magnitude(wave: torch.Tensor) -> torch.Tensor:
            spec = torch.stft(wave, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                              pad_mode="reflect", return_complex=True)  # [B, K, frames]
            return (spec.real.square() + spec.imag.square()).clamp_min(_STFT_POWER_FLOOR).sqrt()

        target, rebuilt = magnitude(reference), magnitude(estimate)
        convergence += torch.linalg.norm(target - rebuilt, dim=(1, 2)) / torch.linalg.norm(target, dim=(1, 2))
        log_magnitude += (target.log() - rebuilt.log()).abs().mean(dim=(1, 2))
    return STFTDistance(convergence / len(resolutions), log_magnitude / len(resolutions))
