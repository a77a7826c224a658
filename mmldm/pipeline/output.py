"""The result of a generation run and how it is written to disk."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import atomic_write_text, dump_yaml, make_folder
from ..errors import ConfigError, check_positive_int
from ..files import check_writable_folder, disk_full_as_error, missing_folders, remove_empty_folders


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
        check_prefix(prefix)
        out_dir = make_folder(out_dir)
        written: list[Path] = []
        try:
            videos = self.write_samples(out_dir, prefix, preview, written=written)
            write_run_files(out_dir, self.settings, videos, self.model_config)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return videos

    def write_samples(self, out_dir: Path, prefix: str, preview: bool, start: int = 0,
                      written: list[Path] | None = None, done: list[Path] | None = None) -> list[Path]:
        """The per-sample files of :meth:`save` only, sample ``i`` named ``{prefix}-{start + i:03d}``;
        every path written is appended to ``written``, and each sample's mp4 to ``done`` once all
        its files are written. Returns the mp4 paths."""
        from ..data.inspect import write_contact_sheet
        from ..data.media_io import probe, write_av, write_wav

        written = [] if written is None else written
        videos: list[Path] = []
        for i in range(len(self)):
            mp4 = out_dir / f"{prefix}-{start + i:03d}.mp4"
            # each file is noted as soon as it is in place, so a failure (or Ctrl-C) in the next
            # one removes it too
            write_av(mp4, self.frames[i], self.waveforms[i], self.fps, self.sample_rate)
            written.append(mp4)
            write_wav(mp4.with_suffix(".wav"), self.waveforms[i], self.sample_rate)
            written.append(mp4.with_suffix(".wav"))
            if preview:
                write_contact_sheet(mp4, probe(mp4), mp4.with_suffix(".png"))
                written.append(mp4.with_suffix(".png"))
            videos.append(mp4)
            if done is not None:
                done.append(mp4)
        return videos


def write_run_files(out_dir: Path, settings: dict[str, Any], videos: list[Path],
                    model_config: dict[str, Any]) -> None:
    """``settings.json`` (the settings and the run's file names) and ``config.yaml``, atomically."""
    atomic_write_text(out_dir / "settings.json",
                      json.dumps({**settings, "files": [p.name for p in videos]}, indent=2) + "\n")
    atomic_write_text(out_dir / "config.yaml", dump_yaml(model_config))


#: ``settings`` entries that hold one value per sample (joined over the batches of a run)
PER_SAMPLE_SETTINGS = ("chosen_candidates", "sample_classes")


def check_output_folder(out_dir: str | Path, n: int, prefix: str = "sample", overwrite: bool = False) -> list[Path]:
    """Refuse an output folder that holds another run's outputs (a ``settings.json``, or files
    this run would write under the same names), so two runs never mix in one folder. With
    ``overwrite`` it returns that run's files (the samples its ``settings.json`` lists, with their
    wav and png) for the caller to remove once the new run is complete: a run that fails leaves
    the old one as it was."""
    out_dir = Path(out_dir)
    settings_path = out_dir / "settings.json"
    if not out_dir.is_dir():
        return []
    listed: list[str] = []
    if settings_path.is_file():
        try:
            listed = [str(name) for name in json.loads(settings_path.read_text()).get("files", [])]
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            listed = []
    ours = {f"{prefix}-{i:03d}{suffix}" for i in range(n) for suffix in (".mp4", ".wav", ".png")}
    clashes = sorted(name for name in ours if (out_dir / name).exists())
    if not (settings_path.is_file() or clashes):
        return []
    if not overwrite:
        what = (f"the outputs of another run ({len(listed)} sample(s) listed in its settings.json)"
                if settings_path.is_file() else f"files this run would replace ({', '.join(clashes[:3])}"
                                                  f"{', ...' if len(clashes) > 3 else ''})")
        raise ConfigError(f"{out_dir}: holds {what}; give another folder, or --overwrite to replace that run's "
                          "files")
    previous = [out_dir / Path(name).name for name in listed]  # Path.name: never outside the folder
    return [path for mp4 in previous for path in (mp4, mp4.with_suffix(".wav"), mp4.with_suffix(".png"))
            if path.exists()]


def save_in_batches(make_batch: Callable[[int, int], SoundingVideoOutput], n: int, seed: int, batch_size: int,
                    out_dir: str | Path, prefix: str = "sample", preview: bool = True, overwrite: bool = False
                    ) -> tuple[list[Path], dict[str, Any]]:
    """Generate ``n`` samples ``batch_size`` at a time and write each batch as it comes, so memory
    holds one batch, not ``n`` decoded videos.

    ``make_batch(count, first_seed)`` generates ``count`` samples from seeds ``first_seed ...``
    (e.g. ``lambda k, s: pipe.generate(n=k, seed=s, ...)``); since sample ``i`` depends only on
    its seed ``seed + i``, the files are the same for any ``batch_size``. One
    ``settings.json`` describes the whole run (``n``, ``seed``, every sample seed and file).
    ``out_dir`` is checked to be writable and to hold no other run's outputs
    (:func:`check_output_folder`; ``overwrite`` removes them) before anything is generated. If a batch fails,
    every file this call wrote is removed (and the folders it made). An interrupt (Ctrl-C)
    keeps the samples already complete: ``settings.json`` then lists them (``"interrupted":
    true``, ``n`` the number kept, ``n_requested`` the number asked for), the unfinished
    sample's files are removed, and a line on stderr says which samples were kept. Returns
    the mp4 paths and the run's settings (as written, without the file names).
    """
    check_positive_int(n, "samples")
    check_positive_int(batch_size, "batch size")
    check_prefix(prefix)
    check_writable_folder(out_dir)
    replaced = check_output_folder(out_dir, n, prefix, overwrite)
    first = make_batch(min(batch_size, n), seed)  # before any file: a bad input leaves nothing behind
    made = missing_folders(out_dir)
    written: list[Path] = []
    videos: list[Path] = []
    done: list[Path] = []  # mp4s of the samples whose files are all written
    per_sample = {key: list(first.settings[key]) for key in PER_SAMPLE_SETTINGS
                  if first.settings.get(key) is not None}

    def run_settings(count: int) -> dict[str, Any]:
        """The settings of the first ``count`` samples."""
        return {**first.settings, **{key: values[:count] for key, values in per_sample.items()}, "n": count,
                "seed": seed, "sample_seeds": list(range(seed, seed + count)), "batch_size": batch_size}

    try:
        with disk_full_as_error(out_dir):
            out_dir = make_folder(out_dir)
        videos += first.write_samples(out_dir, prefix, preview, written=written, done=done)
        for start in range(batch_size, n, batch_size):
            batch = make_batch(min(batch_size, n - start), seed + start)
            for key, values in per_sample.items():
                values += batch.settings[key]
            videos += batch.write_samples(out_dir, prefix, preview, start=start, written=written, done=done)
            del batch
        settings = run_settings(n)
        write_run_files(out_dir, settings, videos, first.model_config)
        for path in set(replaced) - set(written):  # the replaced run's files this run did not overwrite
            path.unlink(missing_ok=True)
    except KeyboardInterrupt:
        _keep_finished(Path(out_dir), done, written, run_settings(len(done)), n, first.model_config, made)
        raise
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        remove_empty_folders(made)
        raise
    return videos, settings


def _keep_finished(out_dir: Path, done: list[Path], written: list[Path], settings: dict[str, Any], requested: int,
                   model_config: dict[str, Any], made: list[Path]) -> None:
    """After an interrupt: keep the complete samples ``done`` with a ``settings.json`` listing them,
    remove the files of the unfinished one, and say on stderr what was kept."""
    keep = {path for mp4 in done for path in (mp4, mp4.with_suffix(".wav"), mp4.with_suffix(".png"))}
    for path in written:
        if path not in keep:
            path.unlink(missing_ok=True)
    if not done:
        remove_empty_folders(made)
        print(f"mmldm: interrupted before the first sample was complete; nothing was kept in {out_dir}",
              file=sys.stderr)
        return
    if len(done) < requested:
        settings = {**settings, "interrupted": True, "n_requested": requested}
    write_run_files(out_dir, settings, done, model_config)
    names = ", ".join(path.name for path in done)
    print(f"mmldm: interrupted: kept the {len(done)} finished sample(s) of {requested} in {out_dir} ({names}), "
          "listed in its settings.json; the files of an unfinished sample were removed", file=sys.stderr)
