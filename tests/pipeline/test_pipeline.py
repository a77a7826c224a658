"""SoundingVideoPipeline.generate: outputs, determinism, every task's condition, guidance, long generation."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import mmldm.pipeline.pipeline as pipeline_module
from mmldm.data.media_io import read_av, read_wav
from mmldm.errors import ConfigError, DataError
from mmldm.generator.generation import GenerationConfig, SamplingSettings
from mmldm.pipeline import reranking


def generate_observed(pipe, **kwargs):
    """``(output, {stage: [events]})``: a generation observed through its callback."""
    events: dict[str, list[dict]] = {}
    out = pipe(progress=False, callback=lambda event: events.setdefault(event["stage"], []).append(event), **kwargs)
    return out, events


def test_svg_writes_playable_mp4_wav_png_and_settings(pipe, kit, tmp_path):
    out = pipe(task="svg", n=2, steps=2, seed=3, progress=False)
    assert out.frames.shape == (2, kit.frames, 3, kit.size, kit.size)
    assert out.waveforms.shape == (2, kit.clip_samples)
    assert out.frames.min() >= -1 and out.frames.max() <= 1
    videos = out.save(tmp_path, prefix="svg")
    assert [p.name for p in videos] == ["svg-000.mp4", "svg-001.mp4"]
    for i, mp4 in enumerate(videos):
        clip = read_av(mp4, fps=kit.fps, sample_rate=kit.rate)
        assert clip.num_frames == kit.frames and clip.fps == kit.fps
        assert clip.audio.shape == (kit.clip_samples,)
        # AAC is lossy, but the decoded sound must be the generated one, in place (sample-exact sync)
        generated = out.waveforms[i].numpy()
        assert np.corrcoef(clip.audio, generated)[0, 1] > 0.9
        wav, rate = read_wav(mp4.with_suffix(".wav"))
        assert rate == kit.rate and np.abs(wav - generated).max() < 1e-3  # 16-bit PCM
        with Image.open(mp4.with_suffix(".png")) as preview:
            assert preview.size[0] > 0 and preview.size[1] > 0
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["task"] == "svg" and settings["seed"] == 3 and settings["steps"] == 2
    assert settings["sampler"] == "ddim" and settings["guidance"] == {"audio": 1.0, "video": 1.0}
    assert settings["model_dir"] == str(pipe.model_dir) and settings["mmldm_version"]
    assert settings["files"] == ["svg-000.mp4", "svg-001.mp4"]
    assert (tmp_path / "config.yaml").is_file()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name or p.name.endswith(".tmp")]


def test_same_seed_same_output_different_seed_different(pipe):
    first = pipe(task="svg", n=1, steps=2, seed=7, progress=False)
    again = pipe(task="svg", n=1, steps=2, seed=7, progress=False)
    other = pipe(task="svg", n=1, steps=2, seed=8, progress=False)
    assert torch.equal(first.frames, again.frames) and torch.equal(first.waveforms, again.waveforms)
    assert (first.frames - other.frames).abs().max() > 1e-3
    assert (first.waveforms - other.waveforms).abs().max() > 1e-3


def test_sample_i_depends_only_on_seed_plus_i(pipe):
    batch = pipe(task="svg", n=2, steps=2, seed=5, class_label=0, guidance=2.0, progress=False)
    alone = pipe(task="svg", n=1, steps=2, seed=6, class_label=0, guidance=2.0, progress=False)
    assert batch.settings["sample_seeds"] == [5, 6]
    torch.testing.assert_close(batch.frames[1], alone.frames[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(batch.waveforms[1], alone.waveforms[0], atol=1e-4, rtol=0)
    assert (batch.frames[0] - batch.frames[1]).abs().max() > 1e-3


def test_a2v_keeps_the_given_audio_and_the_audio_steers_the_video(pipe, kit):
    low = torch.from_numpy(kit.tone(220))
    high = torch.from_numpy(kit.tone(1760))
    out_low = pipe(task="a2v", audio=low, steps=2, seed=0, progress=False)
    out_high = pipe(task="a2v", audio=high, steps=2, seed=0, progress=False)
    assert torch.equal(out_low.waveforms[0], low)  # the output audio IS the given audio
    assert (out_low.frames - out_high.frames).abs().max() > 1e-3  # same seed: only the condition differs


def test_a2v_keeps_all_of_a_file_bit_exact_and_generates_a_clip_per_clip(pipe, kit, media):
    out, events = generate_observed(pipe, task="a2v", audio=media["sounding"], steps=2)
    audio, _ = read_wav(media["sounding"], sample_rate=kit.rate)
    frames = len(audio) * kit.frames // kit.clip_samples  # whole frames of the file: 12 (1.5 clips)
    assert out.frames.shape[1] == frames == 12 and out.settings["clips"] == 2
    assert torch.equal(out.waveforms[0], torch.from_numpy(audio[: frames * kit.clip_samples // kit.frames]))
    assert out.settings["input"] == str(media["sounding"])
    # clip 2 is conditioned on its window of the audio: real audio, no padding, the window ending where
    # the file's whole frames end (so it overlaps clip 1's by half a clip); clip 1 does not end where that
    # window starts, so clip 2 is given no previous clip (it would read it shifted by half a clip)
    second = events["clip"][1]["conditions"]
    assert "prev_video" not in second and "prev_audio" not in second
    last = torch.from_numpy(audio[(frames - kit.frames) * 1600:frames * 1600])
    torch.testing.assert_close(second["audio_cond"], pipe.encode_audio(last[None]))
    # two whole clips: the second window starts where the first clip ends, and is conditioned on it
    out, events = generate_observed(pipe, task="a2v", audio=torch.from_numpy(np.concatenate(
        [kit.tone(300), kit.tone(900)])), steps=2)
    second = events["clip"][1]["conditions"]
    assert torch.equal(second["prev_video"], events["latents"][0]["latents"]["video"])
    assert torch.equal(second["prev_audio"], events["clip"][0]["conditions"]["audio_cond"])


def test_overlapping_last_window_fills_only_what_the_clip_before_left(pipe, kit, monkeypatch):
    """A span of 1.5 clips: clip 2's window overlaps clip 1's by half a clip; the output keeps clip 1's
    frames and audio for the overlap and takes clip 2's second half for the rest."""
    decoded = []
    original = pipe._pixels

    def marked(video_latents, audio_latents, frame_decoder):
        frames, image = original(video_latents, audio_latents, frame_decoder)
        index = len(decoded)
        decoded.append(index)
        # clip k's frame j becomes k / 2 + j / 100 - 0.5: where each output frame came from is then visible
        marks = index / 2 + torch.arange(frames.shape[1], dtype=frames.dtype) / 100 - 0.5
        return marks.view(1, -1, 1, 1, 1).expand_as(frames).clone(), image

    monkeypatch.setattr(pipe, "_pixels", marked)
    wave = torch.from_numpy(np.concatenate([kit.tone(300), kit.tone(900)[: kit.clip_samples // 2]]))
    out = pipe(task="a2v", audio=wave, steps=1, progress=False)
    half = kit.frames // 2
    assert out.frames.shape[1] == kit.frames + half and decoded == [0, 1]
    marks = out.frames[0, :, 0, 0, 0]
    expected = torch.cat([torch.arange(kit.frames) / 100, 0.5 + torch.arange(half, kit.frames) / 100]) - 0.5
    torch.testing.assert_close(marks, expected.float())
    frames = torch.rand(kit.frames + half, 3, kit.size, kit.size) * 2 - 1
    v2a = pipe(task="v2a", video=frames, steps=1, progress=False)
    assert torch.equal(v2a.frames[0], frames) and v2a.waveforms.shape == (1, (kit.frames + half) * 1600)


def test_a2v_and_v2a_take_a_span_of_the_input(pipe, kit):
    wave = torch.from_numpy(np.concatenate([kit.tone(300), kit.tone(600), kit.tone(900)]))  # 3 clips
    out = pipe(task="a2v", audio=wave, start=0.8, seconds=1.2, steps=1, progress=False)
    assert torch.equal(out.waveforms[0], wave[12800:12800 + 19200]) and out.frames.shape[1] == 12
    frames = torch.rand(30, 3, kit.size, kit.size) * 2 - 1
    v2a = pipe(task="v2a", video=frames, start=0.5, steps=1, progress=False)
    assert torch.equal(v2a.frames[0], frames[5:]) and v2a.waveforms.shape == (1, 25 * kit.clip_samples // 8)
    for kwargs, words in [(dict(start=4.0), "beyond its end"), (dict(start=2.0, seconds=1.0), "beyond its end"),
                          (dict(seconds=0.5), "shorter than one clip")]:
        with pytest.raises(DataError, match=words):
            pipe(task="a2v", audio=wave, steps=1, progress=False, **kwargs)
    with pytest.raises(DataError, match="silent"):
        pipe(task="a2v", audio=torch.zeros(kit.clip_samples), steps=1, progress=False)


def test_v2a_keeps_the_given_video_and_the_video_steers_the_audio(pipe, kit, media):
    square = torch.from_numpy(kit.moving_square(seed=0)).permute(0, 3, 1, 2).float() / 127.5 - 1
    other = torch.from_numpy(kit.moving_square(seed=5)).permute(0, 3, 1, 2).float() / 127.5 - 1
    out = pipe(task="v2a", video=square, steps=2, seed=0, progress=False)
    out_other = pipe(task="v2a", video=other, steps=2, seed=0, progress=False)
    assert torch.equal(out.frames[0], square)  # frame-exact: the given video is kept
    assert (out.waveforms - out_other.waveforms).abs().max() > 1e-3
    from_file = pipe(task="v2a", video=media["silent_video"], steps=2, progress=False)
    clip = read_av(media["silent_video"], fps=kit.fps, sample_rate=kit.rate, size=kit.size, require_audio=False)
    expected = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # all of the file
    assert torch.equal(from_file.frames[0], expected)


@pytest.mark.parametrize("task", ["a2v", "v2a"])
def test_given_modality_follows_its_forward_process(pipe, kit, task):
    """Paper Sec. 3.3: in p(v | a) the noisy audio is the given audio noised to t (Eq. 6), with one
    noise draw of the sample's for every step; only the other modality is integrated."""
    if task == "a2v":
        wave = torch.from_numpy(kit.tone(440))
        given, key, kwargs = pipe.encode_audio(wave[None]), "audio", {"audio": wave}
    else:
        frames = (torch.from_numpy(kit.moving_square()).permute(0, 3, 1, 2).float() / 127.5 - 1).contiguous()
        given, key, kwargs = pipe.encode_video(frames[None]), "video", {"video": frames}
    _, events = generate_observed(pipe, task=task, steps=3, guidance=1.0, seed=4, **kwargs)
    steps = events["step"]
    assert len(steps) == 3 and torch.equal(events["clip"][0]["known"][key], given)
    # the noise of the first step's forward process, x_t = a_t given + s_t eps, is the noise of every step's
    first = steps[0]
    signal = pipe.objective.add_noise(given, torch.zeros_like(given), first["t"])  # a_t * given
    scale = pipe.objective.add_noise(torch.zeros_like(given), torch.ones_like(given), first["t"])  # s_t
    eps = (first["x"][key] - signal) / scale
    for step in steps:
        want = pipe.objective.add_noise({key: given}, {key: eps}, step["t"])[key]
        torch.testing.assert_close(step["x"][key], want)
    other = "video" if key == "audio" else "audio"
    assert not torch.allclose(steps[1]["x"][other], steps[0]["x"][other])  # the other modality moves
    assert not torch.allclose(steps[1]["x"][key], steps[0]["x"][key])  # and the given one is re-noised


def test_audio_continuation_goes_over_the_span_clip_after_clip_then_continues(pipe, kit):
    wave = torch.from_numpy(np.concatenate([kit.tone(300), kit.tone(900)[: kit.clip_samples // 2]]))  # 1.5 clips
    out, events = generate_observed(pipe, task="audio-continuation", audio=wave, continue_seconds=1.2, steps=2,
                                    guidance=1.0)
    span = 12 * kit.clip_samples // kit.frames
    assert out.frames.shape[1] == 12 + 12 and out.waveforms.shape[1] == 24 * kit.clip_samples // kit.frames
    assert torch.equal(out.waveforms[0, :span], wave)  # the given audio, bit for bit
    assert out.waveforms[0, span:].abs().max() > 0 and out.settings["clips"] == 4
    assert out.settings["continue_seconds"] == 1.2
    clips, kept = events["clip"], [event["latents"] for event in events["latents"]]
    # the last window ends where the span ends, the first starts where it starts: real audio in both,
    # overlapping by half a clip, no padding
    torch.testing.assert_close(clips[0]["conditions"]["audio_cond"],
                               pipe.encode_audio(wave[None, : kit.clip_samples]))
    torch.testing.assert_close(clips[1]["conditions"]["audio_cond"],
                               pipe.encode_audio(wave[None, kit.clip_samples // 2:]))
    assert "prev_audio" not in clips[0]["conditions"] and set(clips[0]["known"]) == {"audio"}
    assert "prev_video" not in clips[1]["conditions"]  # it overlaps clip 1: no shifted previous clip
    for index in (2, 3):  # the new clips follow the clip before, in both modalities, nothing given
        assert set(clips[index]["conditions"]) == {"prev_audio", "prev_video"} and clips[index]["known"] == {}
        assert torch.equal(clips[index]["conditions"]["prev_audio"], kept[index - 1]["audio"])
        assert torch.equal(clips[index]["conditions"]["prev_video"], kept[index - 1]["video"])


def test_video_continuation_keeps_the_given_frames_and_follows_them(pipe, kit, media):
    frames = torch.rand(12, 3, kit.size, kit.size) * 2 - 1
    out, events = generate_observed(pipe, task="video-continuation", video=frames, steps=2, guidance=1.0)
    assert out.frames.shape[1] == 12 + kit.frames and torch.equal(out.frames[0, :12], frames)
    assert out.waveforms.shape[1] == (12 + kit.frames) * kit.clip_samples // kit.frames
    # 1.5 clips of frames: the first window is the span's first clip, the second ends where it ends
    torch.testing.assert_close(events["clip"][0]["conditions"]["video_cond"], pipe.encode_video(frames[None, :8]))
    torch.testing.assert_close(events["clip"][1]["conditions"]["video_cond"], pipe.encode_video(frames[None, 4:]))
    assert set(events["clip"][2]["conditions"]) == {"prev_audio", "prev_video"}
    from_file = pipe(task="video-continuation", video=media["sounding"], steps=1, guidance=1.0, progress=False)
    clip = read_av(media["sounding"], fps=kit.fps, sample_rate=kit.rate, size=kit.size)  # 12 frames
    given = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(from_file.frames[0, :12], given) and from_file.frames.shape[1] == 12 + kit.frames


def test_guidance_scales_are_passed_per_modality_and_uncond_drops_the_condition(pipe, kit):
    out, events = generate_observed(pipe, task="a2v", audio=torch.from_numpy(kit.tone(440)), class_label=2,
                                    guidance=(2.0, 5.0), steps=2)
    assert events["settings"][0]["settings"].guidance == {"audio": 2.0, "video": 5.0}
    clip = events["clip"][0]
    cond, uncond = clip["conditions"], clip["unconditional"]
    assert cond["audio_cond"].abs().max() > 0 and uncond["audio_cond"].abs().max() == 0
    assert cond["class_labels"].tolist() == [2]
    assert uncond["class_labels"].tolist() == [pipe.generator.null_class]
    assert out.settings["guidance_applied"] and "audio condition" in out.settings["unconditional_branch_drops"]
    # the video scale changes the video (the arithmetic itself is mmldm.diffusion's, tested there)
    weaker = pipe(task="a2v", audio=torch.from_numpy(kit.tone(440)), class_label=2, guidance=(2.0, 1.0), steps=2,
                  progress=False)
    assert (out.frames - weaker.frames).abs().max() > 1e-3


def test_svg_without_class_has_nothing_to_guide(pipe):
    out, events = generate_observed(pipe, task="svg", steps=1, guidance=(3.0, 3.0))
    assert events["clip"][0]["conditions"] == {} and events["clip"][0]["unconditional"] is None
    assert out.settings["guidance_applied"] is False


def test_long_first_clip_is_svg_then_each_clip_follows_the_previous(pipe, kit):
    out, events = generate_observed(pipe, task="long", seconds=2.0, n=2, steps=2, guidance=1.0)
    frames = round(2.0 * kit.fps)  # 20 frames = 3 clips of 8, trimmed
    clips, kept = events["clip"], [event["latents"] for event in events["latents"]]
    assert len(clips) == len(kept) == 3 and out.settings["clips"] == 3
    assert out.frames.shape == (2, frames, 3, kit.size, kit.size)
    assert out.waveforms.shape == (2, frames * kit.clip_samples // kit.frames)
    assert clips[0]["conditions"] == {}  # plain svg: no previous-clip latents
    for index in (1, 2):
        conditions = clips[index]["conditions"]
        assert torch.equal(conditions["prev_audio"], kept[index - 1]["audio"])
        assert torch.equal(conditions["prev_video"], kept[index - 1]["video"])
    assert [step["clip"] for step in events["step"]] == [0, 0, 1, 1, 2, 2]


def test_long_audio_has_no_click_at_clip_seams(pipe, kit, monkeypatch):
    """Clips whose decoded sound differs (tones of different pitch and phase, as a trained
    model's consecutive clips would): the long wave has no step at a seam larger than inside."""
    from mmldm.data.audio_image import log_mel, mel_to_image
    from mmldm.evaluation.long_video import seam_jumps

    tones = iter([(440, 0.0), (660, 1.0), (550, 2.0), (880, 0.5)])

    def decode_to_tones(latents, labels=None, generator=None, progress=False, frames=None, steps=None):
        n = latents["audio"].shape[0]
        freq, phase = next(tones)
        wave = torch.from_numpy(kit.tone(freq, phase=phase))
        image = mel_to_image(log_mel(wave, pipe.audio_cfg), kit.size, pipe.audio_cfg) * 2 - 1
        return torch.zeros(n, kit.frames, 3, kit.size, kit.size), image.expand(n, -1, -1, -1)

    monkeypatch.setattr(pipe, "decode", decode_to_tones)
    out = pipe(task="long", seconds=3.2, steps=1, progress=False)
    wave = out.waveforms[0]
    seams = [k * kit.clip_samples for k in range(1, 4)]
    at_seams, inside = seam_jumps(wave, seams, radius=2)
    assert at_seams <= inside
    assert at_seams <= float((wave[1:] - wave[:-1]).abs().quantile(0.99))  # not even a rare step
    for k in range(4):  # every clip still sounds
        assert wave[k * kit.clip_samples:(k + 1) * kit.clip_samples].abs().max() > 0.03


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(task="draw"), ConfigError, "unknown task"),
    (dict(task="a2v"), ConfigError, "needs --audio"),
    (dict(task="svg", audio="x.wav"), ConfigError, "takes no input"),
    (dict(task="v2a", audio="x.wav"), ConfigError, "takes --video"),
    (dict(task="long"), ConfigError, "needs --seconds"),
    (dict(task="long", seconds=-1.0), ConfigError, "positive"),
    (dict(task="long", seconds=0.3), ConfigError, "shorter than one clip"),
    (dict(task="svg", seconds=3.0), ConfigError, "applies to task long"),
    (dict(task="svg", start=1.0), ConfigError, "--start applies to tasks with a given clip"),
    (dict(task="a2v", audio="x.wav", continue_seconds=1.0), ConfigError, "applies to the continuation tasks"),
    (dict(task="audio-continuation", audio=torch.ones(12800), continue_seconds=-1.0), ConfigError, "positive"),
    (dict(task="audio-continuation", audio=torch.ones(12800), continue_seconds=0.01), ConfigError,
     "shorter than one frame"),
    (dict(task="svg", class_label=9), ConfigError, "classes 0..2"),
    (dict(task="svg", sampler="euler"), ConfigError, "does not fit"),
    (dict(task="a2v", audio=torch.zeros(100)), DataError, "shorter than one clip"),
    (dict(task="v2a", video=torch.zeros(8, 3, 32, 32)), DataError, "frames must be"),
])
def test_bad_arguments_are_one_line_errors(pipe, kwargs, error, words):
    with pytest.raises(error) as info:
        pipe(steps=1, progress=False, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_bf16_autocast_runs(pipe):
    pipe_bf16 = type(pipe)(pipe.vae, pipe.autoencoder, pipe.generator, pipe.generation, pipe.audio_cfg,
                           pipe.vocoder, dtype=torch.bfloat16)
    out = pipe_bf16(task="svg", steps=1, progress=False)
    assert out.frames.dtype == torch.float32 and torch.isfinite(out.waveforms).all()


def test_encode_video_reads_only_key_frames_and_matches_encoding_every_frame(pipe, kit):
    frames = torch.from_numpy(kit.moving_square(seed=2)).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
    every_frame = pipe.autoencoder.encode_video(pipe.vae.encode_frames(frames)).mode()
    assert torch.allclose(pipe.encode_video(frames), every_frame, atol=1e-6)


def test_decoder_steps_reach_the_signal_decoder(pipe, monkeypatch):
    seen = []
    real = pipe.autoencoder.decode

    def spy(*args, **kwargs):
        seen.append(kwargs["steps"])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe.autoencoder, "decode", spy)
    out = pipe(task="svg", steps=1, decoder_steps=1, progress=False)
    default = pipe(task="svg", steps=1, progress=False)
    assert seen == [1, pipe.autoencoder.cfg.sampling.steps]
    assert out.settings["decoder_steps"] == 1 and default.settings["decoder_steps"] == 3
    assert (out.frames - default.frames).abs().max() > 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_the_same_seed(pipe, model_dir):
    """All noise comes from a CPU generator, so a seed means the same samples on any device."""
    from mmldm.pipeline import SoundingVideoPipeline

    kwargs = dict(task="long", seconds=1.6, steps=2, class_label=1, guidance=(2.0, 2.0), progress=False)
    cpu = pipe(**kwargs)
    gpu = SoundingVideoPipeline.from_pretrained(model_dir, device="cuda")(**kwargs)
    assert gpu.frames.shape == cpu.frames.shape and gpu.frames.device.type == "cpu"
    assert (gpu.frames - cpu.frames).abs().max() < 0.05


def _kept_latents(pipe, **kwargs) -> torch.Tensor:
    """The generated video latents [n, Cv, Hv, Wv] of a call (its first clip)."""
    _, events = generate_observed(pipe, **kwargs)
    return events["latents"][0]["latents"]["video"]


def test_sync_guidance_lowers_the_generators_own_video_to_audio_error(pipe, kit):
    wave = torch.from_numpy(kit.tone(660))
    given = pipe.encode_audio(wave[None]).expand(4, -1, -1, -1)
    common = dict(task="a2v", audio=wave, n=4, steps=4, seed=1)
    plain = _kept_latents(pipe, sync_guidance=0.0, **common)
    guided = _kept_latents(pipe, sync_guidance=0.5, **common)
    assert (plain - guided).abs().max() > 1e-3
    noise = pipe.latent_noise([torch.Generator().manual_seed(100 + i) for i in range(4)])
    critic = reranking.generator_critic(pipe.denoise, pipe.objective, given, noise, 1.0)
    with torch.no_grad():
        assert critic(guided).mean() < critic(plain).mean()


def test_sync_critic_at_time_one_hides_the_scored_audio_from_the_network(pipe):
    """The fixture's epsilon schedule keeps sqrt(alpha_bar_T) ~ 0.07 of the signal at its last
    step; at time 1 the critic must feed pure noise, so two audio targets give the same input."""
    assert pipe.objective.prediction == "epsilon"
    shape = (2, pipe.generator.cfg.audio_channels, *pipe.generator.cfg.audio_size)
    video = torch.randn(2, pipe.generator.cfg.video_channels, *pipe.generator.cfg.video_size)
    inputs = []

    def network(x, t, **conditions):
        inputs.append({k: v.clone() for k, v in x.items()})
        return pipe.denoise(x, t, **conditions)

    noise = pipe.latent_noise([torch.Generator().manual_seed(7 + i) for i in range(2)])
    with torch.no_grad():
        for target in (torch.zeros(shape), 3.0 * torch.ones(shape)):
            for time in (1.0, 0.5):
                reranking.generator_critic(network, pipe.objective, target, noise, time)(video)
    at_one_zero, at_half_zero, at_one_three, at_half_three = inputs
    assert torch.equal(at_one_zero["audio"], at_one_three["audio"])  # nothing of the target at time 1
    assert not torch.allclose(at_half_zero["audio"], at_half_three["audio"])  # but part of it at 0.5


def test_sync_guidance_default_applies_to_a2v_only_and_is_recorded(pipe, kit, monkeypatch):
    wave = torch.from_numpy(kit.tone(440))
    plain = pipe(task="a2v", audio=wave, steps=2, progress=False)
    assert plain.settings["sync_guidance"] == 0.0
    sampling = pipe.generation.sampling.replace(sync_guidance=0.5)
    monkeypatch.setattr(pipe, "generation", dataclasses.replace(pipe.generation, sampling=sampling))
    by_default = pipe(task="a2v", audio=wave, steps=2, progress=False)
    assert by_default.settings["sync_guidance"] == 0.5
    explicit = pipe(task="a2v", audio=wave, steps=2, sync_guidance=0.5, progress=False)
    assert torch.equal(by_default.frames, explicit.frames)
    assert (by_default.frames - plain.frames).abs().max() > 1e-4
    assert pipe(task="svg", steps=1, progress=False).settings["sync_guidance"] == 0.0  # the default skips svg
    for kwargs, words in [(dict(task="svg", sync_guidance=0.2), "a2v only"),
                          (dict(task="a2v", audio=wave, sync_guidance=-1.0), "finite number >= 0"),
                          (dict(task="a2v", audio=wave, sync_guidance=float("inf")), "finite number >= 0")]:
        with pytest.raises(ConfigError, match=words) as info:
            pipe(steps=1, progress=False, **kwargs)
        assert "\n" not in str(info.value)


def _ranked(pipe, **kwargs) -> tuple[dict, dict, dict]:
    """``(candidates event of the first clip, kept latents of that clip, settings)`` of a reranked call."""
    out, events = generate_observed(pipe, **kwargs)
    return events["candidates"][0], events["latents"][0]["latents"], out.settings


def test_candidates_decode_the_one_the_critic_ranks_best(pipe):
    ranked, kept, settings = _ranked(pipe, task="svg", n=2, steps=2, seed=3, candidates=4)
    assert settings["candidates"] == 4 and settings["critic_times"] == list(pipe.generation.sampling.critic_times)
    pool = ranked["pool"]
    assert pool["video"].shape[0] == 8  # 2 samples x 4 candidates, sampled in one batch
    picks = [clips[0] for clips in settings["chosen_candidates"]]
    assert picks == ranked["picks"].tolist() and all(0 <= p < 4 for p in picks)
    for i, pick in enumerate(picks):  # the decoded latents are the chosen rows of the pool
        for key in ("audio", "video"):
            assert torch.equal(kept[key][i], pool[key][i * 4 + pick])
    # ranked by the generator's own error in predicting the audio from the video, lowest kept
    error = ranked["scores"]["generator"]
    assert list(ranked["scores"]) == ["generator"] and error.shape == (2, 4)
    assert picks == error.argmin(1).tolist() and error.argmin(1).tolist() != error.argmax(1).tolist()
    # every candidate of a sample is sampled in the sample's drawn class
    assert ranked["labels"].tolist() == [c for c in settings["sample_classes"] for _ in range(4)]


def test_generator_scores_sum_the_critic_over_the_critic_times(pipe):
    torch.manual_seed(1)
    latents = {"audio": torch.randn(3, 4, 2, 2), "video": torch.randn(3, 4, 4, 4)}
    noises = [pipe.latent_noise([torch.Generator().manual_seed(s) for s in range(3)]) for _ in range(2)]
    with torch.no_grad():
        total = reranking.generator_scores(pipe.denoise, pipe.objective, latents, noises, (0.7, 0.3))
        parts = [reranking.generator_critic(pipe.denoise, pipe.objective, latents["audio"], noise, time)(latents["video"])
                 for noise, time in zip(noises, (0.7, 0.3))]
    torch.testing.assert_close(total, parts[0] + parts[1], atol=0, rtol=0)
    # the audio that goes with a video scores better than another video's audio
    own = reranking.generator_critic(pipe.denoise, pipe.objective, latents["audio"], noises[0], 0.5)
    assert own(latents["video"]).shape == (3,)


def test_generator_critic_compares_a_samples_candidates_under_one_noise(pipe):
    # two samples of three candidates; candidates 0 and 2 of each sample are the same latents
    torch.manual_seed(0)
    rows = [0, 1, 0, 2, 3, 2]
    pool = {"audio": torch.randn(4, 4, 2, 2)[rows], "video": torch.randn(4, 4, 4, 4)[rows]}
    seeded = [torch.Generator().manual_seed(seed) for seed in (7, 8)]
    generators = [g for g in seeded for _ in range(3)]  # as the pipeline passes them: a sample's rows share it
    settings = SamplingSettings(candidates=3)
    common = pipe.critic_scores(pool, None, generators, settings)["generator"]
    assert common.shape == (2, 3)
    torch.testing.assert_close(common[:, 0], common[:, 2], atol=0, rtol=0)  # same latents, same noise
    assert (common[:, 0] - common[:, 1]).abs().min() > 0
    # drawn row by row from the same generators, the copies would be scored apart
    seeded = [torch.Generator().manual_seed(seed) for seed in (7, 8)]
    noises = [pipe.latent_noise([g for g in seeded for _ in range(3)]) for _ in settings.critic_times]
    with torch.no_grad():
        separate = reranking.generator_scores(pipe.denoise, pipe.objective, pool, noises,
                                              settings.critic_times).view(2, 3)
    assert (separate[:, 0] - separate[:, 2]).abs().min() > 1e-6


def test_rank_sum_adds_each_critics_ranks():
    scores = [torch.tensor([[0.1, 0.3, 0.2]]), torch.tensor([[3.0, 1.0, 2.0]])]  # ranks 0 2 1 and 2 0 1
    assert reranking.rank_sum(scores).tolist() == [[2, 2, 2]]
    assert reranking.rank_sum([torch.tensor([[1.0, 1.0, 0.0]])]).tolist() == [[1, 2, 0]]  # ties in order


def test_pick_candidates_keeps_each_samples_best_row():
    latents = {"audio": torch.arange(6.0)[:, None], "video": 10 * torch.arange(6.0)[:, None]}  # 2 samples x 3
    kept, picks = reranking.pick_candidates(latents, [torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.3, 0.1]])])
    assert picks.tolist() == [1, 2] and kept["audio"].flatten().tolist() == [1.0, 5.0]
    assert kept["video"].flatten().tolist() == [10.0, 50.0]
    # several critics: the lowest sum of ranks (first candidate on a tie)
    _, picks = reranking.pick_candidates(latents, [torch.tensor([[0.5, 0.1, 0.9], [0.1, 0.2, 0.3]]),
                                                   torch.tensor([[0.6, 0.2, 0.7], [0.3, 0.2, 0.1]])])
    assert picks.tolist() == [1, 0]  # ranks 1+1, 0+0, 2+2; then 0+2, 1+1, 2+0: a tie, the first


def test_two_critics_pick_the_lowest_sum_of_ranks(pipe, monkeypatch):
    sampling = pipe.generation.sampling.replace(critics=("generator", "contrastive"))
    monkeypatch.setattr(pipe, "generation", dataclasses.replace(pipe.generation, sampling=sampling))
    ranked, kept, settings = _ranked(pipe, task="svg", n=2, steps=2, seed=5, candidates=4)
    assert settings["critics"] == ["generator", "contrastive"]
    pool, scores = ranked["pool"], ranked["scores"]
    picks = [clips[0] for clips in settings["chosen_candidates"]]
    # the contrastive critic: minus the cosine similarity of the autoencoder's Eq. 1 embeddings of the
    # unscaled latents
    gen = pipe.generation
    semantic = pipe.autoencoder.semantic(pool["video"] / gen.video_latent_scale, pool["audio"] / gen.audio_latent_scale)
    video, audio = pipe.autoencoder.contrastive.embed(semantic.video, semantic.audio)
    similarity = torch.nn.functional.cosine_similarity(video, audio, dim=-1).view(2, 4)
    torch.testing.assert_close(-scores["contrastive"], similarity, atol=1e-5, rtol=0)
    error = scores["generator"]
    ranks = error.argsort(1).argsort(1) + (-similarity).argsort(1).argsort(1)  # no ties here
    assert picks == ranks.argmin(1).tolist()
    # this seed tells the sum of ranks from either critic alone
    assert picks != error.argmin(1).tolist() and picks != similarity.argmax(1).tolist()
    for i, pick in enumerate(picks):
        assert torch.equal(kept["video"][i], pool["video"][i * 4 + pick])


@pytest.mark.parametrize("given", ["model", "argument"])
def test_contrastive_critic_alone_keeps_the_most_similar_pair(pipe, monkeypatch, given):
    kwargs = {}
    if given == "model":
        sampling = pipe.generation.sampling.replace(critics=("contrastive",))
        monkeypatch.setattr(pipe, "generation", dataclasses.replace(pipe.generation, sampling=sampling))
    else:  # generate(critics=...) overrides the model's ("generator" alone in the test model)
        kwargs = {"critics": ["contrastive"]}
    ranked, _, settings = _ranked(pipe, task="svg", n=2, steps=2, seed=5, candidates=3, **kwargs)
    assert settings["critics"] == ["contrastive"] and settings["critic_times"] == []
    similarity = reranking.contrastive_similarity(pipe.autoencoder, ranked["pool"], pipe.generation.scales).view(2, 3)
    assert [clips[0] for clips in settings["chosen_candidates"]] == similarity.argmax(1).tolist()


@pytest.mark.parametrize("critics, words", [(["clap"], "critics must be one or more distinct names"),
                                            ([], "critics must be one or more distinct names"),
                                            (["generator", "generator"], "distinct")])
def test_bad_critics_are_one_line_errors(pipe, critics, words):
    with pytest.raises(ConfigError, match=words):
        pipe(task="svg", n=1, steps=1, candidates=2, critics=critics, progress=False)


def test_contrastive_critic_needs_a_contrastively_trained_autoencoder(pipe):
    autoencoder = copy.deepcopy(pipe.autoencoder)
    autoencoder.cfg = dataclasses.replace(autoencoder.cfg, loss=dataclasses.replace(autoencoder.cfg.loss,
                                                                                    contrastive=0.0))
    with pytest.raises(ConfigError) as info:
        pipeline_module.SoundingVideoPipeline.assemble(
            vae=pipe.vae, autoencoder=autoencoder, generator=pipe.generator, audio_cfg=pipe.audio_cfg,
            generation=GenerationConfig(sampling=SamplingSettings(critics=("generator", "contrastive"))))
    assert "contrastive critic" in str(info.value) and "\n" not in str(info.value)
    without = pipeline_module.SoundingVideoPipeline.assemble(  # loads with the generator's critic alone
        vae=pipe.vae, autoencoder=autoencoder, generator=pipe.generator, audio_cfg=pipe.audio_cfg)
    with pytest.raises(ConfigError, match="contrastive critic"):
        without(task="svg", n=1, steps=1, candidates=2, critics=["contrastive"], progress=False)


def test_drawn_classes_follow_the_class_prior(pipe, monkeypatch):
    with pytest.raises(ConfigError, match="class_prior has 2 weights, the generator 3 classes"):
        pipeline_module.SoundingVideoPipeline.assemble(
            vae=pipe.vae, autoencoder=pipe.autoencoder, generator=pipe.generator, audio_cfg=pipe.audio_cfg,
            generation=GenerationConfig(class_prior=(1.0, 1.0)))

    def drawn(prior):
        monkeypatch.setattr(pipe, "generation", dataclasses.replace(pipe.generation, class_prior=prior))
        return pipe(task="svg", n=4, steps=1, seed=11, candidates=2, decoder_steps=1,
                    progress=False).settings["sample_classes"]

    uniform = drawn(())
    assert drawn((2.0, 2.0, 2.0)) == uniform  # equal weights: the uniform draw itself
    assert drawn((0.0, 1.0, 0.0)) == [1, 1, 1, 1]
    assert set(drawn((1.0, 0.0, 3.0))) <= {0, 2}
    # the draw is a pure function of the samples' generators and the prior
    generators = [torch.Generator().manual_seed(11 + i) for i in range(4)]
    assert reranking.draw_classes(generators, 3).tolist() == uniform


def test_candidate_zero_is_what_one_candidate_samples(pipe, kit):
    wave = torch.from_numpy(kit.tone(550))
    common = dict(task="a2v", audio=wave, n=2, steps=2, seed=9)
    out, events = generate_observed(pipe, candidates=1, **common)
    single = events["latents"][0]["latents"]
    assert out.settings["candidates"] == 1 and out.settings["chosen_candidates"] == [[0], [0]]
    assert "candidates" not in events
    ranked, _, settings = _ranked(pipe, candidates=3, **common)
    pool = ranked["pool"]
    torch.testing.assert_close(pool["video"][0::3], single["video"], atol=1e-5, rtol=0)
    assert (pool["video"][1::3] - single["video"]).abs().max() > 1e-3  # the other candidates differ
    assert torch.equal(pool["audio"], single["audio"].repeat_interleave(3, 0))  # a2v: every candidate keeps the audio


def test_long_picks_a_candidate_per_clip_and_continues_from_it(pipe):
    out, events = generate_observed(pipe, task="long", seconds=1.6, n=1, steps=1, seed=2, candidates=3)
    settings = out.settings
    assert settings["clips"] == 2 and len(settings["chosen_candidates"][0]) == 2
    assert [event["picks"].tolist() for event in events["candidates"]] == [[p] for p in settings["chosen_candidates"][0]]
    # the second clip's sampler sees the kept first clip as previous clip, for all 3 candidates
    first_kept = events["latents"][0]["latents"]
    second = events["clip"][1]["conditions"]
    assert second["prev_video"].shape[0] == 3
    assert torch.equal(second["prev_video"], first_kept["video"][0:1].expand(3, -1, -1, -1))


@pytest.mark.parametrize("value", [0, -2, 1.5, True])
def test_bad_candidates_are_one_line_errors(pipe, value):
    with pytest.raises(ConfigError, match="candidates must be a positive integer") as info:
        pipe(task="svg", steps=1, candidates=value, progress=False)
    assert "\n" not in str(info.value)


def test_reranked_svg_draws_each_samples_class_first(pipe, kit):
    out, events = generate_observed(pipe, task="svg", n=3, steps=1, seed=11, candidates=2)
    classes = out.settings["sample_classes"]
    assert classes == events["classes"][0]["classes"].tolist()
    assert classes == reranking.draw_classes([torch.Generator().manual_seed(11 + i) for i in range(3)], 3).tolist()
    # every candidate of a sample is sampled in that sample's class
    assert torch.equal(events["clip"][0]["conditions"]["class_labels"], torch.tensor(classes).repeat_interleave(2))
    # a given class, one candidate, or a given modality: nothing is drawn
    assert pipe(task="svg", n=1, steps=1, candidates=2, class_label=1, progress=False).settings["sample_classes"] is None
    assert pipe(task="svg", n=1, steps=1, candidates=1, progress=False).settings["sample_classes"] is None
    wave = torch.from_numpy(kit.tone(440))
    assert pipe(task="a2v", audio=wave, steps=1, candidates=2, progress=False).settings["sample_classes"] is None


def test_settings_object_and_overrides_resolve_to_the_same_generation(pipe):
    settings = SamplingSettings(steps=2, audio_guidance=1.5, video_guidance=1.5, decoder_steps=1)
    by_object, events = generate_observed(pipe, task="svg", n=1, seed=4, class_label=1, settings=settings)
    by_overrides = pipe(task="svg", n=1, seed=4, class_label=1, steps=2, guidance=1.5, decoder_steps=1,
                        progress=False)
    assert torch.equal(by_object.frames, by_overrides.frames)
    resolved = events["settings"][0]["settings"]
    assert resolved.sampler == "ddim" and resolved.decoder_steps == 1  # completed with the model's defaults
    assert pipe.resolve_settings("svg", settings, steps=3).steps == 3  # overrides apply on top of settings
    # the model's sync guidance default is switched off for tasks other than a2v; asked for, it is an error
    with_sync = settings.replace(sync_guidance=0.3)
    assert pipe.resolve_settings("svg", with_sync).sync_guidance == 0.0
    assert pipe.resolve_settings("a2v", with_sync).sync_guidance == 0.3
    with pytest.raises(ConfigError, match="a2v only"):
        pipe.resolve_settings("svg", settings, sync_guidance=0.3)


def test_a_long_generation_that_cannot_fit_in_memory_is_refused_before_any_work(pipe):
    events = []
    with pytest.raises(ConfigError) as info:
        pipe(task="long", seconds=1e7, n=2, progress=False, callback=events.append)
    message = str(info.value)
    assert "memory available" in message and "--batch-size" in message and "\n" not in message
    assert [event["stage"] for event in events] == ["settings"]  # nothing was sampled


def test_more_candidates_than_memory_holds_are_refused_before_any_work(pipe, monkeypatch):
    import collections

    import psutil

    memory = collections.namedtuple("memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(2**40))
    rows_in_a_tib = pipe._max_rows()
    assert rows_in_a_tib > 1000  # a tiny generator and a TiB: a generous bound
    ten_rows = memory(2**40 * 10 // rows_in_a_tib)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: ten_rows)
    rows = pipe._max_rows()
    assert 8 <= rows <= 12
    events = []
    with pytest.raises(ConfigError) as info:
        pipe(task="svg", n=2, candidates=rows // 2 + 1, progress=False, callback=events.append)
    message = str(info.value)
    assert f"2 sample(s) x {rows // 2 + 1} candidates" in message and "--batch-size" in message
    assert "\n" not in message
    assert not any(event["stage"] in ("clip", "step") for event in events)  # nothing was sampled
    pipe._check_rows(1, pipe.resolve_settings("svg", None, candidates=rows))  # what fits passes


def test_the_candidate_bound_counts_the_decodes_the_sync_critic_keeps(pipe, monkeypatch):
    import collections
    import dataclasses

    import psutil

    memory = collections.namedtuple("memory", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(2**40))
    plain, decoding = pipe._max_rows(), pipe._max_rows(decodes_candidates=True)
    side = pipe.frame_size // pipe.vae.downsample_factor
    kept = 4 * (pipe.num_frames + 1) * pipe.vae.latent_channels * side * side  # bytes a candidate keeps
    assert 0.5 * 2**40 / decoding - 0.5 * 2**40 / plain == pytest.approx(kept, rel=0.01)
    settings = pipe.resolve_settings("svg", None, candidates=plain)
    pipe._check_rows(1, settings)  # the latent critics keep no decodes: the plain bound holds
    with pytest.raises(ConfigError, match="candidates do not fit"):
        pipe._check_rows(1, dataclasses.replace(settings, critics=("sync",)))


def test_a_continuation_too_long_for_memory_is_refused_before_any_work(pipe, kit, monkeypatch):
    def no_read(*args, **kwargs):
        raise AssertionError("the given audio was read")

    monkeypatch.setattr(pipeline_module, "load_audio", no_read)
    events = []
    with pytest.raises(ConfigError) as info:
        pipe(task="audio-continuation", audio=torch.from_numpy(kit.tone(300)), continue_seconds=1e7, n=2,
             progress=False, callback=events.append)
    assert "memory available" in str(info.value) and "\n" not in str(info.value)
    assert [event["stage"] for event in events] == ["settings"]


def test_one_progress_bar_counts_every_clip_of_the_call(pipe, capsys):
    pipe(task="long", seconds=2.0, n=2, steps=2, guidance=1.0, progress=True)
    err = capsys.readouterr().err
    assert "generate long" in err and "ddim" not in err  # no bar of the sampler's own
    assert "9/9" in err  # 3 clips sampled, then 2 x 3 decoded
