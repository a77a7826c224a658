"""``mmldm data inspect``: what a media file holds, and a contact sheet to look at it.

The contact sheet (PNG, Pillow) is a strip of frames spread evenly over the file
above the mel spectrogram of its audio (16 kHz, the "16k" audio preset, low
frequencies at the bottom, -80..+20 dB from black to white), so a glance shows
whether picture and sound are there and line up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from ..config import make_folder
from ..errors import MediaError
from ..files import atomic_target, disk_full_as_error
from .media_io import MediaInfo, display_turns, probe, read_av, read_wav

SHEET_FRAMES = 8  # frames in the strip
THUMB = 96  # pixels per frame (letterboxed square) and height of the spectrogram row
SHEET_SECONDS = 60.0  # a contact sheet covers at most this much of a long file
SPECTROGRAM_RATE = 16000


def inspect_file(path: str | Path, sheet_dir: str | Path | None = None, sheet: bool = True) -> str:
    """Multi-line report of ``path``'s streams; with ``sheet``, also write its contact sheet.

    The sheet is ``<stem>.sheet.png`` in ``sheet_dir`` (default: beside the file) and the
    report names it. Raises MediaError for a file that cannot be read.
    """
    path = Path(path)
    info = probe(path)
    lines = [str(path), f"  duration: {info.duration:.3f} s"]
    if info.has_video:
        frames = f"{info.num_frames} frames" if info.num_frames is not None else "frame count unknown"
        fps = f"{info.fps:.3f} fps" if info.fps else "frame rate unknown"
        shown = [f"pixel aspect {info.pixel_aspect}"] if info.pixel_aspect != 1 else []
        turns = display_turns(path)
        if turns:
            shown.append("shown turned " + {1: "90 degrees counter-clockwise", 2: "180 degrees",
                                            3: "90 degrees clockwise"}[turns])
        notes = f" ({'; '.join(shown)})" if shown else ""
        lines.append(f"  video: {info.video_codec}, {info.width}x{info.height}{notes}, {fps}, {frames}")
    else:
        lines.append("  video: none")
    if info.has_audio:
        track = (f" (track {info.audio_track + 1} of {info.audio_tracks}, the one read)"
                 if info.audio_tracks > 1 else "")
        lines.append(f"  audio: {info.audio_codec}, {info.sample_rate} Hz, {info.channels} channel(s), "
                     f"{info.audio_duration or 0.0:.3f} s{track}")
    else:
        lines.append("  audio: none")
    if sheet:
        out = Path(sheet_dir) if sheet_dir is not None else path.parent
        written = write_contact_sheet(path, info, out / f"{path.stem}.sheet.png")
        lines.append(f"  contact sheet: {written}")
    return "\n".join(lines)


def write_contact_sheet(path: Path, info: MediaInfo, out: Path) -> Path:
    """Write the PNG contact sheet of ``path`` to ``out`` (atomically); return ``out``."""
    span = min(info.duration, SHEET_SECONDS)
    rows: list[np.ndarray] = []
    audio = None
    if info.has_video:
        fps = SHEET_FRAMES / span if span > 0 else 1.0
        clip = read_av(path, fps=fps, sample_rate=SPECTROGRAM_RATE, size=THUMB,
                       duration=span if span > 0 else None, require_audio=False)
        frames = clip.frames[:SHEET_FRAMES]
        rows.append(rearrange(frames, "t h w c -> h (t w) c"))
        audio = clip.audio if info.has_audio else None
    elif info.has_audio:
        audio, _ = read_wav(path, sample_rate=SPECTROGRAM_RATE)
        audio = audio[: int(span * SPECTROGRAM_RATE)]
    if audio is not None:
        width = rows[0].shape[1] if rows else SHEET_FRAMES * THUMB
        rows.append(_spectrogram_row(audio, width))
    if not rows:
        raise MediaError(path, "nothing to draw: no decodable video or audio")
    sheet = np.concatenate(rows, axis=0)
    with disk_full_as_error(out):
        make_folder(out.parent)
    with atomic_target(out) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return out


def _spectrogram_row(audio: np.ndarray, width: int) -> np.ndarray:
    """uint8 [THUMB, width, 3]: the audio's mel spectrogram as the model's audio image, flipped
    so that low frequencies are at the bottom."""
    from .audio_image import AudioConfig, log_mel, mel_to_image

    cfg = AudioConfig.preset("16k")
    wave = torch.from_numpy(np.asarray(audio, np.float32))
    if wave.numel() <= cfg.pad:  # too short for one STFT frame: draw silence
        return np.zeros((THUMB, width, 3), np.uint8)
    image = mel_to_image(log_mel(wave, cfg), (THUMB, width), cfg)[0]  # [3, THUMB, width] in [0, 1]
    image = torch.flip(image, dims=[1])
    return (rearrange(image, "c h w -> h w c").numpy() * 255).round().astype(np.uint8)
