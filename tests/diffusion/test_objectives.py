import math

import pytest
import torch

from mmldm.diffusion.objectives import DiffusionConfig, make_objective
from mmldm.diffusion.schedules import logit_normal_timesteps, scaled_linear_betas
from mmldm.diffusion.tree import noise_like, tree_map
from mmldm.errors import ConfigError


def _latents(generator: torch.Generator, batch: int = 3) -> dict[str, torch.Tensor]:
    return {"audio": torch.randn(batch, 4, 2, 2, generator=generator),
            "video": torch.randn(batch, 4, 3, 3, generator=generator)}


def test_scaled_linear_betas_match_diffusers_stable_diffusion_schedule():
    from diffusers import DDPMScheduler

    reference = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear").betas
    ours = scaled_linear_betas(1000, 0.00085, 0.012)
    torch.testing.assert_close(ours.float(), reference.float())
    assert ours[0].item() == pytest.approx(0.00085) and ours[-1].item() == pytest.approx(0.012)


@pytest.mark.parametrize("name", ["epsilon", "flow"])
def test_add_noise_and_target_recover_x0_and_noise_and_output_from_x0_inverts_predict_x0(name):
    g = torch.Generator().manual_seed(1)
    objective = make_objective(name)
    x0, noise = _latents(g), _latents(g)
    t = objective.sample_timesteps(3, g)
    x_t = objective.add_noise(x0, noise, t)
    target = objective.target(x0, noise, t)
    # the exact target gives back x0 through predict_x0, and zero loss
    x0_hat = objective.predict_x0(target, x_t, t)
    for key in x0:
        torch.testing.assert_close(x0_hat[key], x0[key], atol=2e-4, rtol=1e-4)
    assert torch.count_nonzero(objective.loss(target, x0, noise, t)) == 0
    # output_from_x0 inverts predict_x0: x0 gives back the target, a moved x0 the output implying it
    back = objective.output_from_x0(x0, x_t, t)
    moved = tree_map(lambda z: z + 0.5, x0)
    again = objective.predict_x0(objective.output_from_x0(moved, x_t, t), x_t, t)
    for key in x0:
        torch.testing.assert_close(back[key], target[key], atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(again[key], moved[key], atol=1e-3, rtol=1e-3)
    t_back = objective.time_of_model_timestep(objective.model_timestep(t))
    assert t_back.dtype == t.dtype
    torch.testing.assert_close(t_back, t)


def test_flow_output_is_undefined_at_time_zero():
    objective = make_objective("flow")
    with pytest.raises(ValueError, match="undefined at t = 0"):
        objective.output_from_x0(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.0, 0.5]))


def test_epsilon_add_noise_is_eq6():
    objective = make_objective("epsilon")
    x0, noise = torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    t = torch.tensor([0, 999])
    abar = torch.cumprod(1 - scaled_linear_betas(), 0)
    expected = torch.stack([math.sqrt(abar[i]) * 2.0 - math.sqrt(1 - abar[i]) * torch.ones(3) for i in (0, 999)])
    torch.testing.assert_close(objective.add_noise(x0, noise, t), expected.float())
    assert torch.equal(objective.target(x0, noise, t), noise)
    assert torch.equal(objective.model_timestep(t), torch.tensor([0.0, 999.0]))


def test_flow_add_noise_interpolates_and_target_is_velocity():
    objective = make_objective("flow")
    x0, noise = torch.full((3, 2), 2.0), torch.full((3, 2), -1.0)
    t = torch.tensor([0.0, 0.25, 1.0])
    x_t = objective.add_noise(x0, noise, t)
    torch.testing.assert_close(x_t[:, 0], torch.tensor([2.0, 1.25, -1.0]))
    torch.testing.assert_close(objective.target(x0, noise, t), noise - x0)
    torch.testing.assert_close(objective.model_timestep(t), torch.tensor([0.0, 250.0, 1000.0]))


def test_loss_is_sum_of_per_modality_mse_per_sample():
    g = torch.Generator().manual_seed(2)
    objective = make_objective("epsilon")
    x0, noise, out = _latents(g, 2), _latents(g, 2), _latents(g, 2)
    t = torch.tensor([10, 500])
    loss = objective.loss(out, x0, noise, t)
    expected = sum(((out[k] - noise[k]) ** 2).flatten(1).mean(1) for k in x0)
    assert loss.shape == (2,)
    torch.testing.assert_close(loss, expected)
    weighted = objective.loss(out, x0, noise, t, weights={"video": 0.0})
    torch.testing.assert_close(weighted, ((out["audio"] - noise["audio"]) ** 2).flatten(1).mean(1))
    per_sample = objective.loss(out, x0, noise, t, weights=torch.tensor([1.0, 0.0]))
    assert per_sample[1] == 0 and per_sample[0] == expected[0]
    with pytest.raises(ValueError, match="unknown entries"):
        objective.loss(out, x0, noise, t, weights={"text": 1.0})


def test_logit_normal_timesteps_distribution():
    g = torch.Generator().manual_seed(3)
    t = logit_normal_timesteps(20000, 0.0, 1.0, g)
    assert t.min() > 0 and t.max() < 1
    logits = torch.logit(t.double())
    assert abs(logits.mean().item()) < 0.03 and abs(logits.std().item() - 1.0) < 0.03
    assert abs(t.median().item() - 0.5) < 0.01
    shifted = logit_normal_timesteps(20000, 1.0, 1.0, g)
    assert shifted.median() > 0.7  # sigmoid(1) = 0.73


def test_timesteps_types_and_ranges():
    g = torch.Generator().manual_seed(4)
    eps = make_objective("epsilon").sample_timesteps(5000, g)
    assert eps.dtype == torch.int64 and eps.min() >= 0 and eps.max() <= 999 and eps.max() > 990
    flow = make_objective("flow").sample_timesteps(10, g)
    assert flow.dtype == torch.float32
    with pytest.raises(ValueError, match="integer timesteps"):
        make_objective("epsilon").add_noise(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        make_objective("flow").add_noise(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.5]))


def test_make_objective_from_config_and_errors():
    objective = make_objective(DiffusionConfig(objective="flow", logit_mean=0.5))
    assert objective.name == "flow" and objective.logit_mean == 0.5
    with pytest.raises(ConfigError, match="unknown diffusion objective"):
        make_objective("v_prediction")
    with pytest.raises(ConfigError, match="unknown diffusion option"):
        make_objective("epsilon", betas=3)
    with pytest.raises(ValueError, match="keys do not match"):
        tree_map(torch.add, {"audio": torch.zeros(1)}, {"video": torch.zeros(1)})


def test_noise_like_is_seeded_and_keeps_structure():
    x = {"audio": torch.zeros(2, 3, dtype=torch.float64), "video": torch.zeros(2, 4, 5)}
    a = noise_like(x, torch.Generator().manual_seed(7))
    b = noise_like(x, torch.Generator().manual_seed(7))
    assert a["audio"].dtype == torch.float64 and a["video"].shape == (2, 4, 5)
    assert torch.equal(a["video"], b["video"]) and not torch.equal(a["video"][0], a["video"][1])
    assert noise_like(torch.zeros(3), None).shape == (3,)
