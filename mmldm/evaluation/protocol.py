"""Evaluation protocols: every choice that changes an FVD / KVD / FAD number, in one record.

``mm-diffusion`` is the paper-era protocol of MM-Diffusion's released
evaluator, which MM-LDM reports (docs/evaluation.md lists each step and the
evaluator's defects we do not copy). ``standard`` keeps the same feature nets
and statistics but scores frames at their own resolution (no 64 px step) and
reports FAD unscaled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class EvalProtocol:
    """One evaluation protocol.

    num_samples: clips per side (generated, reference).
    num_frames, fps: a scored clip is ``num_frames`` frames at ``fps``; reference
        clips are random windows of that length, stride 1, from every reference file.
    downsample_to: letterbox frames to this square before scoring (None: skip).
    letterbox_antialias: antialias that bicubic downsize. The released evaluator
        resized uint8 tensors with torchvision's Resize, which did not antialias
        tensors before torchvision 0.17 (the 2023 versions) and does since.
    i3d_resolution: short side after the bilinear upsample, and the centre crop.
    covariance: Frechet covariance estimator, "unbiased" (n - 1) or "biased" (n).
    kvd_subsets, kvd_subset_size: 0 subsets = one unbiased MMD^2 on all samples.
    fad_scale: the Frechet distance of audio embeddings is multiplied by this.
    audio_net: FAD features, "audioclip" (ESResNeXt-FBSP, 44.1 kHz, 1024-d) or "vggish" (16 kHz, 128-d).
    audioclip_input: "int16" feeds AudioCLIP the int16-range samples it expects; "unit"
        reproduces the released evaluator, which fed [-1, 1] samples (about -90 dB).
    """

    name: str
    num_samples: int = 2048
    num_frames: int = 16
    fps: float = 10.0
    downsample_to: int | None = 64
    letterbox_antialias: bool = False
    i3d_resolution: int = 224
    covariance: str = "unbiased"
    kvd_subsets: int = 0
    kvd_subset_size: int = 1000
    fad_scale: float = 1e4
    audio_net: str = "audioclip"
    audioclip_input: str = "int16"

    def __post_init__(self):
        if self.audio_net not in ("audioclip", "vggish"):
            raise ConfigError(f"protocol {self.name}: audio_net must be 'audioclip' or 'vggish', "
                              f"got {self.audio_net!r}")
        if self.audioclip_input not in ("int16", "unit"):
            raise ConfigError(f"protocol {self.name}: audioclip_input must be 'int16' or 'unit', "
                              f"got {self.audioclip_input!r}")
        if self.covariance not in ("unbiased", "biased"):
            raise ConfigError(f"protocol {self.name}: covariance must be 'unbiased' or 'biased', "
                              f"got {self.covariance!r}")
        if self.num_samples < 2:
            raise ConfigError(f"protocol {self.name}: num_samples must be at least 2, got {self.num_samples}")
        if self.num_frames < 9:
            raise ConfigError(f"protocol {self.name}: I3D needs at least 9 frames, got {self.num_frames}")
        if self.kvd_subsets < 0:
            raise ConfigError(f"protocol {self.name}: kvd_subsets must be >= 0, got {self.kvd_subsets}")

    def with_overrides(self, **changes: Any) -> "EvalProtocol":
        """A copy with the given fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROTOCOLS: dict[str, EvalProtocol] = {
    # MM-Diffusion's evaluator (Ruan et al. 2023), used by MM-LDM: 2048 vs 2048, 64 px letterbox,
    # unbiased covariance, KVD without subsets, AudioCLIP FAD x 1e4 (x 1e3 before mid-2024).
    "mm-diffusion": EvalProtocol(name="mm-diffusion"),
    "standard": EvalProtocol(name="standard", downsample_to=None, fad_scale=1.0, audio_net="vggish"),
}


def get_protocol(name: str) -> EvalProtocol:
    """The named protocol; unknown names are a ConfigError listing the known ones."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {name!r} (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]
