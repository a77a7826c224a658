"""``evaluate_folders``: FVD, KVD, FAD (and Sounding Shapes measures) of a folder of generated
clips against a folder of reference videos, recording every protocol choice.

What is scored (docs/evaluation.md has the full protocol):

- generated: the first ``num_frames`` frames (and their audio) of each file;
  when the folder holds more than ``num_samples`` files, a seeded random subset.
- reference: random ``num_frames``-frame windows (stride 1, at ``fps``) drawn
  without replacement from every window of every reference file, with
  ``numpy.random.default_rng(seed)``. Window counts come from the file headers
  (``probe``); a window the decoder cannot fill is dropped and counted.
- files that cannot be read (or are too short) are skipped, listed in the
  result and warned about; an evaluation with no usable file on a side is an error.
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import DataError, MMLDMError, WeightsError, check_positive_int
from .audio_features import (
    VGGISH_EMBEDDING_DIM,
    VGGISH_SAMPLE_RATE,
    VGGISH_WHAT,
    load_vggish,
    random_vggish,
    vggish_embeddings,
)
from .audioclip import (
    AUDIOCLIP_EMBEDDING_DIM,
    AUDIOCLIP_SAMPLE_RATE,
    AUDIOCLIP_WHAT,
    audioclip_embeddings,
    load_audioclip,
    random_audioclip,
)
from .features import i3d_features
from .frechet import frechet_distance
from .i3d import I3D_FEATURE_DIM, I3D_WHAT, load_i3d, random_i3d
from .mmd import kernel_distance
from .protocol import EvalProtocol
from .weights import sha256_file

RANDOM_FEATURES_BANNER = "RANDOM FEATURES: NOT COMPARABLE TO ANY PUBLISHED NUMBER"
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv")
FEATURE_METRICS = ("fvd", "kvd", "fad")
ALL_METRICS = (*FEATURE_METRICS, "shapes")
AUDIO_NETS = ("audioclip", "vggish")

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class AudioNet:
    """An audio feature net: ``embed`` maps mono [-1, 1] audio at ``sample_rate`` to [E, D] float64."""

    embed: Callable[[np.ndarray], np.ndarray]
    sample_rate: int


@dataclass(frozen=True)
class FeatureNets:
    """The feature networks of one evaluation and what to record about them."""

    i3d: torch.nn.Module | None
    audio: AudioNet | None
    record: dict[str, Any]

    @classmethod
    def build(
        cls,
        metrics: tuple[str, ...],
        protocol: EvalProtocol,
        i3d_path: str | Path | None,
        audio_weights: str | Path | None,
        random_features: bool,
        seed: int,
        device: str = "cpu",
    ) -> "FeatureNets":
        """Load (or, with ``random_features``, build seeded random) nets for the requested metrics.

        The audio net is ``protocol.audio_net``. A metric whose weights are not
        given is a WeightsError: there is no silent fallback.
        """
        record: dict[str, Any] = {"random_features": random_features}
        i3d = audio = None
        if {"fvd", "kvd"} & set(metrics):
            if random_features:
                i3d = random_i3d(seed)
                record["video"] = {"net": "I3D (random weights)", "weights": None, "sha256": None, "seed": seed}
            else:
                if i3d_path is None:
                    raise WeightsError(None, I3D_WHAT, "no weight file given for FVD/KVD; pass --i3d PATH "
                                       "(or --metrics without fvd,kvd, or --features random for a smoke test)")
                i3d = load_i3d(i3d_path)
                record["video"] = {"net": I3D_WHAT, "weights": str(i3d_path), "sha256": sha256_file(i3d_path)}
            record["video"].update(feature="400-d pre-softmax logits, averaged over time", dim=I3D_FEATURE_DIM)
        if "fad" in metrics:
            audio, record["audio"] = _build_audio_net(protocol, audio_weights, random_features, seed, device)
        return cls(i3d=i3d, audio=audio, record=record)


def _build_audio_net(protocol: EvalProtocol, weights: str | Path | None, random_features: bool,
                     seed: int, device: str) -> tuple[AudioNet, dict[str, Any]]:
    name = protocol.audio_net
    if name not in AUDIO_NETS:
        raise DataError(f"unknown audio feature net {name!r} (known: {', '.join(AUDIO_NETS)})")
    what = AUDIOCLIP_WHAT if name == "audioclip" else VGGISH_WHAT
    if random_features:
        model = random_audioclip(seed) if name == "audioclip" else random_vggish(seed)
        record: dict[str, Any] = {"net": f"{name} (random weights)", "weights": None, "sha256": None, "seed": seed}
    else:
        if weights is None:
            raise WeightsError(None, what, "no weight file given for FAD; pass --audio-weights PATH "
                               "(or --metrics without fad, or --features random for a smoke test)")
        model = load_audioclip(weights) if name == "audioclip" else load_vggish(weights)
        record = {"net": what, "weights": str(weights), "sha256": sha256_file(weights)}
    model = model.to(device)
    if name == "audioclip":
        int16 = protocol.audioclip_input == "int16"
        record.update(
            feature="raw 1024-d audio embedding (not L2-normalised), one per clip", dim=AUDIOCLIP_EMBEDDING_DIM,
            sample_rate=AUDIOCLIP_SAMPLE_RATE,
            input="[-1, 1] audio x 32768 (int16 range, as the net expects)" if int16 else
                  "[-1, 1] audio fed as is (reproduces the released evaluator; about -90 dB to the net)",
            windowing="whole 1.6 s clip (70,560 samples): 1654-sample Blackman-Harris frames, hop 561, FBSP",
        )
        net = AudioNet(lambda a: audioclip_embeddings(model, a, AUDIOCLIP_SAMPLE_RATE, int16), AUDIOCLIP_SAMPLE_RATE)
    else:
        record.update(
            feature="128-d embedding (last ReLU, before PCA/quantisation)", dim=VGGISH_EMBEDDING_DIM,
            sample_rate=VGGISH_SAMPLE_RATE, input="mono float in [-1, 1]",
            windowing="0.96 s log-mel examples (25 ms / 10 ms STFT, 64 mel 125-7500 Hz), hop 0.96 s, "
                      "trailing part dropped; every example is one sample",
        )
        net = AudioNet(lambda a: vggish_embeddings(model, a, VGGISH_SAMPLE_RATE), VGGISH_SAMPLE_RATE)
    return net, record


def list_videos(folder: str | Path, what: str) -> list[Path]:
    """Video files under ``folder`` (recursive, sorted). Missing or empty folders are DataErrors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{what} folder {folder}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return files


def _subset(files: list[Path], count: int, rng: np.random.Generator) -> list[Path]:
    """All files when there are at most ``count``, else a seeded random subset kept in sorted order."""
    if len(files) <= count:
        return files
    return [files[i] for i in sorted(rng.choice(len(files), count, replace=False))]


class _Collector:
    """Feature vectors of clips fed one at a time (video in batches, audio per clip)."""

    def __init__(self, nets: FeatureNets, protocol: EvalProtocol, batch_size: int, device: str):
        self.nets, self.protocol, self.batch_size, self.device = nets, protocol, batch_size, device
        self._pending: list[np.ndarray] = []
        self.video: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.clips = 0

    @property
    def needs_audio(self) -> bool:
        return self.nets.audio is not None

    def add(self, frames: np.ndarray, audio: np.ndarray) -> None:
        self.clips += 1
        if self.nets.i3d is not None:
            self._pending.append(frames)
            if len(self._pending) == self.batch_size:
                self._flush()
        if self.nets.audio is not None:
            self.audio.append(self.nets.audio.embed(audio))

    def _flush(self) -> None:
        if self._pending:
            self.video.append(i3d_features(self.nets.i3d, self._pending, self.protocol.downsample_to,
                                           batch_size=self.batch_size, device=self.device,
                                           antialias=self.protocol.letterbox_antialias))
            self._pending = []

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        self._flush()
        video = np.concatenate(self.video) if self.video else None
        audio = np.concatenate(self.audio) if self.audio else None
        return video, audio


def _read(path: Path, protocol: EvalProtocol, sample_rate: int, need_audio: bool, duration: float | None = None):
    from ..data.media_io import read_av

    return read_av(path, fps=protocol.fps, sample_rate=sample_rate, size=None, duration=duration,
                   require_audio=need_audio)


def _collect_generated(files: list[Path], protocol: EvalProtocol, collector: _Collector, sample_rate: int,
                       log: Log) -> list[dict[str, str]]:
    skipped = []
    samples = int(round(protocol.num_frames * sample_rate / protocol.fps))
    for path in files:
        try:
            clip = _read(path, protocol, sample_rate, collector.needs_audio,
                         duration=protocol.num_frames / protocol.fps)
            if clip.num_frames < protocol.num_frames:
                raise DataError(f"{path}: {clip.num_frames} frames at {protocol.fps} fps, "
                                f"fewer than the {protocol.num_frames} scored")
        except MMLDMError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        collector.add(clip.frames[:protocol.num_frames], clip.audio[:samples])
    if collector.clips < 2:  # one line saying why, rather than a warning per file and then the error
        why = f" (skipped {len(skipped)}, e.g. {skipped[0]['reason']})" if skipped else ""
        raise DataError(f"generated folder: {collector.clips} usable clip(s); at least 2 are needed{why}")
    for item in skipped:
        log(f"warning: skipping generated clip: {item['reason']}")
    return skipped


def _reference_windows(files: list[Path], protocol: EvalProtocol, count: int, rng: np.random.Generator,
                       need_audio: bool, log: Log) -> tuple[dict[Path, list[int]], int, list[dict[str, str]]]:
    """Draw ``count`` windows (file, start frame) uniformly from all windows; returns (starts by file,
    number of windows available, skipped files)."""
    from ..data.media_io import probe

    skipped, per_file = [], []
    for path in files:
        try:
            info = probe(path)
            if not info.has_video or (need_audio and not info.has_audio):
                raise DataError(f"{path}: needs a video{' and an audio' if need_audio else ''} stream")
        except MMLDMError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        # Output frame i shows time i / fps; those instants inside the video's duration.
        frames = math.ceil(round(info.duration * protocol.fps, 6))
        windows = frames - protocol.num_frames + 1
        if windows < 1:
            reason = (f"{path}: {frames} frames at {protocol.fps} fps, "
                      f"shorter than one {protocol.num_frames}-frame window")
            skipped.append({"path": str(path), "reason": reason})
            continue
        per_file.append((path, windows))
    available = sum(w for _, w in per_file)
    if available == 0:  # one line saying why, rather than a warning per file and then the error
        why = f" (skipped {len(skipped)}, e.g. {skipped[0]['reason']})" if skipped else ""
        raise DataError(f"reference folder: no readable file holds a full window{why}")
    for item in skipped:
        log(f"warning: skipping reference file: {item['reason']}")
    offsets = np.cumsum([0] + [w for _, w in per_file])
    chosen = np.sort(rng.choice(available, min(count, available), replace=False))
    starts: dict[Path, list[int]] = {}
    for index in chosen:
        k = int(np.searchsorted(offsets, index, side="right") - 1)
        starts.setdefault(per_file[k][0], []).append(int(index - offsets[k]))
    return starts, available, skipped


def _collect_reference(starts: dict[Path, list[int]], protocol: EvalProtocol, collector: _Collector,
                       sample_rate: int, log: Log) -> tuple[int, list[dict[str, str]]]:
    dropped, skipped = 0, []
    per_frame = sample_rate / protocol.fps
    samples = int(round(protocol.num_frames * per_frame))
    for path, file_starts in starts.items():
        try:
            clip = _read(path, protocol, sample_rate, collector.needs_audio)
        except MMLDMError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            dropped += len(file_starts)
            log(f"warning: skipping reference file: {exc}")
            continue
        for start in file_starts:
            if start + protocol.num_frames > clip.num_frames:
                dropped += 1
                continue
            first = int(round(start * per_frame))
            collector.add(clip.frames[start:start + protocol.num_frames], clip.audio[first:first + samples])
    if dropped:
        log(f"warning: {dropped} reference windows could not be decoded in full and were dropped")
    return dropped, skipped


def _is_shapes(reference: Path, shapes: bool | None) -> bool:
    from ..data.sounding_shapes import MANIFEST_NAME

    return (reference / MANIFEST_NAME).is_file() if shapes is None else shapes


def _readable(files: list[Path], what: str, log: Log) -> tuple[list[Path], list[dict[str, str]], int | None]:
    """Files whose headers show video and audio (others skipped with a warning), and the first one's sample rate."""
    from ..data.media_io import probe

    kept, skipped, sample_rate = [], [], None
    for path in files:
        try:
            info = probe(path)
            if not (info.has_video and info.has_audio):
                raise DataError(f"{path}: needs a video and an audio stream")
        except MMLDMError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
            log(f"warning: skipping {what} clip for the Sounding Shapes measures: {exc}")
            continue
        kept.append(path)
        sample_rate = sample_rate or info.sample_rate
    if not kept:
        raise DataError(f"{what} folder: no readable clip for the Sounding Shapes measures")
    return kept, skipped, sample_rate


def _shapes_measures(generated: list[Path], reference: list[Path], protocol: EvalProtocol, log: Log) -> dict[str, Any]:
    from .shapes_measures import measure_folder

    generated, gen_skipped, _ = _readable(generated, "generated", log)
    reference, ref_skipped, sample_rate = _readable(reference, "reference", log)
    real = measure_folder(reference, fps=protocol.fps, sample_rate=sample_rate, shuffled_baseline=True)
    return {
        "sample_rate": sample_rate,
        "skipped": gen_skipped + ref_skipped,
        "generated": measure_folder(generated, fps=protocol.fps, sample_rate=sample_rate),
        "reference": {k: v for k, v in real.items() if k != "shuffled_pairs"},
        "shuffled_pairs": real["shuffled_pairs"],
        "shuffled_pairs_definition": "reference audio of clip i against reference video of clip pi(i), pi one cycle through a "
                                     "random order of the clips (numpy default_rng(0))",
    }


def evaluate_folders(
    generated: str | Path,
    reference: str | Path,
    protocol: EvalProtocol,
    metrics: tuple[str, ...] = FEATURE_METRICS,
    i3d_path: str | Path | None = None,
    audio_weights: str | Path | None = None,
    random_features: bool = False,
    seed: int = 0,
    shapes: bool | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    nets: FeatureNets | None = None,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Score ``generated`` against ``reference``; returns the JSON-able result record.

    ``metrics``: any of fvd, kvd, fad, shapes. ``shapes=None`` adds the Sounding
    Shapes measures when the reference folder has a manifest.jsonl; True/False forces.
    ``nets``: prebuilt feature nets (otherwise built from the paths / ``random_features``).
    """
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise DataError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(ALL_METRICS)})")
    check_positive_int(batch_size, "batch size")
    generated, reference = Path(generated), Path(reference)
    gen_files_all = list_videos(generated, "generated")
    ref_files = list_videos(reference, "reference")
    if _is_shapes(reference, shapes) and "shapes" not in metrics:
        metrics = (*metrics, "shapes")
    feature_metrics = tuple(m for m in metrics if m in FEATURE_METRICS)
    rng = np.random.default_rng(seed)
    gen_files = _subset(gen_files_all, protocol.num_samples, rng)

    result: dict[str, Any] = {
        "mmldm_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "metrics_requested": list(metrics),
        "protocol": protocol.to_dict(),
        "random_features": random_features,
        "torch_version": torch.__version__,
        "device": device,
    }
    if random_features:
        result["warning"] = RANDOM_FEATURES_BANNER
    result["generated"] = {
        "folder": str(generated), "files_found": len(gen_files_all), "files_selected": len(gen_files),
        "selection": f"first {protocol.num_frames} frames of each file; a seeded random subset of files "
                     f"when more than num_samples",
    }
    result["reference"] = {
        "folder": str(reference), "files_found": len(ref_files),
        "split": "every video file under the folder (the paper-era protocol uses the training videos)",
        "selection": f"random {protocol.num_frames}-frame windows at {protocol.fps} fps, stride 1, drawn without "
                     f"replacement from all windows with numpy default_rng(seed)",
    }
    if feature_metrics:
        nets = nets or FeatureNets.build(feature_metrics, protocol, i3d_path, audio_weights, random_features, seed,
                                         device)
        result["feature_nets"] = nets.record
        result["metrics"] = _feature_metrics(gen_files, ref_files, protocol, feature_metrics, nets, rng,
                                             batch_size, device, result, log)
    if "shapes" in metrics:
        result["shapes"] = _shapes_measures(gen_files, _subset(ref_files, protocol.num_samples, rng), protocol, log)
    return result


def _feature_metrics(gen_files: list[Path], ref_files: list[Path], protocol: EvalProtocol,
                     metrics: tuple[str, ...], nets: FeatureNets, rng: np.random.Generator, batch_size: int,
                     device: str, result: dict[str, Any], log: Log) -> dict[str, Any]:
    sample_rate = nets.audio.sample_rate if nets.audio is not None else VGGISH_SAMPLE_RATE
    gen = _Collector(nets, protocol, batch_size, device)
    result["generated"]["skipped"] = _collect_generated(gen_files, protocol, gen, sample_rate, log)
    ref = _Collector(nets, protocol, batch_size, device)
    starts, available, skipped = _reference_windows(ref_files, protocol, protocol.num_samples, rng,
                                                    ref.needs_audio, log)
    dropped, unreadable = _collect_reference(starts, protocol, ref, sample_rate, log)
    result["reference"].update(
        windows_available=available, windows_drawn=sum(map(len, starts.values())), windows_dropped=dropped,
        skipped=skipped + unreadable,
        windows=[[str(path), start] for path, file_starts in starts.items() for start in file_starts],
    )
    result["generated"]["files"] = [str(p) for p in gen_files]
    if ref.clips < 2:
        raise DataError(f"reference folder: {ref.clips} usable window(s); at least 2 are needed")
    result["generated"]["clips_scored"], result["reference"]["clips_scored"] = gen.clips, ref.clips
    if gen.clips < protocol.num_samples or ref.clips < protocol.num_samples:
        log(f"warning: scored {gen.clips} generated clips and {ref.clips} reference windows, "
            f"fewer than the protocol's {protocol.num_samples}: numbers are not comparable to "
            f"{protocol.num_samples}-sample ones")
    gen_video, gen_audio = gen.result()
    ref_video, ref_audio = ref.result()
    out: dict[str, Any] = {}
    if "fvd" in metrics:
        fd = frechet_distance(gen_video, ref_video, protocol.covariance)
        out["fvd"] = {"value": fd.value, "covariance": protocol.covariance, "sqrtm_offset": fd.sqrtm_offset,
                      "sqrt_method": fd.method,
                      "max_imaginary_dropped": fd.max_imaginary, "samples": [len(gen_video), len(ref_video)]}
    if "kvd" in metrics:
        kd = kernel_distance(gen_video, ref_video, protocol.kvd_subsets,
                             min(protocol.kvd_subset_size, len(gen_video), len(ref_video)), seed=result["seed"])
        out["kvd"] = {"value": kd.value, "std": kd.std, "subsets": kd.num_subsets, "subset_size": kd.subset_size,
                      "kernel": "(x.y/d + 1)^3", "estimator": "unbiased MMD^2", "scale": 1.0,
                      "samples": [len(gen_video), len(ref_video)]}
    if "fad" in metrics:
        if gen_audio is None or ref_audio is None or len(gen_audio) < 2 or len(ref_audio) < 2:
            raise DataError("FAD: fewer than 2 audio embeddings on a side (clips shorter than 0.975 s?)")
        fd = frechet_distance(gen_audio, ref_audio, protocol.covariance)
        out["fad"] = {"value": fd.value * protocol.fad_scale, "unscaled": fd.value, "scale": protocol.fad_scale,
                      "covariance": protocol.covariance, "sqrtm_offset": fd.sqrtm_offset, "sqrt_method": fd.method,
                      "embeddings": [len(gen_audio), len(ref_audio)], "note": _fad_note(protocol)}
    return out


def _fad_note(protocol: EvalProtocol) -> str:
    if protocol.audio_net == "vggish":
        return ("published MM-Diffusion / MM-LDM FADs use the AudioCLIP audio head; a VGGish FAD is a "
                "different number and not comparable to them")
    if protocol.audioclip_input == "int16":
        return ("AudioCLIP fed int16-range audio as it expects; the released evaluator fed [-1, 1] audio, so "
                "published FADs correspond to --audioclip-input unit")
    return "AudioCLIP fed [-1, 1] audio as the released evaluator did (about -90 dB to the net)"


def format_result(result: dict[str, Any]) -> str:
    """Human-readable summary (markdown tables) of an :func:`evaluate_folders` record."""
    lines = []
    if result.get("random_features"):
        lines += [f"**{RANDOM_FEATURES_BANNER}**", ""]
    p = result["protocol"]
    if "clips_scored" in result["generated"]:
        lines.append(f"protocol {p['name']}: {result['generated']['clips_scored']} generated clips vs "
                     f"{result['reference']['clips_scored']} reference windows, {p['num_frames']} frames at "
                     f"{p['fps']} fps, seed {result['seed']}")
    else:
        lines.append(f"protocol {p['name']}: {result['generated']['files_selected']} generated files, "
                     f"seed {result['seed']}")
    metrics = result.get("metrics", {})
    if metrics:
        lines += ["", "| metric | value | notes |", "|---|---|---|"]
        nets = result["feature_nets"]
        if "fvd" in metrics:
            lines.append(f"| FVD | {metrics['fvd']['value']:.3f} | {nets['video']['net']}, "
                         f"{metrics['fvd']['covariance']} covariance, "
                         f"letterbox {p['downsample_to']} -> {p['i3d_resolution']} |")
        if "kvd" in metrics:
            k = metrics["kvd"]
            sub = ("no subsets" if k["subsets"] == 0
                   else f"{k['subsets']} subsets of {k['subset_size']}, std {k['std']:.4g}")
            lines.append(f"| KVD | {k['value']:.4f} | unbiased MMD^2, (x.y/d+1)^3, {sub} |")
        if "fad" in metrics:
            a = nets["audio"]
            lines.append(f"| FAD | {metrics['fad']['value']:.4f} | {a['net']}, {a['sample_rate']} Hz, "
                         f"x{metrics['fad']['scale']:g} (unscaled {metrics['fad']['unscaled']:.6g}) |")
    shapes = result.get("shapes")
    if shapes:
        lines += ["", "Sounding Shapes (no learned weights)", "",
                  "| | generated | reference | shuffled pairs |", "|---|---|---|---|"]
        rows = [("clips", "clips", "{:d}"), ("median sync error (semitones)", "sync_error_median", "{:.3f}"),
                ("within 1 semitone %", "sync_error_within_1_semitone_pct", "{:.1f}"),
                ("class agreement %", "class_agreement_pct", "{:.1f}"), ("one object %", "one_object_pct", "{:.1f}")]
        for label, key, fmt in rows:
            cells = [fmt.format(shapes[side][key]) for side in ("generated", "reference", "shuffled_pairs")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if result.get("random_features"):
        lines += ["", f"**{RANDOM_FEATURES_BANNER}**"]
    return "\n".join(lines)
