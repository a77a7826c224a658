"""FVD on real clips with DeepMind's I3D: corruptions of Big Buck Bunny windows raise it, in order.

A few windows only (the full table is benchmarks/fvd_sanity.py, docs/evaluation.md): the
clean set is windows of the film, set B the same windows one frame later. A one-frame
shift moves I3D features a little; each corruption of set B (blur, noise, shuffled or
frozen frames) must move them further, and the stronger blur / noise further than the
weaker.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "assets" / "i3d" / "i3d-kinetics-400.ckpt"
VIDEO = REPO / "assets" / "bbb" / "bbb.mp4"
STARTS = (100.0, 250.0, 400.0)


@pytest.fixture(scope="module")
def fvd_sanity():
    """benchmarks/fvd_sanity.py as a module (the benchmarks folder is not a package)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "benchmarks"))
        yield importlib.import_module("fvd_sanity")


@pytest.fixture(scope="module")
def i3d(tmp_path_factory):
    missing = [p.relative_to(REPO) for p in (CHECKPOINT, VIDEO) if not p.is_file()]
    if missing:
        pytest.skip(f"needs {', '.join(map(str, missing))}: run `make assets`")
    from mmldm.evaluation.i3d import load_i3d
    from mmldm.evaluation.i3d_convert import convert_jax_i3d

    out = tmp_path_factory.mktemp("i3d") / "i3d-kinetics-400.safetensors"
    convert_jax_i3d(CHECKPOINT, out)
    return load_i3d(out)


def test_corruptions_raise_fvd_against_the_clean_set(fvd_sanity, i3d):
    from mmldm.evaluation.protocol import get_protocol

    protocol = get_protocol("standard")
    clean = fvd_sanity.window_features(i3d, VIDEO, STARTS, protocol)["clean"]
    shifted = [s + 1 / protocol.fps for s in STARTS]
    sets = fvd_sanity.window_features(i3d, VIDEO, shifted, protocol, fvd_sanity.CORRUPTIONS, seed=0)
    assert set(sets) == {"clean", *(name for name, _, _ in fvd_sanity.CORRUPTIONS)}
    assert all(f.shape == (len(STARTS), 400) and np.isfinite(f).all() for f in sets.values())
    rows = [{"name": fvd_sanity.REAL if name == "clean" else name, **fvd_sanity.distances(clean, feats, protocol)}
            for name, feats in sets.items()]
    fvd = {row["name"]: row["fvd"] for row in rows}
    baseline = fvd.pop(fvd_sanity.REAL)
    assert baseline > 0
    for name, value in fvd.items():
        assert value > 1.15 * baseline, (name, fvd, baseline)
    assert fvd["blur sigma 1"] < fvd["blur sigma 4"] and fvd["noise std 8"] < fvd["noise std 32"], fvd
    assert fvd_sanity.is_monotone(rows)


def test_corruptions_do_what_they_say(fvd_sanity):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (16, 224, 256, 3), dtype=np.uint8)
    frozen = fvd_sanity.corrupt(frames, "freeze", 0.0, rng)
    assert frozen.shape == frames.shape and all(np.array_equal(f, frames[0]) for f in frozen)
    shuffled = fvd_sanity.corrupt(frames, "shuffle", 0.0, np.random.default_rng(1))
    assert not np.array_equal(shuffled, frames)
    assert sorted(f.tobytes() for f in shuffled) == sorted(f.tobytes() for f in frames)
    weak, strong = (fvd_sanity.corrupt(frames, "noise", s, np.random.default_rng(2)) for s in (8.0, 32.0))
    change = [np.abs(x.astype(int) - frames).mean() for x in (weak, strong)]
    assert weak.dtype == np.uint8 and 4 < change[0] < change[1]
    blurred = [fvd_sanity.corrupt(frames, "blur", s, rng) for s in (1.0, 4.0)]
    roughness = [np.abs(np.diff(b.astype(int), axis=2)).mean() for b in (frames, *blurred)]
    assert roughness[0] > roughness[1] > roughness[2]
    with pytest.raises(ValueError, match="unknown corruption"):
        fvd_sanity.corrupt(frames, "sharpen", 1.0, rng)


def test_window_starts_stay_in_their_half_and_never_repeat(fvd_sanity):
    from mmldm.errors import DataError

    rng = np.random.default_rng(0)
    first = fvd_sanity.window_starts(596.0, 10.0, 16, 256, 0, rng)
    second = fvd_sanity.window_starts(596.0, 10.0, 16, 256, 1, rng)
    assert len(set(first)) == 256 and len(set(second)) == 256
    assert max(first) + 1.6 <= 298.0 <= min(second) and max(second) + 1.5 <= 596.0
    with pytest.raises(DataError, match="fewer than"):
        fvd_sanity.window_starts(3.0, 10.0, 16, 10, 0, rng)
