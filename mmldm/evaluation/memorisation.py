"""Memorisation check: are generated clips nearer to the training clips than unseen real clips are?

A model that copies its training footage puts generated clips right next to training clips
in feature space; a model that learned the footage's distribution without copying puts them
about as near as real clips it never saw. With ``f`` the I3D features FVD uses (400-d
logits, time-averaged) and the distance to the nearest training clip

    d(x) = min_j || f(x) - f(t_j) ||_2          (t_j: the training windows)

computed for every generated clip ``g`` and every real held-out (reference) clip ``r``:

- threshold ``tau`` = the ``percentile``-th (5th) percentile of ``{d(r)}`` (NumPy's linear
  interpolation): only 5 % of unseen real clips are that near to a training clip;
- flagged: generated clips with ``d(g) < tau``; ``flagged_pct`` = their share, in percent.
  A model that generates new clips flags about 5 % (what held-out clips score by
  construction); a model that copies flags its copies, which lie at distance ~0;
- target (issue 21): ``flagged_pct <= max_share_pct`` (10 %);
- ``nearer_than_reference_pct``: the probability (percent) that a generated clip is nearer
  to the training set than a held-out clip, ``P(d(g) < d(r))`` over all pairs (ties count
  half; the Mann-Whitney statistic): 50 for generated clips as far as unseen ones, 100 for
  clips always nearer.

All functions are pure (NumPy float64 arrays in, numbers out); :mod:`mmldm.evaluation.evaluate`
reads the clips and computes the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from ..errors import DataError

DEFAULT_PERCENTILE = 5.0
DEFAULT_MAX_SHARE_PCT = 10.0
#: query rows whose distances to every training row are held at once (x the training count, float64)
MAX_DISTANCE_ENTRIES = 1 << 22

DEFINITION = ("d(x) = L2 distance from the clip's I3D features (the FVD features) to those of its nearest "
              "training window; threshold = the given percentile of d over the real reference (held-out) clips "
              "(numpy linear interpolation); flagged = generated clips with d < threshold; target: flagged share "
              "at most max_share_pct; nearer_than_reference_pct = P(d(generated) < d(reference)) over all pairs, "
              "ties counted half")


@dataclass(frozen=True)
class MemorisationResult:
    """Nearest-training distances of both sides and the verdict of the check.

    Shapes: ``generated_distances`` / ``generated_nearest`` [N], ``reference_distances`` /
    ``reference_nearest`` [M] (nearest: row index into the training features).
    """

    generated_distances: np.ndarray
    generated_nearest: np.ndarray
    reference_distances: np.ndarray
    reference_nearest: np.ndarray
    percentile: float
    threshold: float
    max_share_pct: float

    @property
    def flagged(self) -> np.ndarray:
        """bool [N]: generated clips nearer to the training set than the threshold."""
        return self.generated_distances < self.threshold

    @property
    def flagged_pct(self) -> float:
        return 100.0 * float(self.flagged.mean())

    @property
    def met(self) -> bool:
        return self.flagged_pct <= self.max_share_pct

    @property
    def nearer_than_reference_pct(self) -> float:
        g, r = self.generated_distances[:, None], self.reference_distances[None, :]
        return 100.0 * float(np.mean((g < r) + 0.5 * (g == r)))

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (per-clip lists included, in the order the features were given)."""
        return {
            "percentile": self.percentile,
            "threshold": self.threshold,
            "max_share_pct": self.max_share_pct,
            "flagged": int(self.flagged.sum()),
            "flagged_pct": self.flagged_pct,
            "met": self.met,
            "nearer_than_reference_pct": self.nearer_than_reference_pct,
            "generated": _side_summary(self.generated_distances),
            "reference": _side_summary(self.reference_distances),
        }


def _side_summary(distances: np.ndarray) -> dict[str, Any]:
    return {"clips": int(len(distances)), "median_distance": float(np.median(distances)),
            "min_distance": float(distances.min()), "max_distance": float(distances.max()),
            "distances": [float(d) for d in distances]}


def nearest_distances(queries: np.ndarray, training: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's L2 distance to its nearest training row, and that row's index.

    Shapes: queries [N, D], training [M, D] -> distances float64 [N], indices int64 [N].
    Exact (``scipy.spatial.distance.cdist``, float64), a block of queries at a time so that
    at most :data:`MAX_DISTANCE_ENTRIES` distances are held at once.
    """
    q = _as_features(queries, "queries")
    t = _as_features(training, "training")
    if q.shape[1] != t.shape[1]:
        raise DataError(f"memorisation: feature dimensions differ ({q.shape[1]} vs {t.shape[1]})")
    block = max(1, MAX_DISTANCE_ENTRIES // len(t))
    distances, indices = np.empty(len(q)), np.empty(len(q), dtype=np.int64)
    for first in range(0, len(q), block):
        d = cdist(q[first:first + block], t)
        indices[first:first + block] = d.argmin(axis=1)
        distances[first:first + block] = d[np.arange(len(d)), indices[first:first + block]]
    return distances, indices


def memorisation(generated: np.ndarray, reference: np.ndarray, training: np.ndarray,
                 percentile: float = DEFAULT_PERCENTILE,
                 max_share_pct: float = DEFAULT_MAX_SHARE_PCT) -> MemorisationResult:
    """The memorisation check (module docstring) of generated and reference (held-out) clips.

    Shapes: generated [N, D], reference [M, D], training [K, D] (the same features for all).
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    gen_d, gen_i = nearest_distances(generated, training)
    ref_d, ref_i = nearest_distances(reference, training)
    threshold = float(np.percentile(ref_d, percentile))
    return MemorisationResult(gen_d, gen_i, ref_d, ref_i, float(percentile), threshold, float(max_share_pct))


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) == 0:
        raise DataError(f"memorisation: {name} must be a non-empty [N, D] feature matrix, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise DataError(f"memorisation: {name} features contain NaN or infinity")
    return feats


__all__ = ["DEFAULT_MAX_SHARE_PCT", "DEFAULT_PERCENTILE", "DEFINITION", "MemorisationResult", "memorisation",
           "nearest_distances"]
