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
audio-continuation     audio           ``audio_cond``, then   GIVEN audio + generated video,
                                       ``prev_audio`` +       then ``continue_seconds`` of
                                       ``prev_video``         clips (both generated)
video-continuation     video frames    ``video_cond``, then   generated audio + GIVEN video,
                                       ``prev_audio`` +       then ``continue_seconds`` of
                                       ``prev_video``         clips (both generated)
long                   nothing         ``prev_audio`` +       ``seconds`` of clips, each
                                       ``prev_video`` of the  conditioned on the one before
                                       clip before
=====================  ==============  =====================  ============================

Guidance (paper Eq. 9, per modality): the unconditional branch is always the
fully null model, i.e. every condition of the task is dropped: the cross-modal
latent (a2v, v2a, a continuation's given span) or the previous-clip latents
(long, a continuation's new clips) become zeros and the class becomes the null class. For ``svg`` only the class is
dropped, so ``svg`` without a class has nothing to guide and the model runs once
per step. The first clip of ``long`` is plain ``svg`` (see :data:`TASKS`).

The given modality of a2v, v2a and of a continuation's span is not sampled: at every step its noisy input
is the given latent noised to the step's time (paper Sec. 3.3, "a_t can be
obtained directly given a and t", Eq. 6), as the network saw it in training
(``known`` of :func:`mmldm.diffusion.sample`).

Which part of the input is used: a2v and v2a take ALL of the given span (the whole
file, or ``start``/``seconds`` of it) and generate clip after clip: clip ``k`` is
conditioned on the span's ``k``-th clip-length window AND, with a generator trained
with previous-clip inputs, on the clip generated before it (``prev_audio`` /
``prev_video``), so motion and sound continue across clips. The output keeps the
given modality as given, trimmed to whole frames. The windows are whole clips of the
span (:func:`window_starts`): when the span is not a whole number of clips the last
window ends where the span ends, overlapping the one before, and its clip fills only
the frames after that one's (the generator never sees padding it was not trained on);
an overlapping window is given no previous clip (the clip before does not end where it
starts: read as its previous clip, it would stand shifted in time);
only a span shorter than one clip is padded (audio with silence, video by repeating its
last frame) and the output trimmed back. Continuations go over the given span in the
same way (as a2v / v2a: the given modality kept, the other generated, each clip
conditioned on the one before), with the windows aligned to the span's END (the first
window starts where the span starts and may overlap the second), so that the new clips
follow the given content directly: ``continue_seconds`` (default one clip) of clips
each conditioned on the audio and video latents of the clip before, as ``long``. Their
output is the span followed by the new clips.
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

#: where the clip-length windows of the given span are aligned (:func:`window_starts`): to its start
#: (a2v, v2a) or to its end (continuations: the new clips follow the span directly)
Window = Literal["start", "end"]


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
    #: where the windows of the given span are aligned
    window: Window
    #: what the unconditional (guidance) branch drops, for docs and settings.json
    dropped: str
    help: str
    #: clips that follow the given span are generated (continuations)
    continues: bool = False


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("svg", None, None, False, "start", "the class (null class)",
             "joint sounding video generation"),
    TaskSpec("a2v", "audio", "audio_cond", True, "start",
             "the audio condition (zeros), the previous clip (zeros) and the class",
             "audio to video: the given audio (all of it, or --start/--seconds) is kept, a video is generated "
             "for it clip after clip"),
    TaskSpec("v2a", "video", "video_cond", True, "start",
             "the video condition (zeros), the previous clip (zeros) and the class",
             "video to audio: the given video (all of it, or --start/--seconds) is kept, a sound track is "
             "generated for it clip after clip"),
    TaskSpec("audio-continuation", "audio", "audio_cond", True, "end",
             "over the given span as a2v; then the previous-clip audio and video (zeros) and the class",
             "the given audio (all of it, or --start/--seconds) gets a video clip after clip, then "
             "--continue-seconds of sounding video follow it", continues=True),
    TaskSpec("video-continuation", "video", "video_cond", True, "end",
             "over the given span as v2a; then the previous-clip audio and video (zeros) and the class",
             "the given video (all of it, or --start/--seconds) gets a sound track clip after clip, then "
             "--continue-seconds of sounding video follow it", continues=True),
    TaskSpec("long", None, None, False, "start",
             "the previous-clip audio and video (zeros) and the class; the first clip drops only the class",
             "autoregressive long generation: clip 1 is plain svg, each later clip is conditioned on "
             "the audio and video latents of the clip before"),
)}


def resolve_task(task: str, audio: Any = None, video: Any = None, seconds: float | None = None,
                 start: float | None = None, continue_seconds: float | None = None) -> TaskSpec:
    """The :class:`TaskSpec` of ``task``, after checking the inputs fit it (one-line errors).

    ``seconds``: task long, the length to generate; a task with a given clip, the length of the
    span of it to use (from ``start`` seconds; default: to its end). ``continue_seconds``:
    continuations, how much follows the span (default: one clip).
    """
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
    for name, value, positive in (("--seconds", seconds, True), ("--start", start, False),
                                  ("--continue-seconds", continue_seconds, True)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if value is not None and not (number and (value > 0 or (not positive and value == 0))):
            raise ConfigError(f"{name} must be a {'positive' if positive else 'non-negative'} number of seconds, "
                              f"got {value}")
    if seconds is not None and not (task == "long" or spec.given):
        raise ConfigError(f"--seconds applies to task long (the length to generate) and to tasks with a given "
                          f"clip (the span of it), not to {task}")
    if seconds is None and task == "long":
        raise ConfigError("task long needs --seconds (the length to generate)")
    if start is not None and not spec.given:
        raise ConfigError(f"--start applies to tasks with a given clip (where its span starts), not to {task}")
    if continue_seconds is not None and not spec.continues:
        raise ConfigError(f"--continue-seconds applies to the continuation tasks (how much follows the given "
                          f"clip), not to {task}")
    return spec


def continuation_frames(continue_seconds: float | None, fps: float, num_frames: int) -> int:
    """Frames that follow a continuation's span: ``round(continue_seconds * fps)``, one clip by
    default; a length under one frame is refused."""
    if continue_seconds is None:
        return num_frames
    frames = round(continue_seconds * fps)
    if frames < 1:
        raise ConfigError(f"--continue-seconds {continue_seconds:g} is shorter than one frame ({1 / fps:g} s)")
    return frames


def window_starts(frames: int, clip_frames: int, at_end: bool) -> list[int]:
    """The span frame where each clip-length window of a ``frames``-frame span starts.

    A span of at least one clip is covered by whole windows of real input, never padding: clip
    after clip from its start (a2v, v2a), the last window ending where the span ends and so
    overlapping the one before when the span is not a whole number of clips; or, with ``at_end``
    (continuations, whose new clips follow the span's end directly), clip after clip back from its
    end, the first window starting where the span starts. Where two windows overlap, the output
    keeps the earlier clip. A shorter span has one window, starting at 0 (padded at its end), or
    at ``frames - clip_frames`` < 0 with ``at_end`` (padded at its front).
    """
    if frames < clip_frames:
        return [frames - clip_frames if at_end else 0]
    count = math.ceil(frames / clip_frames)
    if at_end:
        return [0] + [frames - (count - k) * clip_frames for k in range(1, count)]
    return [k * clip_frames for k in range(count - 1)] + [frames - clip_frames]


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

def _span(length: int, rate: float, start: float | None, seconds: float | None, what: str) -> slice:
    """The items ``[first, last)`` of a span of ``length`` items at ``rate`` per second; a span
    starting or ending beyond the end is refused (one line naming ``what``)."""
    first = round((start or 0.0) * rate)
    last = length if seconds is None else first + round(seconds * rate)
    if first >= length or last > length:
        end = (start or 0.0) + (seconds or 0.0)
        beyond = f"--start {start:g} s" if first >= length else f"the span ending at {end:g} s"
        raise DataError(f"{what}: {beyond} is beyond its end ({length / rate:.2f} s)")
    return slice(first, last)


def load_audio(source: Any, sample_rate: int, clip_samples: int, task: str,
               start: float | None = None, seconds: float | None = None,
               max_samples: int | None = None) -> torch.Tensor:
    """Mono audio float32 from a file path or a waveform: the span ``[start, start + seconds)``
    (default: all of it).

    A file is any audio or video file PyAV decodes (resampled to ``sample_rate``); a
    waveform is ``[N]`` (or ``[1, N]``) at ``sample_rate`` in [-1, 1]. A span shorter than one
    clip, beyond the end, silent, or longer than ``max_samples`` (what memory allows) is refused.
    """
    import numpy as np
    import torch

    from ..data.media_io import probe, read_wav

    clip_s = clip_samples / sample_rate
    if isinstance(source, (str, Path)):
        path = check_input_file(source, f"task {task} needs an audio file")
        what = str(path)
        try:
            info = probe(path)
            if max_samples is not None and seconds is None and info.duration * sample_rate > max_samples:
                raise MediaError(path, _too_long(info.duration - (start or 0.0), max_samples / sample_rate, task))
            wave, _ = read_wav(path, sample_rate=sample_rate)
        except MediaError as exc:
            raise MediaError(path, f"{exc.reason} (task {task} needs its audio)") from None
        wave = torch.from_numpy(np.ascontiguousarray(wave))
    else:
        what = f"task {task}: the waveform"
        wave = torch.as_tensor(np.asarray(source) if not isinstance(source, torch.Tensor) else source)
        if wave.ndim == 2 and wave.shape[0] == 1:
            wave = wave[0]
        if wave.ndim != 1 or not wave.dtype.is_floating_point:
            raise DataError(f"task {task}: an audio waveform must be float [N] at {sample_rate} Hz, "
                            f"got {wave.dtype} {tuple(wave.shape)}")
        if not torch.isfinite(wave).all():
            raise DataError(f"task {task}: the waveform contains NaN or infinite values")
        wave = wave.float().clamp(-1, 1).cpu()
    wave = wave[_span(wave.shape[0], sample_rate, start, seconds, what)]
    if wave.shape[0] < clip_samples:
        raise DataError(f"{what}: its audio lasts {wave.shape[0] / sample_rate:.2f} s, shorter than one clip "
                        f"({clip_s:g} s) which task {task} needs")
    if not bool(wave.abs().max() > 0):
        raise DataError(f"{what}: the audio is silent (every sample is zero); task {task} needs a sound")
    if max_samples is not None and wave.shape[0] > max_samples:
        raise DataError(f"{what}: {_too_long(wave.shape[0] / sample_rate, max_samples / sample_rate, task)}")
    return wave.contiguous()


def load_video(source: Any, fps: float, size: int, num_frames: int, sample_rate: int, task: str, start: float | None = None, seconds: float | None = None,
               max_frames: int | None = None) -> torch.Tensor:
    """Frames ``[F, 3, size, size]`` float32 in [-1, 1] from a file path or frames: the span
    ``[start, start + seconds)`` (default: all of it).

    A file is read at ``fps``, letterboxed to ``size`` (as the training data), only the span
    decoded; frames are float ``[F, 3, size, size]`` in [-1, 1] or uint8 ``[F, size, size, 3]``.
    A span shorter than one clip, beyond the end, or longer than ``max_frames`` is refused.
    """
    import numpy as np
    import torch

    from ..data.media_io import probe, read_av

    clip_s = num_frames / fps
    if isinstance(source, (str, Path)):
        path = check_input_file(source, f"task {task} needs a video file")
        what = str(path)
        try:
            info = probe(path)
            if not info.has_video:
                raise MediaError(path, "no video stream (audio-only file)")
            span = _span(max(1, round(info.duration * fps)), fps, start, seconds, what)
            first, last = span.start / fps, span.stop / fps
            if max_frames is not None and (last - first) * fps > max_frames + 1:
                raise MediaError(path, _too_long(last - first, max_frames / fps, task))
            clip = read_av(path, fps=fps, sample_rate=sample_rate, size=size, geometry="letterbox",
                           start=first, duration=last - first, require_audio=False)
        except MediaError as exc:
            raise MediaError(path, f"{exc.reason} (task {task} needs a video)") from None
        frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    else:
        what = f"task {task}: the frames"
        frames = torch.as_tensor(np.asarray(source) if not isinstance(source, torch.Tensor) else source)
        if frames.dtype == torch.uint8 and frames.ndim == 4 and frames.shape[-1] == 3:
            frames = frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        if frames.ndim != 4 or not frames.dtype.is_floating_point or tuple(frames.shape[1:]) != (3, size, size):
            raise DataError(f"task {task}: frames must be float [T, 3, {size}, {size}] in [-1, 1] or uint8 "
                            f"[T, {size}, {size}, 3], got {frames.dtype} {tuple(frames.shape)}")
        frames = frames[_span(frames.shape[0], fps, start, seconds, what)].float().clamp(-1, 1).cpu()
    if frames.shape[0] < num_frames:
        raise DataError(f"{what}: holds {frames.shape[0]} frames at {fps:g} fps, shorter than one clip "
                        f"({num_frames} frames = {clip_s:g} s) which task {task} needs")
    if max_frames is not None and frames.shape[0] > max_frames:
        raise DataError(f"{what}: {_too_long(frames.shape[0] / fps, max_frames / fps, task)}")
    return frames.contiguous()


def _too_long(seconds: float, most: float, task: str) -> str:
    return (f"{seconds:.1f} s is more than task {task} can hold in the memory available here ({most:.1f} s at "
            "most); give a span with --start and --seconds, or generate fewer samples at a time")


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


__all__ = ["TASKS", "TaskSpec", "branch_conditions", "continuation_frames", "load_audio", "load_video",
           "long_clip_count", "resolve_task", "window_starts"]
