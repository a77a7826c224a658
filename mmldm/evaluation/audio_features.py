"""VGGish audio embeddings for FAD (Hershey et al. 2017; the FAD of Kilgour et al. 2019).

Front end, exactly the reference NumPy one (``vggish_input.py`` /
``mel_features.py`` of tensorflow/models' audioset code, used unchanged by the
torchvggish port):

- mono float audio in [-1, 1] at 16 kHz (we never resample here; the caller
  decodes at 16 kHz);
- STFT magnitude: 25 ms (400-sample) frames, 10 ms (160-sample) hop, no
  padding, periodic Hann window, 512-point FFT;
- 64 mel bands, 125-7500 Hz, HTK mel scale (1127 ln(1 + f / 700)), triangles
  in the mel domain, DC bin zeroed;
- log(mel + 0.01);
- examples of 96 frames (0.96 s), hop 96 frames; a trailing part shorter than
  one example is dropped (a 1.6 s clip gives one example and drops 0.64 s).

Network: the torchvggish port's state dict names (``vggish-10086976.pth``):
``features.{0,3,6,8,11,13}.{weight,bias}`` (VGG convolutions) and
``embeddings.{0,2,4}.{weight,bias}`` (4096-4096-128 with ReLU after each).
The embedding is the 128-d output of the last ReLU, before the PCA/whitening
and 8-bit quantisation "postprocessor" (as Google's FAD does); no scale factor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn

from ..errors import DataError, WeightsError
from ..weights import load_state_dict_file
from .weights import randomize_weights_

VGGISH_WHAT = "VGGish audio feature net (torchvggish vggish-10086976.pth)"
VGGISH_SAMPLE_RATE = 16000
VGGISH_EMBEDDING_DIM = 128
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_SECONDS = 0.96


def _frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Successive windows along axis 0, no padding: [N, ...] -> [F, window, ...]."""
    count = 1 + (data.shape[0] - window) // hop
    if count < 1:
        return np.zeros((0, window) + data.shape[1:], dtype=data.dtype)
    index = np.arange(window)[None, :] + hop * np.arange(count)[:, None]
    return data[index]


def _hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hertz, np.float64) / 700.0)


def mel_matrix(num_spectrogram_bins: int, sample_rate: int = VGGISH_SAMPLE_RATE) -> np.ndarray:
    """HTK-style triangular mel weights: [num_spectrogram_bins, NUM_MEL_BINS] (DC row zero)."""
    bins_mel = _hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins))
    edges = np.linspace(_hertz_to_mel(MEL_MIN_HZ), _hertz_to_mel(MEL_MAX_HZ), NUM_MEL_BINS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def log_mel_examples(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """VGGish input examples of one mono clip.

    Shapes: audio [N] float in [-1, 1] at 16 kHz -> float64 [E, 96, 64],
    E = number of whole 0.96 s examples (0 if the clip is shorter than ~0.975 s).
    """
    if sample_rate != VGGISH_SAMPLE_RATE:
        raise DataError(f"VGGish needs {VGGISH_SAMPLE_RATE} Hz audio, got {sample_rate} Hz (decode at 16 kHz)")
    samples = np.asarray(audio, dtype=np.float64)
    if samples.ndim != 1:
        raise DataError(f"VGGish: expected mono audio [N], got shape {samples.shape}")
    window = int(round(sample_rate * STFT_WINDOW_SECONDS))
    hop = int(round(sample_rate * STFT_HOP_SECONDS))
    fft_length = 2 ** int(np.ceil(np.log2(window)))
    periodic_hann = 0.5 - 0.5 * np.cos(2.0 * np.pi / window * np.arange(window))
    frames = _frame(samples, window, hop)
    spectrogram = np.abs(np.fft.rfft(frames * periodic_hann, fft_length))
    log_mel = np.log(spectrogram @ mel_matrix(spectrogram.shape[1], sample_rate) + LOG_OFFSET)
    example = int(round(EXAMPLE_SECONDS / STFT_HOP_SECONDS))
    return _frame(log_mel, example, example)


class VGGish(nn.Module):
    """VGGish embedding network.

    Shapes: examples [E, 1, 96, 64] log-mel -> embeddings [E, 128].
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for width in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if width == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096), nn.ReLU(),
            nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, VGGISH_EMBEDDING_DIM), nn.ReLU(),
        )  # fmt: skip

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)  # [E, 512, 6, 4]
        # The TF model flattens channels-last; the port transposes to match its weights.
        x = rearrange(x, "e c h w -> e (h w c)")
        return self.embeddings(x)


def random_vggish(seed: int) -> VGGish:
    """VGGish with seeded random weights (He-normal), for tests and ``--features random``."""
    with torch.device("meta"):  # every tensor is set below: skip the default initialisation
        model = VGGish()
    return randomize_weights_(model.to_empty(device="cpu"), seed)


def load_vggish(path: str | Path) -> VGGish:
    """Build VGGish and load the torchvggish state dict (``vggish-10086976.pth`` or .safetensors), strict."""
    with torch.device("meta"):  # no initialisation: every tensor comes from the file
        model = VGGish()
    state = load_state_dict_file(path, VGGISH_WHAT)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise WeightsError(path, VGGISH_WHAT, f"state dict does not fit: {detail}") from exc
    return model.float().eval()


@torch.inference_mode()
def vggish_embeddings(model: VGGish, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Embeddings of every whole 0.96 s example of one clip: float64 [E, 128]."""
    examples = log_mel_examples(audio, sample_rate)
    if len(examples) == 0:
        return np.zeros((0, VGGISH_EMBEDDING_DIM))
    batch = torch.from_numpy(examples).float()[:, None].to(next(model.parameters()).device)  # [E, 1, 96, 64]
    return model(batch).double().cpu().numpy()
