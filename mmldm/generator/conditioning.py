"""Condition mixing for generator training: one checkpoint for every task.

The paper trains ONE DiT to model three distributions at once (Sec. 3.3):
joint generation ``p(a, v)``, audio-to-video ``p(v | a)`` and video-to-audio
``p(a | v)``. Per training item it draws which one the item teaches:

* **context dropout** (p = 0.1): the class label becomes the null class, so
  classifier-free guidance over the class works at sampling time;
* **text dropout** (p = 0.1, text-conditioned generators): the caption becomes
  the null (empty) text, so text guidance works at sampling time;
* **clean audio -> video** (p = 0.05): ``audio_cond`` is the clean audio latent
  (the network generates the video given the audio);
* **clean video -> audio** (p = 0.05): ``video_cond`` is the clean video latent;
  the two cross-modal cases are exclusive, and all other items get zeros (the
  paper's null latents ``a_0 = 0``, ``v_0 = 0``).

We add **previous-clip conditioning** so that the same checkpoint also does
long generation and continuation (the authors trained separate models for
these). For an item whose previous window (the consecutive window of the same
source file) is in the data, one of four cases is drawn:

=================  =======  ==========================================
case               default  task it teaches
=================  =======  ==========================================
previous both      0.30     long generation (next clip given the last)
previous audio     0.10     audio continuation
previous video     0.10     video continuation
none               0.50     first clip / single-clip generation
=================  =======  ==========================================

Items without a previous clip always get zeros. The "none" share keeps the
zero-previous case (used for the first clip of a long sample) well trained: the
authors' code never trained it (upstream defect, see the design notes).

The draws (context, cross-modal, previous, and text with captions) are
independent, so e.g. a long a2v item (previous both + clean audio) occurs too,
at 0.3 * 0.05.

**Loss.** The paper keeps the loss on both modalities for every item, also on
the modality given clean (Eq. 8 unchanged); that is our default
(``loss_on_given: true``). With ``false`` the given modality's MSE gets weight 0
for that item (it is trivial to denoise when its clean copy is an input, and
only spends capacity).

Everything is a pure function of the batch and a ``torch.Generator``: the
same seed gives the same choices, whatever device the latents are on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import rng
from ..errors import ConfigError


@dataclass
class ConditioningConfig:
    """Per-item probabilities of each training condition (see the module docstring)."""

    #: class label -> null class (classifier-free guidance over the class)
    context_dropout: float = 0.1
    #: caption -> the null (empty) text (guidance over the text; text-conditioned generators)
    text_dropout: float = 0.1
    #: clean audio given as ``audio_cond`` (audio-to-video task)
    audio_to_video: float = 0.05
    #: clean video given as ``video_cond`` (video-to-audio task); exclusive with audio_to_video
    video_to_audio: float = 0.05
    #: for items that have a previous clip: give both previous latents (long generation)
    previous_both: float = 0.3
    #: ... only the previous audio (audio continuation)
    previous_audio: float = 0.1
    #: ... only the previous video (video continuation); the rest of the mass: none
    previous_video: float = 0.1
    #: keep the MSE of a modality that is given clean (paper: true)
    loss_on_given: bool = True

    def __post_init__(self) -> None:
        names = ("context_dropout", "text_dropout", "audio_to_video", "video_to_audio", "previous_both", "previous_audio",
                 "previous_video")
        for name in names:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"conditioning.{name} must lie in [0, 1], got {value}")
        if self.audio_to_video + self.video_to_audio > 1.0:
            raise ValueError("conditioning.audio_to_video + video_to_audio must be <= 1 (they are exclusive)")
        if self.previous_both + self.previous_audio + self.previous_video > 1.0:
            raise ValueError("conditioning.previous_both + previous_audio + previous_video must be <= 1")

    @property
    def previous_none(self) -> float:
        """Probability that an item with a previous clip is trained without it."""
        return 1.0 - self.previous_both - self.previous_audio - self.previous_video

    @property
    def uses_previous(self) -> bool:
        return self.previous_both + self.previous_audio + self.previous_video > 0


@dataclass
class MixedConditions:
    """The network's condition inputs for one batch, and what was drawn.

    Tensors are full batches (zeros where a condition is off), never None, so
    every condition path takes part in every step (DDP needs all parameters used).

    Shapes: ``audio_cond``/``prev_audio`` [B, Ca, Ha, Wa]; ``video_cond``/``prev_video``
    [B, Cv, Hv, Wv]; ``class_labels`` [B] int64 or None; masks and ``loss_weights``
    entries [B] (bool / float32); ``texts`` B strings ("" = the null text) or None without captions.
    """

    audio_cond: torch.Tensor
    video_cond: torch.Tensor
    prev_audio: torch.Tensor
    prev_video: torch.Tensor
    class_labels: torch.Tensor | None
    #: items whose class label was replaced by the null class (context dropout)
    context_dropped: torch.Tensor
    #: items given the clean audio (a2v) / the clean video (v2a)
    audio_given: torch.Tensor
    video_given: torch.Tensor
    #: items given their previous audio / video
    prev_audio_given: torch.Tensor
    prev_video_given: torch.Tensor
    #: per-item weight of each modality's MSE: {"audio": [B], "video": [B]}
    loss_weights: dict[str, torch.Tensor]
    #: the items' captions after text dropout (None: no captions given)
    texts: list[str] | None = None
    #: items whose caption was replaced by the null text
    text_dropped: torch.Tensor | None = None

    def model_kwargs(self) -> dict[str, torch.Tensor | None]:
        """Keyword arguments of :meth:`mmldm.generator.dit.AVDiT.forward` (besides ``x`` and ``t``)."""
        return {"audio_cond": self.audio_cond, "video_cond": self.video_cond, "prev_audio": self.prev_audio,
                "prev_video": self.prev_video, "class_labels": self.class_labels}


def _masked(latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``latent`` [B, ...] where ``keep`` [B] is true, zeros elsewhere."""
    return torch.where(keep.view(-1, *([1] * (latent.ndim - 1))), latent, torch.zeros((), dtype=latent.dtype,
                                                                                   device=latent.device))


def mix_conditions(audio: torch.Tensor, video: torch.Tensor, cfg: ConditioningConfig,
                   generator: torch.Generator | None = None, *,
                   class_labels: torch.Tensor | None = None, null_class: int | None = None,
                   prev_audio: torch.Tensor | None = None, prev_video: torch.Tensor | None = None,
                   has_previous: torch.Tensor | None = None,
                   texts: Sequence[str] | None = None) -> MixedConditions:
    """Draw each item's training condition (paper Sec. 3.3 plus previous-clip conditioning).

    Args:
        audio: clean audio latents ``[B, Ca, Ha, Wa]``.
        video: clean video latents ``[B, Cv, Hv, Wv]``.
        cfg: the probabilities.
        generator: the random source; exactly ``3 * B`` uniform numbers are drawn
            from it per call (``4 * B`` with ``texts``), whatever the batch holds (so
            resumed runs stay in step).
        class_labels: ``[B]`` int64 class ids, or None for an unconditional model;
            ids < 0 (unlabelled items) are mapped to ``null_class``.
        null_class: the label meaning "no class" (needed with ``class_labels``).
        prev_audio / prev_video: the previous window's latents (any values where
            ``has_previous`` is false), or None when the data has none.
        has_previous: ``[B]`` bool, items whose previous window exists.
        texts: the items' captions (B strings, "" = none) for a text-conditioned generator, or None.

    Returns:
        :class:`MixedConditions`.
    """
    batch = audio.shape[0]
    device = audio.device
    if video.shape[0] != batch:
        raise ConfigError(f"condition mixing: audio batch {batch} != video batch {video.shape[0]}")
    draws = rng.rand((3, batch), generator, device)  # [3, B] in [0, 1)
    context_u, cross_u, previous_u = draws

    text_dropped = None
    if texts is not None:
        texts = list(texts)
        if len(texts) != batch:
            raise ValueError(f"condition mixing: {len(texts)} captions for a batch of {batch}")
        text_dropped = rng.rand((batch,), generator, device) < cfg.text_dropout  # [B]
        texts = ["" if drop else text for text, drop in zip(texts, text_dropped.tolist())]

    context_dropped = context_u < cfg.context_dropout
    labels = None
    if class_labels is not None:
        if null_class is None:
            raise ConfigError("condition mixing: class labels need the model's null class")
        labels = class_labels.to(device=device, dtype=torch.long)
        labels = torch.where((labels < 0) | context_dropped, torch.full_like(labels, null_class), labels)

    # exclusive cross-modal tasks: [0, p_a2v) -> a2v, [p_a2v, p_a2v + p_v2a) -> v2a
    audio_given = cross_u < cfg.audio_to_video
    video_given = (cross_u >= cfg.audio_to_video) & (cross_u < cfg.audio_to_video + cfg.video_to_audio)

    if has_previous is None or prev_audio is None or prev_video is None:
        available = torch.zeros(batch, dtype=torch.bool, device=device)
        prev_audio = torch.zeros_like(audio) if prev_audio is None else prev_audio
        prev_video = torch.zeros_like(video) if prev_video is None else prev_video
    else:
        available = has_previous.to(device=device, dtype=torch.bool)
    # [0, both) -> both; [both, both + audio) -> audio only; [.., + video) -> video only; rest -> none
    both_end = cfg.previous_both
    audio_end = both_end + cfg.previous_audio
    video_end = audio_end + cfg.previous_video
    prev_audio_given = available & (previous_u < audio_end)
    prev_video_given = available & ((previous_u < both_end) | ((previous_u >= audio_end) & (previous_u < video_end)))

    ones = torch.ones(batch, device=device)
    if cfg.loss_on_given:
        weights = {"audio": ones, "video": ones}
    else:
        weights = {"audio": ones * (~audio_given).float(), "video": ones * (~video_given).float()}
    return MixedConditions(
        audio_cond=_masked(audio, audio_given),
        video_cond=_masked(video, video_given),
        prev_audio=_masked(prev_audio.to(audio.dtype), prev_audio_given),
        prev_video=_masked(prev_video.to(video.dtype), prev_video_given),
        class_labels=labels,
        context_dropped=context_dropped,
        audio_given=audio_given,
        video_given=video_given,
        prev_audio_given=prev_audio_given,
        prev_video_given=prev_video_given,
        loss_weights=weights,
        texts=texts,
        text_dropped=text_dropped,
    )
