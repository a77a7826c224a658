"""The recipe steps that distil a model's fast decoders (issue "fast sampling"), shared by the recipes.

    DIR/runs/decoder-distill        the autoencoder's signal decoder distilled into a 4-step student
                                    (configs: decoder-distill.yaml)              mmldm train decoder-distill
    DIR/runs/frame-decoder-distill  the KL-VAE decoder distilled into a light frame decoder
                                    (configs: frame-decoder-distill.yaml)        mmldm train frame-decoder-distill

Both learn from the frozen teacher on the KL-VAE latents of the training windows (``DIR/vae-latents``)
and are trained again when their teacher trains further. The export step adds them to the model
folder (``decoder_student/``, ``frame_decoder/``), as the folder's defaults where the recipe's scale
says so (the built-in model: both; Big Buck Bunny: neither, its evaluation uses the full decoders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: step name -> the stage (and config) that trains it
FAST_DECODER_STAGES = {"decoder_student": "decoder-distill", "frame_decoder": "frame-decoder-distill"}


class FastDecoderSteps:
    """``step_decoder_student`` and ``step_frame_decoder`` for a :class:`~mmldm.recipes.base.Recipe` with
    ``parts/vae``, ``parts/autoencoder``, ``vae_latents`` and ``training_clips`` (the clips that cache
    was made from); its scale has ``student_steps``, ``frame_decoder_steps``, ``student_default`` and
    ``frame_decoder_default``."""

    parts: Path
    vae_latents: Path
    training_clips: Path
    scale: Any

    def step_decoder_student(self) -> bool:
        autoencoder = self._need(self.parts / "autoencoder", "exported autoencoder")
        cache = self._need(self.vae_latents, "KL-VAE latent cache")
        return self._train("decoder_student", self.scale.student_steps,
                           [f"teacher={autoencoder}", f"data.latent_cache={cache}"],
                           sources=(self._checkpoint("autoencoder"),))

    def step_frame_decoder(self) -> bool:
        vae = self._need(self.parts / "vae", "exported VAE")
        cache = self._need(self.vae_latents, "KL-VAE latent cache")
        return self._train("frame_decoder", self.scale.frame_decoder_steps,
                           [f"vae={vae}", f"data.latent_cache={cache}", f"data.root={self.training_clips}"],
                           sources=(self._checkpoint("vae"), self.training_clips))

    def _fast_decoder_checkpoints(self) -> tuple[Path, Path]:
        """The newest checkpoints of the two distillations (a one-line error names the step to run)."""
        return tuple(self._checkpoint(stage) for stage in FAST_DECODER_STAGES.values())  # type: ignore[return-value]

    def _add_fast_decoders(self, model: Path, checkpoints: tuple[Path, Path]) -> None:
        """Add the distillations' ``checkpoints`` (:meth:`_fast_decoder_checkpoints`) to the model folder."""
        from ..export import export_frame_decoder, export_student

        student, frame_decoder = checkpoints
        export_student(student, model, default=self.scale.student_default)
        export_frame_decoder(frame_decoder, model, default=self.scale.frame_decoder_default)
