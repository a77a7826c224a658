"""Condition mixing: rates, exclusivity, zeros where dropped, determinism, loss weights."""

import math

import pytest
import torch

from mmldm.errors import ConfigError
from mmldm.generator.conditioning import ConditioningConfig, mix_conditions

N = 20_000  # items per rate check: 4-sigma of a 5% rate is +-0.6 points


def _latents(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # strictly positive values, so "zero" can only come from the masking
    return torch.rand(n, 2, 2, 2, generator=g) + 0.5, torch.rand(n, 3, 4, 4, generator=g) + 0.5


def _within(observed: torch.Tensor, p: float, n: int) -> bool:
    """|rate - p| within 4 binomial standard deviations (plus a hair for p in {0, 1})."""
    return abs(float(observed.float().mean()) - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def _mix(cfg: ConditioningConfig, n: int = N, seed: int = 0, has_previous: torch.Tensor | None = None):
    audio, video = _latents(n)
    prev_audio, prev_video = _latents(n, seed=2)
    if has_previous is None:
        has_previous = torch.ones(n, dtype=torch.bool)
    labels = torch.arange(n) % 5
    mixed = mix_conditions(audio, video, cfg, torch.Generator().manual_seed(seed), class_labels=labels,
                           null_class=5, prev_audio=prev_audio, prev_video=prev_video, has_previous=has_previous)
    return audio, video, prev_audio, prev_video, labels, mixed


def test_paper_rates_and_previous_defaults():
    cfg = ConditioningConfig()
    _, _, _, _, labels, m = _mix(cfg)
    assert _within(m.context_dropped, 0.1, N)
    assert _within(m.audio_given, 0.05, N)
    assert _within(m.video_given, 0.05, N)
    both = m.prev_audio_given & m.prev_video_given
    only_audio = m.prev_audio_given & ~m.prev_video_given
    only_video = m.prev_video_given & ~m.prev_audio_given
    none = ~m.prev_audio_given & ~m.prev_video_given
    assert _within(both, 0.3, N) and _within(only_audio, 0.1, N) and _within(only_video, 0.1, N)
    assert _within(none, 0.5, N)
    # dropped items carry the null class, kept items their own label
    assert torch.equal(m.class_labels[m.context_dropped], torch.full((int(m.context_dropped.sum()),), 5))
    assert torch.equal(m.class_labels[~m.context_dropped], labels[~m.context_dropped])


def test_custom_rates_are_followed():
    cfg = ConditioningConfig(context_dropout=0.5, audio_to_video=0.2, video_to_audio=0.3, previous_both=0.0,
                             previous_audio=0.6, previous_video=0.4)
    _, _, _, _, _, m = _mix(cfg, seed=3)
    assert _within(m.context_dropped, 0.5, N)
    assert _within(m.audio_given, 0.2, N) and _within(m.video_given, 0.3, N)
    assert not bool((m.prev_audio_given & m.prev_video_given).any())
    assert _within(m.prev_audio_given, 0.6, N) and _within(m.prev_video_given, 0.4, N)


def test_cross_modal_conditions_are_exclusive_and_zero_elsewhere():
    cfg = ConditioningConfig(audio_to_video=0.4, video_to_audio=0.4)
    audio, video, prev_audio, prev_video, _, m = _mix(cfg, n=4000)
    assert not bool((m.audio_given & m.video_given).any())
    assert torch.equal(m.audio_cond[m.audio_given], audio[m.audio_given])
    assert bool((m.audio_cond[~m.audio_given] == 0).all())
    assert torch.equal(m.video_cond[m.video_given], video[m.video_given])
    assert bool((m.video_cond[~m.video_given] == 0).all())
    assert torch.equal(m.prev_audio[m.prev_audio_given], prev_audio[m.prev_audio_given])
    assert bool((m.prev_audio[~m.prev_audio_given] == 0).all())
    assert torch.equal(m.prev_video[m.prev_video_given], prev_video[m.prev_video_given])
    assert bool((m.prev_video[~m.prev_video_given] == 0).all())


def test_items_without_previous_clip_get_zeros():
    n = 4000
    has_previous = torch.arange(n) % 2 == 0
    cfg = ConditioningConfig(previous_both=1.0, previous_audio=0.0, previous_video=0.0)
    _, _, prev_audio, prev_video, _, m = _mix(cfg, n=n, has_previous=has_previous)
    assert torch.equal(m.prev_audio_given, has_previous) and torch.equal(m.prev_video_given, has_previous)
    assert bool((m.prev_audio[~has_previous] == 0).all()) and bool((m.prev_video[~has_previous] == 0).all())
    assert torch.equal(m.prev_video[has_previous], prev_video[has_previous])
    # no previous latents at all: zeros everywhere, nothing flagged
    audio, video = _latents(64)
    none = mix_conditions(audio, video, cfg, torch.Generator().manual_seed(0))
    assert not bool(none.prev_audio_given.any()) and bool((none.prev_video == 0).all())
    assert none.prev_audio.shape == audio.shape and none.prev_video.shape == video.shape
    assert none.class_labels is None


def test_unlabelled_items_get_the_null_class():
    audio, video = _latents(8)
    labels = torch.tensor([0, -1, 2, -1, 1, 0, -1, 2])
    m = mix_conditions(audio, video, ConditioningConfig(context_dropout=0.0), torch.Generator().manual_seed(0),
                       class_labels=labels, null_class=3)
    assert m.class_labels.tolist() == [0, 3, 2, 3, 1, 0, 3, 2]
    with pytest.raises(ConfigError, match="null class"):
        mix_conditions(audio, video, ConditioningConfig(), torch.Generator(), class_labels=labels)


def test_same_seed_same_draws_other_seed_other_draws():
    cfg = ConditioningConfig(audio_to_video=0.3, video_to_audio=0.3)
    first = _mix(cfg, n=512, seed=7)[-1]
    again = _mix(cfg, n=512, seed=7)[-1]
    other = _mix(cfg, n=512, seed=8)[-1]
    for name in ("context_dropped", "audio_given", "video_given", "prev_audio_given", "prev_video_given"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert torch.equal(first.audio_cond, again.audio_cond) and torch.equal(first.class_labels, again.class_labels)
    assert not torch.equal(first.audio_given, other.audio_given)


def test_a_call_consumes_a_fixed_amount_of_randomness():
    """3 * B uniforms per call, whatever the data holds: a resumed run stays in step."""
    audio, video = _latents(16)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    mix_conditions(audio, video, ConditioningConfig(), g1)
    mix_conditions(audio, video, ConditioningConfig(), g2, class_labels=torch.zeros(16, dtype=torch.long),
                   null_class=1, prev_audio=audio, prev_video=video, has_previous=torch.ones(16, dtype=torch.bool))
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_loss_weights_exclude_the_given_modality_only_when_asked():
    cfg = ConditioningConfig(audio_to_video=0.3, video_to_audio=0.3)
    m = _mix(cfg, n=2000)[-1]
    assert bool((m.loss_weights["audio"] == 1).all()) and bool((m.loss_weights["video"] == 1).all())
    cfg_off = ConditioningConfig(audio_to_video=0.3, video_to_audio=0.3, loss_on_given=False)
    m = _mix(cfg_off, n=2000)[-1]
    assert torch.equal(m.loss_weights["audio"] == 0, m.audio_given)
    assert torch.equal(m.loss_weights["video"] == 0, m.video_given)


@pytest.mark.parametrize("fields", [{"context_dropout": 1.5}, {"audio_to_video": 0.6, "video_to_audio": 0.6},
                                    {"previous_both": 0.5, "previous_audio": 0.3, "previous_video": 0.3},
                                    {"previous_video": -0.1}])
def test_invalid_probabilities_are_refused(fields):
    with pytest.raises(ValueError):
        ConditioningConfig(**fields)


def test_model_kwargs_fit_the_network():
    from mmldm.generator.dit import AVDiT, DiTConfig

    dit = AVDiT(DiTConfig.preset("tiny", depth=1, width=32, num_heads=2, num_classes=3))
    g = torch.Generator().manual_seed(0)
    audio, video = torch.randn(4, 8, 4, 4, generator=g), torch.randn(4, 8, 8, 8, generator=g)
    m = mix_conditions(audio, video, ConditioningConfig(), g, class_labels=torch.tensor([0, 1, 2, -1]),
                       null_class=dit.null_class, prev_audio=audio, prev_video=video,
                       has_previous=torch.tensor([True, False, True, False]))
    out = dit({"audio": audio, "video": video}, torch.full((4,), 10.0), **m.model_kwargs())
    assert out["audio"].shape == audio.shape and out["video"].shape == video.shape
