"""The hierarchical multi-modal autoencoder (paper Sec. 3.1): encode, losses, decode.

    model = HierarchicalAVAutoencoder(tiny_config())
    video_post, audio_post = model.encode(video_latents, audio_latent)   # perceptual latents
    losses = model.training_losses(video_latents, audio_latent, labels, vae=vae,
                                   discriminator=disc, step=step, generator=g)
    frames, audio_image = model.reconstruct(vae, video_post.mode(), audio_post.mode(), generator=g)
    model.save_pretrained("run/autoencoder"); HierarchicalAVAutoencoder.from_pretrained("run/autoencoder")

Everything works on KL-VAE latents (already multiplied by the VAE's scaling
factor): ``video_latents`` [B, T, C, s, s] for the T frames of a clip and
``audio_latent`` [B, C, s, s] for its audio image. The frozen VAE is passed in
where pixels are needed (the adversarial loss and :meth:`reconstruct`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from einops import rearrange, repeat
from torch import nn
from torch.func import functional_call

from .. import rng
from ..config import from_dict, to_dict
from ..diffusion.objectives import default_sampler, make_objective
from ..diffusion.samplers import sample
from ..errors import ConfigError, DataError, MMLDMError, WeightsError, check_positive_int
from .audio_encoder import AudioEncoder
from .blocks import DiagonalGaussian
from .config import AutoencoderConfig
from .discriminator import AVDiscriminator, hinge_discriminator_loss, hinge_generator_loss
from .semantic import ClassificationHead, ContrastiveHead, Projector
from .signal_decoder import DecoderCondition, SignalDecoder, unet_architecture
from .video_encoder import VideoEncoder
from ..weights import CONFIG_NAME, load_state_checked, read_folder_config, read_folder_weights, save_pretrained_folder

AUTOENCODER_WHAT = "multi-modal autoencoder"


@dataclass
class SemanticFeatures:
    """Semantic tokens ``[B, N, D]`` of each modality and class logits ``[B, K]`` (None without labels)."""

    video: torch.Tensor
    audio: torch.Tensor
    class_logits: torch.Tensor | None


class HierarchicalAVAutoencoder(nn.Module):
    """Video and audio encoders, projectors, semantic heads and the shared signal decoder."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.video_encoder = VideoEncoder(cfg.video_encoder, cfg.vae_latent_channels, cfg.vae_latent_size)
        self.audio_encoder = AudioEncoder(cfg.audio_encoder, cfg.vae_latent_channels, cfg.vae_latent_size)
        self.video_projector = Projector(cfg.semantic, cfg.video_encoder.latent_channels, cfg.video_latent_size)
        self.audio_projector = Projector(cfg.semantic, cfg.audio_encoder.latent_channels, cfg.audio_latent_size)
        self.classifier = (ClassificationHead(cfg.semantic.dim, cfg.semantic.num_classes)
                           if cfg.semantic.num_classes > 0 else None)
        self.contrastive = ContrastiveHead(cfg.semantic)
        self.decoder = SignalDecoder(cfg)
        self.objective = make_objective(cfg.diffusion)

    def build_discriminator(self) -> AVDiscriminator:
        """A fresh discriminator of this model's config (trained beside it, not saved with it)."""
        return AVDiscriminator(self.cfg.discriminator)

    # ------------------------------------------------------------------ encoding

    def _check_latents(self, video_latents: torch.Tensor | None, audio_latent: torch.Tensor | None) -> None:
        c, s, t = self.cfg.vae_latent_channels, self.cfg.vae_latent_size, self.cfg.num_frames
        if video_latents is not None and tuple(video_latents.shape[1:]) != (t, c, s, s):
            raise DataError(f"autoencoder: video latents must be [B, {t}, {c}, {s}, {s}], "
                            f"got {tuple(video_latents.shape)}")
        if audio_latent is not None and tuple(audio_latent.shape[1:]) != (c, s, s):
            raise DataError(f"autoencoder: audio latent must be [B, {c}, {s}, {s}], got {tuple(audio_latent.shape)}")

    def encode_video(self, video_latents: torch.Tensor) -> DiagonalGaussian:
        """Posterior of the video perceptual latent. [B, T, C, s, s] -> over [B, Z_v, p_v, p_v]."""
        self._check_latents(video_latents, None)
        return self.video_encoder(video_latents[:, self.cfg.video_encoder.key_frames])

    def encode_audio(self, audio_latent: torch.Tensor) -> DiagonalGaussian:
        """Posterior of the audio perceptual latent. [B, C, s, s] -> over [B, Z_a, p_a, p_a]."""
        self._check_latents(None, audio_latent)
        return self.audio_encoder(audio_latent)

    def encode(self, video_latents: torch.Tensor,
               audio_latent: torch.Tensor) -> tuple[DiagonalGaussian, DiagonalGaussian]:
        """(video posterior, audio posterior); downstream code uses their ``mode()``."""
        return self.encode_video(video_latents), self.encode_audio(audio_latent)

    def semantic(self, video_z: torch.Tensor, audio_z: torch.Tensor) -> SemanticFeatures:
        """Semantic tokens of DETACHED perceptual latents (upstream: training diverges otherwise)."""
        video = self.video_projector(video_z.detach())
        audio = self.audio_projector(audio_z.detach())
        logits = self.classifier(video, audio) if self.classifier is not None else None
        return SemanticFeatures(video, audio, logits)

    def _class_ids(self, semantic: SemanticFeatures, labels: torch.Tensor | None) -> torch.Tensor:
        """Class token ids: the true class if given, else the predicted one, else 0 (no-label mode)."""
        if self.classifier is None:
            return torch.zeros(semantic.video.shape[0], dtype=torch.long, device=semantic.video.device)
        if labels is not None:
            return labels.long()
        return semantic.class_logits.argmax(dim=-1)

    def _decoder_items(self, video_z: torch.Tensor, audio_z: torch.Tensor, semantic: SemanticFeatures,
                       class_ids: torch.Tensor, frame_index: torch.Tensor, video_drop: torch.Tensor,
                       audio_drop: torch.Tensor) -> dict[str, dict[str, torch.Tensor | None]]:
        """Per-item arguments of :meth:`SignalDecoder.condition` for each modality.

        Video items are (clip b, frame ``frame_index[b, k]``), B*K of them; audio items are the B clips.
        Shapes: ``frame_index`` [B, K] long; drops [B] bool.
        """
        k = frame_index.shape[1]
        per_frame = lambda x: repeat(x, "b ... -> (b k) ...", k=k)  # noqa: E731
        frame_pos = rearrange(frame_index, "b k -> (b k)").float() / self.cfg.num_frames
        return {
            "video": {"latent": per_frame(video_z), "other_tokens": per_frame(semantic.audio),
                      "class_ids": per_frame(class_ids), "drop": per_frame(video_drop), "frame_pos": frame_pos},
            "audio": {"latent": audio_z, "other_tokens": semantic.video, "class_ids": class_ids, "drop": audio_drop,
                      "frame_pos": None},
        }

    # ------------------------------------------------------------------ training

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """:meth:`training_losses` (so DDP wrappers see one forward per step)."""
        return self.training_losses(*args, **kwargs)

    def condition_drop(self, batch: int, device: torch.device,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier-free guidance dropout: ``[B]`` bool masks (video, audio), each True with
        probability ``decoder.condition_dropout``, independently per clip and modality."""
        p = self.cfg.decoder.condition_dropout
        return (rng.rand((batch,), generator, device) < p,
                rng.rand((batch,), generator, device) < p)

    def training_losses(self, video_latents: torch.Tensor, audio_latent: torch.Tensor,
                        labels: torch.Tensor | None = None, *, vae: nn.Module | None = None,
                        discriminator: AVDiscriminator | None = None, video: torch.Tensor | None = None,
                        audio_image: torch.Tensor | None = None, step: int = 0,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """All stage-1 losses of a batch, paper Eq. (3).

        Shapes: ``video_latents`` [B, T, C, s, s], ``audio_latent`` [B, C, s, s], ``labels`` [B]
        (needed when num_classes > 0), optional real pixels ``video`` [B, T, 3, H, W] and
        ``audio_image`` [B, 3, H, W] for the discriminator (else the VAE decodes the real latents).

        Returns ``"loss/model"`` (the autoencoder's total), ``"loss/disc"`` (when a
        discriminator is given; zero before the adversarial warm-up ends) and logged parts.
        """
        cfg = self.cfg
        self._check_latents(video_latents, audio_latent)
        device, b = video_latents.device, video_latents.shape[0]
        if self.classifier is not None and labels is None:
            raise DataError("autoencoder: the batch has no class labels but semantic.num_classes > 0 "
                            "(set semantic.num_classes: 0 for unlabelled data)")
        video_post, audio_post = self.encode(video_latents, audio_latent)
        video_z, audio_z = video_post.sample(generator), audio_post.sample(generator)
        semantic = self.semantic(video_post.mode(), audio_post.mode())
        class_ids = self._class_ids(semantic, labels)

        # 2 random distinct target frames per clip, in time order (paper: frame index i/T given)
        k = cfg.decoder.target_frames
        frame_index = rng.rand((b, cfg.num_frames), generator, device).argsort(dim=1)[:, :k]
        frame_index = frame_index.sort(dim=1).values  # [B, K]
        targets = video_latents[torch.arange(b, device=device)[:, None], frame_index]  # [B, K, C, s, s]
        video_drop, audio_drop = self.condition_drop(b, device, generator)
        items = self._decoder_items(video_z, audio_z, semantic, class_ids, frame_index, video_drop, audio_drop)
        conditions = [self.decoder.condition(modality, **items[modality]) for modality in ("video", "audio")]

        # denoising loss on every item, independent timesteps (paper Eq. 3, L_mse: epsilon
        # target; velocity target with the flow objective)
        x0 = torch.cat([rearrange(targets, "b k c h w -> (b k) c h w"), audio_latent])  # [B*K + B, C, s, s]
        n_video = b * k
        t = self.objective.sample_timesteps(x0.shape[0], generator, device)
        t = t.to(device)
        noise = rng.randn(tuple(x0.shape), generator, device).to(x0.dtype)
        x_t = self.objective.add_noise(x0, noise, t)
        prediction = self.decoder(x_t, self.objective.model_timestep(t), DecoderCondition.cat(conditions))
        mse = self.objective.loss(prediction, x0, noise, t)  # [B*K + B]
        out = {"ae/mse_video": mse[:n_video].mean(), "ae/mse_audio": mse[n_video:].mean(),
               "ae/kl_video": video_post.kl().mean(), "ae/kl_audio": audio_post.kl().mean()}
        total = out["ae/mse_video"] + out["ae/mse_audio"] + cfg.loss.kl * (out["ae/kl_video"] + out["ae/kl_audio"])

        if self.classifier is not None:
            out["ae/classification"] = F.cross_entropy(semantic.class_logits.float(), labels.long())
            out["ae/class_accuracy"] = (semantic.class_logits.argmax(-1) == labels).float().mean().detach()
            total = total + cfg.loss.classification * out["ae/classification"]
        out["ae/contrastive"] = self.contrastive(semantic.video, semantic.audio)
        out["ae/logit_scale"] = self.contrastive.logit_scale().detach()
        total = total + cfg.loss.contrastive * out["ae/contrastive"]

        if discriminator is not None:
            adversarial_on = cfg.ablation.adversarial_loss and step >= cfg.loss.adversarial_start_step
            if adversarial_on:
                if vae is None:
                    raise ConfigError("autoencoder: the adversarial loss needs the KL-VAE to decode pixels")
                x0_hat = self.objective.predict_x0(prediction, x_t, t)
                g_loss, d_loss = self._adversarial(x0_hat, n_video, targets, audio_latent, frame_index, vae,
                                                   discriminator, video, audio_image)
                out["ae/adversarial"] = g_loss
                total = total + cfg.loss.adversarial * g_loss
            else:
                # a constant with no path to the discriminator: its gradients stay None, its optimiser skips
                d_loss = torch.zeros((), device=device, requires_grad=True)
            out["loss/disc"] = d_loss
        out["loss/model"] = total
        return out

    def _adversarial(self, x0_hat: torch.Tensor, n_video: int, targets: torch.Tensor, audio_latent: torch.Tensor,
                     frame_index: torch.Tensor, vae: nn.Module, discriminator: AVDiscriminator,
                     video: torch.Tensor | None, audio_image: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(generator loss, discriminator loss) of paper Eq. (2).

        The one-step x0 estimates are decoded to pixels by the frozen VAE WITH gradients
        (upstream decoded without them, so the adversarial loss never reached the decoder).
        Fakes for the discriminator: all fake; fake audio with real frame a; fake audio with
        real frame b; all fake with the frames swapped. The generator loss uses the all-fake
        triplet and a parameter-detached copy of the discriminator, so it leaves the
        discriminator's gradients untouched.
        """
        b, k = frame_index.shape
        clips = self.cfg.loss.adversarial_clips or b
        clips = min(clips, b)
        fake_video = rearrange(x0_hat[:n_video], "(b k) c h w -> b k c h w", k=k)[:clips, :2]
        fake_latents = torch.cat([rearrange(fake_video, "b k c h w -> (b k) c h w"), x0_hat[n_video:][:clips]])
        fake_pixels = vae.decode_images(fake_latents)  # [clips*2 + clips, 3, H, W], with gradients
        fake_frames = rearrange(fake_pixels[:clips * 2], "(b k) c h w -> b k c h w", k=2)
        fake_audio = fake_pixels[clips * 2:]
        with torch.no_grad():
            if video is not None:
                rows = torch.arange(clips, device=video.device)[:, None]
                real_frames = video[:clips][rows, frame_index[:clips, :2].to(video.device)].to(fake_pixels.dtype)
            else:
                real = vae.decode_images(rearrange(targets[:clips, :2], "b k c h w -> (b k) c h w"))
                real_frames = rearrange(real, "(b k) c h w -> b k c h w", k=2)
            real_audio = (audio_image[:clips].to(fake_pixels.dtype) if audio_image is not None
                          else vae.decode_images(audio_latent[:clips]))
        fa, fb = fake_frames[:, 0].detach(), fake_frames[:, 1].detach()
        ra, rb = real_frames[:, 0], real_frames[:, 1]
        audio_d = fake_audio.detach()
        # real, then the four fakes, in ONE call (one forward per step under DDP)
        triplets = [(real_audio, ra, rb), (audio_d, fa, fb), (audio_d, ra, fb), (audio_d, fa, rb), (audio_d, fb, fa)]
        logits = discriminator(*(torch.cat(slot) for slot in zip(*triplets))).float().chunk(len(triplets))
        d_loss = hinge_discriminator_loss(logits[0], list(logits[1:]))
        network = extract_model_from_parallel(discriminator, keep_torch_compile=False)  # no DDP hooks
        frozen = {name: p.detach() for name, p in network.named_parameters()}
        g_logits = functional_call(network, frozen, (fake_audio, fake_frames[:, 0], fake_frames[:, 1]))
        return hinge_generator_loss(g_logits.float()), d_loss

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def decode(self, video_z: torch.Tensor, audio_z: torch.Tensor, frames: list[int] | None = None, *,
               steps: int | None = None, video_guidance: float | None = None,
               audio_guidance: float | None = None, eta: float | None = None,
               class_ids: torch.Tensor | None = None,
               generator: torch.Generator | list[torch.Generator] | None = None,
               chunk_size: int | None = None, progress: bool = False,
               decoder: SignalDecoder | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Perceptual latents -> KL-VAE latents of the frames and of the audio image.

        DDIM (epsilon objective; eta ``sampling.eta``) or Euler (flow objective), ``sampling.steps``
        steps by default, with per-modality classifier-free guidance,
        ``chunk_size`` items (frames or audio images) per denoising run to bound memory.
        The class token is the predicted class unless ``class_ids`` [B] is given. ``decoder``: another
        signal decoder of this autoencoder's latents (a distilled few-step student,
        :mod:`mmldm.autoencoder.distill`; its guidance is folded in, so give it guidance 1).
        ``generator``: one for the batch, or one per item (a list of B): item ``i`` then draws its
        noise from its own, as it would decoded alone, so a batch decodes what its items decode one
        at a time (up to the arithmetic of batched kernels).

        Shapes: ``video_z`` [B, Z_v, p_v, p_v], ``audio_z`` [B, Z_a, p_a, p_a] ->
        (``[B, len(frames), C, s, s]``, ``[B, C, s, s]``); ``frames`` defaults to all T frames.
        """
        cfg, s = self.cfg, self.cfg.sampling
        if steps is None:
            steps = s.steps
        else:
            check_positive_int(steps, "autoencoder decoding: steps")
        scales = {"video": s.video_guidance if video_guidance is None else video_guidance,
                  "audio": s.audio_guidance if audio_guidance is None else audio_guidance}
        if not all(math.isfinite(scale) for scale in scales.values()):
            raise ConfigError(f"autoencoder decoding: guidance scales must be finite, got {scales}")
        eta = s.eta if eta is None else eta
        if isinstance(generator, list) and eta != 0.0:  # stochastic steps draw from one generator: item by item
            kwargs = dict(steps=steps, video_guidance=video_guidance, audio_guidance=audio_guidance, eta=eta,
                          chunk_size=chunk_size, progress=progress, decoder=decoder)
            parts = [self.decode(video_z[i:i + 1], audio_z[i:i + 1], frames, generator=g,
                                 class_ids=None if class_ids is None else class_ids[i:i + 1], **kwargs)
                     for i, g in enumerate(generator)]
            return torch.cat([video for video, _ in parts]), torch.cat([audio for _, audio in parts])
        chunk = chunk_size or s.chunk_size
        frames = list(range(cfg.num_frames)) if frames is None else list(frames)
        b, device = video_z.shape[0], video_z.device
        decoder = self.decoder if decoder is None else decoder
        semantic = self.semantic(video_z, audio_z)
        class_ids = self._class_ids(semantic, class_ids)
        frame_index = torch.tensor(frames, device=device).repeat(b, 1)  # [B, F]
        keep = torch.zeros(b, dtype=torch.bool, device=device)
        items = self._decoder_items(video_z, audio_z, semantic, class_ids, frame_index, keep, keep)
        drop = torch.ones(1, dtype=torch.bool, device=device)
        null_context = {"video": decoder.context("video", semantic.audio[:1], class_ids[:1], drop),
                        "audio": decoder.context("audio", semantic.video[:1], class_ids[:1], drop)}
        c, side = cfg.vae_latent_channels, cfg.vae_latent_size
        # all starting noise drawn up front, so the result does not depend on the chunk size
        if isinstance(generator, list):
            if len(generator) != b:
                raise ValueError(f"decode(): {len(generator)} generators for a batch of {b}")
            draws = [(rng.randn((len(frames), c, side, side), g, device), rng.randn((1, c, side, side), g, device))
                     for g in generator]
            noise_video, noise_audio = (torch.cat(noise) for noise in zip(*draws))
            generator = None  # deterministic steps from here (eta 0)
        else:
            noise_video = rng.randn((b * len(frames), c, side, side), generator, device)
            noise_audio = rng.randn((b, c, side, side), generator, device)
        out = {}
        for modality, noise in (("video", noise_video), ("audio", noise_audio)):
            parts = []
            for start in range(0, noise.shape[0], chunk):  # conditions too are built per chunk: bounded memory
                part = slice(start, start + chunk)
                cond = decoder.condition(
                    modality, **{k: None if v is None else v[part] for k, v in items[modality].items()})
                parts.append(self._denoise_chunk(decoder, cond, null_context[modality], noise[part],
                                                 scales[modality], steps, eta, generator, progress))
            out[modality] = torch.cat(parts)
        return rearrange(out["video"], "(b f) c h w -> b f c h w", b=b), out["audio"]

    def _denoise_chunk(self, decoder: SignalDecoder, cond: DecoderCondition, null_context: torch.Tensor,
                       noise: torch.Tensor, scale: float, steps: int, eta: float, generator: torch.Generator | None,
                       progress: bool) -> torch.Tensor:
        """The sampler on one chunk of items with classifier-free guidance, paper Eq. (9) applied per modality.

        The conditional and null-context predictions run in one UNet call. (mmldm.diffusion.guidance
        wraps dict latents sharing one batch; here the items of a chunk are one modality's plain
        tensor, so the extrapolation is the single line below.)
        """
        n = noise.shape[0]
        if scale != 1.0:
            null = repeat(null_context[0], "l d -> n l d", n=n)
            both = DecoderCondition.cat([cond, cond.with_context(null)])

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if scale == 1.0:
                return decoder(x, t, cond)
            out_cond, out_null = decoder(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
            return out_null + scale * (out_cond - out_null)

        return sample(denoise, noise, self.objective, sampler=default_sampler(self.objective), steps=steps, eta=eta,
                      generator=generator, progress=progress)

    @torch.no_grad()
    def reconstruct(self, vae: nn.Module, video_z: torch.Tensor, audio_z: torch.Tensor,
                    frames: list[int] | None = None, **decode_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Perceptual latents -> pixels: (frames [B, F, 3, H, W], audio image [B, 3, H, W]) in [-1, 1].

        The VAE decodes in its own chunks (``KLVAE.chunk_size``); the waveform is the
        vocoder's job (the pipeline's).
        """
        video_latents, audio_latent = self.decode(video_z, audio_z, frames, **decode_kwargs)
        b = video_latents.shape[0]
        frames_px = vae.decode_images(rearrange(video_latents, "b f c h w -> (b f) c h w"))
        frames_px = rearrange(frames_px, "(b f) c h w -> b f c h w", b=b)
        return frames_px.clamp(-1, 1), vae.decode_images(audio_latent).clamp(-1, 1)

    # ------------------------------------------------------------------ save / load

    def resolved_config(self) -> AutoencoderConfig:
        """The config that rebuilds this model without the pretrained UNet folder."""
        data = to_dict(self.cfg)
        data["decoder"]["unet"] = unet_architecture(self.decoder.unet)
        data["decoder"]["pretrained_unet"] = None
        return from_dict(AutoencoderConfig, data)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``directory`` (created if needed)."""
        return save_pretrained_folder(directory, to_dict(self.resolved_config()), self)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> HierarchicalAVAutoencoder:
        """Rebuild a model saved by :meth:`save_pretrained`."""
        config = read_folder_config(directory, AUTOENCODER_WHAT)
        try:
            model = cls(from_dict(AutoencoderConfig, config))
        except MMLDMError as exc:
            raise WeightsError(Path(directory) / CONFIG_NAME, AUTOENCODER_WHAT, str(exc)) from None
        state, weights = read_folder_weights(directory, AUTOENCODER_WHAT, device=device)
        load_state_checked(model, state, weights, AUTOENCODER_WHAT)
        return model.to(device)
