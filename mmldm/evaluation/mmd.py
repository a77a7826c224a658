"""Kernel distances (KVD, KID): unbiased MMD^2 with a cubic polynomial kernel.

Kernel (Binkowski et al. 2018, "Demystifying MMD GANs", KID definition)::

    k(x, y) = (x . y / d + 1) ** 3          d = feature dimension

Unbiased estimator of MMD^2 between X (m samples) and Y (n samples)
(Gretton et al. 2012, "A Kernel Two-Sample Test", the unbiased statistic MMD_u^2)::

    MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1))
          + sum_{i != j} k(y_i, y_j) / (n (n - 1))
          - 2 sum_{i, j} k(x_i, y_j) / (m n)

Two ways to report it:
- no subsets: one estimate on all samples. This is the paper-era KVD
  (MM-Diffusion's ``polynomial_mmd``, scikit-learn's polynomial kernel
  defaults), reported without rescaling.
- subsets (KID style, torchmetrics / torch-fidelity): ``num_subsets`` draws of
  ``subset_size`` samples from each set without replacement, mean and
  population standard deviation (ddof 0, as torchmetrics) over draws. The
  draws come from an explicit seed.
All arithmetic is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class KernelDistance:
    """MMD^2 estimate. ``std`` is 0.0 and ``num_subsets`` 0 when computed on all samples."""

    value: float
    std: float
    num_subsets: int
    subset_size: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (x . y / d + coef0) ** degree.

    Shapes: x [M, D], y [N, D] -> [M, N].
    """
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel.

    Shapes: x [M, D], y [N, D] (M, N >= 2).
    """
    x, y = _as_features(x, "x"), _as_features(y, "y")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"kernel distance: feature dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise DataError(f"kernel distance: need at least 2 samples per set, got {m} and {n}")
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_distance(
    x: np.ndarray,
    y: np.ndarray,
    num_subsets: int = 0,
    subset_size: int = 1000,
    seed: int = 0,
) -> KernelDistance:
    """KVD / KID between two feature sets.

    Shapes: x [M, D], y [N, D].
    ``num_subsets=0``: one estimate on all samples (paper-era KVD).
    ``num_subsets>0``: mean and std over that many subsets of ``subset_size``
    drawn without replacement with ``numpy.random.default_rng(seed)``.
    """
    x, y = _as_features(x, "x"), _as_features(y, "y")
    if num_subsets == 0:
        return KernelDistance(value=mmd2_unbiased(x, y), std=0.0, num_subsets=0, subset_size=0)
    if num_subsets < 0:
        raise DataError(f"kernel distance: num_subsets must be >= 0, got {num_subsets}")
    if subset_size < 2 or subset_size > min(len(x), len(y)):
        raise DataError(
            f"kernel distance: subset_size {subset_size} must be in [2, {min(len(x), len(y))}] "
            f"(sets of {len(x)} and {len(y)} samples)"
        )
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        xs = x[rng.choice(len(x), subset_size, replace=False)]
        ys = y[rng.choice(len(y), subset_size, replace=False)]
        values[s] = mmd2_unbiased(xs, ys)
    return KernelDistance(
        value=float(values.mean()), std=float(values.std(ddof=0)), num_subsets=num_subsets, subset_size=subset_size
    )


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise DataError(f"kernel distance: {name} must be a [N, D] feature matrix, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise DataError(f"kernel distance: {name} contains NaN or infinity")
    return feats
