import pytest
import torch

from mmldm.diffusion.guidance import apply_guidance, guided_denoiser


class Recorder:
    """A conditional model whose output depends on x, t and a condition tensor; counts calls."""

    def __init__(self):
        self.batches = []

    def __call__(self, x, t, label):
        self.batches.append(label.shape[0])
        shift = label[:, None, None, None].float() + t[:, None, None, None] / 1000.0
        return {"audio": x["audio"] * 2 + shift, "video": x["video"] - shift * 3}


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = {"audio": torch.randn(2, 3, 2, 2, generator=g), "video": torch.randn(2, 3, 4, 4, generator=g)}
    return x, torch.tensor([10.0, 500.0]), torch.tensor([1, 2]), torch.tensor([0, 0])


@pytest.mark.parametrize("scale,use_cond", [(1.0, True), (0.0, False)])
def test_scale_one_is_conditional_and_zero_is_unconditional(scale, use_cond):
    x, t, label, null = _inputs()
    model = Recorder()
    out = guided_denoiser(model, {"label": label}, {"label": null}, scale)(x, t)
    expected = Recorder()(x, t, label if use_cond else null)
    for key in x:
        torch.testing.assert_close(out[key], expected[key])
    assert model.batches == [2]  # a single un-doubled evaluation


def test_per_modality_scales_apply_to_their_entries_in_one_batched_call():
    x, t, label, null = _inputs()
    model = Recorder()
    out = guided_denoiser(model, {"label": label}, {"label": null}, {"audio": 2.0, "video": 5.0})(x, t)
    assert model.batches == [4]  # conditional and unconditional in one forward
    cond, uncond = Recorder()(x, t, label), Recorder()(x, t, null)
    torch.testing.assert_close(out["audio"], uncond["audio"] + 2.0 * (cond["audio"] - uncond["audio"]))
    torch.testing.assert_close(out["video"], uncond["video"] + 5.0 * (cond["video"] - uncond["video"]))
    joint = guided_denoiser(Recorder(), {"label": label}, {"label": null}, 5.0)(x, t)
    torch.testing.assert_close(joint["video"], out["video"])
    assert not torch.allclose(joint["audio"], out["audio"])


def test_shared_conditions_and_tensor_latents():
    calls = []

    def model(x, t, a, b=None):
        calls.append((a.shape[0], None if b is None else b.shape[0]))
        return x * a[:, None] + (0 if b is None else b[:, None])

    x, t = torch.ones(2, 3), torch.zeros(2)
    out = guided_denoiser(model, {"a": torch.tensor([2.0, 3.0]), "b": torch.tensor([1.0, 1.0])},
                          {"a": torch.tensor([1.0, 1.0])}, 3.0)(x, t)
    # b is shared: cond = x*a + 1, uncond = x*1 + 1
    torch.testing.assert_close(out, 1 + 1 + 3.0 * (torch.tensor([[2.0], [3.0]]) - 1).expand(2, 3))
    assert calls == [(4, 4)]


def test_guidance_errors():
    x = {"audio": torch.zeros(1, 2), "video": torch.zeros(1, 2)}
    with pytest.raises(ValueError, match="name exactly the entries"):
        apply_guidance(x, x, {"audio": 2.0})
    with pytest.raises(ValueError, match="need a dict latent"):
        apply_guidance(torch.zeros(1), torch.zeros(1), {"audio": 1.0})
    with pytest.raises(ValueError, match="no conditional counterpart"):
        guided_denoiser(lambda x, t, **c: x, {}, {"label": torch.zeros(1)}, 2.0)
    with pytest.raises(ValueError, match="tensor on one side only"):
        guided_denoiser(lambda x, t, **c: x, {"label": torch.zeros(1)}, {"label": None}, 2.0)(
            torch.zeros(1, 2), torch.zeros(1))


# ------------------------------------------------------------------ critic guidance

def _quadratic_setup(name):
    from mmldm.diffusion.objectives import make_objective

    g = torch.Generator().manual_seed(3)
    objective = make_objective(name)
    x_t = {"audio": torch.randn(2, 3, 2, 2, generator=g), "video": torch.randn(2, 4, 3, 3, generator=g)}
    output = {"audio": torch.randn(2, 3, 2, 2, generator=g), "video": torch.randn(2, 4, 3, 3, generator=g)}
    target = torch.randn(2, 4, 3, 3, generator=g)
    t = objective.sample_timesteps(2, g)
    return objective, x_t, output, target, t


@pytest.mark.parametrize("name", ["epsilon", "flow"])
def test_critic_guidance_moves_the_clean_estimate_down_the_gradient_by_step(name):
    from mmldm.diffusion.guidance import critic_guided_denoiser

    objective, x_t, output, target, t = _quadratic_setup(name)
    calls = []

    def critic(video):  # [B] losses; gradient 2 (video - target)
        calls.append(video.requires_grad)
        return (video - target).pow(2).flatten(1).sum(1)

    denoise = lambda x, t_model: {k: v.clone() for k, v in output.items()}  # noqa: E731
    guided = critic_guided_denoiser(denoise, objective, "video", critic, step=0.3)
    out = guided(x_t, objective.model_timestep(t))
    before = objective.predict_x0(output, x_t, t)
    after = objective.predict_x0(out, x_t, t)
    direction = before["video"] - target
    rms = direction.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(after["video"], before["video"] - 0.3 * direction / rms, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(out["audio"], output["audio"])  # other entries untouched
    assert calls == [True]
    # each sample moves by exactly `step` RMS, closer to the critic's minimum
    moved = (after["video"] - before["video"]).flatten(1).pow(2).mean(1).sqrt()
    torch.testing.assert_close(moved, torch.full((2,), 0.3), atol=1e-3, rtol=1e-3)
    assert bool(((after["video"] - target).flatten(1).norm(dim=1) < direction.flatten(1).norm(dim=1)).all())


def test_critic_guidance_iterations_zero_step_and_errors():
    from mmldm.diffusion.guidance import critic_guided_denoiser

    objective, x_t, output, target, t = _quadratic_setup("flow")
    denoise = lambda x, t_model: dict(output)  # noqa: E731
    critic = lambda video: (video - target).pow(2).flatten(1).sum(1)  # noqa: E731
    assert critic_guided_denoiser(denoise, objective, "video", critic, step=0.0) is denoise
    one = critic_guided_denoiser(denoise, objective, "video", critic, step=0.1)
    three = critic_guided_denoiser(denoise, objective, "video", critic, step=0.1, iterations=3)
    t_model = objective.model_timestep(t)
    gap = lambda out: (objective.predict_x0(out, x_t, t)["video"] - target).norm()  # noqa: E731
    assert gap(three(x_t, t_model)) < gap(one(x_t, t_model)) < gap(denoise(x_t, t_model))
    for kwargs, words in [(dict(step=-1.0), "finite number >= 0"), (dict(step=float("nan")), "finite number >= 0"),
                          (dict(step=0.1, iterations=0), "iterations=0 >= 1")]:
        with pytest.raises(ValueError, match=words):
            critic_guided_denoiser(denoise, objective, "video", critic, **kwargs)
    with pytest.raises(ValueError, match="one loss per sample"):
        critic_guided_denoiser(denoise, objective, "video", lambda v: v.sum(), 0.1)(x_t, t_model)
    with pytest.raises(ValueError, match="steers entry 'depth'"):
        critic_guided_denoiser(denoise, objective, "depth", critic, 0.1)(x_t, t_model)


def test_guided_denoisers_nest_through_shared_conditions():
    """An outer guidance's two branches each call an inner guided denoiser with their own conditions."""
    def model(x, t, a, b):  # a toy network: each condition changes the output differently
        return x * a.view(-1, 1) + b.view(-1, 1) ** 2 + t.view(-1, 1)

    x, t = torch.randn(3, 4), torch.tensor([1.0, 2.0, 3.0])
    a1, a0, b1, b0 = torch.tensor([2.0, 3.0, 4.0]), torch.zeros(3), torch.tensor([1.0, -1.0, 2.0]), torch.zeros(3)
    inner = guided_denoiser(model, {"a": a1}, {"a": a0}, 2.0)
    outer = guided_denoiser(inner, {"b": b1}, {"b": b0}, 3.0)

    def by_hand(b):
        return model(x, t, a0, b) + 2.0 * (model(x, t, a1, b) - model(x, t, a0, b))

    torch.testing.assert_close(outer(x, t), by_hand(b0) + 3.0 * (by_hand(b1) - by_hand(b0)))
    torch.testing.assert_close(inner(x, t, b=b1), by_hand(b1))
    with pytest.raises(ValueError, match="both guided and shared"):
        inner(x, t, a=a1, b=b1)
