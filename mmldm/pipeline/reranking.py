"""Candidate reranking and sync guidance (not in the paper): the model judging its own samples.

A small generator learns the joint distribution loosely: of several latent
candidates for one output, some are far better in sync than others. The model
carries two judges of audio-video sync that cost little next to the signal
decoder, and :meth:`SoundingVideoPipeline.generate` decodes only the candidate
they rank best (``candidates`` > 1), or steers the video of a2v down one of them
while sampling (``sync_guidance``). Everything here is a pure function of the
networks and tensors it is given; the pipeline draws the noise and composes.

* **The generator's critic** (:func:`generator_critic`): the generator's own error in
  predicting a clip's audio from its video, with the video given as ``video_cond``
  (the v2a input) and both entries noised to one time of the forward process. Summed
  over a few middle times (:func:`generator_scores`) it is a Monte Carlo estimate of
  the audio's conditional denoising loss given the video, i.e. of how likely the
  generator finds that audio for that video (the diffusion-classifier view).
* **The contrastive critic** (:func:`contrastive_similarity`): the cosine similarity of
  the autoencoder's audio and video embeddings (paper Eq. 1), trained apart from the
  generator to tell matched pairs from the other pairs of a batch.

Several critics combine by ranks (:func:`rank_sum`), so no critic's scale matters,
and :func:`pick_candidates` keeps each sample's best. Reranking unconditional
candidates would shift the class mix towards the class the critics find easiest, so
svg and long without a class draw each sample's class first (:func:`draw_classes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..diffusion import Objective
from ..generator.generation import CRITICS

Latents = dict[str, torch.Tensor]
#: ``network(x_t, t_model, **conditions) -> {"audio": ..., "video": ...}`` float32 outputs (the generator)
Network = Callable[..., Latents]


def generator_critic(network: Network, objective: Objective, audio: torch.Tensor, noise: Latents, time: float,
                     labels: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``video x0 [B, Cv, Hv, Wv] -> [B]``: the generator's error in predicting ``audio``
    ``[B, Ca, Ha, Wa]`` from that video (mean squared error of its audio estimate, per sample).

    Both entries are noised to ``time`` (a fraction of the forward process) with ``noise``
    (``{"audio": [B, ...], "video": [B, ...]}``) and the video is also the ``video_cond``. At
    ``time`` 1 the inputs are the noise itself, so the audio estimate comes from the video
    alone for every objective (an epsilon schedule's last step still keeps
    ``sqrt(alpha_bar_T)``, about 0.07, of the signal: a trace of the very audio being scored).
    The returned function is differentiable in the video (sync guidance steps down it).
    """
    t = objective.time_at(time, audio.shape[0], audio.device)  # [B]
    t_model = objective.model_timestep(t)
    conditions = {} if labels is None else {"class_labels": labels}

    def critic(video: torch.Tensor) -> torch.Tensor:
        clean = {"audio": audio, "video": video}
        x_t = dict(noise) if time >= 1 else objective.add_noise(clean, noise, t)
        out = network(x_t, t_model, video_cond=video, **conditions)
        audio_x0 = objective.predict_x0(out["audio"], x_t["audio"], t)
        return (audio_x0 - audio).pow(2).flatten(1).mean(1)  # [B]

    return critic


def generator_scores(network: Network, objective: Objective, latents: Latents, noises: Sequence[Latents],
                     times: Sequence[float], labels: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]``: :func:`generator_critic` of each row's own audio given its video, summed over
    ``times`` (one ``noises`` draw per time, each ``{"audio": [B, ...], "video": [B, ...]}``);
    lower = more in sync. Rows that should be compared under the same noise (the candidates of
    one sample: common random numbers) must be given the same noise rows."""
    return sum(generator_critic(network, objective, latents["audio"], noise, time, labels)(latents["video"])
               for noise, time in zip(noises, times, strict=True))


def contrastive_similarity(autoencoder: Any, latents: Latents, scales: dict[str, float]) -> torch.Tensor:
    """``[B]``: cosine similarity of the audio and video embeddings of the autoencoder's contrastive
    head (its semantic tokens, mean-pooled and projected) for generator latents ``latents``
    (``{"audio": [B, Ca, Ha, Wa], "video": [B, Cv, Hv, Wv]}``, divided by ``scales`` first)."""
    video_z = latents["video"].float() / scales["video"]
    audio_z = latents["audio"].float() / scales["audio"]
    semantic = autoencoder.semantic(video_z, audio_z)
    video, audio = autoencoder.contrastive.embed(semantic.video.float(), semantic.audio.float())
    return (video.float() * audio.float()).sum(-1)


def rank_sum(scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """How several critics combine: each critic's scores ``[n, candidates]`` (lower = better)
    become ranks within each row (0 = best, ties in order), summed over the critics ``[n, candidates]``."""
    return sum(score.argsort(dim=1, stable=True).argsort(dim=1) for score in scores)


def pick_candidates(latents: Latents, scores: Sequence[torch.Tensor]) -> tuple[Latents, torch.Tensor]:
    """Keep, per sample, the candidate the critics find most in sync.

    ``latents``: ``[n * K, ...]`` each, sample-major (candidate ``j`` of sample ``i`` at row
    ``i * K + j``); ``scores``: one ``[n, K]`` per critic, lower = better. One critic: its
    lowest score wins; several: the lowest :func:`rank_sum` (the first candidate on a tie).
    Returns ``[n, ...]`` each and the kept candidate per sample ``[n]`` (CPU).
    """
    candidates = scores[0].shape[1]
    picks = (rank_sum(scores) if len(scores) > 1 else scores[0]).argmin(1)  # [n]
    rows = torch.arange(len(picks)) * candidates + picks
    return {k: v[rows.to(v.device)] for k, v in latents.items()}, picks


def draw_classes(generators: Sequence[torch.Generator], num_classes: int,
                 prior: Sequence[float] = ()) -> torch.Tensor:
    """One class per sample ``[n]`` (CPU), each the first draw of the sample's generator: from
    ``prior`` (one weight per class), or uniform when it is empty or all its weights are equal."""
    if not prior or len(set(prior)) == 1:
        draws = [torch.randint(num_classes, (1,), generator=g) for g in generators]
    else:
        weights = torch.tensor(prior, dtype=torch.float64)
        draws = [torch.multinomial(weights, 1, generator=g) for g in generators]
    return torch.cat(draws)


__all__ = ["CRITICS", "Network", "contrastive_similarity", "draw_classes", "generator_critic", "generator_scores",
           "pick_candidates", "rank_sum"]
