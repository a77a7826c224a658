"""Vocoders against the original: HiFi-GAN universal V1 vs Griffin-Lim on real speech and music,
from the mel itself and after the audio image round trip.

    python benchmarks/vocoders.py                      # assets/audio (make assets), the released HiFi-GAN
    python benchmarks/vocoders.py --sizes 64 --threads 2
    python benchmarks/vocoders.py --checkpoint runs/hifigan/g_00100000 --audio my.wav 0 4 --out voc.json

Each file gives ``clips`` consecutive clips of the ``hifigan-22k`` audio preset (1.6 s, 35,280
samples at 22,050 Hz) from ``start`` seconds (where the file has sound). Each clip's log-mel
(the preset's analysis, the one the released checkpoint was trained on) goes to both vocoders
as it is (``mel``) and after the project's audio image round trip (``log_mel -> dB ->
(dB + 80) / 100 clipped -> image of H x W -> back``) at the mel's own size (80 x 137: only the
[-80, +20] dB clip acts) and at square sizes (bicubic resize; 64 x 64 is the coarse case). One
more row keeps the native size with a [-100, +20] dB image (``image_range_db`` 120), which
covers HiFi-GAN's -100 dB log floor, so that the cost of the -80 dB clip shows on its own.

Measures, per clip then averaged over a file's clips, of the vocoded wave against the original
clip (its first 137 x 256 samples: what a vocoder returns):

* ``input L1``: mean |log-mel handed to the vocoder - the clip's log-mel|: the audio image's own
  loss, before any vocoder;
* ``log-mel L1``: mean |log-mel(vocoded) - log-mel(original)| with the preset's 0-8 kHz mels
  (HiFi-GAN's mel error), and over the whole band 0-11,025 Hz;
* multi-resolution STFT distance (Parallel WaveGAN's): spectral convergence and log magnitude,
  averaged over (n_fft, hop) = (512, 128), (1024, 256), (2048, 512); ``MR-STFT`` is their sum;
* ``RTF``: vocoder seconds per second of audio on this machine (after one untimed call; a
  wall-clock time, so other work on the machine inflates it).

All distances are in natural-log units (1 = 8.69 dB) except spectral convergence (a ratio);
lower is closer. Writes ``benchmarks/results/<date>-vocoders.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import time
from pathlib import Path
from typing import Any

import torch
from common import Column, finish, note, record, render, run_script, torch_threads

from mmldm.data.audio_image import AudioConfig, image_to_mel, log_mel, mel_to_image
from mmldm.data.media_io import read_wav
from mmldm.data.vocoders import (
    GriffinLim,
    Vocoder,
    build_vocoder,
    log_mel_distance,
    multi_resolution_stft_distance,
)
from mmldm.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
DEFAULT_CHECKPOINT = ASSETS / "hifigan" / "generator_universal.pth.tar"
#: (file, kind, start seconds, clips): the sounding part of each `make assets` file
DEFAULT_AUDIO: tuple[tuple[Path, str, float, int], ...] = (
    (ASSETS / "audio" / "speech.wav", "speech", 8.0, 2),  # pyannote sample, 16 kHz: silent for its first 6 s
    (ASSETS / "audio" / "sax.wav", "music", 0.8, 2),
    (ASSETS / "audio" / "cantina.wav", "music", 0.0, 1),  # 3.0 s: one whole clip
    (ASSETS / "audio" / "recording.wav", "other", 0.0, 2),
)
PRESET = "hifigan-22k"
NATIVE = "image 80x137"
WIDE = "image 80x137, [-100, +20] dB"

DISTANCE_COLUMNS: list[Column] = [
    ("log-mel L1 0-8 kHz", "log_mel_l1", ".3f"), ("log-mel L1 whole band", "log_mel_l1_full_band", ".3f"),
    ("spectral conv.", "spectral_convergence", ".3f"), ("log magnitude", "log_magnitude", ".3f"),
    ("MR-STFT", "mr_stft", ".3f"),
]
VOCODER_COLUMNS: list[Column] = [("file", "file", ""), ("kind", "kind", ""), ("vocoder", "vocoder", ""),
                                 *DISTANCE_COLUMNS, ("RTF", "rtf", ".3f")]
IMAGE_COLUMNS: list[Column] = [("file", "file", ""), ("vocoder input", "condition", ""),
                               ("input L1", "input_l1", ".3f"), ("vocoder", "vocoder", ""), *DISTANCE_COLUMNS]


def _clips(path: Path, start: float, count: int, cfg: AudioConfig) -> torch.Tensor:
    """``count`` consecutive clips from ``start`` seconds: [count, cfg.clip_samples]."""
    audio, _ = read_wav(path, cfg.sample_rate)
    first = int(round(start * cfg.sample_rate))
    needed = first + count * cfg.clip_samples
    if start < 0 or count < 1 or needed > len(audio):
        raise DataError(f"{path}: {count} clip(s) of {cfg.clip_seconds:g} s from {start:g} s need "
                        f"{needed / cfg.sample_rate:.2f} s, the file has {len(audio) / cfg.sample_rate:.2f} s")
    return torch.from_numpy(audio[first:needed]).reshape(count, cfg.clip_samples)


def _conditions(mel: torch.Tensor, cfg: AudioConfig, sizes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """What the vocoder is handed: the mel itself and its audio image round trips, each [B, 80, 137]."""
    native = (cfg.n_mels, cfg.mel_frames)
    wide = dataclasses.replace(cfg, image_range_db=120.0)  # [-100, +20] dB: HiFi-GAN's log floor is -100 dB
    out = {"mel": mel, NATIVE: image_to_mel(mel_to_image(mel, native, cfg), cfg),
           WIDE: image_to_mel(mel_to_image(mel, native, wide), wide)}
    for size in sizes:
        out[f"image {size}x{size}"] = image_to_mel(mel_to_image(mel, size, cfg), cfg)
    return out


def _distances(original: torch.Tensor, vocoded: torch.Tensor, cfg: AudioConfig) -> dict[str, float]:
    full_band = dataclasses.replace(cfg, fmax=cfg.sample_rate / 2)
    stft = multi_resolution_stft_distance(original, vocoded)
    return {
        "log_mel_l1": log_mel_distance(original, vocoded, cfg).mean().item(),
        "log_mel_l1_full_band": log_mel_distance(original, vocoded, full_band).mean().item(),
        "spectral_convergence": stft.spectral_convergence.mean().item(),
        "log_magnitude": stft.log_magnitude.mean().item(),
        "mr_stft": stft.total.mean().item(),
    }


def _vocode(vocoder: Vocoder, mel: torch.Tensor) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad():
        wave = vocoder(mel)
    return wave, time.perf_counter() - start


def run(checkpoint: Path = DEFAULT_CHECKPOINT, audio: tuple[tuple[Path, str, float, int], ...] = DEFAULT_AUDIO,
        sizes: tuple[int, ...] = (64, 128, 256), threads: int | None = None) -> dict[str, Any]:
    """HiFi-GAN at ``checkpoint`` vs Griffin-Lim on ``audio`` (see the module docstring)."""
    if any(size < 1 for size in sizes):
        raise ConfigError(f"--sizes must be positive, got {list(sizes)}")
    for path in [checkpoint, *(p for p, *_ in audio)]:
        if not path.exists():
            hint = ": run `make assets`" if path.is_relative_to(ASSETS) else ""
            raise DataError(f"{path}: not found{hint}")
    cfg = AudioConfig.preset(PRESET)
    settings = {"checkpoint": str(checkpoint), "preset": PRESET, "audio_config": dataclasses.asdict(cfg),
                "audio": [{"file": str(p), "kind": k, "start_s": s, "clips": n} for p, k, s, n in audio],
                "sizes": list(sizes), "griffin_lim": "GriffinLim(cfg) defaults: 32 fast Griffin-Lim iterations, "
                "momentum 0.99, 100 NNLS iterations, seed 0",
                "stft_resolutions": [[512, 128], [1024, 256], [2048, 512]], "threads": threads}
    notes: list[str] = []
    note(notes, "RTF is wall-clock time on this machine, after one untimed call: other work running at the same "
                "time inflates it; the distances do not depend on it")
    vocoded_rows: list[dict[str, Any]] = []
    image_rows: list[dict[str, Any]] = []
    with torch_threads(threads):
        vocoders: dict[str, Vocoder] = {"HiFi-GAN": build_vocoder(checkpoint, cfg), "Griffin-Lim": GriffinLim(cfg)}
        warm_up = torch.full((1, cfg.n_mels, cfg.mel_frames), -5.0)
        for vocoder in vocoders.values():  # first calls pay one-off costs (allocator, kernels): untimed
            _vocode(vocoder, warm_up)
        for path, kind, start, count in audio:
            clips = _clips(path, start, count, cfg)  # [B, N]
            mel = log_mel(clips, cfg)
            for condition, vocoder_input in _conditions(mel, cfg, sizes).items():
                input_l1 = (vocoder_input - mel).abs().mean().item()
                for name, vocoder in vocoders.items():
                    wave, seconds = _vocode(vocoder, vocoder_input)
                    row = {"file": path.name, "kind": kind, "clips": count, "condition": condition,
                           "input_l1": input_l1, "vocoder": name, **_distances(clips, wave, cfg)}
                    if condition == "mel":
                        row["rtf"] = seconds / (count * cfg.clip_seconds)
                        vocoded_rows.append(row)
                    image_rows.append(row)
                    print(f"{path.name} {condition} {name}: log-mel L1 {row['log_mel_l1']:.3f}, "
                          f"MR-STFT {row['mr_stft']:.3f}", flush=True)
    return record("vocoders", torch.device("cpu"), settings, {"vocoders": vocoded_rows, "audio_image": image_rows},
                  notes)


def markdown(result: dict[str, Any]) -> str:
    return render(result, [
        ("HiFi-GAN vs Griffin-Lim from each clip's own log-mel (lower is closer)", "vocoders", VOCODER_COLUMNS),
        ("After the audio image round trip", "audio_image", IMAGE_COLUMNS),
    ])


def _audio_argument(values: list[str]) -> tuple[Path, str, float, int]:
    path, start, clips = values
    try:
        return Path(path), "given", float(start), int(clips)
    except ValueError:
        raise ConfigError(f"--audio {' '.join(values)}: expected FILE START_SECONDS CLIPS") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="HiFi-GAN generator file or folder, config.json beside it (default: the released "
                             "universal V1 under assets/hifigan)")
    parser.add_argument("--audio", nargs=3, action="append", metavar=("FILE", "START", "CLIPS"),
                        help="a file, where its clips start (seconds) and how many (default: assets/audio)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256], help="square audio image sides")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON record (default: benchmarks/results/DATE-vocoders.json)")
    args = parser.parse_args()
    audio = tuple(_audio_argument(values) for values in args.audio) if args.audio else DEFAULT_AUDIO
    result = run(args.checkpoint, audio, tuple(args.sizes), args.threads)
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    finish(result, markdown(result), args.out or REPO / "benchmarks" / "results" / f"{today}-vocoders.json")


if __name__ == "__main__":
    run_script(main)
