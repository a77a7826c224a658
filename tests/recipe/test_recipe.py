"""`mmldm recipe sounding-shapes`: configs, CLI errors, and (slow) the smoke scale end to end."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from mmldm.autoencoder.stage import AutoencoderStageConfig
from mmldm.cli.main import main
from mmldm.config import load_config
from mmldm.critic.stage import SyncCriticTrainConfig
from mmldm.generator.stage import GeneratorStageConfig
from mmldm.recipes.base import CONFIGS as CONFIG_DIR
from mmldm.recipes.sounding_shapes import SCALES, SoundingShapesRecipe
from mmldm.vae.stage import VAEStageConfig

FPS, RATE = 10.0, 16000


@pytest.mark.parametrize("name, cls", [("vae", VAEStageConfig), ("autoencoder", AutoencoderStageConfig),
                                       ("generator", GeneratorStageConfig), ("sync-critic", SyncCriticTrainConfig)])
def test_stage_configs_load_strictly_and_train_in_a_precision_the_cpu_multiplies(name: str, cls: type) -> None:
    from mmldm.training.precision import cpu_has_native_bf16, resolve_mixed_precision

    cfg = load_config(cls, CONFIG_DIR / f"{name}.yaml")
    # bf16 on a CPU only where it is native (elsewhere it is emulated, many times slower)
    resolved = resolve_mixed_precision(cfg.train.mixed_precision, use_cpu=True)
    assert resolved == ("bf16" if cpu_has_native_bf16() else "no")


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
    critic = load_config(SyncCriticTrainConfig, CONFIG_DIR / "sync-critic.yaml")  # it judges the clips they make
    assert (critic.data.size, critic.data.num_frames, critic.data.fps, critic.data.sample_rate) == (
        ae.data.size, ae.data.num_frames, ae.data.fps, ae.data.sample_rate)


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
    assert set(record["wall_seconds"]) == {"data", "vae", "vae_latents", "autoencoder", "decoder_student",
                                           "frame_decoder", "latents", "generator", "sync_critic", "export",
                                           "evaluate"}
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
    model_sources = (out / "model.source").read_text()  # the model folder is made again when any of these change
    for run in ("generator", "decoder-distill", "frame-decoder-distill", "sync-critic"):
        assert str((out / "runs" / run).resolve()) in model_sources, run
    results = json.loads((out / "eval" / "results.json").read_text())
    for task in ("svg", "a2v", "v2a"):
        assert results[task]["generated"]["clips"] == SCALES["smoke"].eval_clips
        assert results[task]["reference"]["sync_error_median"] < 0.5  # real clips obey the law
    assert results["long"]["per_clip"][0]["windows"] == 2
    assert set(results["reconstruction_ceiling"]) == {"vae", "autoencoder"}

    decoder = json.loads((out / "model" / "autoencoder" / "config.json").read_text())["sampling"]
    assert decoder["steps"] == SCALES["smoke"].decoder_steps
    generation = json.loads((out / "model" / "generator" / "generation.json").read_text())["sampling"]
    assert generation["steps"] == SCALES["smoke"].generator_sampling_steps
    assert generation["sync_guidance"] == SCALES["smoke"].sync_guidance
    assert generation["candidates"] == SCALES["smoke"].candidates
    assert generation["critics"] == list(SCALES["smoke"].critics)
    # the built-in model's fast decoders: distilled from this run's parts, the folder's defaults
    index = json.loads((out / "model" / "model_index.json").read_text())["components"]
    assert index["decoder_student"] == "decoder_student" and index["frame_decoder"] == "frame_decoder"
    assert generation["decoder_steps"] == 4 and generation["frame_decoder"] == "light"
    # and its sync critic, trained on the generator's clips, the critic of the tasks given a modality
    assert index["sync_critic"] == "sync_critic"
    task_sampling = json.loads((out / "model" / "generator" / "generation.json").read_text())["task_sampling"]
    assert all(task_sampling[task]["critics"] == ["sync"] for task in ("a2v", "v2a"))
    assert f"root: {out / 'data' / 'generator'}" in (out / "runs" / "sync-critic" / "config.yaml").read_text()
    student_config = (out / "runs" / "decoder-distill" / "config.yaml").read_text()
    assert f"teacher: {out / 'parts' / 'autoencoder'}" in student_config

    samples = tmp_path / "samples"
    assert main(["generate", "--model", str(out / "model"), "--n", "2", "--steps", "2", "--out", str(samples),
                 "--quiet", "--no-preview"]) == 0
    assert len(list(samples.glob("*.mp4"))) == 2

    capsys.readouterr()
    assert main(["recipe", "sounding-shapes", "--out", str(out), "--scale", "smoke", "--quiet",
                 "--only", "data", "vae", "vae_latents", "autoencoder", "decoder_student", "frame_decoder", "latents",
                 "generator", "sync_critic", "export"]) == 0
    log = capsys.readouterr().out
    assert log.count("already there, skipped") == 10
    assert json.loads((out / "recipe.json").read_text())["wall_seconds"] == record["wall_seconds"]


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
    checkpoint = fake_checkpoint(tmp_path, "autoencoder", 3)

    assert recipe.step_latents()
    assert f"data.root={tmp_path / 'data' / 'generator'}" in calls[0] and "--autoencoder" in calls[0]
    assert not recipe.step_latents()  # same checkpoint, same data: kept
    # a cache stamped with the checkpoint alone (made from the autoencoder's own clips, as the
    # recipe did before the generator had a clip set of its own) is made again
    (tmp_path / "latents.source").write_text(f"{checkpoint.resolve()}\n")
    assert recipe.step_latents() and len(calls) == 2


def test_recipe_without_its_configs_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(SoundingShapesRecipe, "config_dir", tmp_path / "nowhere")
    code = main(["recipe", "sounding-shapes", "--out", str(tmp_path / "out"), "--scale", "smoke", "--only", "vae"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "vae.yaml" in err and "source checkout" in err
    assert not (tmp_path / "out").exists()


def fake_checkpoint(root: Path, run: str, step: int) -> Path:
    """A complete (empty) checkpoint ``root/runs/RUN/checkpoints/step_STEP``, as `mmldm train` leaves one."""
    from mmldm.training.checkpoint import MANIFEST

    folder = root / "runs" / run / "checkpoints" / f"step_{step:06d}"
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({"files": {}}))
    return folder


def fake_training(root: Path, trainings: list[tuple[str, ...]], *argv: str) -> None:
    """Stands in for the recipe's `mmldm train STAGE ... --out RUN --max-steps N`: records the call and
    writes RUN's last checkpoint."""
    trainings.append(argv)
    fake_checkpoint(root, Path(argv[argv.index("--out") + 1]).name, int(argv[argv.index("--max-steps") + 1]))


def test_a_training_run_is_trained_again_when_the_stage_before_it_trained_further(tmp_path, monkeypatch):
    import dataclasses

    recipe = SoundingShapesRecipe(tmp_path, dataclasses.replace(SCALES["smoke"]), progress=False)
    trainings: list[tuple[str, ...]] = []

    checkpoint = functools.partial(fake_checkpoint, tmp_path)
    train = functools.partial(fake_training, tmp_path, trainings)

    monkeypatch.setattr(recipe, "_cli", train)
    monkeypatch.setattr(recipe, "_generator_data", list)
    checkpoint("autoencoder", 3)
    (tmp_path / "data" / "generator").mkdir(parents=True)
    (tmp_path / "data" / "generator" / "manifest.jsonl").write_text("")
    generator_run = tmp_path / "runs" / "generator"

    assert recipe.step_generator() and len(trainings) == 1
    assert not recipe.step_generator()  # same autoencoder: kept
    (generator_run / "marker").write_text("trained on the step-3 latents")
    checkpoint("autoencoder", 9)  # the autoencoder trained further: its latents, and the generator, are stale
    assert recipe.step_generator() and len(trainings) == 2
    assert not (generator_run / "marker").exists()
    assert not recipe.step_generator()
    # the autoencoder trained again under the same checkpoint name (another run): other files
    import shutil

    shutil.rmtree(tmp_path / "runs" / "autoencoder")
    retrained = checkpoint("autoencoder", 9)
    (retrained / "model.safetensors").write_bytes(b"other weights")
    assert recipe.step_generator() and len(trainings) == 3
    assert not recipe.step_generator()
    # a run from before runs had stamps is taken as made from the current inputs
    (tmp_path / "runs" / "generator.source").unlink()
    assert not recipe.step_generator() and len(trainings) == 3


def test_recipes_side_by_side_on_one_folder_keep_each_others_record(tmp_path):
    """The autoencoder and its ablation trained by two recipe processes at once: each writes its
    step into recipe.json without dropping the other's (the record is read afresh under a lock)."""
    from dataclasses import dataclass

    from mmldm.recipes.base import Recipe

    @dataclass
    class Scale:
        steps: int = 1

    class Pair(Recipe):
        name, steps, config_dir = "pair", ("first", "second"), tmp_path

        def step_first(self) -> bool:
            # the other recipe runs and records its step while this one's step is under way
            Pair(self.out, Scale(2)).run(["second"])
            return True

        def step_second(self) -> bool:
            return True

    Pair(tmp_path / "out", Scale(1)).run(["first"])
    record = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert set(record["wall_seconds"]) == {"first", "second"}
    assert [entry["steps_done"] for entry in record["invocations"]] == [["second"], ["first"]]
    assert [entry["scale"]["steps"] for entry in record["invocations"]] == [2, 1]


@pytest.mark.parametrize("module", ["sounding_shapes", "real_video"])
def test_fast_decoder_configs_read_the_data_their_autoencoder_reads(module: str) -> None:
    """Each recipe's distillation configs load strictly and describe the clips of its own autoencoder
    (the student and the light frame decoder learn from that autoencoder's KL-VAE latent cache)."""
    import importlib

    from mmldm.autoencoder.distill import DecoderDistillConfig
    from mmldm.vae.light_decoder_distill import FrameDecoderDistillConfig

    recipe = importlib.import_module(f"mmldm.recipes.{module}").RECIPE
    autoencoder = load_config(AutoencoderStageConfig, recipe.config_dir / "autoencoder.yaml").data
    for cls, name in ((DecoderDistillConfig, "decoder-distill"), (FrameDecoderDistillConfig, "frame-decoder-distill")):
        data = load_config(cls, recipe.config_dir / f"{name}.yaml").data
        fields = ("fps", "num_frames", "sample_rate", "size", "geometry")
        assert [getattr(data, f) for f in fields] == [getattr(autoencoder, f) for f in fields], (module, name)


@pytest.mark.parametrize("module", ["sounding_shapes", "real_video"])
def test_fast_decoders_distil_from_the_recipes_own_parts_and_again_when_they_change(tmp_path, monkeypatch,
                                                                                    module: str) -> None:
    import dataclasses
    import importlib

    from mmldm.errors import ConfigError

    recipes = importlib.import_module(f"mmldm.recipes.{module}")
    recipe = recipes.RECIPE(tmp_path, dataclasses.replace(recipes.SCALES["smoke"]), progress=False)
    with pytest.raises(ConfigError, match="run step decoder_student"):
        recipe._fast_decoder_checkpoints()
    trainings: list[tuple[str, ...]] = []

    checkpoint = functools.partial(fake_checkpoint, tmp_path)
    train = functools.partial(fake_training, tmp_path, trainings)

    monkeypatch.setattr(recipe, "_cli", train)
    for folder in (recipe.parts / "vae", recipe.parts / "autoencoder", recipe.vae_latents, recipe.training_clips):
        folder.mkdir(parents=True, exist_ok=True)
    checkpoint("vae", 3)
    checkpoint("autoencoder", 3)

    assert recipe.step_decoder_student() and recipe.step_frame_decoder()
    (student, frame_decoder) = trainings
    assert student[:4] == ("train", "decoder-distill", "--config", str(recipe.config_dir / "decoder-distill.yaml"))
    assert f"teacher={recipe.parts / 'autoencoder'}" in student and f"data.latent_cache={recipe.vae_latents}" in student
    assert student[student.index("--max-steps") + 1] == str(recipe.scale.student_steps)
    assert frame_decoder[:2] == ("train", "frame-decoder-distill")
    assert f"vae={recipe.parts / 'vae'}" in frame_decoder and f"data.root={recipe.training_clips}" in frame_decoder
    assert not recipe.step_decoder_student() and not recipe.step_frame_decoder()  # trained that far: kept
    assert [c.parent.parent.name for c in recipe._fast_decoder_checkpoints()] == ["decoder-distill",
                                                                                  "frame-decoder-distill"]
    checkpoint("autoencoder", 9)  # a new teacher: the student learns again, the frame decoder (of the VAE) stays
    assert recipe.step_decoder_student() and not recipe.step_frame_decoder() and len(trainings) == 3


def _long_sources(folder: Path) -> Path:
    """Two 20 s sounding videos (Sounding Shapes at 22.05 kHz): each holds a held-out clip at 20 %."""
    assert main(["data", "synth", "--out", str(folder), "--n", "2", "--num-frames", "200", "--seed", "1",
                 "--sample-rate", "22050"]) == 0
    return folder


def test_the_videos_recipe_prepares_the_given_sources_and_no_others(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`mmldm recipe videos --source ...`: the bbb recipe's data step on your own videos; the folder
    remembers its sources, and the recipe's other inputs are one-line errors."""
    src = _long_sources(tmp_path / "src")
    out = tmp_path / "run"
    (tmp_path / "empty").mkdir()
    assert main(["recipe", "videos", "--source", str(tmp_path / "empty"), "--out", str(out), "--only", "data",
                 "--quiet"]) == 2
    assert "no video files" in capsys.readouterr().err
    # nothing was prepared from the empty folder: the same --out takes the right sources
    assert main(["recipe", "videos", "--source", str(src), "--out", str(out), "--only", "data", "--quiet"]) == 0
    prepared = json.loads((out / "data" / "prepare.json").read_text())
    assert len(prepared["sources"]) == 2 and prepared["settings"]["sample_rate"] == 22050
    assert prepared["settings"]["split"] == "time" and prepared["settings"]["test_fraction"] == 0.2
    train = (out / "data" / "manifest.jsonl").read_text().splitlines()
    test = (out / "data" / "test-manifest.jsonl").read_text().splitlines()
    assert len(train) >= 4 and len(test) == 2  # the last 20 % of each source held out
    assert json.loads((out / "recipe.json").read_text())["recipe"] == "videos"
    capsys.readouterr()
    assert main(["recipe", "videos", "--source", str(src), "--out", str(out), "--only", "data", "--quiet"]) == 0
    assert "prepared" not in capsys.readouterr().out  # the same sources: nothing to do
    one = sorted(src.rglob("*.mp4"))[0]
    for argv, words in (
        (["videos", "--source", str(one), "--out", str(out)], "was prepared from other sources"),
        (["videos", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "new")], "nowhere does not exist"),
        (["videos", "--out", str(tmp_path / "new")], "give the videos to learn from"),
        (["bbb", "--source", str(src), "--out", str(tmp_path / "new")], "--source is for recipe videos"),
    ):
        assert main(["recipe", *argv, "--only", "data", "--quiet"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (argv, err)
    assert train == (out / "data" / "manifest.jsonl").read_text().splitlines()  # left as it was
