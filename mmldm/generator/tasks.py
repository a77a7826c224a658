"""What each generation task conditions on, what it drops for guidance, and its inputs.

MM-LDM trains ONE generator for several distributions (paper Sec. 3.3): joint
sounding-video generation ``p(a, v)``, audio-to-video ``p(v | a)`` and
video-to-audio ``p(a | v)``, plus (authors' code) continuation of a previous clip.
A task only decides which latent goes into which input of
:class:`~mmldm.generator.dit.AVDiT`; zeros are the paper's null latents.

=====================  ==============  =====================  ============================
task                   user gives      model input            output
=====================  ==============  =====================  ============================
svg                    nothing         (none)                 generated audio + video
a2v                    audio           ``audio_cond``         GIVEN audio + generated video
v2a                    video frames    ``video_cond``         generated audio + GIVEN video
audio-continuation     audio           ``prev_audio``         the next clip (both generated)
video-continuation     video frames    ``prev_video``         the next clip (both generated)
long                   nothing         ``prev_audio`` +       ``seconds`` of clips, each
                                       ``prev_video`` of the  conditioned on the one before
                                       clip before
=====================  ==============  =====================  ============================

Guidance (paper Eq. 9, per modality): the unconditional branch is always the
fully null model, i.e. every condition of the task is dropped: the cross-modal
latent (a2v, v2a) or the previous-clip latents (continuations, long) become
zeros and the class becomes the null class. For ``svg`` only the class is
dropped, so ``svg`` without a class has nothing to guide and the model runs once
per step. The first clip of ``long`` is plain ``svg`` (see :data:`TASKS`).

The given modality of a2v and v2a is not sampled: at every step its noisy input
is the given latent noised to the step's time (paper Sec. 3.3, "a_t can be
obtained directly given a and t", Eq. 6), as the network saw it in training
(``known`` of :func:`mmldm.diffusion.sample`).

Which part of a longer input is used: a2v and v2a take the FIRST clip-length
window of the given file (the output keeps the given clip); continuations take
the LAST window (the most recent content, which the new clip follows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, DataError, MediaError
from ..files import check_input_file

if TYPE_CHECKING:  # torch and numpy load with the first clip read, not with the task table (CLI --help)
    import torch

Window = Literal["first", "last"]


@dataclass(frozen=True)
class TaskSpec:
    """One generation task."""

    name: str
    #: the modality the user gives ("audio", "video") or None
    given: str | None
    #: the AVDiT keyword the given clip's latent goes to
    model_input: str | None
    #: the output modality that IS the given input (not regenerated), or None
    keeps_given: bool
    #: which clip-length window of a longer input is used
    window: Window
    #: what the unconditional (guidance) branch drops, for docs and settings.json
    dropped: str
    help: str


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("svg", None, None, False, "first", "the class (null class)",
             "joint sounding video generation"),
    TaskSpec("a2v", "audio", "audio_cond", True, "first", "the audio condition (zeros) and the class",
             "audio to video: the given audio is kept, a video is generated for it"),
    TaskSpec("v2a", "video", "video_cond", True, "first", "the video condition (zeros) and the class",
             "video to audio: the given video is kept, a sound track is generated for it"),
    TaskSpec("audio-continuation", "audio", "prev_audio", False, "last",
             "the previous-clip audio (zeros) and the class",
             "the sounding clip that follows the given audio"),
    TaskSpec("video-continuation", "video", "prev_video", False, "last",
             "the previous-clip video (zeros) and the class",
             "the sounding clip that follows the given video"),
    TaskSpec("long", None, None, False, "first",
             "the previous-clip audio and video (zeros) and the class; the first clip drops only the class",
             "autoregressive long generation: clip 1 is plain svg, each later clip is conditioned on "
             "the audio and video latents of the clip before"),
)}


def resolve_task(task: str, audio: Any = None, video: Any = None, seconds: float | None = None) -> TaskSpec:
    """The :class:`TaskSpec` of ``task``, after checking the inputs fit it (one-line errors)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}' (choose one of {', '.join(TASKS)})")
    spec = TASKS[task]
    given = {"audio": audio is not None, "video": video is not None}
    for modality, present in given.items():
        if present and spec.given != modality:
            wants = f"takes --{spec.given}" if spec.given else "takes no input clip"
            raise ConfigError(f"task {task} {wants}, not --{modality}")
    if spec.given and not given[spec.given]:
        raise ConfigError(f"task {task} needs --{spec.given} (a file or a {spec.given} tensor)")
    if seconds is not None:
        if task != "long":
            raise ConfigError(f"--seconds only applies to task long, not {task}")
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"--seconds must be a positive number of seconds, got {seconds}")
    elif task == "long":
        raise ConfigError("task long needs --seconds (the length to generate)")
    return spec


def long_clip_count(seconds: float, fps: float, num_frames: int) -> tuple[int, int]:
    """``(clips, frames)`` for ``seconds`` of video: frames = round(seconds * fps), clips = ceil(frames / T).

    Refuses a length shorter than one clip (that is plain svg).
    """
    frames = int(round(seconds * fps))
    if frames < num_frames:
        raise ConfigError(f"task long: --seconds {seconds:g} is shorter than one clip "
                          f"({num_frames / fps:g} s); use --task svg for a single clip")
    return math.ceil(frames / num_frames), frames


# --------------------------------------------------------------------------- inputs

def _window(length: int, want: int, window: Window) -> slice:
    return slice(0, want) if window == "first" else slice(length - want, length)


def load_audio(source: Any, sample_rate: int, clip_samples: int, window: Window, task: str) -> torch.Tensor:
    """One clip of mono audio ``[clip_samples]`` float32 from a file path or a waveform.

    A file is any audio or video file PyAV decodes (resampled to ``sample_rate``); a
    waveform is ``[N]`` (or ``[1, N]``) at ``sample_rate`` in [-1, 1].
    """
    import numpy as np
    import torch

    from ..data.media_io import read_wav

    clip_s = clip_samples / sample_rate
    if isinstance(source, (str, Path)):
        path = check_input_file(source, f"task {task} needs an audio file")
        try:
            wave, _ = read_wav(path, sample_rate=sample_rate)
        except MediaError as exc:
            raise MediaError(path, f"{exc.reason} (task {task} needs its audio)") from None
        if len(wave) < clip_samples:
            raise MediaError(path, f"its audio lasts {len(wave) / sample_rate:.2f} s, shorter than one clip "
                                   f"({clip_s:g} s) which task {task} needs")
        return torch.from_numpy(np.ascontiguousarray(wave[_window(len(wave), clip_samples, window)]))
    wave = torch.as_tensor(np.asarray(source) if not isinstance(source, torch.Tensor) else source)
    if wave.ndim == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.ndim != 1 or not wave.dtype.is_floating_point:
        raise DataError(f"task {task}: an audio waveform must be float [N] at {sample_rate} Hz, "
                        f"got {wave.dtype} {tuple(wave.shape)}")
    if wave.shape[0] < clip_samples:
        raise DataError(f"task {task}: the waveform has {wave.shape[0]} samples, shorter than one clip "
                        f"({clip_samples} samples = {clip_s:g} s)")
    if not torch.isfinite(wave).all():
        raise DataError(f"task {task}: the waveform contains NaN or infinite values")
    return wave[_window(wave.shape[0], clip_samples, window)].float().clamp(-1, 1).cpu()


def load_video(source: Any, fps: float, size: int, num_frames: int, sample_rate: int, window: Window,
               task: str) -> torch.Tensor:
    """One clip of frames ``[T, 3, size, size]`` float32 in [-1, 1] from a file path or frames.

    A file is read at ``fps``, letterboxed to ``size`` (as the training data); frames
    are float ``[T', 3, size, size]`` in [-1, 1] or uint8 ``[T', size, size, 3]``.
    """
    import numpy as np
    import torch

    from ..data.media_io import probe, read_av

    clip_s = num_frames / fps
    if isinstance(source, (str, Path)):
        path = check_input_file(source, f"task {task} needs a video file")
        try:
            info = probe(path)
            if not info.has_video:
                raise MediaError(path, "no video stream (audio-only file)")
            start = 0.0
            if window == "last":  # read only the end: one clip plus a frame of margin
                start = max(0.0, info.duration - clip_s - 1.0 / fps)
            clip = read_av(path, fps=fps, sample_rate=sample_rate, size=size, geometry="letterbox",
                           start=start, duration=clip_s if window == "first" else None, require_audio=False)
        except MediaError as exc:
            raise MediaError(path, f"{exc.reason} (task {task} needs a video)") from None
        if clip.num_frames < num_frames:
            raise MediaError(path, f"holds {clip.num_frames} frames at {fps:g} fps, shorter than one clip "
                                   f"({num_frames} frames = {clip_s:g} s) which task {task} needs")
        frames = torch.from_numpy(clip.frames[_window(clip.num_frames, num_frames, window)])
        return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()
    frames = torch.as_tensor(np.asarray(source) if not isinstance(source, torch.Tensor) else source)
    if frames.dtype == torch.uint8 and frames.ndim == 4 and frames.shape[-1] == 3:
        frames = frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if frames.ndim != 4 or not frames.dtype.is_floating_point or tuple(frames.shape[1:]) != (3, size, size):
        raise DataError(f"task {task}: frames must be float [T, 3, {size}, {size}] in [-1, 1] or uint8 "
                        f"[T, {size}, {size}, 3], got {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[0] < num_frames:
        raise DataError(f"task {task}: {frames.shape[0]} frames are shorter than one clip ({num_frames} frames)")
    return frames[_window(frames.shape[0], num_frames, window)].float().clamp(-1, 1).cpu()


# --------------------------------------------------------------------------- conditions

def branch_conditions(inputs: dict[str, torch.Tensor], class_labels: torch.Tensor | None,
                      null_class: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(cond, uncond)`` keyword dicts for :func:`mmldm.diffusion.guided_denoiser`.

    :param inputs: AVDiT condition inputs of the task, e.g. ``{"audio_cond": [B, Ca, Ha, Wa]}``
        or ``{"prev_audio": ..., "prev_video": ...}`` (empty for svg).
    :param class_labels: ``[B]`` int64 or None.
    :param null_class: the generator's null label (None: the generator has no classes).
    The unconditional branch drops everything: zeros for every input, the null class.
    """
    import torch

    cond: dict[str, Any] = dict(inputs)
    uncond: dict[str, Any] = {key: torch.zeros_like(value) for key, value in inputs.items()}
    if class_labels is not None:
        cond["class_labels"] = class_labels
        uncond["class_labels"] = torch.full_like(class_labels, null_class)
    return cond, uncond


__all__ = ["TASKS", "TaskSpec", "branch_conditions", "load_audio", "load_video", "long_clip_count",
           "resolve_task"]
