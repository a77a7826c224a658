"""``evaluate_folders`` and ``mmldm evaluate`` on tiny folders of real mp4 files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmldm.cli.main import main
from mmldm.data.media_io import read_av, write_av
from mmldm.data.sounding_shapes import ShapesConfig, write_dataset
from mmldm.errors import DataError, WeightsError
from mmldm.evaluation.audio_features import VGGISH_SAMPLE_RATE, log_mel_examples
from mmldm.evaluation.evaluate import RANDOM_FEATURES_BANNER, AudioNet, FeatureNets, evaluate_folders
from mmldm.evaluation.features import preprocess_video
from mmldm.evaluation.frechet import frechet_distance
from mmldm.evaluation.mmd import mmd2_unbiased
from mmldm.evaluation.protocol import get_protocol


class PooledPixels(torch.nn.Module):
    """A cheap stand-in for I3D with its input: [B, 3, T, 224, 224] -> [B, 16] (pooled grey levels).

    16-d rather than 400-d keeps scipy's sqrtm fast; the pipeline does not depend on the dimension.
    """

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(video.mean(dim=(1, 2)), (4, 4)).flatten(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_dataset(root / "shapes_ref", n=4, seed=1, cfg=ShapesConfig())
    write_dataset(root / "shapes_gen", n=3, seed=2, cfg=ShapesConfig())
    (root / "shapes_gen" / "manifest.jsonl").unlink()  # generated folders have no manifest
    # Long reference videos: 3 s at 10 fps -> 15 windows of 16 frames each.
    rng = np.random.default_rng(0)
    long_ref = root / "long_ref"
    for i in range(2):
        frames = rng.integers(0, 256, (30, 32, 48, 3), dtype=np.uint8)
        audio = 0.3 * np.sin(2 * np.pi * (300 + 200 * i) * np.arange(48000) / 16000)
        write_av(long_ref / f"video{i}.mp4", frames, audio, fps=10.0, sample_rate=16000)
    return root


def mean_log_mel(audio: np.ndarray) -> np.ndarray:
    """A cheap stand-in audio embedding with VGGish's windowing: mean log-mel of each 0.96 s example [E, 64]."""
    return log_mel_examples(audio, VGGISH_SAMPLE_RATE).mean(axis=1)


@pytest.fixture(scope="module")
def cheap_nets():
    return FeatureNets(i3d=PooledPixels(), audio=AudioNet(mean_log_mel, VGGISH_SAMPLE_RATE),
                       record={"random_features": True, "video": {"net": "pooled pixels (test)"},
                               "audio": {"net": "mean log-mel (test)", "sample_rate": 16000}})


def test_features_of_recorded_windows_give_the_reported_numbers(folders, cheap_nets):
    protocol = get_protocol("mm-diffusion").with_overrides(num_samples=6)
    result = evaluate_folders(folders / "shapes_gen", folders / "long_ref", protocol, nets=cheap_nets,
                              seed=3, log=lambda _: None)
    ref = result["reference"]
    assert ref["windows_available"] == 30 and ref["windows_drawn"] == 6 and ref["clips_scored"] == 6
    assert result["generated"]["clips_scored"] == 3

    # Recompute every feature from the recorded files and windows, independently of the pipeline.
    def features(path, start):
        clip = read_av(path, fps=10.0, sample_rate=VGGISH_SAMPLE_RATE)
        frames = clip.frames[start:start + 16]
        audio = clip.audio[start * 1600:start * 1600 + 25600]
        with torch.inference_mode():
            video = PooledPixels()(preprocess_video(frames, 64)[None]).double().numpy()
        return video, mean_log_mel(audio)

    gen = [features(p, 0) for p in result["generated"]["files"]]
    real = [features(p, s) for p, s in ref["windows"]]
    gen_v, gen_a = (np.concatenate(x) for x in zip(*gen))
    ref_v, ref_a = (np.concatenate(x) for x in zip(*real))
    metrics = result["metrics"]
    assert metrics["fvd"]["value"] == pytest.approx(frechet_distance(gen_v, ref_v).value, rel=1e-5)
    assert metrics["kvd"]["value"] == pytest.approx(mmd2_unbiased(gen_v, ref_v), rel=1e-5)
    assert metrics["fad"]["value"] == pytest.approx(1e4 * frechet_distance(gen_a, ref_a).value, rel=1e-5)
    assert metrics["fad"]["scale"] == 1e4 and result["protocol"]["downsample_to"] == 64


def test_windows_are_seeded(folders, cheap_nets):
    protocol = get_protocol("standard").with_overrides(num_samples=4)
    audio_free = FeatureNets(i3d=cheap_nets.i3d, audio=None, record=cheap_nets.record)
    runs = [evaluate_folders(folders / "shapes_gen", folders / "long_ref", protocol, metrics=("fvd",),
                             nets=audio_free, seed=seed, log=lambda _: None) for seed in (5, 5, 6)]
    assert runs[0]["reference"]["windows"] == runs[1]["reference"]["windows"]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    assert runs[0]["reference"]["windows"] != runs[2]["reference"]["windows"]
    starts = [s for _, s in runs[0]["reference"]["windows"]]
    assert all(0 <= s <= 14 for s in starts)


def test_reference_draws_average_independent_draws_the_first_being_the_single_draw_run(folders, cheap_nets):
    """reference_draws K: each draw's FVD / KVD is that of a single-draw run on its windows; the value
    is their mean; draw 0 is what a single-draw run with the same seed scores."""
    protocol = get_protocol("standard").with_overrides(num_samples=4)
    audio_free = FeatureNets(i3d=cheap_nets.i3d, audio=None, record=cheap_nets.record)
    quiet = dict(metrics=("fvd", "kvd"), nets=audio_free, log=lambda _: None)
    single = evaluate_folders(folders / "shapes_gen", folders / "long_ref", protocol, seed=5, **quiet)
    drawn = evaluate_folders(folders / "shapes_gen", folders / "long_ref", protocol, seed=5, reference_draws=3,
                             **quiet)
    fvd = drawn["metrics"]["fvd"]
    assert len(fvd["draws"]) == 3 and len(set(fvd["draws"])) == 3  # independent draws give other numbers
    assert fvd["first_draw"] == fvd["draws"][0] == pytest.approx(single["metrics"]["fvd"]["value"])
    assert fvd["value"] == pytest.approx(np.mean(fvd["draws"]))
    assert fvd["draws_std"] == pytest.approx(np.std(fvd["draws"], ddof=1))
    assert drawn["metrics"]["kvd"]["first_draw"] == pytest.approx(single["metrics"]["kvd"]["value"])
    assert drawn["reference"]["windows"] == single["reference"]["windows"]  # draw 0's windows are recorded
    assert drawn["reference"]["draws"]["count"] == 3 and len(drawn["reference"]["draws"]["windows"]) == 2
    # draw k's number is a single run's on draw k's windows: recompute draw 1 from its own rng
    import mmldm.evaluation.evaluate as ev

    files = ev.list_videos(folders / "long_ref", "reference")
    plan = ev._plan_reference(files, protocol, 4, np.random.default_rng([5, 2, 1]), False, lambda _: None)
    gen = ev._Side(("fvd",), audio_free, protocol, 16000, 8, "cpu")
    ev._collect_generated(ev.list_videos(folders / "shapes_gen", "generated"), protocol, gen, False,
                          lambda _: None)
    ref = ev._Side(("fvd",), audio_free, protocol, 16000, 8, "cpu")
    ev._collect_reference(plan, protocol, ref, False, lambda _: None)
    gen.flush()
    ref.flush()
    expected = frechet_distance(gen.features.result()[0], ref.features.result()[0]).value
    assert drawn["reference"]["draws"]["windows"][0] == plan.windows
    assert fvd["draws"][1] == pytest.approx(expected, rel=1e-5)
    assert "mean of 3 reference draws" in ev.format_result(drawn)
    with pytest.raises(Exception, match="reference draws"):
        evaluate_folders(folders / "shapes_gen", folders / "long_ref", protocol, reference_draws=0, **quiet)


def test_bad_files_are_skipped_listed_and_warned(folders, cheap_nets, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    for src in sorted((folders / "shapes_gen").rglob("*.mp4"))[:2]:
        (gen / src.name).write_bytes(src.read_bytes())
    (gen / "broken.mp4").write_bytes(b"\x00not a video")
    warnings = []
    protocol = get_protocol("mm-diffusion").with_overrides(num_samples=4)
    audio_free = FeatureNets(i3d=cheap_nets.i3d, audio=None, record=cheap_nets.record)
    result = evaluate_folders(gen, folders / "long_ref", protocol, metrics=("fvd",), nets=audio_free,
                              log=warnings.append)
    skipped = result["generated"]["skipped"]
    assert [s["path"] for s in skipped] == [str(gen / "broken.mp4")]
    assert result["generated"]["clips_scored"] == 2
    assert any("broken.mp4" in w for w in warnings)
    assert any("fewer than the protocol's 4" in w for w in warnings)
    shapes = evaluate_folders(gen, folders / "shapes_ref", protocol, metrics=("shapes",), log=warnings.append)
    assert [s["path"] for s in shapes["shapes"]["skipped"]] == [str(gen / "broken.mp4")]
    assert shapes["shapes"]["generated"]["clips"] == 2


def test_video_metrics_need_no_audio_track(cheap_nets, tmp_path):
    rng = np.random.default_rng(7)
    for side in ("gen", "ref"):
        for i in range(3):
            write_av(tmp_path / side / f"{i}.mp4", rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), None,
                     fps=10.0, sample_rate=16000)
    video_only = FeatureNets(i3d=cheap_nets.i3d, audio=None, record=cheap_nets.record)
    protocol = get_protocol("standard").with_overrides(num_samples=3)
    result = evaluate_folders(tmp_path / "gen", tmp_path / "ref", protocol, metrics=("fvd", "kvd"),
                              nets=video_only, log=lambda _: None)
    assert result["generated"]["clips_scored"] == result["reference"]["clips_scored"] == 3
    assert np.isfinite(result["metrics"]["fvd"]["value"]) and "fad" not in result["metrics"]


def test_folder_errors_are_one_line(tmp_path, folders):
    empty = tmp_path / "empty"
    empty.mkdir()
    protocol = get_protocol("mm-diffusion")
    with pytest.raises(DataError, match="no video files"):
        evaluate_folders(empty, folders / "long_ref", protocol, metrics=("shapes",))
    with pytest.raises(DataError, match="not a folder"):
        evaluate_folders(tmp_path / "absent", folders / "long_ref", protocol, metrics=("shapes",))
    with pytest.raises(WeightsError, match="--i3d"):
        evaluate_folders(folders / "shapes_gen", folders / "long_ref", protocol, metrics=("fvd",))
    with pytest.raises(WeightsError, match="AudioCLIP.*--audio-weights"):
        evaluate_folders(folders / "shapes_gen", folders / "long_ref", protocol, metrics=("fad",))
    with pytest.raises(WeightsError, match="VGGish.*--audio-weights"):
        evaluate_folders(folders / "shapes_gen", folders / "long_ref", protocol.with_overrides(audio_net="vggish"),
                         metrics=("fad",))


def test_cli_shapes_measures_need_no_weights(folders, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["evaluate", "--generated", str(folders / "shapes_gen"), "--reference",
                 str(folders / "shapes_ref"), "--metrics", "shapes", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| median sync error (semitones) |" in printed and "shuffled pairs" in printed
    shapes = json.loads(out.read_text())["shapes"]
    assert shapes["generated"]["clips"] == 3 and shapes["reference"]["clips"] == 4
    # Real clips are in sync; the shuffled pairs baseline is far out of it.
    assert shapes["reference"]["sync_error_median"] < 1.0 < shapes["shuffled_pairs"]["sync_error_median"]
    assert shapes["generated"]["sync_error_median"] < 1.0


def test_cli_missing_weights_is_one_line_naming_file_and_net(folders, tmp_path, capsys):
    code = main(["evaluate", "--generated", str(folders / "shapes_gen"), "--reference", str(folders / "long_ref"),
                 "--metrics", "fvd", "--i3d", str(tmp_path / "i3d_pretrained_400.pt")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err
    assert "I3D" in err and "i3d_pretrained_400.pt" in err
    code = main(["evaluate", "--generated", str(folders / "shapes_gen"), "--reference", str(folders / "long_ref"),
                 "--metrics", "fvd,loudness"])
    assert code != 0 and "loudness" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_random_features_say_so_in_capitals(folders, tmp_path, capsys):
    out = tmp_path / "random.json"
    code = main(["evaluate", "--generated", str(folders / "shapes_gen"), "--reference", str(folders / "shapes_ref"),
                 "--features", "random", "--num-samples", "3", "--out", str(out)])
    assert code == 0
    assert RANDOM_FEATURES_BANNER in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["warning"] == RANDOM_FEATURES_BANNER and result["random_features"] is True
    assert result["feature_nets"]["video"]["net"] == "I3D (random weights)"
    assert set(result["metrics"]) == {"fvd", "kvd", "fad"} and "shapes" in result


def test_reference_draws_warn_about_an_unreadable_reference_file_once(folders, cheap_nets, tmp_path):
    import shutil

    reference = tmp_path / "ref"
    shutil.copytree(folders / "long_ref", reference)
    (reference / "broken.mp4").write_bytes(b"not a video")
    protocol = get_protocol("standard").with_overrides(num_samples=4)
    said: list[str] = []
    result = evaluate_folders(folders / "shapes_gen", reference, protocol, metrics=("fvd",), reference_draws=3,
                              nets=FeatureNets(i3d=cheap_nets.i3d, audio=None, record=cheap_nets.record),
                              log=said.append)
    assert len(result["metrics"]["fvd"]["draws"]) == 3
    warnings = [line for line in said if "broken.mp4" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipping reference file")


def test_cli_reference_draws_below_one_is_one_line(folders, capsys):
    code = main(["evaluate", "--generated", str(folders / "shapes_gen"), "--reference", str(folders / "shapes_ref"),
                 "--metrics", "shapes", "--reference-draws", "0"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "reference draws" in err
