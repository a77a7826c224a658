"""``mmldm recipe sounding-shapes --out DIR [--scale default|smoke]``: the built-in model, end to end.

Steps (:mod:`mmldm.recipes.base`: each skipped when its output is there)::

    DIR/data/train     Sounding Shapes, 3.2 s clips (two 1.6 s windows each: the second
                       window has a previous clip, which trains continuation)   mmldm data synth (API)
    DIR/data/test      held-out 1.6 s clips: real-data baseline, a2v / v2a inputs
    DIR/data/generator the generator's training clips: more of them (the first ones are
                       DIR/data/train's), since sync is learnt from many examples
    DIR/runs/vae       KL-VAE (configs/recipe/vae.yaml)                          mmldm train vae
    DIR/parts/vae      exported, scaling factor calibrated on training clips
    DIR/vae-latents    KL-VAE latents of every training window                   mmldm cache
    DIR/runs/autoencoder, DIR/parts/autoencoder   (configs/recipe/autoencoder.yaml)  mmldm train autoencoder
    DIR/runs/decoder-distill, DIR/runs/frame-decoder-distill   the fast decoders: a 4-step signal
                       decoder and a light frame decoder (mmldm.recipes.fast_decoders)
    DIR/latents        perceptual latents of every window of DIR/data/generator  mmldm cache --autoencoder
    DIR/runs/generator AVDiT with frame tokens, rectified flow (configs/recipe/generator.yaml)
                                                                                 mmldm train generator
    DIR/runs/sync-critic  the pixel-domain sync critic, on the generator's clips (configs/recipe/sync-critic.yaml)
                                                                                 mmldm train sync-critic
    DIR/model          the model folder (SoundingVideoPipeline.save_pretrained) with both fast decoders as
                       its defaults and the sync critic as the critic of a2v, v2a and the continuations
                                                                                 what `mmldm generate --model` reads
    DIR/eval           svg / a2v / v2a / long samples and DIR/eval/results.json  mmldm evaluate --metrics shapes
    DIR/recipe.json    scale, per-step wall times

Scales: ``default`` is the built-in model (docs/default-model.md gives its wall
time); ``smoke`` is a micro run (a few clips and steps) that checks the chain.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import atomic_write_text
from .base import CONFIGS, Recipe
from .fast_decoders import FAST_DECODER_STAGES, FastDecoderSteps


@dataclass(frozen=True)
class RecipeScale:
    """How much data, training and evaluation one recipe run does."""

    #: 3.2 s clips the KL-VAE and the autoencoder train on
    train_files: int
    test_files: int
    #: 3.2 s clips whose perceptual latents train the generator (the same seed as the training
    #: clips, so the first ``train_files`` are those; the rest are clips the autoencoder never saw)
    generator_files: int
    vae_steps: int
    autoencoder_steps: int
    generator_steps: int
    #: clips generated per task for evaluation (svg; a2v and v2a use that many test inputs)
    eval_clips: int
    #: long videos of ``long_seconds`` generated for evaluation (16 of 6.4 s: 64 clips of 1.6 s)
    long_clips: int
    long_seconds: float = 6.4
    #: clips whose frames and audio images calibrate the VAE's scaling factor
    calibration_clips: int = 64
    #: sampling defaults written into the model folder
    generator_sampling_steps: int = 12
    guidance: float = 2.0
    #: a2v sync guidance step (``GenerationConfig.sync_guidance``): off, since the frame-token
    #: generator reads the given audio itself and steering its video raised a2v's error
    #: (docs/default-model.md, "a2v sync guidance")
    sync_guidance: float = 0.0
    #: latent candidates per output and the model's own critics that rerank them
    #: (``GenerationConfig.candidates`` and ``critics``)
    candidates: int = 16
    critics: tuple[str, ...] = ("generator", "contrastive")
    #: the autoencoder's signal decoder at generation time: DDIM steps and guidance (both
    #: modalities); with the generator steps they set the generation time on a CPU
    decoder_steps: int = 10
    decoder_guidance: float = 1.0
    #: training steps of the few-step signal decoder and of the light frame decoder, and whether the
    #: model folder uses each by default (docs/speed.md measured both against the full decoders)
    student_steps: int = 2000
    frame_decoder_steps: int = 2000
    #: training steps of the sync critic (``mmldm train sync-critic`` on the generator's clips), which
    #: the export makes the critic of the tasks given audio or video
    sync_critic_steps: int = 3000
    student_default: bool = True
    frame_decoder_default: bool = True
    #: batch sizes (None: the config's)
    batch_size: int | None = None


SCALES: dict[str, RecipeScale] = {
    "default": RecipeScale(train_files=300, test_files=64, generator_files=2400, vae_steps=1200,
                           autoencoder_steps=2000, generator_steps=54000, eval_clips=64, long_clips=16),
    "smoke": RecipeScale(train_files=12, test_files=4, generator_files=16, vae_steps=3, autoencoder_steps=3,
                         generator_steps=4, eval_clips=2, long_clips=1, long_seconds=3.2, calibration_clips=4,
                         generator_sampling_steps=2, candidates=2, student_steps=3, frame_decoder_steps=3,
                         sync_critic_steps=3,
                         batch_size=4),
}


class SoundingShapesRecipe(FastDecoderSteps, Recipe):
    """The steps of ``mmldm recipe sounding-shapes`` (see the module docstring)."""

    name = "sounding-shapes"
    steps = ("data", "vae", "vae_latents", "autoencoder", "decoder_student", "frame_decoder", "latents", "generator",
             "sync_critic", "export", "evaluate")
    config_dir = CONFIGS
    trained = {"vae": "vae", "autoencoder": "autoencoder", "generator": "generator", "sync_critic": "sync-critic",
               **FAST_DECODER_STAGES}

    def __init__(self, out: Path, scale: RecipeScale, progress: bool = True):
        super().__init__(out, scale, progress)
        self.train_data = self.training_clips = self.out / "data" / "train"
        self.test_data = self.out / "data" / "test"
        self.generator_data = self.out / "data" / "generator"
        self.parts = self.out / "parts"
        self.vae_latents = self.out / "vae-latents"
        self.latents = self.out / "latents"
        self.model = self.out / "model"
        self.eval_dir = self.out / "eval"

    # ------------------------------------------------------------------ data

    def step_data(self) -> bool:
        from ..data.sounding_shapes import ShapesConfig, read_manifest, write_dataset

        wrote = False
        for folder, n, seed, frames in ((self.train_data, self.scale.train_files, 0, 32),
                                        (self.test_data, self.scale.test_files, 1, 16),
                                        (self.generator_data, self.scale.generator_files, 0, 32)):
            manifest = folder / "manifest.jsonl"
            if manifest.is_file() and len(read_manifest(folder)) == n:
                continue
            write_dataset(folder, n=n, seed=seed, cfg=ShapesConfig(num_frames=frames), progress=self.progress)
            wrote = True
        return wrote

    def step_vae(self) -> bool:
        from ..vae.stage import export_pretrained

        self._need(self.train_data / "manifest.jsonl", "training data")
        trained = self._train("vae", self.scale.vae_steps, [f"data.root={self.train_data}"],
                              sources=(self.train_data,))
        exported = self.parts / "vae"
        if trained or not (exported / "config.json").is_file():
            export_pretrained(self._checkpoint("vae"), exported, calibration_clips=self.scale.calibration_clips)
            return True
        return False

    def step_vae_latents(self) -> bool:
        """The autoencoder trains on cached KL-VAE latents: no VAE encoding per step."""
        vae = self._need(self.parts / "vae", "exported VAE")
        if self._up_to_date(self.vae_latents, self._checkpoint("vae")):
            return False
        self._cli("cache", "--config", str(self.config_dir / "vae.yaml"), "--set", f"data.root={self.train_data}",
                  "--vae", str(vae), "--out", str(self.vae_latents), "--split", "all", "--num-workers", "0",
                  *self._quiet())
        self._stamp(self.vae_latents, self._checkpoint("vae"))
        return True

    def step_autoencoder(self) -> bool:
        from ..autoencoder.stage import export_pretrained

        vae = self._need(self.parts / "vae", "exported VAE")
        cache = self._need(self.vae_latents, "KL-VAE latent cache")
        trained = self._train("autoencoder", self.scale.autoencoder_steps,
                              [f"vae.path={vae}", f"data.root={self.train_data}", f"data.latent_cache={cache}"],
                              sources=(self._checkpoint("vae"), self.train_data))
        exported = self.parts / "autoencoder"
        if trained or not (exported / "config.json").is_file():
            export_pretrained(self._checkpoint("autoencoder"), exported)
            return True
        return False

    def step_latents(self) -> bool:
        """Perceptual latents (the autoencoder's posterior mode) of every 1.6 s window of the
        generator's clips; items keep their source and start time, for previous-clip pairs."""
        vae = self._need(self.parts / "vae", "exported VAE")
        autoencoder = self._need(self.parts / "autoencoder", "exported autoencoder")
        self._need(self.generator_data / "manifest.jsonl", "the generator's training data")
        if self._up_to_date(self.latents, self._checkpoint("autoencoder"), self.generator_data):
            return False
        self._cli("cache", "--config", str(self.config_dir / "vae.yaml"), "--set", f"data.root={self.generator_data}",
                  "--vae", str(vae), "--autoencoder", str(autoencoder), "--out", str(self.latents),
                  "--split", "all", "--num-workers", "0", *self._quiet())
        self._stamp(self.latents, self._checkpoint("autoencoder"), self.generator_data)
        return True

    def _generator_data(self) -> list[str]:
        from ..generator.latents import estimate_latent_scales

        self._need(self.latents, "perceptual latent cache")
        scales = estimate_latent_scales(self.latents)
        return [f"data.cache={self.latents}", f"data.audio_latent_scale={scales['audio']:.6g}",
                f"data.video_latent_scale={scales['video']:.6g}"]

    def step_generator(self) -> bool:
        return self._train("generator", self.scale.generator_steps, self._generator_data(),
                           sources=(self._checkpoint("autoencoder"), self.generator_data))

    def step_sync_critic(self) -> bool:
        """The pixel-domain sync critic, on the generator's clips (real frames and sound)."""
        self._need(self.generator_data / "manifest.jsonl", "the generator's training data")
        return self._train("sync_critic", self.scale.sync_critic_steps,
                           [f"data.root={self.generator_data}"], sources=(self.generator_data,))

    # ------------------------------------------------------------------ export

    def step_export(self) -> bool:
        from ..export import export_model, export_sync_critic
        from ..generator.generation import SamplingSettings

        checkpoint = self._checkpoint("generator")
        fast_decoders = self._fast_decoder_checkpoints()
        critic = self._checkpoint("sync-critic")
        if self._up_to_date(self.model, checkpoint, *fast_decoders, critic):
            return False
        scale = self.scale
        sampling = SamplingSettings(steps=scale.generator_sampling_steps, audio_guidance=scale.guidance,
                                    video_guidance=scale.guidance, sync_guidance=scale.sync_guidance,
                                    candidates=scale.candidates, critics=scale.critics)
        export_model(checkpoint, self.model, vae=self.parts / "vae", autoencoder=self.parts / "autoencoder",
                     vae_preset="tiny", sampling=sampling,
                     decoder_sampling={"steps": scale.decoder_steps, "video_guidance": scale.decoder_guidance,
                                       "audio_guidance": scale.decoder_guidance})
        self._add_fast_decoders(self.model, fast_decoders)
        export_sync_critic(critic, self.model, default=True)
        self._stamp(self.model, checkpoint, *fast_decoders, critic)
        return True

    # ------------------------------------------------------------------ evaluation

    def step_evaluate(self) -> bool:
        from ..data.sounding_shapes import read_manifest
        from ..evaluation.long_video import long_measures
        from ..evaluation.reconstruction import reconstruction_measures
        from ..evaluation.report import results_table
        from ..pipeline import SoundingVideoPipeline

        pipe = SoundingVideoPipeline.from_pretrained(self._need(self.model / "model_index.json", "model").parent)
        n = self.scale.eval_clips
        tests = [Path(record["path"]) for record in read_manifest(self.test_data)]
        folders = {task: self.eval_dir / task for task in ("svg", "a2v", "v2a", "long")}
        timings: dict[str, float] = {}

        start = time.perf_counter()
        batch = 16
        for first in range(0, n, batch):
            out = pipe.generate(task="svg", n=min(batch, n - first), seed=first, progress=False)
            out.save(folders["svg"], prefix=f"svg-{first:04d}", preview=False)
        timings["svg"] = time.perf_counter() - start
        for task, key in (("a2v", "audio"), ("v2a", "video")):
            start = time.perf_counter()
            for i, path in enumerate(tests[:n]):
                out = pipe.generate(task=task, n=1, seed=i, progress=False, **{key: path})
                out.save(folders[task], prefix=f"{task}-{i:04d}", preview=False)
            timings[task] = time.perf_counter() - start
        start = time.perf_counter()
        long_out = pipe.generate(task="long", n=self.scale.long_clips, seconds=self.scale.long_seconds,
                                 seed=0, progress=False)
        long_files = long_out.save(folders["long"], prefix="long", preview=True)
        timings["long"] = time.perf_counter() - start

        results: dict[str, Any] = {"generation_seconds": {k: round(v, 1) for k, v in timings.items()}}
        for task in ("svg", "a2v", "v2a"):
            record = self.eval_dir / f"{task}.json"
            self._cli("evaluate", "--generated", str(folders[task]), "--reference", str(self.test_data),
                      "--metrics", "shapes", "--num-samples", str(n), "--out", str(record))
            results[task] = json.loads(record.read_text())["shapes"]
        results["long"] = long_measures(long_files, pipe.fps, pipe.audio_cfg.sample_rate, pipe.num_frames)
        start = time.perf_counter()
        results["reconstruction_ceiling"] = reconstruction_measures(pipe, tests[:n])
        results["generation_seconds"]["reconstruction"] = round(time.perf_counter() - start, 1)
        atomic_write_text(self.eval_dir / "results.json", json.dumps(results, indent=2) + "\n")
        table = results_table(results)
        atomic_write_text(self.eval_dir / "results.md", table)
        print(table)
        return True


RECIPE = SoundingShapesRecipe
