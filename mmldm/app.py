"""The web app of ``mmldm serve``: a Gradio page around one loaded :class:`SoundingVideoPipeline`.

    from mmldm.app import build_app
    pipe = SoundingVideoPipeline.from_pretrained("shapes")
    demo = build_app(pipe)                   # gr.Blocks
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=7860)

The page offers every task of :data:`~mmldm.generator.tasks.TASKS` with the inputs the task
takes (an audio upload, a video upload, a span of it, the length of ``long``), the sampling
knobs (seed, steps, per-modality guidance, candidates, class) and, only for a model that takes
text, a prompt. A generation reports its progress from the pipeline's ``callback`` events, and
its result plays in the page (video with its sound) with the mp4 and wav offered for download.

Errors: a user's mistake (an upload that is not media, a silent or empty audio file, a video
without frames, a span beyond the end, a task without its upload) arrives as an
:class:`~mmldm.errors.MMLDMError` and is shown in the page as its one line, with the server's
paths of uploads replaced by their file names. Anything else is a bug: one line in the page
too, and the traceback in the server's log.

All requests share the one pipeline: the app is meant to run with a queue of concurrency 1
(``mmldm serve`` sets it), so one generation runs at a time and other users wait their turn.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from .errors import ConfigError, MMLDMError
from .generator.tasks import TASKS
from .pipeline import SoundingVideoPipeline

log = logging.getLogger("mmldm.serve")

#: longest output one request may ask for by default, in seconds: one generation holds the queue
#: for everyone, so a server refuses a length that would keep it busy for long
MAX_SECONDS = 60.0
#: request output folders kept on disk (the newest); older ones are removed as new requests come
KEEP_REQUESTS = 16
#: share of the progress bar given to sampling latents; the rest is decoding and writing files
_SAMPLING_SHARE = 0.7

# DOM ids the page's parts carry (the browser test and the README's screenshot script find them)
IDS = {"task": "task", "audio": "audio-input", "video": "video-input", "start": "start", "seconds": "seconds",
       "generate": "generate", "result": "result", "downloads": "downloads", "info": "info"}


def takes_text(pipe: SoundingVideoPipeline) -> bool:
    """Whether the model is conditioned on a text prompt (then the page shows a prompt box).

    A pipeline with text conditioning (:attr:`SoundingVideoPipeline.takes_text`: its generator takes
    text tokens from a text encoder) shows the box; for others it stays hidden."""
    return bool(getattr(pipe, "takes_text", False))


@dataclass(frozen=True)
class _Request:
    """One generation as the page asked for it, checked."""

    task: str
    audio: str | None
    video: str | None
    start: float | None
    seconds: float | None
    seed: int
    steps: int
    guidance: tuple[float, float]
    candidates: int
    class_label: int | None
    prompt: str | None


class _Progress:
    """Feeds a ``gr.Progress`` from :meth:`SoundingVideoPipeline.generate`'s callback events.

    Sampling the clips fills the first :data:`_SAMPLING_SHARE` of the bar step by step (the
    number of clips is estimated before the call: the events do not say it); decoding the
    kept latents to frames and sound, which sends no events, is one stage after it."""

    def __init__(self, progress: Any, clips: int):
        self.progress = progress
        self.clips = max(1, clips)
        self.evaluations = 1  # network evaluations per clip, from the resolved settings
        self.clip = 0

    def __call__(self, event: dict[str, Any]) -> None:
        stage = event["stage"]
        if stage == "settings":
            settings = event["settings"]
            # Heun evaluates the network twice per step but once on the last
            self.evaluations = 2 * settings.steps - 1 if settings.sampler == "heun" else settings.steps
            self.sampled(0.0, "starting")
        elif stage == "clip":
            self.clip = event["clip"]
            self.sampled(self.clip, f"clip {self.clip + 1}/{self.clips}")
        elif stage == "step":
            done = min(event["i"] + 1, self.evaluations)
            self.sampled(self.clip + done / self.evaluations,
                         f"clip {self.clip + 1}/{self.clips}: step {done}/{self.evaluations}")
        elif stage == "candidates":
            self.sampled(self.clip + 1, f"clip {self.clip + 1}/{self.clips}: ranking candidates")
        elif stage == "latents" and event["clip"] + 1 >= self.clips:
            self.progress(_SAMPLING_SHARE, desc="decoding frames and sound")

    def sampled(self, clips: float, desc: str) -> None:
        """``clips`` (fractional) of the estimated clips are sampled."""
        self.progress(_SAMPLING_SHARE * min(max(clips / self.clips, 0.0), 1.0), desc=desc)


class WebApp:
    """The page's logic around one pipeline; :meth:`build` makes the ``gr.Blocks``.

    :param max_seconds: the longest output a request may ask for (None: no limit beyond the
        pipeline's memory guard).
    :param output_root: where the per-request output folders go (default: a temporary folder,
        removed by :meth:`close` or at exit).
    """

    def __init__(self, pipe: SoundingVideoPipeline, max_seconds: float | None = MAX_SECONDS,
                 output_root: str | Path | None = None, keep_requests: int = KEEP_REQUESTS):
        if max_seconds is not None and not max_seconds > 0:
            raise ConfigError(f"the longest output must be a positive number of seconds, got {max_seconds}")
        self.pipe = pipe
        self.max_seconds = max_seconds
        self.keep_requests = keep_requests
        # the folder object removes itself at exit (its finalizer) when close() is never called
        self._tmp = tempfile.TemporaryDirectory(prefix="mmldm-serve-") if output_root is None else None
        self.output_root = Path(self._tmp.name if self._tmp else output_root)
        self.output_root.mkdir(parents=True, exist_ok=True)
        self._folders: list[Path] = []  # this app's request folders, oldest first
        self.clip_seconds = pipe.num_frames / pipe.fps

    def close(self) -> None:
        """Remove the request output folders (and the temporary root when the app made it)."""
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------ the page

    def build(self) -> gr.Blocks:
        """The page: task, inputs and settings on the left, the result on the right."""
        pipe, defaults = self.pipe, self.pipe.generation.sampling_for("svg")
        model = f"Model **{pipe.model_dir.name}**" if pipe.model_dir else "An in-memory model"
        classes = pipe.generator.cfg.num_classes
        # one hour after a file was made, Gradio's copies of uploads and results are removed
        with gr.Blocks(title="mmldm: sounding video generation", analytics_enabled=False,
                       delete_cache=(1800, 3600)) as demo:
            gr.Markdown(f"## mmldm: sounding video generation\n{model}: clips of "
                        f"{self.clip_seconds:g} s, {pipe.num_frames} frames of {pipe.frame_size}x{pipe.frame_size} "
                        f"at {pipe.fps:g} fps with {pipe.audio_cfg.sample_rate} Hz sound, on {pipe.device}.")
            with gr.Row():
                with gr.Column(scale=1):
                    task = gr.Radio(list(TASKS), value="svg", label="Task", elem_id=IDS["task"])
                    task_help = gr.Markdown(self._task_help("svg"))
                    prompt = gr.Textbox(label="Prompt", visible=takes_text(pipe), lines=2)
                    audio = gr.Audio(label="Audio", sources=["upload"], type="filepath",
                                     visible=False, elem_id=IDS["audio"])
                    video = gr.Video(label="Video", sources=["upload"], visible=False, elem_id=IDS["video"])
                    with gr.Row():
                        start = gr.Number(label="Start (s)", value=0, minimum=0, visible=False,
                                          elem_id=IDS["start"])
                        seconds = gr.Number(label="Seconds", value=0, minimum=0, visible=False,
                                            elem_id=IDS["seconds"])
                    with gr.Row():
                        seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                        steps = gr.Slider(1, 250, value=defaults.steps, step=1, label="Steps")
                    with gr.Row():
                        audio_guidance = gr.Slider(0, 20, value=defaults.audio_guidance, step=0.5,
                                                   label="Audio guidance (1 = none)")
                        video_guidance = gr.Slider(0, 20, value=defaults.video_guidance, step=0.5,
                                                   label="Video guidance (1 = none)")
                    with gr.Row():
                        candidates = gr.Slider(1, max(16, defaults.candidates), value=defaults.candidates, step=1,
                                               label="Candidates (the most in sync is kept)")
                        class_choice = gr.Dropdown(["any", *map(str, range(classes))], value="any", label="Class",
                                                   visible=classes > 0)
                    button = gr.Button("Generate", variant="primary", elem_id=IDS["generate"])
                with gr.Column(scale=1):
                    result = gr.Video(label="Sounding video", interactive=False, elem_id=IDS["result"])
                    downloads = gr.File(label="Download", file_count="multiple", interactive=False,
                                        elem_id=IDS["downloads"])
                    info = gr.Markdown(elem_id=IDS["info"])
            task.change(self._task_inputs, task, [task_help, audio, video, start, seconds, steps, audio_guidance,
                                                  video_guidance, candidates], queue=False)
            button.click(self.generate, [task, audio, video, start, seconds, seed, steps, audio_guidance,
                                         video_guidance, candidates, class_choice, prompt],
                         [result, downloads, info], concurrency_id="generate")
        return demo

    def _task_help(self, task: str) -> str:
        # the tasks' help names the CLI's options; the page's fields are "Start" and "Seconds"
        return f"*{TASKS[task].help.replace('--start/--seconds', 'a span: start and seconds')}.*"

    def _task_inputs(self, task: str) -> tuple[Any, ...]:
        """Show the inputs ``task`` takes (its upload, the span of it, or the length of ``long``) and the
        model's sampling defaults for it (a model may have its own per task: ``task_sampling``)."""
        spec = TASKS[task]
        span = spec.given is not None
        if task == "long":
            seconds = gr.update(visible=True, label="Seconds to generate", value=round(3 * self.clip_seconds, 3))
        else:
            seconds = gr.update(visible=span, label="Seconds of it (0: to its end)", value=0)
        defaults = self.pipe.generation.sampling_for(task)
        return (self._task_help(task), gr.update(visible=spec.given == "audio"),
                gr.update(visible=spec.given == "video"), gr.update(visible=span), seconds,
                gr.update(value=defaults.steps), gr.update(value=defaults.audio_guidance),
                gr.update(value=defaults.video_guidance),
                gr.update(value=defaults.candidates, maximum=max(16, defaults.candidates)))

    # ------------------------------------------------------------------ a request

    def generate(self, task: str, audio: str | None, video: str | None, start: float | None, seconds: float | None,
                 seed: float | None, steps: float, audio_guidance: float, video_guidance: float, candidates: float,
                 class_choice: str | None, prompt: str | None = None,
                 progress: Any = gr.Progress()  # noqa: B008 - how Gradio hands a function its progress bar
                 ) -> tuple[str, list[str], str]:
        """One generation: ``(mp4 path, [mp4, wav] paths, a line describing it)``; any error is a
        ``gr.Error`` whose message is one line."""
        uploads = [path for path in (audio, video) if path]
        try:
            request = self._request(task, audio, video, start, seconds, seed, steps, audio_guidance,
                                    video_guidance, candidates, class_choice, prompt)
            return self._run(request, progress)
        except MMLDMError as exc:
            raise _page_error(str(exc), uploads) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise _page_error(f"{where}{exc.strerror or exc}", uploads) from None
        except Exception as exc:  # a bug: one line in the page, the traceback in the log
            from .files import write_failure_message

            failed_write = write_failure_message(exc)  # a full disk, however the library reports it
            if failed_write is not None:
                log.error("generation failed: %s", failed_write)
                raise _page_error(failed_write, uploads) from None
            log.exception("internal error in a %s generation", task)
            message = " ".join(str(exc).split()) or type(exc).__name__
            raise _page_error(f"internal error: {type(exc).__name__}: {message} (the server's log has the "
                              "traceback)", uploads) from None

    def _request(self, task: str, audio: str | None, video: str | None, start: float | None,
                 seconds: float | None, seed: float | None, steps: float, audio_guidance: float,
                 video_guidance: float, candidates: float, class_choice: str | None,
                 prompt: str | None) -> _Request:
        """The page's values checked and typed (one-line :class:`ConfigError` for each problem)."""
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r} (choose one of {', '.join(TASKS)})")
        spec = TASKS[task]
        if spec.given == "audio" and not audio:
            raise ConfigError(f"task {task} needs an audio file: upload one")
        if spec.given == "video" and not video:
            raise ConfigError(f"task {task} needs a video file: upload one")
        if seed is None or not float(seed).is_integer() or seed < 0:
            raise ConfigError(f"the seed must be a whole number >= 0, got {seed}")
        if prompt and prompt.strip() and not takes_text(self.pipe):
            raise ConfigError("this model has no text conditioning: leave the prompt empty")
        span = spec.given is not None
        return _Request(
            task=task, audio=audio if spec.given == "audio" else None,
            video=video if spec.given == "video" else None,
            start=float(start) if span and start else None,
            seconds=float(seconds) if (span or task == "long") and seconds else None,
            seed=int(seed), steps=_whole(steps, "steps"),
            guidance=(float(audio_guidance), float(video_guidance)),
            candidates=_whole(candidates, "candidates"),
            class_label=None if class_choice in (None, "", "any") else int(class_choice),
            prompt=prompt.strip() if prompt and prompt.strip() else None)

    def _run(self, request: _Request, progress: Any) -> tuple[str, list[str], str]:
        started = time.perf_counter()
        length = self._output_seconds(request)
        if self.max_seconds is not None and length is not None and length > self.max_seconds + 1e-6:
            raise ConfigError(f"{length:.1f} s is longer than this server generates at a time "
                              f"({self.max_seconds:g} s at most, mmldm serve --max-seconds); ask for a shorter "
                              "span (start and seconds)")
        clips = math.ceil(round(length * self.pipe.fps) / self.pipe.num_frames) if length else 1
        extra = {"prompt": request.prompt} if request.prompt else {}
        out = self.pipe.generate(task=request.task, n=1, seed=request.seed, audio=request.audio,
                                 video=request.video, start=request.start, seconds=request.seconds,
                                 class_label=request.class_label, steps=request.steps, guidance=request.guidance,
                                 candidates=request.candidates, callback=_Progress(progress, clips),
                                 progress=False, **extra)
        progress(0.9, desc="writing the mp4 and wav")
        folder = self._request_folder()
        mp4 = out.save(folder, prefix=f"{request.task}-seed{request.seed}", preview=False)[0]
        wav = mp4.with_suffix(".wav")
        settings = out.settings
        frames = settings["frames"]
        line = (f"**{request.task}**: {frames / settings['fps']:g} s ({frames} frames, {settings['clips']} "
                f"clip(s)), seed {request.seed}, {settings['sampler']} {settings['steps']} steps, guidance "
                f"{settings['guidance']['audio']:g} / {settings['guidance']['video']:g}, "
                f"{settings['candidates']} candidate(s); made in {time.perf_counter() - started:.1f} s")
        log.info("generated %s", mp4)
        return str(mp4), [str(mp4), str(wav)], line

    def _output_seconds(self, request: _Request) -> float | None:
        """How long the output will be, when it can be told before generating: the length of
        ``long``, the span of a2v / v2a (their output is as long as it), the span and the clip that
        follows it of a continuation. None when it cannot (an upload the pipeline will refuse with
        its own message)."""
        if request.task == "long":
            return request.seconds
        spec = TASKS[request.task]
        if spec.given is None:
            return None
        following = self.clip_seconds if spec.continues else 0.0
        if request.seconds is not None:
            return request.seconds + following
        from .data.media_io import probe

        try:
            duration = probe(request.audio or request.video).duration
        except MMLDMError:
            return None
        return max(duration - (request.start or 0.0), 0.0) + following

    def _request_folder(self) -> Path:
        """A new folder for one request's files; the oldest beyond :attr:`keep_requests` are removed
        (Gradio serves its own copies of the files, made as the request returned)."""
        folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.output_root))
        self._folders.append(folder)
        while len(self._folders) > max(self.keep_requests, 1):
            shutil.rmtree(self._folders.pop(0), ignore_errors=True)
        return folder


def _whole(value: float | None, what: str) -> int:
    if value is None or not float(value).is_integer() or value < 1:
        raise ConfigError(f"{what} must be a whole number >= 1, got {value}")
    return int(value)


def _page_error(message: str, uploads: list[str]) -> gr.Error:
    """The error the page shows: ``message`` as one line, with the server's paths of the uploads
    replaced by their file names; it stays until closed (a generation may be left to run)."""
    for path in uploads:
        message = message.replace(str(path), Path(path).name)
    return gr.Error(" ".join(message.split()), duration=None, print_exception=False)


def build_app(pipe: SoundingVideoPipeline, max_seconds: float | None = MAX_SECONDS,
              output_root: str | Path | None = None) -> gr.Blocks:
    """The Gradio page around ``pipe`` (see :class:`WebApp`); the app object is ``demo.mmldm_app``
    (its :meth:`WebApp.close` removes the output folders)."""
    app = WebApp(pipe, max_seconds=max_seconds, output_root=output_root)
    demo = app.build()
    demo.mmldm_app = app
    return demo


__all__ = ["IDS", "MAX_SECONDS", "WebApp", "build_app", "takes_text"]
