"""The result of a generation run and how it is written to disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import atomic_write_text, dump_yaml, make_folder
from ..errors import ConfigError


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can start the output file names: not empty, no folder part."""
    if not prefix or Path(prefix).name != prefix:
        raise ConfigError(f"output prefix {prefix!r} must be a plain file name start (no folder part)")
    return prefix


@dataclass
class SoundingVideoOutput:
    """``n`` sounding videos.

    Shapes: ``frames`` float32 [n, T, 3, H, W] in [-1, 1]; ``waveforms`` float32 [n, N]
    in [-1, 1] with ``N = T * sample_rate / fps`` (audio and video last exactly as long).
    ``settings`` records how they were made (task, seed, steps, sampler, guidance,
    model folder, mmldm version...); ``model_config`` is the model's resolved config.
    """

    frames: torch.Tensor
    waveforms: torch.Tensor
    fps: float
    sample_rate: int
    settings: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def save(self, out_dir: str | Path, prefix: str = "sample", preview: bool = True) -> list[Path]:
        """Write per sample ``{prefix}-{i:03d}.mp4`` (H.264 + AAC, sample-exact sync), ``.wav``
        and (``preview``) a ``.png`` contact sheet (frame strip over the spectrogram), plus
        ``settings.json`` (how the run was made, and its file names) and ``config.yaml`` (the
        model's resolved config): one run per folder, a second run replaces those two. Every
        file is written atomically (temporary name, then rename); when a write fails, the
        files this call already wrote are removed, so no new sample is left without its settings.
        Returns the mp4 paths.
        """
        from ..data.inspect import write_contact_sheet
        from ..data.media_io import probe, write_av

        check_prefix(prefix)
        out_dir = make_folder(out_dir)
        videos: list[Path] = []
        written: list[Path] = []
        try:
            for i in range(len(self)):
                mp4 = out_dir / f"{prefix}-{i:03d}.mp4"
                write_av(mp4, self.frames[i], self.waveforms[i], self.fps, self.sample_rate, wav=True)
                written += [mp4, mp4.with_suffix(".wav")]
                if preview:
                    write_contact_sheet(mp4, probe(mp4), mp4.with_suffix(".png"))
                    written.append(mp4.with_suffix(".png"))
                videos.append(mp4)
            settings = {**self.settings, "files": [p.name for p in videos]}
            atomic_write_text(out_dir / "settings.json", json.dumps(settings, indent=2) + "\n")
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        atomic_write_text(out_dir / "config.yaml", dump_yaml(self.model_config))
        return videos
