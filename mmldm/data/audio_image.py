"""Audio <-> mel spectrogram <-> "audio image", the paper's audio representation.

MM-LDM (Sec. 3.1, "Unifying Representation of Video and Audio Signals") turns a
clip's waveform into a mel spectrogram, normalises it, treats it as a grey image,
repeats it to RGB and resizes it to the video resolution, so that one image
autoencoder and one diffusion decoder serve both modalities. A vocoder
(HiFi-GAN in the paper, see :mod:`mmldm.data.vocoders`) turns mels back into sound.

Pipeline and conventions (shapes: B batch, N samples, M mel bins, L mel frames)::

    wave [B, N] --log_mel--> log_mel [B, M, L] --mel_to_image--> image [B, 3, H, W] in [0, 1]
    image --image_to_mel--> log_mel [B, M, L] --vocoder--> wave [B, L * hop]

* Mel spectrogram: the HiFi-GAN convention, so that public HiFi-GAN vocoders fit:
  magnitude STFT (Hann window of ``win`` samples, ``n_fft`` points) of the wave
  reflect-padded by ``(n_fft - hop) / 2`` on both sides, no centring; a Slaney
  mel filterbank (librosa's default: Slaney mel scale, ``norm="slaney"`` area
  normalisation); natural log of ``clamp(mel, 1e-5)``. With that padding a clip of
  ``N`` samples has ``N // hop`` frames, frame ``t`` centred on sample ``t*hop + hop/2``.
* Audio image (upstream code; the paper only says "values normalized"):
  ``dB = 20 log10(mel)``, ``value = (dB - 20 + 100) / 100`` clipped to [0, 1], so
  -80 dB is black and +20 dB white. Row ``m`` of the image is mel bin ``m``
  (low frequencies in the top row, as upstream), columns are time. Resizing is
  bicubic with antialiasing (as PIL's resize, which upstream used), then clamped.

Presets (:meth:`AudioConfig.preset`):

* ``"16k"``: 16 kHz, n_fft 1024, hop 256, win 1024, 80 mels, 0-8000 Hz. A 1.6 s
  clip is 25,600 samples and 100 mel frames. The default of this project.
* ``"paper-44k"``: 44.1 kHz (the paper's Landscape/AIST++ audio), n_fft 2048,
  hop 512, win 2048, 80 mels, 0-22,050 Hz; a 1.6 s clip is 70,560 samples and 137
  mel frames. Upstream applied HiFi-GAN's 22.05 kHz settings (n_fft 1024, hop 256,
  fmax 8000) unchanged to 44.1 kHz audio: the window then lasts 23 ms instead of
  46 ms and everything above 8 kHz, i.e. the upper two thirds of the band the
  44.1 kHz rate exists for, is thrown away, and no vocoder trained at 22.05 kHz fits
  those mels. We fix this by scaling the STFT with the rate: n_fft, hop and win
  doubled give the same 46 ms window and 11.6 ms hop, in seconds, as the 22.05 kHz
  HiFi-GAN recipe (and the 2048/512 STFT of NVIDIA's 44.1 kHz BigVGAN v2 vocoders).
  The filterbank spans the whole band up to Nyquist (fmax = 22,050 Hz): an 8 kHz
  limit would make the 44.1 kHz rate pointless, and full-band mels are what
  44.1 kHz vocoders are trained on. We keep 80 mels, the height of the paper's
  audio image (so the 128-band BigVGAN checkpoints do not fit this preset). A
  vocoder for it has to be trained with exactly these settings;
  :func:`mmldm.data.vocoders.build_vocoder` checks that it was.
* ``"hifigan-22k"``: the analysis the released HiFi-GAN universal V1 generator
  (``generator_universal.pth.tar`` with its ``config.json``) was trained on, so
  that checkpoint vocodes this preset's mels as they are: 22,050 Hz, n_fft 1024,
  hop 256, win 1024, 80 mels, 0-8000 Hz, with the conventions above (they are
  those of ``meldataset.mel_spectrogram`` of github.com/jik876/hifi-gan). A 1.6 s
  clip is 35,280 samples and 137 mel frames (35,072 samples): 137.8 hops, like
  ``paper-44k``, so one clip vocoded alone ends in 208 samples (9.4 ms) of
  padding silence and consecutive clips are joined on the global hop grid
  (:mod:`mmldm.pipeline.audio`). Whole hops are out of reach: the samples per
  video frame divide 22,050 = 2 x 3^2 x 5^2 x 7^2, which has a single factor 2, so
  a clip is a multiple of 256 samples only with a multiple of 128 frames. The
  frame rate must divide 22,050 (10, 15, 25, 30, 50 fps; not 24 or 29.97, see
  :class:`mmldm.timing.AVTiming`).

The audio image keeps [-80, +20] dB (``image_ref_db`` 20, ``image_range_db`` 100)
for every preset. HiFi-GAN's log floor is ``ln(1e-5)`` = -100 dB, so the image
raises mel bins between -100 and -80 dB to -80 dB; at the image's native size
(``n_mels`` x ``mel_frames``, no resize) that clamp is the only change between
:func:`log_mel` and what :func:`image_to_mel` hands the vocoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    from .vocoders import Vocoder

__all__ = [
    "AudioConfig",
    "hz_to_mel",
    "mel_to_hz",
    "mel_frequencies",
    "mel_filterbank",
    "fit_to_clip",
    "log_mel",
    "mel_to_image",
    "image_to_mel",
    "waveform_to_audio_image",
    "audio_image_to_waveform",
]

_DB_PER_NEPER = 20.0 / math.log(10.0)  # 20 * log10(x) == _DB_PER_NEPER * ln(x)


@dataclass(frozen=True)
class AudioConfig:
    """Sample rate, STFT/mel settings, clip length and the audio-image dB mapping.

    ``image_ref_db`` and ``image_range_db`` define the paper's audio-image mapping
    ``value = (dB - image_ref_db + image_range_db) / image_range_db``: the image spans
    ``[image_ref_db - image_range_db, image_ref_db]`` dB = [-80, +20] dB by default.
    ``mel_floor`` is the clamp before the log (HiFi-GAN: 1e-5, i.e. -100 dB).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    clip_seconds: float = 1.6
    image_ref_db: float = 20.0
    image_range_db: float = 100.0
    mel_floor: float = 1e-5

    def __post_init__(self) -> None:
        def fail(problem: str) -> None:
            raise ConfigError(f"audio config: {problem}")

        for name in ("sample_rate", "n_fft", "hop", "win", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                fail(f"{name} must be a positive integer, got {value!r}")
        if self.win > self.n_fft:
            fail(f"win ({self.win}) must not exceed n_fft ({self.n_fft})")
        if self.hop > self.win:
            fail(f"hop ({self.hop}) must not exceed win ({self.win}): frames would leave gaps")
        if (self.n_fft - self.hop) % 2:
            fail(f"n_fft - hop must be even (reflect padding (n_fft - hop) / 2), got {self.n_fft} - {self.hop}")
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < self.fmax <= nyquist:
            fail(f"need 0 <= fmin < fmax <= sample_rate / 2 = {nyquist:g} Hz, got fmin {self.fmin:g}, fmax {self.fmax:g}")
        if self.clip_seconds <= 0:
            fail(f"clip_seconds must be positive, got {self.clip_seconds!r}")
        samples = self.clip_seconds * self.sample_rate
        if abs(samples - round(samples)) > 1e-6 * max(1.0, samples):
            fail(f"clip_seconds {self.clip_seconds:g} at {self.sample_rate} Hz is not a whole number of samples")
        if round(samples) < self.n_fft:
            fail(f"a clip of {round(samples)} samples is shorter than one STFT window (n_fft {self.n_fft})")
        if self.image_range_db <= 0:
            fail(f"image_range_db must be positive, got {self.image_range_db!r}")
        if not 0 < self.mel_floor < 1:
            fail(f"mel_floor must be in (0, 1), got {self.mel_floor!r}")

    # ---------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str) -> AudioConfig:
        """``"16k"``, ``"paper-44k"`` or ``"hifigan-22k"`` (see the module docstring for the choices)."""
        presets = _PRESETS
        if name not in presets:
            raise ConfigError(f"unknown audio preset '{name}' (known: {', '.join(presets)})")
        return cls(**presets[name])

    @staticmethod
    def preset_names() -> tuple[str, ...]:
        """The names :meth:`preset` knows."""
        return tuple(_PRESETS)

    @classmethod
    def for_sample_rate(cls, sample_rate: int) -> AudioConfig:
        """The preset for ``sample_rate`` (16000 -> "16k", 44100 -> "paper-44k", 22050 -> "hifigan-22k")."""
        for name, values in _PRESETS.items():
            if values["sample_rate"] == sample_rate:
                return cls.preset(name)
        rates = ", ".join(str(v["sample_rate"]) for v in _PRESETS.values())
        raise ConfigError(
            f"no audio preset for {sample_rate} Hz (presets exist for {rates} Hz); "
            "build AudioConfig(...) with explicit STFT/mel settings instead"
        )

    # ------------------------------------------------------- derived lengths
    @property
    def clip_samples(self) -> int:
        """Samples in one clip (1.6 s at 16 kHz: 25,600)."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def pad(self) -> int:
        """Reflect padding on each side of the wave before the STFT."""
        return (self.n_fft - self.hop) // 2

    @property
    def n_freqs(self) -> int:
        """One-sided STFT bins, n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    def frames_for(self, num_samples: int) -> int:
        """Mel frames of a wave of ``num_samples`` samples (``num_samples // hop``)."""
        return 1 + (num_samples + 2 * self.pad - self.n_fft) // self.hop

    @property
    def mel_frames(self) -> int:
        """Mel frames of one clip (16k: 100; paper-44k and hifigan-22k: 137)."""
        return self.frames_for(self.clip_samples)


_PRESETS: dict[str, dict] = {
    "16k": dict(sample_rate=16000, n_fft=1024, hop=256, win=1024, n_mels=80, fmin=0.0, fmax=8000.0),
    "paper-44k": dict(sample_rate=44100, n_fft=2048, hop=512, win=2048, n_mels=80, fmin=0.0, fmax=22050.0),
    # the config.json of the released HiFi-GAN universal V1 generator
    "hifigan-22k": dict(sample_rate=22050, n_fft=1024, hop=256, win=1024, n_mels=80, fmin=0.0, fmax=8000.0),
}


# ------------------------------------------------------------ mel filterbank
# Written here rather than imported: librosa (the reference) pulls numba and
# friends, and torchaudio would pull another torch build.

_SLANEY_HZ_PER_MEL = 200.0 / 3.0  # linear part: 0-1000 Hz is 0-15 mel
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0  # log part: 27 mel per factor 6.4 in Hz


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (Auditory Toolbox; librosa's default, htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _SLANEY_HZ_PER_MEL
    log = _SLANEY_BREAK_MEL + np.log(np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_BREAK_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_HZ_PER_MEL
    log = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (np.maximum(mel, _SLANEY_BREAK_MEL) - _SLANEY_BREAK_MEL))
    return np.where(mel >= _SLANEY_BREAK_MEL, log, linear)


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The ``n_mels + 2`` band edges in Hz, equally spaced on the mel scale.

    Filter ``m`` rises from edge ``m`` to its peak at edge ``m + 1`` and falls to
    zero at edge ``m + 2``.
    """
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Slaney-normalised triangular mel filterbank, as ``librosa.filters.mel`` defaults.

    Each filter is a triangle in Hz over ``[edge_m, edge_{m+2}]`` peaking at
    ``edge_{m+1}``, scaled by ``2 / (edge_{m+2} - edge_m)`` so that its area in Hz
    is 1 (constant energy per band).

    Returns:
        float32 tensor [M, n_fft // 2 + 1] (mel bin x STFT bin).
    """
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_frequencies(n_mels, fmin, fmax)
    widths = np.diff(edges)  # [M + 1]
    offsets = edges[:, None] - fft_hz[None, :]  # [M + 2, K]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(weights).float()


# ------------------------------------------------------------ wave <-> mel
def _as_batch(tensor: torch.Tensor, ndim: int, what: str, shape: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise DataError(f"{what}: expected a torch.Tensor {shape}, got {type(tensor).__name__}")
    if tensor.ndim == ndim - 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != ndim:
        raise DataError(f"{what}: expected shape {shape}, got {tuple(tensor.shape)}")
    return tensor


def fit_to_clip(wave: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Zero pad or trim the end of ``wave`` [N] or [B, N] to ``cfg.clip_samples``.

    Returns:
        [B, cfg.clip_samples]
    """
    wave = _as_batch(wave, 2, "waveform", "[N] or [B, N]")
    missing = cfg.clip_samples - wave.shape[-1]
    if missing >= 0:
        return F.pad(wave, (0, missing))
    return wave[:, : cfg.clip_samples]


def log_mel(wave: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """HiFi-GAN log-mel spectrogram (natural log of the mel magnitude).

    Args:
        wave: [N] or [B, N] mono waveform in [-1, 1], any length of at least
            ``cfg.pad + 1`` samples (use :func:`fit_to_clip` for one clip).
    Returns:
        float32 (float64 for float64 input) [B, M, N // hop], values >= ln(mel_floor).
    """
    wave = _as_batch(wave, 2, "waveform", "[N] or [B, N]")
    if wave.shape[-1] <= cfg.pad:
        raise DataError(f"waveform of {wave.shape[-1]} samples is too short: needs more than {cfg.pad} for the STFT padding")
    dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
    wave = wave.to(dtype)
    padded = F.pad(rearrange(wave, "b n -> b 1 n"), (cfg.pad, cfg.pad), mode="reflect")
    window = torch.hann_window(cfg.win, dtype=dtype, device=wave.device)
    spec = torch.stft(
        rearrange(padded, "b 1 n -> b n"), cfg.n_fft, hop_length=cfg.hop, win_length=cfg.win,
        window=window, center=False, return_complex=True,
    )  # [B, K, L]
    magnitude = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)  # HiFi-GAN's epsilon
    basis = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).to(wave.device, dtype)
    mel = torch.einsum("mk,bkl->bml", basis, magnitude)
    return torch.log(torch.clamp(mel, min=cfg.mel_floor))


# ------------------------------------------------------------ mel <-> image
def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in pair):
        raise ConfigError(f"audio image size must be a positive int or (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of [B, C, H, W] (antialiased when shrinking, like PIL) and clamp to [0, 1]."""
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
    return image.clamp(0.0, 1.0)


def mel_to_image(log_mel: torch.Tensor, size: int | tuple[int, int], cfg: AudioConfig | None = None) -> torch.Tensor:
    """The paper's audio image: normalised log-mel as an RGB image of the video's size.

    ``dB = 20 log10(mel)``, ``value = (dB - ref + range) / range`` clipped to [0, 1]
    (ref 20 dB, range 100 dB from ``cfg``, default :class:`AudioConfig` values), grey
    repeated to 3 channels, bicubic-resized to ``size``.

    Args:
        log_mel: [B, M, L] or [M, L] natural-log mel magnitudes (:func:`log_mel`).
        size: output ``H == W`` or ``(H, W)``.
    Returns:
        [B, 3, H, W] in [0, 1]; row m of the un-resized image is mel bin m.
    """
    cfg = cfg or AudioConfig()
    log_mel = _as_batch(log_mel, 3, "log-mel", "[M, L] or [B, M, L]")
    decibels = _DB_PER_NEPER * log_mel.float()
    value = (decibels - cfg.image_ref_db + cfg.image_range_db) / cfg.image_range_db
    grey = _resize(rearrange(value.clamp(0.0, 1.0), "b m l -> b 1 m l"), _size_pair(size))
    return repeat(grey, "b 1 h w -> b c h w", c=3)


def image_to_mel(image: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Inverse of :func:`mel_to_image`: channel mean, resize to the mel grid, undo the dB map.

    Args:
        image: [B, 3, H, W] or [B, 1, H, W] (or without B) in [0, 1]; values outside
            are clamped.
    Returns:
        float32 [B, M, cfg.mel_frames] natural-log mel magnitudes, in
        [ln 10^((ref - range) / 20), ln 10^(ref / 20)] = [-9.21, 2.30] by default.
    """
    image = _as_batch(image, 4, "audio image", "[B, 3|1, H, W]")
    if image.shape[1] not in (1, 3):
        raise DataError(f"audio image: expected 1 or 3 channels, got {image.shape[1]} (shape {tuple(image.shape)})")
    grey = image.float().mean(dim=1, keepdim=True)
    grey = _resize(grey, (cfg.n_mels, cfg.mel_frames))
    decibels = grey * cfg.image_range_db + cfg.image_ref_db - cfg.image_range_db
    return rearrange(decibels / _DB_PER_NEPER, "b 1 m l -> b m l")


# ------------------------------------------------------------ conveniences
def waveform_to_audio_image(wave: torch.Tensor, cfg: AudioConfig, size: int | tuple[int, int]) -> torch.Tensor:
    """One clip's wave [N] or [B, N] (padded/trimmed to the clip) -> audio image [B, 3, H, W]."""
    return mel_to_image(log_mel(fit_to_clip(wave, cfg), cfg), size, cfg)


def audio_image_to_waveform(image: torch.Tensor, cfg: AudioConfig, vocoder: Vocoder) -> torch.Tensor:
    """Audio image [B, 3|1, H, W] -> wave [B, cfg.clip_samples] through ``vocoder``."""
    if vocoder.sample_rate != cfg.sample_rate or vocoder.hop != cfg.hop:
        raise ConfigError(
            f"vocoder works at {vocoder.sample_rate} Hz with hop {vocoder.hop}, "
            f"but the audio config is {cfg.sample_rate} Hz with hop {cfg.hop}"
        )
    return fit_to_clip(vocoder(image_to_mel(image, cfg)), cfg)
