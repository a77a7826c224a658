import pytest
import torch

from mmldm.diffusion.objectives import make_objective
from mmldm.diffusion.samplers import make_scheduler, sample
from mmldm.diffusion.tree import broadcast_to, tree_map
from mmldm.errors import ConfigError

PAIRS = [("epsilon", "ddim"), ("epsilon", "dpmpp"), ("flow", "euler"), ("flow", "heun")]


def _oracle(objective, x0):
    """A denoiser that knows x0 and returns the exact epsilon / velocity for (x_t, t)."""

    def denoise(x_t, t_model):
        if objective.prediction == "epsilon":
            abar = torch.as_tensor(objective.alphas_cumprod)[t_model.long()].float()
            return tree_map(lambda x, c: (x - broadcast_to(abar.sqrt(), x) * c) / broadcast_to((1 - abar).sqrt(), x),
                            x_t, x0)
        t = t_model / objective.num_train_timesteps
        return tree_map(lambda x, c: (x - c) / broadcast_to(t, x), x_t, x0)

    return denoise


@pytest.mark.parametrize("objective_name,sampler", PAIRS)
@pytest.mark.parametrize("as_dict", [False, True])
def test_oracle_denoiser_yields_x0(objective_name, sampler, as_dict):
    g = torch.Generator().manual_seed(0)
    objective = make_objective(objective_name)
    if as_dict:
        x0 = {"audio": torch.randn(2, 4, 2, 2, generator=g), "video": torch.randn(2, 4, 4, 4, generator=g)}
    else:
        x0 = torch.randn(2, 4, 4, 4, generator=g)
    noise = tree_map(lambda x: torch.randn(x.shape, generator=g), x0)
    seen = []
    out = sample(_oracle(objective, x0), noise, objective, sampler, steps=8,
                 callback=lambda info: seen.append(info))
    for got, want in zip(out.values() if as_dict else [out],
                         x0.values() if as_dict else [x0]):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # the callback sees every evaluation, with the exact x0 estimate
    assert len(seen) == (15 if sampler == "heun" else 8)
    first = seen[0]["denoised"]["video"] if as_dict else seen[0]["denoised"]
    torch.testing.assert_close(first, x0["video"] if as_dict else x0, atol=1e-4, rtol=1e-4)


def test_ddim_matches_direct_formula():
    """Our DDIM (eta 0) equals Song et al. Eq. (12) written out on a toy denoiser."""
    objective = make_objective("epsilon")
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(2, 3, generator=g)
    weight = torch.randn(3, 3, generator=g) * 0.3

    def toy(x, t_model):  # any deterministic function of (x, t)
        return torch.tanh(x @ weight) * (t_model[:, None] / 1000.0)

    out = sample(toy, noise, objective, "ddim", steps=5)
    abar = objective.alphas_cumprod
    grid = [801, 601, 401, 201, 1]  # LDM "uniform" DDIM timesteps for 5 of 1000 steps
    x = noise.double()
    for i, t in enumerate(grid):
        a_t = abar[t]
        a_prev = abar[grid[i + 1]] if i + 1 < len(grid) else torch.tensor(1.0, dtype=torch.float64)
        eps = toy(x.float(), torch.full((2,), float(t))).double()
        x0_hat = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(out, x.float(), atol=1e-5, rtol=1e-5)


def test_ddim_eta_is_seeded_and_stochastic():
    objective = make_objective("epsilon")
    noise = torch.randn(2, 6)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    a = sample(zero, noise, objective, "ddim", steps=4, eta=1.0, generator=torch.Generator().manual_seed(1))
    b = sample(zero, noise, objective, "ddim", steps=4, eta=1.0, generator=torch.Generator().manual_seed(1))
    c = sample(zero, noise, objective, "ddim", steps=4, eta=1.0, generator=torch.Generator().manual_seed(2))
    d = sample(zero, noise, objective, "ddim", steps=4, eta=0.0)
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, d)


def test_denoiser_receives_objective_timesteps():
    seen = []

    def record(x, t_model):
        seen.append(t_model.clone())
        return torch.zeros_like(x)

    sample(record, torch.zeros(3, 2), make_objective("flow"), "euler", steps=2)
    assert seen[0].shape == (3,) and torch.allclose(seen[0], torch.full((3,), 1000.0))
    seen.clear()
    sample(record, torch.zeros(3, 2), make_objective("epsilon"), "ddim", steps=2)
    assert [int(s[0]) for s in seen] == [501, 1]


@pytest.mark.parametrize("objective_name,sampler", [("epsilon", "euler"), ("epsilon", "heun"),
                                                    ("flow", "ddim"), ("flow", "dpmpp")])
def test_wrong_sampler_for_objective_is_config_error(objective_name, sampler):
    with pytest.raises(ConfigError, match="does not fit"):
        make_scheduler(make_objective(objective_name), sampler)


def test_bad_sampler_arguments():
    objective = make_objective("epsilon")
    with pytest.raises(ConfigError, match="unknown sampler"):
        sample(lambda x, t: x, torch.zeros(1, 2), objective, "plms")
    with pytest.raises(ValueError, match="only for ddim"):
        sample(lambda x, t: x, torch.zeros(1, 2), objective, "dpmpp", eta=0.5)
    with pytest.raises(ValueError, match="denoiser output"):
        sample(lambda x, t: x[:, :1], torch.zeros(1, 2), objective, "ddim", steps=2)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_flow_time_shift_moves_grid_to_noise_and_keeps_oracle_exact(sampler):
    objective = make_objective("flow")
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(2, 5, generator=g)
    noise = torch.randn(2, 5, generator=g)
    times = {}
    for shift in (1.0, 3.0):
        seen = []
        out = sample(_oracle(objective, x0), noise, objective, sampler, steps=4, shift=shift,
                     callback=lambda info: seen.append(float(info["t"][0])))
        torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)
        times[shift] = seen
    assert times[1.0][0] == pytest.approx(1.0) and times[3.0][0] == pytest.approx(1.0)
    t = times[1.0][1]  # the second time of the uniform grid, and its shifted value
    assert times[3.0][1] == pytest.approx(3 * t / (1 + 2 * t), rel=1e-3)
    with pytest.raises(ConfigError, match="time shift"):
        make_scheduler(make_objective("epsilon"), "ddim", shift=3.0)


@pytest.mark.parametrize("objective_name,sampler", PAIRS)
def test_known_entry_follows_its_forward_process_and_is_returned(objective_name, sampler):
    g = torch.Generator().manual_seed(3)
    objective = make_objective(objective_name)
    known = torch.randn(2, 4, 2, 2, generator=g)
    noise = {"audio": torch.randn(2, 4, 2, 2, generator=g), "video": torch.randn(2, 4, 4, 4, generator=g)}
    seen = []

    def denoise(x_t, t_model):  # records the audio it is given; predicts ones
        seen.append(x_t["audio"].clone())
        return tree_map(torch.ones_like, x_t)

    times = []
    out = sample(denoise, noise, objective, sampler, steps=4, known={"audio": known},
                 callback=lambda info: times.append(info["t"]))
    assert len(seen) == len(times) > 1
    for x_audio, t in zip(seen, times):
        want = objective.add_noise({"audio": known}, {"audio": noise["audio"]}, t)["audio"]
        torch.testing.assert_close(x_audio, want)
    assert torch.equal(out["audio"], known)
    assert not torch.equal(out["video"], noise["video"])  # the other entry was integrated


def test_known_entries_must_fit_the_sampled_latent():
    objective = make_objective("flow")
    noise = {"audio": torch.randn(1, 2, 2, 2), "video": torch.randn(1, 2, 4, 4)}
    denoise = lambda x, t: tree_map(torch.zeros_like, x)  # noqa: E731
    with pytest.raises(ValueError, match="entries of the dict latent"):
        sample(denoise, noise, objective, "euler", steps=2, known={"text": torch.zeros(1, 2, 2, 2)})
    with pytest.raises(ValueError, match="shape"):
        sample(denoise, noise, objective, "euler", steps=2, known={"audio": torch.zeros(1, 2, 3, 3)})
    with pytest.raises(ValueError, match="entries of the dict latent"):
        sample(denoise, noise["audio"], objective, "euler", steps=2, known={"audio": torch.zeros(1, 2, 2, 2)})
