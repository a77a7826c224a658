"""Frechet distance and kernel distance against independent reference computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from mmldm.errors import DataError
from mmldm.evaluation.frechet import frechet_distance, frechet_distance_from_statistics, gaussian_statistics
from mmldm.evaluation.mmd import kernel_distance, mmd2_unbiased, polynomial_kernel


def _features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


def _reference_frechet(a: np.ndarray, b: np.ndarray, ddof: int) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca = (a - mu_a).T @ (a - mu_a) / (len(a) - ddof)
    cb = (b - mu_b).T @ (b - mu_b) / (len(b) - ddof)
    root = linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(root))


def _tfgan_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The MM-Diffusion / VideoGPT evaluator's formula: SVD square roots, unbiased covariance."""

    def sym_sqrt(mat):
        u, s, vt = np.linalg.svd(mat)
        return u @ np.diag(np.where(s < 1e-10, s, np.sqrt(s))) @ vt

    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = sym_sqrt(ca)
    trace_sqrt = np.trace(sym_sqrt(root_a @ cb @ root_a))
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb) - 2 * trace_sqrt)


@pytest.mark.parametrize("covariance,ddof", [("unbiased", 1), ("biased", 0)])
def test_frechet_matches_scipy_reference(covariance, ddof):
    a, b = _features(0, 300, 12), _features(1, 250, 12, shift=0.3)
    got = frechet_distance(a, b, covariance=covariance)
    assert got.value == pytest.approx(_reference_frechet(a, b, ddof), rel=1e-9)
    assert got.sqrtm_offset == 0.0


def test_biased_and_unbiased_differ_by_the_estimator():
    a, b = _features(0, 20, 5), _features(1, 20, 5, shift=1.0)
    assert frechet_distance(a, b, "biased").value != pytest.approx(frechet_distance(a, b, "unbiased").value)


def test_frechet_matches_mm_diffusion_tfgan_formula():
    a, b = _features(2, 400, 16), _features(3, 400, 16, shift=-0.2)
    assert frechet_distance(a, b, "unbiased").value == pytest.approx(_tfgan_frechet(a, b), rel=1e-7)


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    got = frechet_distance_from_statistics(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got.value == pytest.approx(expected, rel=1e-12)


def test_frechet_closed_form_from_samples_with_exact_moments():
    """Whitened samples have exactly the chosen mean and unbiased covariance."""
    rng = np.random.default_rng(4)
    n, d = 200, 4

    def exact_samples(mu, std):
        z = rng.normal(size=(n, d))
        z -= z.mean(0)
        z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
        return z * std + mu

    mu1, std1, mu2, std2 = np.zeros(d), np.full(d, 1.0), np.full(d, 2.0), np.array([1.0, 2.0, 3.0, 0.5])
    a, b = exact_samples(mu1, std1), exact_samples(mu2, std2)
    expected = ((mu1 - mu2) ** 2).sum() + ((std1 - std2) ** 2).sum()
    assert frechet_distance(a, b, "unbiased").value == pytest.approx(expected, rel=1e-9)


def test_identical_features_give_zero():
    a = _features(5, 100, 8)
    assert abs(frechet_distance(a, a).value) < 1e-8
    # The unbiased MMD^2 of a set with itself is not 0: the cross term keeps the
    # diagonal, so it equals -2 / (N - 1) * (mean of diag K - mean of K), O(1/N).
    k = polynomial_kernel(a, a)
    assert mmd2_unbiased(a, a) == pytest.approx(-2 / (len(a) - 1) * (np.diag(k).mean() - k.mean()), rel=1e-10)


def test_singular_covariance_matches_svd_reference():
    # 3 samples in 10 dimensions: rank-deficient covariances, singular product.
    a, b = _features(6, 3, 10), _features(7, 3, 10)
    got = frechet_distance(a, b)
    assert got.value == pytest.approx(_tfgan_frechet(a, b), rel=1e-5)


def test_non_finite_square_root_retries_with_documented_offset(monkeypatch):
    import mmldm.evaluation.frechet as frechet_module

    calls = []
    real_sqrtm = linalg.sqrtm

    def flaky_sqrtm(mat):
        calls.append(mat.copy())
        return np.full_like(mat, np.nan) if len(calls) == 1 else real_sqrtm(mat)

    monkeypatch.setattr(frechet_module.linalg, "sqrtm", flaky_sqrtm)
    a, b = _features(6, 50, 4), _features(7, 50, 4)
    got = frechet_distance(a, b)
    (_, s1), (_, s2) = gaussian_statistics(a), gaussian_statistics(b)
    eye = np.eye(4) * 1e-6
    np.testing.assert_allclose(calls[1], (s1 + eye) @ (s2 + eye))
    assert got.sqrtm_offset == 1e-6 and np.isfinite(got.value)


def test_unreliable_square_root_falls_back_to_symmetric_form(monkeypatch):
    import mmldm.evaluation.frechet as frechet_module

    monkeypatch.setattr(frechet_module.linalg, "sqrtm", lambda mat: mat + 0.5j)
    a, b = _features(8, 40, 6), _features(9, 40, 6, shift=0.4)
    got = frechet_distance(a, b)
    assert got.method == "eigh" and got.max_imaginary == pytest.approx(0.5)
    assert got.value == pytest.approx(_tfgan_frechet(a, b), rel=1e-9)


def test_few_samples_in_many_dimensions_stay_finite_and_match_reference():
    # 3 samples in 64 dimensions with large values: sqrtm's imaginary parts are not round-off.
    a, b = 1e4 * _features(10, 3, 64), 1e4 * _features(11, 3, 64)
    got = frechet_distance(a, b)
    assert np.isfinite(got.value)
    assert got.value == pytest.approx(_tfgan_frechet(a, b), rel=1e-6)


def test_frechet_rejects_bad_input():
    with pytest.raises(DataError, match="dimensions differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(DataError, match="NaN"):
        frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3)))
    with pytest.raises(DataError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def _loop_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(u, v):
        return (sum(ui * vi for ui, vi in zip(u, v)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_matches_explicit_loops():
    x, y = _features(8, 6, 3), _features(9, 5, 3, shift=0.7)
    assert mmd2_unbiased(x, y) == pytest.approx(_loop_mmd2(x, y), rel=1e-12)
    assert polynomial_kernel(x, y).shape == (6, 5)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_mmd_matches_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

    x, y = _features(10, 64, 20), _features(11, 64, 20, shift=0.5)
    ref = poly_mmd(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert mmd2_unbiased(x, y) == pytest.approx(ref, rel=1e-10)

    # The full metric object with an identity "feature network": with one subset of
    # all samples, every draw is a permutation of the whole set.
    kid = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=3, subset_size=64)
    kid.update(torch.from_numpy(y), real=True)
    kid.update(torch.from_numpy(x), real=False)
    mean, std = kid.compute()
    ours = kernel_distance(x, y, num_subsets=3, subset_size=64, seed=0)
    assert ours.value == pytest.approx(mean.item(), rel=1e-10)
    assert ours.std == pytest.approx(std.item(), abs=1e-12)


def test_kernel_distance_subsets_are_seeded():
    x, y = _features(12, 50, 4), _features(13, 50, 4, shift=0.5)
    a = kernel_distance(x, y, num_subsets=5, subset_size=20, seed=3)
    b = kernel_distance(x, y, num_subsets=5, subset_size=20, seed=3)
    c = kernel_distance(x, y, num_subsets=5, subset_size=20, seed=4)
    assert a == b and a.value != c.value and a.std > 0
    full = kernel_distance(x, y)
    assert full.num_subsets == 0 and full.value == pytest.approx(mmd2_unbiased(x, y))
    with pytest.raises(DataError, match="subset_size"):
        kernel_distance(x, y, num_subsets=2, subset_size=60)


def test_mmd_separates_shifted_distributions():
    x = _features(14, 200, 6)
    near, far = _features(15, 200, 6), _features(16, 200, 6, shift=2.0)
    assert mmd2_unbiased(x, far) > 10 * abs(mmd2_unbiased(x, near))
