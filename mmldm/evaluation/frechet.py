"""Frechet distance between two sets of features (FVD, FAD).

The features of each set are summarised by a Gaussian N(mu, Sigma); the
distance between the two Gaussians is (the FID formula of Heusel et al. 2017; Dowson &
Landau 1982)::

    d^2 = |mu_1 - mu_2|^2 + tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^{1/2})

All arithmetic is float64 on NumPy arrays. The covariance estimator is a
choice that changes the number, so it is an explicit argument:
``"unbiased"`` divides by n - 1 (MM-Diffusion / VideoGPT evaluator, the
paper-era protocol), ``"biased"`` divides by n (StyleGAN-V's FVD).

The matrix square root is ``scipy.linalg.sqrtm`` on Sigma_1 Sigma_2 (as in
pytorch-fid). For positive semi-definite covariances this equals the TF-GAN
``trace_sqrt_product`` the MM-Diffusion evaluator uses (tested). Numerical
handling, recorded in :class:`FrechetResult`:

- if the square root is not finite (singular product), it is recomputed on
  (Sigma_1 + eps I)(Sigma_2 + eps I) with ``eps = SQRTM_EPS`` (1e-6);
- round-off leaves tiny imaginary parts; they are dropped when every
  diagonal imaginary part is below ``IMAG_TOLERANCE`` (1e-3, as pytorch-fid);
- larger imaginary parts (rank-deficient covariances: fewer samples than
  dimensions) make sqrtm unreliable; the trace term is then computed the
  TF-GAN way, tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) with
  symmetric eigendecompositions and negative round-off eigenvalues set to 0
  (``method="eigh"``; the same quantity for PSD matrices).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import linalg

from ..errors import DataError

Covariance = Literal["unbiased", "biased"]
SQRTM_EPS = 1e-6
IMAG_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FrechetResult:
    """A Frechet distance and how its matrix square root was obtained.

    value: the distance (squared form, as every FID/FVD/FAD reports it).
    sqrtm_offset: 0.0, or the eps added to both covariance diagonals when the
        plain square root was not finite.
    max_imaginary: the largest |imaginary part| on the sqrtm diagonal (dropped
        when below IMAG_TOLERANCE).
    method: "sqrtm" (scipy on Sigma_1 Sigma_2) or "eigh" (symmetric form, used
        when sqrtm's imaginary part exceeded IMAG_TOLERANCE).
    """

    value: float
    sqrtm_offset: float
    max_imaginary: float
    method: str = "sqrtm"

    def __float__(self) -> float:
        return self.value


def gaussian_statistics(features: np.ndarray, covariance: Covariance = "unbiased") -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set.

    Shapes: features [N, D] -> mu [D], sigma [D, D] (float64).
    ``covariance``: "unbiased" (divide by N - 1) or "biased" (divide by N).
    """
    feats = _as_feature_matrix(features, "features")
    if covariance not in ("unbiased", "biased"):
        raise DataError(f"covariance estimator must be 'unbiased' or 'biased', got {covariance!r}")
    ddof = 1 if covariance == "unbiased" else 0
    if feats.shape[0] <= ddof:
        raise DataError(f"Frechet distance: need at least {ddof + 1} feature vectors, got {feats.shape[0]}")
    mu = feats.mean(axis=0)
    sigma = np.atleast_2d(np.cov(feats, rowvar=False, ddof=ddof))
    return mu, sigma


def frechet_distance_from_statistics(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> FrechetResult:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Shapes: mu [D], sigma [D, D].
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise DataError(
            f"Frechet distance: statistics do not match ({mu1.shape=} {sigma1.shape=} {mu2.shape=} {sigma2.shape=})"
        )
    offset = 0.0
    with warnings.catch_warnings():  # singular products are expected (N < D) and handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = SQRTM_EPS
            eye = np.eye(sigma1.shape[0])
            covmean = linalg.sqrtm((sigma1 + offset * eye) @ (sigma2 + offset * eye))
    max_imag, method = 0.0, "sqrtm"
    if np.iscomplexobj(covmean):
        max_imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        covmean = covmean.real
    if max_imag > IMAG_TOLERANCE or not np.isfinite(covmean).all():
        trace_covmean, method = _trace_sqrt_product_symmetric(sigma1, sigma2), "eigh"
    else:
        trace_covmean = float(np.trace(covmean))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)
    return FrechetResult(value=value, sqrtm_offset=offset, max_imaginary=max_imag, method=method)


def _trace_sqrt_product_symmetric(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^1/2) as sum sqrt(eig(S1^1/2 S2 S1^1/2)): both eigendecompositions symmetric, PSD-clipped."""
    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    inner = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())


def frechet_distance(
    features_a: np.ndarray, features_b: np.ndarray, covariance: Covariance = "unbiased"
) -> FrechetResult:
    """Frechet distance between the Gaussians fitted to two feature sets.

    Shapes: features_a [N, D], features_b [M, D].
    """
    a = _as_feature_matrix(features_a, "features_a")
    b = _as_feature_matrix(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"Frechet distance: feature dimensions differ ({a.shape[1]} vs {b.shape[1]})")
    return frechet_distance_from_statistics(*gaussian_statistics(a, covariance), *gaussian_statistics(b, covariance))


def _as_feature_matrix(features: np.ndarray, name: str) -> np.ndarray:
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise DataError(f"{name}: expected a [N, D] feature matrix, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise DataError(f"{name}: features contain NaN or infinity")
    return feats
