"""SamplingSettings and generation.json: one validated settings type, and the sampler registry."""

from __future__ import annotations

import pytest

from mmldm.config import from_dict
from mmldm.diffusion import SAMPLERS, Sampler, make_objective
from mmldm.diffusion.registry import samplers_for
from mmldm.errors import ConfigError
from mmldm.generator.generation import GenerationConfig, SamplingSettings, guidance_pair


def test_replace_takes_every_user_form_of_guidance_and_keeps_none_as_unset():
    base = SamplingSettings(steps=12, audio_guidance=2.0, video_guidance=2.0)
    assert base.replace(guidance=3.0).guidance == {"audio": 3.0, "video": 3.0}
    assert base.replace(guidance=(1.0, 9.0)).guidance == {"audio": 1.0, "video": 9.0}
    assert base.replace(guidance=[4]).guidance == {"audio": 4.0, "video": 4.0}
    assert base.replace(guidance={"audio": 1, "video": 5}).guidance == {"audio": 1.0, "video": 5.0}
    assert base.replace(steps=None, guidance=None) == base
    assert base.replace(critics="contrastive").critics == ("contrastive",)
    assert base.replace(critics=["generator", "contrastive"]).critics == ("generator", "contrastive")


@pytest.mark.parametrize("overrides, words", [
    (dict(sampler="plms"), "unknown sampler 'plms' (samplers: ddim, dpmpp, euler, heun)"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=True), "steps must be a positive integer"),
    (dict(decoder_steps=-1), "decoder steps must be a positive integer"),
    (dict(guidance=(1.0, 2.0, 3.0)), "one scale or two"),
    (dict(guidance={"audio": 1.0}), "must name audio and video"),
    (dict(guidance=float("nan")), "finite"),
    (dict(guidance="loud"), "must be numbers"),
    (dict(sync_guidance=-0.1), "sync_guidance must be a finite number >= 0"),
    (dict(candidates=0), "candidates must be a positive integer"),
    (dict(critics=["clap"]), "critics must be one or more distinct names of generator, contrastive"),
    (dict(critic_times=[0.0]), "critic_times must be one or more fractions"),
    (dict(stepz=3), "unknown sampling setting(s) stepz"),
])
def test_bad_settings_are_one_line_config_errors(overrides, words):
    with pytest.raises(ConfigError) as info:
        SamplingSettings().replace(**overrides)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_guidance_pair_reads_numbers_pairs_and_dicts():
    assert guidance_pair(2) == (2.0, 2.0) and guidance_pair((1, 3)) == (1.0, 3.0)
    assert guidance_pair({"video": 4, "audio": 1}) == (1.0, 4.0)


def test_generation_json_of_the_first_layout_is_upgraded():
    flat = {"diffusion": {"objective": "flow"}, "audio_latent_scale": 0.5, "steps": 12, "audio_guidance": 2.0,
            "video_guidance": 3.0, "candidates": 4, "critics": ["generator"], "class_prior": [1.0, 1.0]}
    generation = from_dict(GenerationConfig, flat)
    assert generation.sampling == SamplingSettings(steps=12, audio_guidance=2.0, video_guidance=3.0, candidates=4)
    assert generation.scales == {"audio": 0.5, "video": 1.0} and generation.class_prior == (1.0, 1.0)
    nested = from_dict(GenerationConfig, {"sampling": {"steps": 3}})
    assert nested.sampling.steps == 3
    with pytest.raises(ConfigError, match="unknown config key 'sampling.stepz'"):
        from_dict(GenerationConfig, {"sampling": {"stepz": 3}})


def test_objectives_take_their_samplers_from_the_registry(monkeypatch):
    assert make_objective("epsilon").samplers == ("ddim", "dpmpp") == samplers_for("epsilon")
    assert make_objective("flow").samplers == ("euler", "heun")
    monkeypatch.setitem(SAMPLERS, "midpoint", Sampler("velocity", SAMPLERS["euler"].scheduler, "test"))
    assert make_objective("flow").samplers == ("euler", "heun", "midpoint")
    assert SamplingSettings(sampler="midpoint").sampler == "midpoint"  # the settings type derives from it too


def test_time_at_is_the_objectives_own_arithmetic():
    epsilon, flow = make_objective("epsilon"), make_objective("flow")
    assert epsilon.time_at(1.0, 2).tolist() == [999, 999] and epsilon.time_at(0.5, 1).tolist() == [500]
    assert flow.time_at(0.25, 3).tolist() == [0.25] * 3 and flow.time_at(1.0, 1).dtype.is_floating_point
    assert epsilon.config() == make_objective(epsilon.config()).config()
