"""`mmldm recipe bbb`'s evaluation: set folders remade only when their inputs change, the targets
read from the measured numbers, and (slow, needs `make assets`) the smoke scale end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmldm.cli.main import main
from mmldm.recipes import real_video_eval as rve


class FakeRecipe:
    def __init__(self, root: Path):
        self.model = root / "model"
        self.model.mkdir(parents=True)
        (self.model / "model_index.json").write_text("{}")


def bare_evaluation(tmp_path: Path) -> rve._Evaluation:
    """An evaluation with only what ``_build`` uses (no model, no data)."""
    ev = rve._Evaluation.__new__(rve._Evaluation)
    ev.recipe, ev.n, ev.timings = FakeRecipe(tmp_path), 4, {}
    ev.eval_dir = tmp_path / "eval"
    ev.eval_dir.mkdir()
    return ev


def test_sets_are_made_once_and_again_when_an_input_changes(tmp_path, capsys):
    ev = bare_evaluation(tmp_path)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"one")
    made = []

    def make(partial: Path) -> None:
        made.append(partial)
        (partial / "real").mkdir()
        (partial / "real" / "a.mp4").write_bytes(b"x")

    ev._build("real", make, model=True, inputs=[clip])
    ev._build("real", make, model=True, inputs=[clip])
    assert len(made) == 1 and (ev.eval_dir / "real" / "a.mp4").is_file()
    assert not made[0].exists()  # the partial folder was moved into place
    clip.write_bytes(b"other")  # an input changed: made again
    ev._build("real", make, model=True, inputs=[clip])
    assert len(made) == 2
    (ev.recipe.model / "model_index.json").write_text('{"retrained": 1}')  # the model changed: made again
    ev._build("real", make, model=True, inputs=[clip])
    assert len(made) == 3
    ev._build("real", make, model=True, inputs=[clip], settings=["blur", 4.0])  # other settings: made again
    assert len(made) == 4


def test_a_set_that_fails_half_way_is_not_left_as_made(tmp_path):
    ev = bare_evaluation(tmp_path)

    def fail(partial: Path) -> None:
        (partial / "svg").mkdir()
        (partial / "svg" / "svg-000.mp4").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ev._build("svg", fail, model=True)
    assert not (ev.eval_dir / "svg").exists() and not (ev.eval_dir / "svg.source").exists()
    made = []
    ev._build("svg", lambda partial: made.append((partial / "svg").mkdir()), model=True)
    assert made and (ev.eval_dir / "svg").is_dir() and (ev.eval_dir / "svg.source").is_file()


def results_with(svg_fvd: float, real_fvd: float, svg_av: float, shuffled_av: float, flagged: float) -> dict:
    memo = {"flagged_pct": flagged, "percentile": 5.0}
    return {"sets": {"svg": {"fvd": svg_fvd, "av_align": {"av_align_mean": svg_av}, "memorisation": memo},
                     "baseline-real": {"fvd": real_fvd}},
            "av_align_reference": {"shuffled_pairs": {"av_align_mean": shuffled_av}}}


@pytest.mark.parametrize("numbers, met", [((900.0, 1000.0, 0.36, 0.35, 10.0), [True, True, True]),
                                          ((1000.1, 1000.0, 0.35, 0.35, 10.5), [False, False, False])])
def test_targets_are_read_from_the_measured_numbers(numbers, met):
    targets = rve._targets(results_with(*numbers))
    assert [t["met"] for t in targets] == met
    assert [t["measured"] for t in targets] == [numbers[0], numbers[2], numbers[4]]
    assert [t["threshold"] for t in targets] == [numbers[1], numbers[3], 10.0]


ASSETS = ("bbb/bbb.mp4", "hifigan/generator_universal.pth.tar", "i3d/i3d-kinetics-400.ckpt")
GENERATED = ("svg", "a2v", "v2a")
RECONSTRUCTIONS = ("reconstruction-audio-image", "reconstruction-vae", "reconstruction-autoencoder",
                   "reconstruction-ablation")
#: sets scored for sync only (their frames are the held-out clips' own)
SYNC_ONLY = ("baseline-audio-late-2", "reconstruction-audio-image")
CORRUPTED = ("baseline-blur-sigma-1", "baseline-blur-sigma-4", "baseline-noise-std-8", "baseline-noise-std-32",
             "baseline-shuffled-frames", "baseline-frozen")


@pytest.mark.slow
def test_smoke_scale_end_to_end_writes_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmldm.assets import assets_folder, find_asset
    from mmldm.recipes.real_video import SCALES

    missing = [name for name in ASSETS if find_asset(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(str(assets_folder() / m) for m in missing)}: run `make assets`")
    out = tmp_path / "bbb"
    assert main(["recipe", "bbb", "--out", str(out), "--scale", "smoke", "--threads", "1", "--quiet"]) == 0
    smoke = SCALES["smoke"]
    # the fast decoders ride along in the model folder, not as its defaults (the evaluation uses the full ones)
    index = json.loads((out / "model" / "model_index.json").read_text())["components"]
    assert index["decoder_student"] == "decoder_student" and index["frame_decoder"] == "frame_decoder"
    sampling = json.loads((out / "model" / "generator" / "generation.json").read_text())["sampling"]
    assert sampling["decoder_steps"] is None and sampling["frame_decoder"] == "full"
    results = json.loads((out / "eval" / "results.json").read_text())
    sets = results["sets"]
    positions = [f"long-position-{k}" for k in range(2)]  # 3.2 s of 1.6 s clips
    assert set(sets) == {*GENERATED, *RECONSTRUCTIONS, "baseline-real", *CORRUPTED, "baseline-audio-late-2",
                         "baseline-training-copies", *positions}
    for name, numbers in sets.items():
        assert (out / "eval" / name).is_dir()
        if name not in SYNC_ONLY:  # every other set has its FVD / KVD against the training clips
            assert numbers["fvd"] > 0 and "kvd" in numbers, name
            expected = smoke.long_clips if name in positions else smoke.eval_clips
            assert numbers["clips"] == numbers["reference_windows"] == expected, name
    # FVD / KVD: the mean over independent draws of training windows, each draw's value kept
    assert len(sets["svg"]["fvd_draws"]) == smoke.eval_reference_draws
    assert sets["svg"]["fvd"] == pytest.approx(sum(sets["svg"]["fvd_draws"]) / smoke.eval_reference_draws)
    assert results["references"]["reference_draws"] == smoke.eval_reference_draws
    for name in (*GENERATED, *RECONSTRUCTIONS, "baseline-real", "baseline-audio-late-2"):
        assert 0.0 <= sets[name]["av_align"]["av_align_mean"] <= 1.0, name
    for name in (*GENERATED, "baseline-real", "baseline-training-copies"):
        assert 0.0 <= sets[name]["memorisation"]["flagged_pct"] <= 100.0, name
    # copies of training clips lie on training windows: the check flags every one
    assert sets["baseline-training-copies"]["memorisation"]["flagged_pct"] == 100.0
    assert sets["baseline-training-copies"]["memorisation"]["median_distance"] == 0.0
    assert set(results["av_align_reference"]) == {"real_pairs", "shuffled_pairs", "settings"}
    assert results["references"]["training_windows"]["duplicate_windows_dropped"] > 0
    assert results["protocol"]["name"] == "standard" and results["protocol"]["num_samples"] == smoke.eval_clips
    assert results["i3d"]["batchnorm_eps"] == 1e-3 and (out / "parts" / "i3d.safetensors").is_file()
    assert results["fad"] == rve.FAD_NOT_MEASURED
    long = results["long"]
    assert [p["position"] for p in long["positions"]] == [0, 1] and long["videos"] == smoke.long_clips
    assert long["seam"]["per_video"][0]["seams"] == 1 and long["seam"]["inside_jump_max"] > 0
    assert len(results["targets"]) == 5 and all(isinstance(t["met"], bool) for t in results["targets"])
    table = (out / "eval" / "results.md").read_text()
    for heading in ("## Generation (paper Table 1) and baselines", "## Reconstruction (paper Table 5)",
                    "## Long", "## Targets (issue 21)"):
        assert heading in table
    assert table.count("not measured") >= 4 and "shuffled held-out pairs" in table
    assert json.loads((out / "recipe.json").read_text())["wall_seconds"]["evaluate"] > 0


def test_results_table_gives_each_reconstruction_its_sync_ceiling():
    av = {"av_align_mean": 0.3125, "audio_onsets_mean": 6.5, "video_peaks_mean": 4.25}
    results = {
        "recipe": "bbb", "n": 64, "seed": 0, "fad": rve.FAD_NOT_MEASURED, "targets": [],
        "protocol": {"name": "standard", "num_frames": 16, "fps": 10.0},
        "i3d": {"batchnorm_eps": 1e-3}, "references": {"reference_draws": 8},
        "sets": {"reconstruction-audio-image": {"group": "reconstruction", "clips": 64, "av_align": av,
                                                "what": "held-out clips, the sound through the audio image"},
                 "reconstruction-vae": {"group": "reconstruction", "clips": 64, "fvd": 1265.94, "kvd": 57.3,
                                        "what": "held-out clips through the KL-VAE"}},
        "long": {"videos": 16, "seconds": 6.4, "clip_seconds": 1.6, "positions": [], "n_note": "N = 16",
                 "seam": {"seam_jump_max": 0.1, "inside_jump_max": 0.2, "seams_within_inside": True}}}
    lines = rve.results_table(results).splitlines()
    audio_image = next(line for line in lines if line.startswith("| the sound through the audio image"))
    assert audio_image.split(" | ")[1:] == ["64", "-", "-", "0.312", "6.5 / 4.2 |"]
    vae = next(line for line in lines if line.startswith("| the KL-VAE"))
    assert vae.split(" | ")[1:] == ["64", "1265.9", "57.30", "-", "- |"]


@pytest.mark.slow
def test_the_videos_recipe_runs_end_to_end_on_your_own_videos(tmp_path: Path) -> None:
    """`mmldm recipe videos --source DIR --scale smoke`: every step of the bbb recipe on two 20 s videos
    (Sounding Shapes at 22.05 kHz), a model folder without the film's attribution, and its evaluation."""
    from mmldm.assets import assets_folder, find_asset

    missing = [name for name in ASSETS[1:] if find_asset(name) is None]  # not the film
    if missing:
        pytest.skip(f"needs {', '.join(str(assets_folder() / m) for m in missing)}: run `make assets`")
    src = tmp_path / "src"
    assert main(["data", "synth", "--out", str(src), "--n", "2", "--num-frames", "200", "--seed", "1",
                 "--sample-rate", "22050"]) == 0
    out = tmp_path / "videos"
    assert main(["recipe", "videos", "--source", str(src), "--out", str(out), "--scale", "smoke", "--threads", "1",
                 "--quiet"]) == 0
    assert (out / "model" / "model_index.json").is_file() and not (out / "model" / "ATTRIBUTION.md").exists()
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(GENERATED) <= set(results["sets"]) and results["sets"]["svg"]["fvd"] > 0
    assert "last 20 % of every source" in (out / "eval" / "results.md").read_text()
    samples = tmp_path / "samples"
    assert main(["generate", "--model", str(out / "model"), "--task", "a2v", "--audio",
                 str(sorted(src.rglob("*.mp4"))[0]), "--seconds", "1.6", "--out", str(samples), "--quiet",
                 "--no-preview"]) == 0
    assert len(list(samples.glob("*.mp4"))) == 1
