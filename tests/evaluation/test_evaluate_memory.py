"""Evaluation on long, large real-format files: bounded memory, the reference checked first, nothing dropped,
and the small warnings and errors of the evaluate command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mmldm.cli.main import main
from mmldm.data import media_io
from mmldm.data.sounding_shapes import ShapesConfig, write_dataset
from mmldm.errors import DataError
from mmldm.evaluation.evaluate import FeatureNets, evaluate_folders
from mmldm.evaluation.protocol import get_protocol

REPO = Path(__file__).resolve().parents[2]
#: what any evaluation may take, whatever the folder (issue: "at most 2 GiB")
MAX_RSS = 2 * 1024**3


def write_test_video(path: Path, seconds: float, width: int = 1280, height: int = 720, fps: int = 1,
                     audio_seconds: float | None = None, sample_rate: int = 16000) -> Path:
    """A cheap-to-encode sounding video: a white square moving over grey, clicks at every frame.

    Encoded with x264's ultrafast preset and a key frame every 2 frames, so a 720p file of
    minutes takes a second to write; ``audio_seconds`` (default: as long as the video) makes the
    sound end early.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    audio_seconds = seconds if audio_seconds is None else audio_seconds
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "g": "2"}
        audio = container.add_stream("aac", rate=sample_rate)
        audio.layout = "mono"
        frame = np.full((height, width, 3), 100, np.uint8)
        side = min(64, width // 4, height // 2)
        for index in range(int(seconds * fps)):
            frame[:] = 100
            x = (index * 97) % (width - side)
            frame[(height - side) // 2:(height + side) // 2, x:x + side] = 240
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = index, Fraction(1, fps)
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        total = int(audio_seconds * sample_rate)
        period = sample_rate // fps
        wave = np.zeros(total, np.float32)
        for first in range(0, total, period):
            n = min(200, total - first)
            wave[first:first + n] = 0.5 * np.exp(-np.arange(n) / 40) * np.sin(np.arange(n) * 0.7)
        for first in range(0, total, 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, first:first + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = sample_rate, first, Fraction(1, sample_rate)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def long_folders(tmp_path_factory):
    """A reference folder holding one 160 s 720p file (4.4 GB as 10 fps RGB frames: over read_av's
    4 GiB whole-file limit) and a generated folder of Sounding Shapes clips."""
    root = tmp_path_factory.mktemp("long")
    write_test_video(root / "ref" / "film.mp4", seconds=160)
    write_dataset(root / "gen", n=3, seed=2, cfg=ShapesConfig())
    (root / "gen" / "manifest.jsonl").unlink()
    return root


def pooled_pixels_nets() -> FeatureNets:
    import torch
    import torch.nn.functional as F

    class PooledPixels(torch.nn.Module):
        def forward(self, video):
            return F.adaptive_avg_pool2d(video.mean(dim=(1, 2)), (4, 4)).flatten(1)

    return FeatureNets(i3d=PooledPixels(), audio=None, record={"video": {"net": "pooled pixels (test)"}})


def test_a_long_reference_file_is_streamed_not_dropped(long_folders):
    protocol = get_protocol("mm-diffusion").with_overrides(num_samples=4)
    result = evaluate_folders(long_folders / "gen", long_folders / "ref", protocol, metrics=("fvd",),
                              nets=pooled_pixels_nets(), seed=1, log=lambda _: None)
    ref = result["reference"]
    assert ref["windows_available"] == 1600 - 16 + 1
    assert ref["clips_scored"] == ref["windows_drawn"] == 4 and ref["windows_dropped"] == 0
    assert ref["skipped"] == [] and np.isfinite(result["metrics"]["fvd"]["value"])


def test_peak_memory_stays_bounded_on_a_long_720p_reference(long_folders):
    """Every metric at once, in a fresh process: the peak RSS stays under 2 GiB and grows by far less
    than the file would take decoded (4.4 GB)."""
    script = textwrap.dedent(f"""
        import json, resource, sys
        sys.path.insert(0, {str(REPO / 'tests' / 'evaluation')!r})
        from test_evaluate_memory import pooled_pixels_nets
        from mmldm.evaluation.evaluate import evaluate_folders
        from mmldm.evaluation.protocol import get_protocol
        import cv2, librosa, librosa.onset, scipy.ndimage  # imported up front: not counted as growth
        nets = pooled_pixels_nets()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        protocol = get_protocol("mm-diffusion").with_overrides(num_samples=3)
        result = evaluate_folders({str(long_folders / 'gen')!r}, {str(long_folders / 'ref')!r}, protocol,
                                  metrics=("fvd", "kvd", "shapes", "av-align"), nets=nets, log=lambda _: None)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({{"before": before, "peak": peak, "scored": result["reference"]["clips_scored"]}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    print(record)
    assert record["scored"] == 3
    assert record["peak"] < MAX_RSS
    assert record["peak"] - record["before"] < 768 * 1024**2, record


def test_an_unusable_reference_fails_before_any_generated_clip_is_read(long_folders, tmp_path, monkeypatch):
    reads = []
    real_read = media_io.read_av
    monkeypatch.setattr(media_io, "read_av", lambda *a, **k: reads.append(a[0]) or real_read(*a, **k))
    short = write_test_video(tmp_path / "ref" / "short.mp4", seconds=1, width=64, height=64, fps=10)
    (tmp_path / "ref" / "notes.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match=r"reference folder: 0 usable 16-frame window\(s\) at 10 fps.*skipped 2"):
        evaluate_folders(long_folders / "gen", short.parent, get_protocol("mm-diffusion"), metrics=("shapes",),
                         log=lambda _: None)
    assert reads == []


def test_short_audio_is_warned_once_naming_the_file(tmp_path):
    gen = tmp_path / "gen"
    write_dataset(gen, n=2, seed=3, cfg=ShapesConfig())
    ref = write_test_video(tmp_path / "ref" / "early_silence.mp4", seconds=8, width=64, height=64, fps=10,
                           audio_seconds=2)
    warnings = []
    protocol = get_protocol("mm-diffusion").with_overrides(num_samples=20)
    evaluate_folders(gen, ref.parent, protocol, metrics=("av-align",), log=warnings.append, seed=0)
    short = [w for w in warnings if "shorter than its video" in w]
    assert len(short) == 1 and str(ref) in short[0] and "zero-padded" in short[0]
    # Generated clips whose sound is complete give no such warning.
    assert not any(str(gen) in w for w in short)


def test_count_warning_names_only_the_short_side(tmp_path):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    write_dataset(gen, n=3, seed=3, cfg=ShapesConfig())
    write_dataset(ref, n=4, seed=4, cfg=ShapesConfig())
    warnings = []
    protocol = get_protocol("mm-diffusion").with_overrides(num_samples=4)
    evaluate_folders(gen, ref, protocol, metrics=("shapes",), log=warnings.append)
    counts = [w for w in warnings if "fewer than the protocol's" in w]
    assert counts == ["warning: scored 3 generated clips, fewer than the protocol's 4: numbers are not "
                      "comparable to 4-sample ones"]


def test_evaluate_av_align_reports_both_sides_and_the_shuffled_baseline(tmp_path, capsys):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    write_dataset(gen, n=3, seed=3, cfg=ShapesConfig())
    write_dataset(ref, n=4, seed=4, cfg=ShapesConfig())
    out = tmp_path / "result.json"
    code = main(["evaluate", "--generated", str(gen), "--reference", str(ref), "--metrics", "av-align",
                 "--num-samples", "4", "--features", "random", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| AV-Align mean |" in printed and "RANDOM FEATURES" not in printed  # no feature net was used
    result = json.loads(out.read_text())
    assert result["random_features"] is False and "metrics" not in result
    record = result["av_align"]
    for side in ("generated", "reference", "shuffled_pairs"):
        assert 0.0 <= record[side]["av_align_mean"] <= 1.0
        assert -8 <= record[side]["pooled_offset_frames"] <= 8
    assert record["reference"]["clips"] == record["shuffled_pairs"]["clips"] == 4
    assert record["settings"]["matching"] == "one-to-one" and record["settings"]["fps"] == 10.0
    # --num-frames sets the clip length of every metric (recorded in the protocol).
    code = main(["evaluate", "--generated", str(gen), "--reference", str(ref), "--metrics", "av-align",
                 "--num-samples", "4", "--num-frames", "12", "--out", str(out)])
    result = json.loads(out.read_text())
    assert code == 0 and result["protocol"]["num_frames"] == 12 and result["av_align"]["settings"]["clip_frames"] == 12
    assert result["reference"]["windows_available"] == 4 * (16 - 12 + 1)


def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_dataset(tmp_path / "clips", n=2, seed=3, cfg=ShapesConfig())
    code = main(["evaluate", "--generated", str(tmp_path / "clips"), "--reference", str(tmp_path / "clips"),
                 "--metrics", "shapes", "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err and "internal error" not in err
    assert "--device cuda" in err and "CUDA is not available" in err
