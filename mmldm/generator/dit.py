"""AVDiT: the multi-modal diffusion transformer of MM-LDM (paper Sec. 3.2-3.3).

One transformer denoises the audio and the video perceptual latents together.
It only approximates a function ``(x_t, t, conditions) -> epsilon or velocity``;
noising, losses, samplers and guidance live in :mod:`mmldm.diffusion`.

Sequence (full self-attention over all of it, ``F.scaled_dot_product_attention``)::

    [class token?][n_ctx prompt tokens][EOS_a][audio tokens][EOS_v][video tokens]
     paper sizes:        77              1       64          1       256      = 399

Each modality token = patch-embed(noisy latent)
                    + fixed 2D sin-cos position embedding (per modality grid)
                    + learnable modality embedding
                    + ZERO-initialised patch-embed(condition latent)   (Sec. 3.3 "zero convolution":
                      the clean audio for a2v, the clean video for v2a, zeros otherwise)
                    + ZERO-initialised patch-embed(previous-clip latent) (continuation / long generation).

Video tokens (``video_tokenization``): ``patches`` is the paper's, one token per
spatial patch holding every channel. ``frames`` (not in the paper) makes one token
per channel holding its whole ``H x W`` map; with the recipe autoencoder's video
latent (one channel per frame) each token is a frame, and the 1D frame index is
its position, so a frame attends to the audio of its time directly instead of
every spatial token carrying all 16 frames.

Design choice for the previous clip: the authors' code feeds it as extra context
tokens plus a side network into the first half of the blocks. We add it to the
tokens of its own modality through a zero-initialised, bias-free projection,
exactly like the cross-modal condition: same token count (no extra attention
cost), and the model starts identical to one trained without it. The condition
and previous-clip projections have no bias, so an absent input (``None``) is
exactly the paper's null latent (zeros).

The timestep (and the class, if any) conditions every block through adaLN-Zero
(DiT, Peebles & Xie 2023): shift/scale/gate for attention and MLP from one
zero-initialised linear, so every block starts as the identity. Each modality
has its own zero-initialised final layer, so the network outputs zeros at init.

Presets (:meth:`DiTConfig.preset`): ``tiny`` for CPU tests; ``S``, ``B``, ``L``
match the paper's Table 4 (131M / 384M / 1543M parameters, counted at the
paper's latent sizes with 77 context tokens); ``XL`` is the authors' default.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import pack, rearrange, unpack
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import from_dict, to_dict
from ..errors import ConfigError, MMLDMError, WeightsError
from ..weights import load_state_checked, read_folder_config, read_folder_weights, save_pretrained_folder
from .embeddings import ClassEmbedder, FrameEmbed, PatchEmbed, TimestepEmbedder, sincos_2d_position_embedding

MODALITIES = ("audio", "video")
DIT_WHAT = "AVDiT weights"
VIDEO_TOKENIZATIONS = ("patches", "frames")


# --------------------------------------------------------------------------- config and presets

@dataclasses.dataclass
class DiTConfig:
    """Size and inputs of :class:`AVDiT`. Defaults are the authors' XL at the paper's latent sizes."""

    depth: int = 28
    width: int = 1152
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 1
    #: audio perceptual latent [C, H, W] (paper: 16 x 8 x 8 -> 64 tokens)
    audio_channels: int = 16
    audio_size: tuple[int, int] = (8, 8)
    #: video perceptual latent [C, H, W] (paper: 16 x 16 x 16 -> 256 tokens)
    video_channels: int = 16
    video_size: tuple[int, int] = (16, 16)
    #: how the video latent becomes tokens: ``patches`` (the paper: one token per p x p spatial patch,
    #: holding every channel) or ``frames`` (not in the paper: one token per channel, holding its whole
    #: H x W map; for a latent with one channel per frame, each token is a frame)
    video_tokenization: str = "patches"
    #: learnable prompt tokens in front of the sequence (paper: 77)
    n_ctx: int = 77
    #: classes for class-conditional generation (0: none); index num_classes is the null class
    num_classes: int = 0
    #: width of external context tokens [B, n_ctx, context_dim] (e.g. 768 for CLIP-L text); 0: none
    context_dim: int = 0
    #: accept previous-clip latents (continuation / long generation)
    previous_clip: bool = True
    frequency_embedding_size: int = 256
    #: recompute block activations in backward (training memory for compute)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.audio_size = tuple(self.audio_size)
        self.video_size = tuple(self.video_size)
        problems = []
        if self.depth < 1 or self.width < 1 or self.num_heads < 1:
            problems.append("depth, width and num_heads must be >= 1")
        elif self.width % self.num_heads:
            problems.append(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.width % 4:
            problems.append(f"width {self.width} must be a multiple of 4 (2D sin-cos position embedding)")
        if self.video_tokenization not in VIDEO_TOKENIZATIONS:
            problems.append(f"video_tokenization '{self.video_tokenization}' is not one of "
                            f"{', '.join(VIDEO_TOKENIZATIONS)}")
        for name in ("audio_size", "video_size"):
            size = getattr(self, name)
            patched = name == "audio_size" or self.video_tokenization == "patches"  # frames take whole maps
            if len(size) != 2 or min(size) < 1 or (patched and any(s % self.patch_size for s in size)):
                wanted = f"multiples of patch_size {self.patch_size}" if patched else "sizes"
                problems.append(f"{name} {size} must be 2 positive {wanted}")
        if self.n_ctx < 0 or self.num_classes < 0 or self.context_dim < 0:
            problems.append("n_ctx, num_classes and context_dim must be >= 0")
        if self.context_dim and not self.n_ctx:
            problems.append("context_dim needs n_ctx > 0 (context tokens are added to the prompt tokens)")
        if problems:
            raise ConfigError("DiT config: " + "; ".join(problems))

    @property
    def audio_tokens(self) -> int:
        return (self.audio_size[0] // self.patch_size) * (self.audio_size[1] // self.patch_size)

    @property
    def video_grid(self) -> tuple[int, int]:
        """The video token grid: ``(H/p, W/p)`` patches, or ``(1, C)`` frames."""
        if self.video_tokenization == "frames":
            return (1, self.video_channels)
        return (self.video_size[0] // self.patch_size, self.video_size[1] // self.patch_size)

    @property
    def video_tokens(self) -> int:
        return self.video_grid[0] * self.video_grid[1]

    @property
    def context_tokens(self) -> int:
        """Tokens before EOS_a: the class token (if classes) and the prompt."""
        return self.n_ctx + (1 if self.num_classes else 0)

    @property
    def sequence_length(self) -> int:
        return self.context_tokens + 1 + self.audio_tokens + 1 + self.video_tokens

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "DiTConfig":
        """A named size (``tiny``, ``S``, ``B``, ``L``, ``XL``), with field overrides."""
        if name not in DIT_PRESETS:
            raise ConfigError(f"unknown DiT preset '{name}' (choose one of {', '.join(DIT_PRESETS)})")
        return from_dict(cls, {**DIT_PRESETS[name], **overrides}, prefix="dit.")


#: Sizes. S/B/L: Table 4 gives only parameter counts and GFLOPs; these depth/width/heads
#: reproduce both (params within 1%; the GFLOPs equal the multiply-adds of the linear
#: layers, see ``mmldm presets``), with head dim 64. XL: the authors' configuration.
DIT_PRESETS: dict[str, dict[str, Any]] = {
    # tiny: the latent sizes of the tiny autoencoder (mmldm.autoencoder.tiny_config): audio 8x4x4, video 8x8x8
    "tiny": dict(depth=4, width=128, num_heads=4, n_ctx=4, audio_channels=8, audio_size=(4, 4),
                 video_channels=8, video_size=(8, 8)),
    "S": dict(depth=12, width=768, num_heads=12),
    "B": dict(depth=20, width=1024, num_heads=16),
    "L": dict(depth=36, width=1536, num_heads=24),
    "XL": dict(depth=28, width=1152, num_heads=16),
}

#: The paper's Table 4 (AudioSet scaling study): parameters and GFLOPs per forward.
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "S": {"params": 131e6, "gflops": 34.0},
    "B": {"params": 384e6, "gflops": 101.0},
    "L": {"params": 1543e6, "gflops": 407.0},
}


# --------------------------------------------------------------------------- blocks

def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; x ``[B, N, D]``, shift/scale ``[B, D]``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the whole sequence (no mask)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: ``[B, N, D]``. :return: ``[B, N, D]``."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, h, N, D/h]
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # [B, N, D]


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AdaLNZeroBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (DiT Sec. 3.2); identity at init."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """:param x: tokens ``[B, N, D]``. :param c: conditioning ``[B, D]``. :return: ``[B, N, D]``."""
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = self.modulation(c).chunk(6, dim=1)
        x = x + gate_attn.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_attn, scale_attn))  # [B, N, D]
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # [B, N, D]
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm + linear to each token's values, then back to the latent.

    Patches: ``p * p * C`` values per token, unpatchified over the ``grid``. Frames
    (``frame_size`` given): ``H * W`` values per token, token i being channel i.
    """

    def __init__(self, dim: int, patch_size: int, out_channels: int, grid: tuple[int, int],
                 frame_size: tuple[int, int] | None = None):
        super().__init__()
        self.patch_size = patch_size
        self.grid = grid
        self.frame_size = frame_size
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        values = patch_size * patch_size * out_channels if frame_size is None else frame_size[0] * frame_size[1]
        self.linear = nn.Linear(dim, values)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """:param x: ``[B, N, D]``. :param c: ``[B, D]``. :return: ``[B, C, gh*p, gw*p]`` or ``[B, N, H, W]``."""
        shift, scale = self.modulation(c).chunk(2, dim=1)
        x = self.linear(modulate(self.norm(x), shift, scale))  # [B, N, values]
        if self.frame_size is not None:
            return rearrange(x, "b c (h w) -> b c h w", h=self.frame_size[0], w=self.frame_size[1])
        return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=self.grid[0], w=self.grid[1],
                         p=self.patch_size, q=self.patch_size)


# --------------------------------------------------------------------------- the network

class AVDiT(nn.Module):
    """Joint audio-video denoiser over perceptual latents (see the module docstring)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.width, cfg.patch_size
        self.audio_grid = (cfg.audio_size[0] // p, cfg.audio_size[1] // p)
        self.video_grid = cfg.video_grid

        self.time_embed = TimestepEmbedder(d, cfg.frequency_embedding_size)
        self.class_embed = ClassEmbedder(cfg.num_classes, d) if cfg.num_classes else None
        self.prompt = nn.Parameter(torch.empty(cfg.n_ctx, d))  # learnable context tokens
        self.context_proj = nn.Linear(cfg.context_dim, d) if cfg.context_dim else None
        self.eos = nn.ParameterDict({m: nn.Parameter(torch.empty(d)) for m in MODALITIES})
        self.modality_embed = nn.ParameterDict({m: nn.Parameter(torch.empty(d)) for m in MODALITIES})

        channels = {"audio": cfg.audio_channels, "video": cfg.video_channels}
        grids = {"audio": self.audio_grid, "video": self.video_grid}
        frames = cfg.video_tokenization == "frames"

        def embed(m: str, bias: bool = True) -> nn.Module:
            if m == "video" and frames:
                return FrameEmbed(*cfg.video_size, d, bias=bias)
            return PatchEmbed(channels[m], d, p, bias=bias)

        self.patch_embed = nn.ModuleDict({m: embed(m) for m in MODALITIES})
        # cross-modal condition (Sec. 3.3) and previous clip: bias-free, zero-initialised
        self.cond_embed = nn.ModuleDict({m: embed(m, bias=False) for m in MODALITIES})
        self.prev_embed = (nn.ModuleDict({m: embed(m, bias=False) for m in MODALITIES})
                           if cfg.previous_clip else None)
        self._register_position_embeddings()

        self.blocks = nn.ModuleList(AdaLNZeroBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        frame_sizes = {"audio": None, "video": cfg.video_size if frames else None}
        self.final = nn.ModuleDict({m: FinalLayer(d, p, channels[m], grids[m], frame_sizes[m]) for m in MODALITIES})
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation, with every zero-init named.

        Zero-initialised (the network starts as "output 0, conditions ignored"):
        * ``blocks[i].modulation[-1]``: adaLN-Zero, so every block is the identity;
        * ``final[m].modulation[-1]`` and ``final[m].linear``: outputs are zero;
        * ``cond_embed[m]``: the paper's zero convolution for the cross-modal condition;
        * ``prev_embed[m]``: the previous-clip path.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for embed in self.patch_embed.values():  # like nn.Linear, on the flattened kernel
            nn.init.xavier_uniform_(embed.proj.weight.view(embed.proj.weight.shape[0], -1))
            nn.init.zeros_(embed.proj.bias)
        nn.init.normal_(self.time_embed.mlp.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp.linear_2.weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.table.weight, std=0.02)
        for param in [self.prompt, *self.eos.values(), *self.modality_embed.values()]:
            nn.init.normal_(param, std=0.02)

        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for final in self.final.values():
            nn.init.zeros_(final.modulation[-1].weight)
            nn.init.zeros_(final.modulation[-1].bias)
            nn.init.zeros_(final.linear.weight)
            nn.init.zeros_(final.linear.bias)
        zero_paths = [*self.cond_embed.values(), *(self.prev_embed.values() if self.prev_embed else [])]
        for embed in zero_paths:
            nn.init.zeros_(embed.proj.weight)

    def _register_position_embeddings(self, device: torch.device | str | None = None) -> None:
        """The fixed sin-cos tables, rebuilt from the config (never saved in checkpoints)."""
        for m, grid in (("audio", self.audio_grid), ("video", self.video_grid)):
            table = sincos_2d_position_embedding(self.cfg.width, *grid, device=device)  # [N_m, D]
            self.register_buffer(f"pos_embed_{m}", table, persistent=False)

    @property
    def null_class(self) -> int | None:
        """The label meaning "no class" (for condition dropout), or None without classes."""
        return None if self.class_embed is None else self.class_embed.null_class

    def _modality_tokens(self, m: str, x: torch.Tensor, cond: torch.Tensor | None,
                         prev: torch.Tensor | None) -> torch.Tensor:
        """Tokens ``[B, N_m, D]`` of one modality (noisy latent + position + modality + conditions)."""
        pos = getattr(self, f"pos_embed_{m}")
        tokens = self.patch_embed[m](x) + pos.to(x.dtype) + self.modality_embed[m]  # [B, N_m, D]
        if cond is not None:
            tokens = tokens + self.cond_embed[m](cond)  # [B, N_m, D]
        if prev is not None:
            tokens = tokens + self.prev_embed[m](prev)  # [B, N_m, D]
        return tokens

    def forward(self, x: dict[str, torch.Tensor], t: torch.Tensor,
                audio_cond: torch.Tensor | None = None, video_cond: torch.Tensor | None = None,
                prev_audio: torch.Tensor | None = None, prev_video: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predict the noise (or velocity) of both modalities.

        Shapes:
            x: ``{"audio": [B, Ca, Ha, Wa], "video": [B, Cv, Hv, Wv]}`` noisy latents.
            t: ``[B]`` network timestep (``objective.model_timestep``, 0..1000).
            audio_cond / prev_audio: ``[B, Ca, Ha, Wa]`` or None (= zeros, the null latent).
            video_cond / prev_video: ``[B, Cv, Hv, Wv]`` or None.
            class_labels: ``[B]`` int64 in [0, num_classes] (num_classes = null) or None (= null).
            context: ``[B, n_ctx, context_dim]`` external context tokens or None.
        Returns:
            ``{"audio": [B, Ca, Ha, Wa], "video": [B, Cv, Hv, Wv]}``.
        """
        self._check_inputs(x, t, audio_cond, video_cond, prev_audio, prev_video, class_labels, context)
        audio, video = x["audio"], x["video"]
        batch = audio.shape[0]
        if t.ndim == 0:
            t = t.expand(batch)

        c = self.time_embed(t)  # [B, D]
        class_token = None
        if self.class_embed is not None:
            if class_labels is None:
                class_labels = torch.full((batch,), self.class_embed.null_class, dtype=torch.long,
                                          device=audio.device)
            class_vec = self.class_embed(class_labels)  # [B, D]
            c = c + class_vec  # [B, D]
            class_token = class_vec.unsqueeze(1)  # [B, 1, D]

        audio_tokens = self._modality_tokens("audio", audio, audio_cond, prev_audio)  # [B, Na, D]
        video_tokens = self._modality_tokens("video", video, video_cond, prev_video)  # [B, Nv, D]
        prompt = self.prompt.unsqueeze(0).expand(batch, -1, -1)  # [B, n_ctx, D]
        if context is not None:
            prompt = prompt + self.context_proj(context)  # [B, n_ctx, D]
        eos_a = self.eos["audio"].expand(batch, 1, -1)  # [B, 1, D]
        eos_v = self.eos["video"].expand(batch, 1, -1)  # [B, 1, D]
        context_tokens = prompt if class_token is None else torch.cat([class_token, prompt], dim=1)  # [B, Nc, D]
        parts = [context_tokens, eos_a, audio_tokens, eos_v, video_tokens]
        tokens, layout = pack([part.to(audio_tokens.dtype) for part in parts], "b * d")  # [B, N, D]

        for block in self.blocks:
            if self.cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, c, use_reentrant=False)  # [B, N, D]
            else:
                tokens = block(tokens, c)  # [B, N, D]

        _, _, audio_out, _, video_out = unpack(tokens, layout, "b * d")  # [B, Na, D], [B, Nv, D]
        return {"audio": self.final["audio"](audio_out, c),  # [B, Ca, Ha, Wa]
                "video": self.final["video"](video_out, c)}  # [B, Cv, Hv, Wv]

    def _check_inputs(self, x, t, audio_cond, video_cond, prev_audio, prev_video, class_labels, context) -> None:
        """Shapes and types only (a wrong one is a bug of the caller: ValueError). Label values are
        checked where they enter (the pipeline, the training data): here it would cost a host sync
        every forward."""
        cfg = self.cfg
        if not isinstance(x, dict) or set(x) != set(MODALITIES):
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(f"AVDiT input must be a dict with keys audio and video, got {got}")
        expected = {"audio": (cfg.audio_channels, *cfg.audio_size), "video": (cfg.video_channels, *cfg.video_size)}
        batch = x["audio"].shape[0]
        named = {"x['audio']": ("audio", x["audio"]), "x['video']": ("video", x["video"]),
                 "audio_cond": ("audio", audio_cond), "video_cond": ("video", video_cond),
                 "prev_audio": ("audio", prev_audio), "prev_video": ("video", prev_video)}
        for name, (m, value) in named.items():
            if value is not None and (value.ndim != 4 or tuple(value.shape[1:]) != expected[m]
                                      or value.shape[0] != batch):
                raise ValueError(f"AVDiT {name}: expected shape [{batch}, {', '.join(map(str, expected[m]))}], "
                                 f"got {value.shape=}")
        if (prev_audio is not None or prev_video is not None) and self.prev_embed is None:
            raise ValueError("AVDiT was built with previous_clip=false but got previous-clip latents")
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != batch):
            raise ValueError(f"AVDiT timestep: expected shape [{batch}], got {t.shape=}")
        if class_labels is not None:
            if self.class_embed is None:
                raise ValueError("AVDiT was built with num_classes=0 but got class labels")
            if class_labels.shape != (batch,) or class_labels.is_floating_point():
                raise ValueError(f"AVDiT class_labels: expected integers of shape [{batch}], "
                                 f"got {class_labels.dtype} {class_labels.shape=}")
        if context is not None:
            if self.context_proj is None:
                raise ValueError("AVDiT was built with context_dim=0 but got context tokens")
            if tuple(context.shape) != (batch, cfg.n_ctx, cfg.context_dim):
                raise ValueError(f"AVDiT context: expected shape [{batch}, {cfg.n_ctx}, {cfg.context_dim}], "
                                 f"got {context.shape=}")

    # ----------------------------------------------------------------------- save / load

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``."""
        return save_pretrained_folder(directory, to_dict(self.cfg), self)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None) -> "AVDiT":
        """Rebuild from a folder written by :meth:`save_pretrained`.

        The network is built on the meta device and takes the loaded tensors as
        its parameters, so memory holds one copy of the weights (L: 6 GB fp32)
        and no time goes into a random initialisation. ``dtype`` casts floating
        weights (e.g. ``torch.bfloat16`` for inference).
        """
        config = read_folder_config(directory, DIT_WHAT)
        try:
            cfg = from_dict(DiTConfig, config, prefix="dit.")
        except MMLDMError as exc:
            raise WeightsError(Path(directory) / "config.json", DIT_WHAT, str(exc)) from None
        state, weights_path = read_folder_weights(directory, DIT_WHAT, device=device)
        with torch.device("meta"):
            model = cls(cfg)
        if dtype is not None:
            model.to(dtype)
        load_state_checked(model, state, weights_path, DIT_WHAT, assign=True)
        model._register_position_embeddings(device)
        return model


def deepened(model: AVDiT, depth: int) -> AVDiT:
    """``model`` with ``depth`` blocks that computes the same function (not in the paper).

    ``depth`` must be a multiple ``k`` of the model's depth: its block ``i`` becomes block
    ``i * k`` and the blocks between are new, each the identity by adaLN-Zero's zero
    modulation (:meth:`AVDiT.initialize_weights`), so training a deeper generator can start from
    a trained one. Every other tensor is copied.
    """
    old = model.cfg.depth
    if depth < old or depth % old:
        raise ConfigError(f"deepening a {old}-block AVDiT to {depth} blocks: the depth must be a multiple of {old}")
    stride = depth // old
    grown = AVDiT(dataclasses.replace(model.cfg, depth=depth)).to(next(model.parameters()).device)
    state = grown.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            key = f"blocks.{int(index) * stride}.{rest}"
        state[key] = value
    grown.load_state_dict(state)
    return grown


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def build_on_meta(cfg: DiTConfig) -> AVDiT:
    """An :class:`AVDiT` on the meta device: shapes only, no memory (for counting)."""
    with torch.device("meta"):
        return AVDiT(cfg)
