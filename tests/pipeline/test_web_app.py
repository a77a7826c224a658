"""The web app (``mmldm serve``, :mod:`mmldm.app`): the page, its requests and errors, and the whole
thing in a real headless browser (Debian's Chromium through its driver; ``tests/browser.py``)."""

from __future__ import annotations

import logging
import math
import socket
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the web app needs gradio (pip install -e '.[test]')")

# after the skip: these import the app, which imports gradio (browser is tests/browser.py)
import browser

from mmldm.app import IDS, WebApp, build_app
from mmldm.cli.main import main
from mmldm.data.media_io import probe, read_wav, write_wav
from mmldm.generator.tasks import TASKS

SPEECH = Path(__file__).resolve().parents[2] / "assets" / "audio" / "speech.wav"


class Progress:
    """Stands in for ``gr.Progress``: records what the page's bar would show."""

    def __init__(self):
        self.shown: list[tuple[float, str]] = []

    def __call__(self, fraction, desc=None):
        self.shown.append((fraction, desc))


@pytest.fixture
def app(pipe, tmp_path):
    app = WebApp(pipe, max_seconds=10.0, output_root=tmp_path / "outputs")
    yield app
    app.close()


def ask(app, task="svg", audio=None, video=None, start=0, seconds=0, seed=0, steps=4, guidance=(1.0, 1.0),
        candidates=1, class_choice="any", prompt="", progress=None):
    """One request as the page sends it (its widgets' values, in the order of the Generate button)."""
    return app.generate(task, None if audio is None else str(audio), None if video is None else str(video), start,
                        seconds, seed, steps, *guidance, candidates, class_choice, prompt,
                        progress=progress or Progress())


def _component(demo, elem_id):
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def test_the_page_offers_every_task_with_the_model_defaults_and_no_prompt(pipe):
    demo = build_app(pipe)
    try:
        task = _component(demo, IDS["task"])
        assert [value for _, value in task.choices] == list(TASKS)
        components = [block for block in demo.blocks.values() if isinstance(block, gr.components.Component)]
        labels = {block.label: block for block in components if getattr(block, "label", None)}
        defaults = pipe.generation.sampling
        assert labels["Seed"].value == 0 and labels["Steps"].value == defaults.steps
        assert labels["Audio guidance (1 = none)"].value == defaults.audio_guidance
        assert labels["Video guidance (1 = none)"].value == defaults.video_guidance
        assert labels["Candidates (the most in sync is kept)"].value == defaults.candidates
        assert labels["Class"].choices[0][1] == "any" and len(labels["Class"].choices) == 1 + 3  # 3 classes
        assert labels["Prompt"].visible is False  # no model takes text
        # every upload and setting reaches the request
        (click,) = [fn for fn in demo.fns.values() if fn.name == "generate"]
        assert {IDS["audio"], IDS["video"], IDS["start"], IDS["seconds"]} <= {c.elem_id for c in click.inputs}
    finally:
        demo.mmldm_app.close()


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_shows_the_inputs_it_takes(app, task):
    help_text, audio, video, start, seconds, *_ = app._task_inputs(task)
    spec = TASKS[task]
    assert TASKS[task].help.split()[0] in help_text
    assert audio["visible"] == (spec.given == "audio") and video["visible"] == (spec.given == "video")
    assert start["visible"] == (spec.given is not None)  # a span of the whole upload
    assert seconds["visible"] == (spec.given is not None or task == "long")
    if task == "long":
        assert seconds["value"] >= app.clip_seconds


def test_picking_a_task_sets_the_knobs_to_the_models_defaults_for_it(app, pipe, monkeypatch):
    # a model may sample a task its own way (generation.json task_sampling): the page must not send
    # the global default for a knob the task sets otherwise
    monkeypatch.setattr(pipe.generation, "task_sampling", {"a2v": {"candidates": 24, "steps": 7,
                                                                   "audio_guidance": 3.0}})
    *_, steps, audio_guidance, video_guidance, candidates = app._task_inputs("a2v")
    assert (steps["value"], audio_guidance["value"], candidates["value"]) == (7, 3.0, 24)
    assert video_guidance["value"] == pipe.generation.sampling.video_guidance
    assert candidates["maximum"] >= 24  # the slider reaches the default
    *_, steps, audio_guidance, video_guidance, candidates = app._task_inputs("svg")
    sampling = pipe.generation.sampling
    assert (steps["value"], audio_guidance["value"], candidates["value"]) == (
        sampling.steps, sampling.audio_guidance, sampling.candidates)


def test_a2v_returns_the_given_audio_with_a_video_and_reports_progress(app, media, kit, tmp_path):
    progress = Progress()
    video, files, line = ask(app, "a2v", audio=media["wav"], seconds=0.8, seed=3, progress=progress)
    mp4, wav = map(Path, files)
    assert video == str(mp4) and mp4.suffix == ".mp4" and wav.suffix == ".wav"
    assert mp4.parent.parent == tmp_path / "outputs"  # the request's own folder
    info = probe(mp4)
    assert info.has_video and info.has_audio and math.isclose(info.duration, 0.8, abs_tol=0.05)
    given, _ = read_wav(media["wav"], sample_rate=kit.rate)
    written, _ = read_wav(wav, sample_rate=kit.rate)
    assert np.array_equal(written, given[: len(written)]) and len(written) == round(0.8 * kit.rate)
    assert line.startswith("**a2v**") and "seed 3" in line and "4 steps" in line
    fractions = [fraction for fraction, _ in progress.shown]
    assert fractions == sorted(fractions) and 0.0 == fractions[0] and fractions[-1] >= 0.9
    descs = [desc for _, desc in progress.shown]
    assert "clip 1/1: step 4/4" in descs and "decoding frames and sound" in descs


def test_every_task_generates_in_the_page(app, media):
    inputs = {"a2v": {"audio": media["wav"]}, "v2a": {"video": media["sounding"]},
              "audio-continuation": {"audio": media["wav"]}, "video-continuation": {"video": media["sounding"]},
              "long": {"seconds": 1.6}, "svg": {"class_choice": "1"}}
    for task in TASKS:
        _, (mp4, _), _ = ask(app, task, steps=2, **inputs[task])
        info = probe(mp4)
        assert info.has_video and info.has_audio, task
    assert len(list((app.output_root).iterdir())) == len(TASKS)


def test_old_request_folders_are_removed(pipe, tmp_path):
    app = WebApp(pipe, output_root=tmp_path, keep_requests=2)
    folders = [app._request_folder() for _ in range(4)]
    assert sorted(tmp_path.iterdir()) == sorted(folders[2:])
    app.close()
    assert list(tmp_path.iterdir()) == []


def _bad_inputs(tmp_path, media, kit):
    text = tmp_path / "notes.wav"
    text.write_text("these are notes, not a sound\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    silent = write_wav(tmp_path / "silence.wav", np.zeros(kit.rate, np.float32), kit.rate)
    return [  # (request, what the one line must say)
        ({"task": "a2v", "audio": text}, "notes.wav: not a readable media file"),
        ({"task": "a2v", "audio": empty}, "empty.wav: empty file (0 bytes)"),
        ({"task": "a2v", "audio": silent}, "silence.wav: the audio is silent"),
        ({"task": "v2a", "video": media["wav"]}, "tone.wav: no video stream (audio-only file)"),
        ({"task": "a2v", "audio": media["silent_video"]}, "silent.mp4: no audio stream"),
        ({"task": "a2v", "audio": media["wav"], "start": 0.5, "seconds": 2.0}, "tone.wav: the span ending at 2.5 s is "
                                                                                 "beyond its end"),
        ({"task": "a2v"}, "task a2v needs an audio file: upload one"),
        ({"task": "video-continuation"}, "task video-continuation needs a video file"),
        ({"task": "svg", "prompt": "a red circle"}, "no text conditioning"),
        ({"task": "long", "seconds": 30.0}, "longer than this server generates at a time (10 s at most"),
        ({"task": "svg", "seed": 1.5}, "seed must be a whole number"),
        ({"task": "svg", "class_choice": "7"}, "not one of this model's classes"),
    ]


def test_bad_requests_are_one_line_in_the_page_naming_the_upload_not_the_server_path(app, media, kit, tmp_path):
    uploads = tmp_path / "gradio-uploads-0123"  # where Gradio would keep an upload on the server
    uploads.mkdir()
    for request, expected in _bad_inputs(uploads, media, kit):
        with pytest.raises(gr.Error) as info:
            ask(app, **request)
        message = info.value.message
        assert expected in message, (request, message)
        assert "\n" not in message and "Traceback" not in message and str(uploads) not in message
    assert list((tmp_path / "outputs").iterdir()) == []  # nothing written for a refused request


def test_an_internal_error_is_one_line_in_the_page_and_a_traceback_in_the_log(app, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("the sampler lost\nits way")

    monkeypatch.setattr(app.pipe, "generate", broken)
    with caplog.at_level(logging.ERROR, logger="mmldm.serve"), pytest.raises(gr.Error) as info:
        ask(app)
    assert info.value.message == ("internal error: RuntimeError: the sampler lost its way (the server's log has "
                                  "the traceback)")
    (record,) = caplog.records
    assert record.exc_info and record.exc_info[0] is RuntimeError


# --------------------------------------------------------------------------- the command

def test_serve_refuses_a_taken_port_and_bad_options_in_one_line_before_loading(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--model", "/nowhere/at/all"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"mmldm: error: cannot listen on 127.0.0.1:{port}")
    for argv, expected in ((["--port", "70000"], "--port must be in 1..65535"),
                           (["--max-seconds", "0"], "--max-seconds must be a positive"),
                           (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:7860"),
                           (["--text-encoder", "/nowhere/clip"], "--text-encoder: not found")):
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and expected in err, err


# --------------------------------------------------------------------------- in the browser

@pytest.fixture
def speech(tmp_path, kit):
    """A real recording (assets/audio/speech.wav, from ``make assets``, as CI has it); without the
    assets, a generated 3 s chirp, so that the browser test still runs."""
    if SPEECH.is_file():
        return SPEECH
    t = np.arange(3 * kit.rate) / kit.rate
    chirp = 0.5 * np.sin(2 * np.pi * (220 * t + 110 * t**2))
    return write_wav(tmp_path / "chirp.wav", chirp.astype(np.float32), kit.rate)


def test_the_web_app_in_a_real_browser(model_dir, speech, kit, tmp_path):
    """``mmldm serve`` with the tiny model on a free port, driven in headless Chromium: a2v on a real
    recording plays an mp4 with sound and offers its mp4 and wav; a non-media upload shows one line;
    the server stops cleanly. One test, so that one server and one browser serve every step (the
    suite's workers would otherwise start one each)."""
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    port = browser.free_port()
    log = tmp_path / "server.log"
    server = browser.serve(port, log, model=model_dir, gradio_cache=tmp_path / "gradio")
    driver = None
    try:
        url = f"http://127.0.0.1:{port}/"
        browser.wait_until_serving(url, server, log)
        driver = browser.chromium(tmp_path / "profile")

        # a2v on a 1.6 s span of a real recording
        browser.open_page(driver, url)
        browser.choose_task(driver, "a2v")
        browser.upload(driver, "audio", speech)
        browser.set_number(driver, "start", 1.0)
        browser.set_number(driver, "seconds", 1.6)
        browser.click_generate(driver)
        video_url, links, info = browser.result(driver)
        assert sorted(link.rsplit(".", 1)[-1] for link in links) == ["mp4", "wav"]
        assert video_url.endswith(".mp4") and "a2v" in info and "2 clip(s)" in info
        mp4 = browser.download(video_url, tmp_path / "result.mp4")
        media = probe(mp4)
        assert media.has_video and media.has_audio and media.video_codec == "h264"
        assert math.isclose(media.duration, 1.6, abs_tol=0.05)
        wav = browser.download(next(link for link in links if link.endswith(".wav")), tmp_path / "result.wav")
        written, rate = read_wav(wav)
        given, _ = read_wav(speech, sample_rate=rate)
        assert rate == kit.rate and np.array_equal(written, given[rate: rate + round(1.6 * rate)])  # the span

        # a file that is no media: one line in the page, nothing in the server's log
        notes = tmp_path / "notes.wav"
        notes.write_text("these are notes, not a sound\n")
        browser.open_page(driver, url)
        browser.choose_task(driver, "a2v")
        browser.upload(driver, "audio", notes)
        browser.click_generate(driver)
        text = browser.error_text(driver)
        assert text.startswith("notes.wav: not a readable media file") and "task a2v needs its audio" in text
        assert "\n" not in text and "Traceback" not in text and str(tmp_path) not in text
    finally:
        if driver is not None:
            driver.quit()
        code = browser.stop(server)
    assert code == 0 and "Traceback" not in log.read_text(), log.read_text()[-3000:]
