"""A model folder's sync critic (``sync_critic/``): saved and loaded with the folder, the critic
"sync" ranks every candidate decoded, the kept candidate's decode is what the output shows, only the
frames a clip adds to the output are judged, and the folder's per-task defaults select it;
``mmldm export sync-critic`` checks the clips it judges."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from mmldm.cli.main import main
from mmldm.config import dump_yaml, to_dict
from mmldm.critic.network import (
    SYNC_CRITIC_NAME,
    SyncCritic,
    SyncCriticConfig,
    SyncCriticInfo,
)
from mmldm.critic.stage import SyncCriticTrainConfig
from mmldm.data.audio_image import waveform_to_audio_image
from mmldm.data.config import ClipDataConfig
from mmldm.errors import ConfigError, WeightsError
from mmldm.pipeline import SoundingVideoPipeline

KW = {"n": 1, "seed": 3, "steps": 2, "progress": False}
FPS, FRAMES, RATE, SIZE = 10.0, 8, 16000, 16  # the tiny pipeline's (tests/pipeline/conftest.py)
CLIP_SAMPLES = int(FRAMES / FPS * RATE)


def tone(freq: float, samples: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(samples) / RATE)).astype(np.float32)


def critic_for(seed: int = 0, **info) -> tuple[SyncCritic, SyncCriticInfo]:
    torch.manual_seed(seed)
    critic = SyncCritic(SyncCriticConfig(frame_size=SIZE, audio_image_size=SIZE, video_channels=(4, 8),
                                         frame_width=16, audio_width=16, embed_dim=8))
    return critic, SyncCriticInfo(critic=critic.cfg, **{"num_frames": FRAMES, "fps": FPS, "sample_rate": RATE, **info})


def with_critic(pipe: SoundingVideoPipeline, **kw) -> SoundingVideoPipeline:
    return SoundingVideoPipeline.assemble(vae=pipe.vae, autoencoder=pipe.autoencoder, generator=pipe.generator,
                                          objective=pipe.objective, audio_cfg=pipe.audio_cfg,
                                          generation=kw.pop("generation", pipe.generation), **kw)


@pytest.fixture(scope="module")
def critic_dir(pipe, tmp_path_factory):
    return with_critic(pipe, sync_critic=critic_for()).save_pretrained(tmp_path_factory.mktemp("critic") / "model")


@pytest.fixture(scope="module")
def judged(critic_dir) -> SoundingVideoPipeline:
    return SoundingVideoPipeline.from_pretrained(critic_dir)


class Recorder:
    """Wraps the critic's frame_similarity: what it was shown, and what it said."""

    def __init__(self, critic: SyncCritic):
        self.critic, self.calls = critic, []
        self.original = critic.frame_similarity

    def __call__(self, frames, image):
        similarity = self.original(frames, image)
        self.calls.append((frames.clone(), image.clone(), similarity.clone()))
        return similarity


def test_the_folder_keeps_its_sync_critic(critic_dir, judged):
    index = json.loads((critic_dir / "model_index.json").read_text())
    assert index["components"][SYNC_CRITIC_NAME] == SYNC_CRITIC_NAME
    original = critic_for()[0].state_dict()
    assert all(torch.equal(v, original[k]) for k, v in judged.sync_critic[0].state_dict().items())
    assert judged.resolved_config()["sync_critic"]["num_frames"] == FRAMES


def test_the_sync_critic_keeps_the_candidate_it_scores_best_and_the_output_shows_its_decode(judged, monkeypatch):
    """a2v of a clip and a half: every candidate of each clip decoded and scored against the given
    audio's window; the kept one is the best scored, and the output's frames are the very frames the
    critic judged (not a second decode); the last clip (overlapping the one before) is judged only
    on the frames it adds."""
    recorder = Recorder(judged.sync_critic[0])
    monkeypatch.setattr(judged.sync_critic[0], "frame_similarity", recorder)
    events = []
    audio = torch.from_numpy(tone(440.0, CLIP_SAMPLES + CLIP_SAMPLES // 2)).float()
    out = judged(task="a2v", audio=audio, candidates=3, critics=["sync"], frame_decoder="full",
                 callback=lambda e: events.append(e) if e["stage"] == "candidates" else None, **KW)
    assert out.frames.shape[1] == FRAMES + FRAMES // 2 and torch.equal(out.waveforms[0], audio)
    assert len(recorder.calls) == 2 == len(events)
    starts = [0, FRAMES // 2]
    for clip, ((frames, image, similarity), event) in enumerate(zip(recorder.calls, events, strict=True)):
        assert frames.shape[0] == 3 and image.shape[0] == 3
        window = audio[starts[clip] * RATE // 10:][:CLIP_SAMPLES]
        expected_image = waveform_to_audio_image(window[None], judged.audio_cfg, SIZE) * 2 - 1
        assert torch.allclose(image, expected_image.expand(3, -1, -1, -1))  # the given audio's own window
        scored = slice(0, FRAMES) if clip == 0 else slice(FRAMES // 2, FRAMES)
        expected = -similarity[:, scored].float().mean(1)
        assert torch.allclose(event["scores"]["sync"][0], expected, atol=1e-6)
        pick = int(event["picks"][0])
        assert pick == int(expected.argmin())
        begin = starts[clip] + (0 if clip == 0 else FRAMES // 2)
        shown = out.frames[0, begin:starts[clip] + FRAMES]
        # the same decode (up to a batched kernel's arithmetic); a second decode would draw other noise
        assert torch.allclose(shown, frames[pick, begin - starts[clip]:].clamp(-1, 1), atol=1e-5)
    assert out.settings["critics"] == ["sync"] and out.settings["chosen_candidates"][0] == [
        int(e["picks"][0]) for e in events]


def test_v2a_judges_the_given_frames_and_decodes_only_the_audio(judged, monkeypatch):
    recorder = Recorder(judged.sync_critic[0])
    monkeypatch.setattr(judged.sync_critic[0], "frame_similarity", recorder)
    video = torch.rand(FRAMES, 3, SIZE, SIZE) * 2 - 1
    decoded_frames = []
    original = judged._signal_decode
    monkeypatch.setattr(judged, "_signal_decode",
                        lambda *a, **k: decoded_frames.append(k.get("frames")) or original(*a, **k))
    out = judged(task="v2a", video=video, candidates=2, critics=["sync", "generator"], **KW)
    (frames, _, _), = recorder.calls
    assert torch.equal(frames, video[None].expand(2, -1, -1, -1, -1))
    assert decoded_frames == [[0]]  # the critic's decode was reused for the output: one decode in all
    assert out.settings["critics"] == ["sync", "generator"]


def test_svg_and_long_judge_both_decoded_modalities(judged, monkeypatch):
    recorder = Recorder(judged.sync_critic[0])
    monkeypatch.setattr(judged.sync_critic[0], "frame_similarity", recorder)
    out = judged(task="long", seconds=2 * FRAMES / FPS, candidates=2, critics=["sync"], frame_decoder="full", **KW)
    assert len(recorder.calls) == 2
    for clip, (frames, _, similarity) in enumerate(recorder.calls):
        pick = out.settings["chosen_candidates"][0][clip]
        assert torch.allclose(out.frames[0, clip * FRAMES:(clip + 1) * FRAMES], frames[pick], atol=1e-5)


def test_the_folder_per_task_defaults_select_it(pipe, tmp_path):
    generation = dataclasses.replace(pipe.generation, task_sampling={"a2v": {"critics": ["sync"], "candidates": 2}})
    directory = with_critic(pipe, sync_critic=critic_for(), generation=generation).save_pretrained(tmp_path / "m")
    model = SoundingVideoPipeline.from_pretrained(directory)
    assert model.resolve_settings("a2v").critics == ("sync",) and model.resolve_settings("a2v").candidates == 2
    assert model.resolve_settings("svg").critics == pipe.generation.sampling.critics
    assert model.resolve_settings("a2v", critics="generator").critics == ("generator",)  # the call's own wins
    # a per-task default of the sync critic without one is refused when the model loads
    shutil.rmtree(directory / SYNC_CRITIC_NAME)
    index = json.loads((directory / "model_index.json").read_text())
    del index["components"][SYNC_CRITIC_NAME]
    (directory / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="the sync critic needs a model folder with one"):
        SoundingVideoPipeline.from_pretrained(directory)


def test_asking_for_it_without_one_and_a_critic_of_other_clips_are_refused(pipe):
    with pytest.raises(ConfigError, match="the sync critic needs a model folder with one"):
        pipe(task="svg", candidates=2, critics=["sync"], **KW)
    critic, info = critic_for()
    with pytest.raises(ConfigError, match="judges clips of 16 frames"):
        with_critic(pipe, sync_critic=(critic, dataclasses.replace(info, num_frames=16)))


def test_a_broken_sync_critic_is_a_one_line_error(critic_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(critic_dir, broken)
    (broken / SYNC_CRITIC_NAME / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="sync critic"):
        SoundingVideoPipeline.from_pretrained(broken)
    with pytest.raises(WeightsError, match="sync critic"):
        SoundingVideoPipeline.from_pretrained(broken, low_memory=True)
    (broken / SYNC_CRITIC_NAME / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="sync critic"):
        SoundingVideoPipeline.from_pretrained(broken)


def test_low_memory_keeps_the_critic_resident(critic_dir):
    low = SoundingVideoPipeline.from_pretrained(critic_dir, low_memory=True)
    out = low(task="svg", candidates=2, critics=["sync"], **KW)
    assert out.settings["critics"] == ["sync"]
    assert {p.device.type for p in low.sync_critic[0].parameters()} == {"cpu"}


def _checkpoint(tmp_path, critic: SyncCritic, **data):
    """A `mmldm train sync-critic` checkpoint folder: its config and the model's weights."""
    from safetensors.torch import save_file

    from mmldm.training.checkpoint import module_weights_name

    checkpoint = tmp_path / "run" / "checkpoints" / "step_000010"
    checkpoint.mkdir(parents=True)
    cfg = SyncCriticTrainConfig(critic=critic.cfg, data=ClipDataConfig(
        **{"fps": FPS, "num_frames": FRAMES, "sample_rate": RATE, "size": SIZE, **data}))
    (checkpoint / "config.yaml").write_text(dump_yaml(to_dict(cfg)))
    save_file({k: v.contiguous() for k, v in critic.state_dict().items()},
              str(checkpoint / module_weights_name("model")))
    return checkpoint


def test_export_adds_it_and_makes_it_the_given_tasks_default(model_dir, tmp_path, config_yaml_describes):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    critic, _ = critic_for(seed=4)
    checkpoint = _checkpoint(tmp_path, critic)
    assert main(["export", "sync-critic", str(checkpoint), "--model", str(target), "--default",
                 "--critics", "sync", "generator"]) == 0
    loaded = SoundingVideoPipeline.from_pretrained(target)
    assert all(torch.equal(v, critic.state_dict()[k]) for k, v in loaded.sync_critic[0].state_dict().items())
    for task in ("a2v", "v2a", "audio-continuation", "video-continuation"):
        assert loaded.resolve_settings(task).critics == ("sync", "generator")
    assert "sync" not in loaded.resolve_settings("svg").critics
    config_yaml_describes(target, loaded, SYNC_CRITIC_NAME)
    # a critic of other clips: refused in one line, the folder left as it was
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain)
    wrong = _checkpoint(tmp_path / "wrong", critic, fps=25.0)
    assert main(["export", "sync-critic", str(wrong), "--model", str(plain)]) != 0
    assert not (plain / SYNC_CRITIC_NAME).exists()
    assert main(["export", "sync-critic", str(checkpoint), "--model", str(plain), "--default",
                 "--critics", "nope"]) != 0
    assert not (plain / SYNC_CRITIC_NAME).exists()
