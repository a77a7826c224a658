"""`mmldm recipe sounding-shapes`: configs, long-video measures, CLI errors, and (slow) the smoke scale end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmldm.autoencoder.stage import AutoencoderStageConfig
from mmldm.cli.main import main
from mmldm.cli.recipe import CONFIG_DIR, SCALES, long_clip_measures
from mmldm.config import load_config
from mmldm.errors import ConfigError
from mmldm.data.sounding_shapes import ShapesConfig, synth_clip
from mmldm.generator.stage import GeneratorStageConfig
from mmldm.vae.stage import VAEStageConfig

FPS, RATE = 10.0, 16000


@pytest.mark.parametrize("name, cls", [("vae", VAEStageConfig), ("autoencoder", AutoencoderStageConfig),
                                       ("generator", GeneratorStageConfig)])
def test_stage_configs_load_strictly(name: str, cls: type) -> None:
    cfg = load_config(cls, CONFIG_DIR / f"{name}.yaml")
    assert cfg.train.mixed_precision == "auto"


def test_stage_configs_fit_together() -> None:
    """VAE latents feed the autoencoder; the autoencoder's latents are the generator's input sizes."""
    vae = load_config(VAEStageConfig, CONFIG_DIR / "vae.yaml")
    ae = load_config(AutoencoderStageConfig, CONFIG_DIR / "autoencoder.yaml")
    gen = load_config(GeneratorStageConfig, CONFIG_DIR / "generator.yaml")
    assert (vae.data.size, vae.data.num_frames, vae.data.fps) == (ae.data.size, ae.data.num_frames, ae.data.fps)
    dit = gen.model.dit_config()
    assert (dit.video_channels, *dit.video_size) == ae.model.video_latent_shape
    assert (dit.audio_channels, *dit.audio_size) == ae.model.audio_latent_shape
    assert dit.previous_clip and gen.conditioning.uses_previous  # task long needs continuation training
    assert dit.num_classes == ae.model.semantic.num_classes == 3


def _long_shapes_clip(seed: int) -> tuple[np.ndarray, np.ndarray]:
    clip = synth_clip(ShapesConfig(num_frames=32), seed=seed)
    return clip.frames, clip.audio.astype(np.float64)


def test_long_clip_measures_real_clip_is_in_sync_and_seamless() -> None:
    frames, audio = _long_shapes_clip(3)
    result = long_clip_measures(frames, audio, FPS, RATE, clip_frames=16)
    assert result["windows"] == 2
    assert max(result["sync_error_per_window"]) < 0.5 and result["sync_error"] < 0.5
    assert result["max_seam_jump"] <= result["max_inside_jump"]


def test_long_clip_measures_flags_a_click_and_a_foreign_window() -> None:
    frames, audio = _long_shapes_clip(3)
    seam = 16 * RATE // 10
    tone = 0.5 * np.sin(2 * np.pi * 220.0 * np.arange(len(audio)) / RATE)  # jumps of at most 0.044
    smooth = long_clip_measures(frames, tone, FPS, RATE, clip_frames=16)
    assert smooth["max_seam_jump"] <= smooth["max_inside_jump"] < 0.05
    tone[seam:] += 0.4  # a step at the seam: a click
    clicked = long_clip_measures(frames, tone, FPS, RATE, clip_frames=16)
    assert clicked["max_seam_jump"] > 0.36 and clicked["max_inside_jump"] < 0.05

    other_frames, _ = _long_shapes_clip(11)
    mixed = np.concatenate([frames[:16], other_frames[16:]])  # second window: another clip's picture
    measures = long_clip_measures(mixed, audio, FPS, RATE, clip_frames=16)
    errors = measures["sync_error_per_window"]
    assert errors[0] < 0.5 and errors[1] > 1.0
    # the whole clip: the median over all its frames, between the two windows' errors
    assert errors[0] < measures["sync_error"] <= errors[1]


def test_default_scale_meets_the_evaluation_floor() -> None:
    scale = SCALES["default"]
    assert scale.eval_clips >= 64 and scale.long_clips >= 4 and scale.long_seconds == pytest.approx(6.4)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "sounding-shapes", "--out", str(tmp_path), "--threads", "0"]) != 0
    assert "--threads must be >= 1" in capsys.readouterr().err
    code = main(["recipe", "sounding-shapes", "--out", str(tmp_path), "--only", "autoencoder"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "parts/vae is missing" in err


@pytest.mark.slow
def test_smoke_scale_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Data -> VAE -> latents -> autoencoder -> latents -> generator -> model folder -> evaluation;
    `mmldm generate --model` reads the folder; a second run skips every step."""
    out = tmp_path / "recipe"
    assert main(["recipe", "sounding-shapes", "--out", str(out), "--scale", "smoke", "--threads", "1", "--quiet"]) == 0
    record = json.loads((out / "recipe.json").read_text())
    assert set(record["wall_seconds"]) == {"data", "vae", "vae_latents", "autoencoder", "latents", "generator",
                                           "export", "evaluate"}
    assert [run["steps_done"] for run in record["invocations"]] == [list(record["wall_seconds"])]
    assert record["invocations"][0]["scale"]["generator_steps"] == SCALES["smoke"].generator_steps
    # the generator trains on the latents of its own, larger clip set, the first clips being the training ones
    smoke = SCALES["smoke"]
    generator_clips = (out / "data" / "generator" / "manifest.jsonl").read_text().splitlines()
    training_clips = (out / "data" / "train" / "manifest.jsonl").read_text().splitlines()
    assert len(generator_clips) == smoke.generator_files and generator_clips[:smoke.train_files] == training_clips
    assert json.loads((out / "latents" / "index.json").read_text())["num_items"] == 2 * smoke.generator_files
    generator_config = (out / "runs" / "generator" / "config.yaml").read_text()
    assert "video_tokenization: frames" in generator_config and f"cache: {out / 'latents'}" in generator_config
    assert (out / "model.source").read_text().strip().startswith(str((out / "runs" / "generator").resolve()))
    results = json.loads((out / "eval" / "results.json").read_text())
    for task in ("svg", "a2v", "v2a"):
        assert results[task]["generated"]["clips"] == SCALES["smoke"].eval_clips
        assert results[task]["reference"]["sync_error_median"] < 0.5  # real clips obey the law
    assert results["long"]["per_clip"][0]["windows"] == 2
    assert set(results["reconstruction_ceiling"]) == {"vae", "autoencoder"}

    decoder = json.loads((out / "model" / "autoencoder" / "config.json").read_text())["sampling"]
    assert decoder["steps"] == SCALES["smoke"].decoder_steps
    generation = json.loads((out / "model" / "generator" / "generation.json").read_text())
    assert generation["steps"] == SCALES["smoke"].generator_sampling_steps
    assert generation["sync_guidance"] == SCALES["smoke"].sync_guidance
    assert generation["candidates"] == SCALES["smoke"].candidates
    assert generation["critics"] == list(SCALES["smoke"].critics)

    samples = tmp_path / "samples"
    assert main(["generate", "--model", str(out / "model"), "--n", "2", "--steps", "2", "--out", str(samples),
                 "--quiet", "--no-preview"]) == 0
    assert len(list(samples.glob("*.mp4"))) == 2

    capsys.readouterr()
    assert main(["recipe", "sounding-shapes", "--out", str(out), "--scale", "smoke", "--quiet",
                 "--only", "data", "vae", "vae_latents", "autoencoder", "latents", "generator", "export"]) == 0
    log = capsys.readouterr().out
    assert log.count("already there, skipped") == 7
    assert json.loads((out / "recipe.json").read_text())["wall_seconds"] == record["wall_seconds"]


def test_results_table_lists_every_row_with_its_numbers() -> None:
    from mmldm.cli.recipe import results_table

    def measures(clips: int, sync: float) -> dict[str, float]:
        return {"clips": clips, "sync_error_median": sync, "sync_error_within_1_semitone_pct": 50.0,
                "class_agreement_pct": 75.0, "one_object_pct": 99.5}

    shapes = {"generated": measures(64, 1.23), "reference": measures(64, 0.07), "shuffled_pairs": measures(64, 8.5)}
    long = {"clips": 4, "sync_error_max_clip": 0.95, "sync_error_median": 0.8, "sync_error_max_window": 2.5,
            "windows_within_1_semitone_pct": 62.5, "sync_error_median_per_position": [0.5, 0.75, 1.25],
            "seam_jump_max": 0.01, "inside_jump_max": 0.2}
    table = results_table({"svg": shapes, "a2v": shapes, "long": long,
                           "reconstruction_ceiling": {"vae": measures(16, 0.11)}})
    assert "| real test clips | 64 | 0.07 |" in table and "| shuffled real pairs | 64 | 8.50 |" in table
    assert "| generated svg | 64 | 1.23 |" in table and "| generated a2v |" in table and "v2a" not in table
    assert "| real clips through the vae | 16 | 0.11 |" in table
    assert "Long (4 videos)" in table and "worst whole video 0.95" in table and "worst 2.50 semitones" in table and "0.010 vs inside clips 0.200" in table
    assert "62.5 % within 1" in table and "k-th window over the videos 0.50, 0.75, 1.25" in table


def test_long_summary_takes_the_median_of_each_window_position_over_the_videos() -> None:
    from mmldm.cli.recipe import long_summary

    def video(windows: list[float], seam: float = 0.01) -> dict:
        return {"sync_error": float(sorted(windows)[len(windows) // 2]), "sync_error_per_window": windows,
                "max_seam_jump": seam, "max_inside_jump": 0.3}

    summary = long_summary([video([0.2, 0.4, 3.0]), video([0.6, 1.5, 0.9], seam=0.05), video([0.4, 0.8, 2.0])])
    assert summary["sync_error_median_per_position"] == [0.4, 0.8, 2.0]
    assert summary["sync_error_max_window"] == 3.0 and summary["sync_error_median"] == 0.8
    assert summary["windows_within_1_semitone_pct"] == pytest.approx(100 * 6 / 9)
    assert summary["seam_jump_max"] == 0.05 and summary["clips"] == 3
    with pytest.raises(ConfigError):
        long_summary([])


def test_recipe_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    from mmldm.cli.main import main

    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    code = main(["recipe", "sounding-shapes", "--out", str(blocker), "--scale", "smoke"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and str(blocker) in err
    assert blocker.read_text() == "keep me"


def test_latents_are_remade_when_made_from_other_data_or_an_older_autoencoder(tmp_path, monkeypatch):
    import dataclasses

    from mmldm.cli.recipe import SoundingShapesRecipe
    from mmldm.training.checkpoint import MANIFEST

    recipe = SoundingShapesRecipe(tmp_path, dataclasses.replace(SCALES["smoke"]), progress=False)
    calls: list[tuple[str, ...]] = []

    def cache(*argv: str) -> None:  # stands in for `mmldm cache`: writes the output folder
        calls.append(argv)
        (tmp_path / "latents").mkdir()

    monkeypatch.setattr(recipe, "_cli", cache)
    for part in ("vae", "autoencoder"):
        (tmp_path / "parts" / part).mkdir(parents=True)
    (tmp_path / "data" / "generator").mkdir(parents=True)
    (tmp_path / "data" / "generator" / "manifest.jsonl").write_text("")
    checkpoint = tmp_path / "runs" / "autoencoder" / "checkpoints" / "step_000003"
    checkpoint.mkdir(parents=True)
    (checkpoint / MANIFEST).write_text(json.dumps({"files": {}}))

    assert recipe.step_latents()
    assert f"data.root={tmp_path / 'data' / 'generator'}" in calls[0] and "--autoencoder" in calls[0]
    assert not recipe.step_latents()  # same checkpoint, same data: kept
    # a cache stamped with the checkpoint alone (made from the autoencoder's own clips, as the
    # recipe did before the generator had a clip set of its own) is made again
    (tmp_path / "latents.source").write_text(f"{checkpoint.resolve()}\n")
    assert recipe.step_latents() and len(calls) == 2


def test_recipe_without_its_configs_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import mmldm.cli.recipe as recipe

    monkeypatch.setattr(recipe, "CONFIG_DIR", tmp_path / "nowhere")
    code = main(["recipe", "sounding-shapes", "--out", str(tmp_path / "out"), "--scale", "smoke", "--only", "vae"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "vae.yaml" in err and "source checkout" in err
    assert not (tmp_path / "out").exists()
