"""LPIPS weight formats, discriminator, hinge/KL/adaptive-weight losses."""

import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from mmldm.errors import WeightsError
from mmldm.vae.losses import (
    LPIPS,
    PatchDiscriminator,
    adaptive_gan_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    kl_loss,
    load_lpips,
    save_lpips,
)


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(7)
    lpips = LPIPS()
    with torch.no_grad():
        for n in range(5):
            head = getattr(lpips, f"lin{n}").model[1].weight
            head.copy_(torch.rand_like(head))  # learned heads are non-negative
    return lpips


def _images(seed: int) -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_lpips_names_match_the_public_formats(random_lpips):
    names = set(random_lpips.state_dict())
    assert {"net.slice1.0.weight", "net.slice2.7.bias", "net.slice5.28.weight",
            "lin0.model.1.weight", "lin4.model.1.weight"} <= names
    assert random_lpips.state_dict()["lin3.model.1.weight"].shape == (1, 512, 1, 1)
    assert random_lpips.state_dict()["net.slice3.10.weight"].shape == (256, 128, 3, 3)


def test_lpips_is_a_distance(random_lpips):
    x, y = _images(0), _images(1)
    with torch.no_grad():
        same = random_lpips(x, x)
        diff = random_lpips(x, y)
    assert same.shape == (2,)
    torch.testing.assert_close(same, torch.zeros(2), atol=1e-6, rtol=0)
    assert (diff > 0).all()


def test_lpips_single_file_round_trip(random_lpips, tmp_path):
    path = save_lpips(random_lpips, tmp_path / "lpips_vgg.safetensors")
    loaded = load_lpips(path)
    x, y = _images(2), _images(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, y), random_lpips(x, y), rtol=0, atol=0)


def test_lpips_two_public_files(random_lpips, tmp_path):
    state = random_lpips.state_dict()
    torchvision_names = {}
    for key, value in state.items():
        if key.startswith("net."):
            _, _, index, param = key.split(".")
            torchvision_names[f"features.{index}.{param}"] = value
    torchvision_names["classifier.0.weight"] = torch.zeros(4, 4)
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    torch.save(torchvision_names, tmp_path / "vgg16-397923af.pth")
    torch.save(heads, tmp_path / "vgg.pth")
    loaded = load_lpips(tmp_path / "vgg.pth", vgg16_path=tmp_path / "vgg16-397923af.pth")
    x, y = _images(4), _images(5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, y), random_lpips(x, y), rtol=0, atol=0)

    with pytest.raises(WeightsError, match="vgg16-397923af.pth") as err:
        load_lpips(tmp_path / "vgg.pth")
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="file not found"):
        load_lpips(tmp_path / "nope.pth")


def test_lpips_gradient_flows_to_input_not_weights(random_lpips):
    x = _images(6).requires_grad_(True)
    random_lpips(x, _images(7)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in random_lpips.parameters())
    random_lpips.train()
    assert not random_lpips.training


def test_patch_discriminator_shape_and_independence_of_batch():
    disc = PatchDiscriminator(base_channels=8, num_layers=2, norm_groups=4)
    x = _images(8)
    logits = disc(x)
    assert logits.shape == (2, 1, 6, 6)
    torch.testing.assert_close(disc(x[:1]), logits[:1])
    assert PatchDiscriminator(base_channels=12, num_layers=3)(x).shape == (2, 1, 2, 2)  # widths 24, 48, 96


def test_hinge_losses():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1-real) = [0, .5, 2] mean 5/6; relu(1+fake) = [0, 1, 2] mean 1
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1.0))
    assert hinge_generator_loss(fake).item() == pytest.approx(1.0 / 3.0)


def test_kl_loss_matches_diffusers_posterior():
    params = torch.randn(3, 8, 4, 4)
    dist = DiagonalGaussianDistribution(params)
    expected = dist.kl().mean() / 100
    torch.testing.assert_close(kl_loss(dist.mean, dist.logvar, 100), expected)
    zero = kl_loss(torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 2, 2), 10)
    assert zero.item() == 0.0


def test_adaptive_gan_weight_is_gradient_norm_ratio():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    rec = (3.0 * w).sum()  # grad norm 3*sqrt(2)
    gan = (w * torch.tensor([0.0, 1.0])).sum()  # grad norm 1
    weight = adaptive_gan_weight(rec, gan, w)
    assert weight.item() == pytest.approx(3.0 * 2 ** 0.5 / (1 + 1e-4), rel=1e-5)
    assert not weight.requires_grad
