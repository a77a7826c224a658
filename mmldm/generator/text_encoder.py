"""The frozen text encoder of a text-conditioned generator (the paper's open-domain variant).

MM-LDM's AudioSet model conditions the AVDiT on CLIP ViT-L/14 text tokens: the
``last_hidden_state`` of ``CLIPTextModel``, ``[B, 77, 768]``, added to the DiT's 77
prompt tokens through its ``context_proj`` (:class:`~mmldm.generator.dit.AVDiT`).

    encoder = TextEncoder.from_folder("weights/clip-vit-large-patch14")
    tokens = encoder(["a green square and a square wave, rising"])   # [1, 77, 768]

The encoder is read from a LOCAL Hugging Face folder (``transformers``
``CLIPTextModel`` + ``CLIPTokenizer``, ``local_files_only``: nothing is ever
downloaded): a CLIP model folder holding both the model (``config.json`` +
``model.safetensors``) and its tokenizer, or a diffusers-style folder with
``text_encoder/`` and ``tokenizer/`` subfolders (a model folder of this project
that carries its text encoder, a Stable Diffusion folder). Text is padded or cut
to ``length`` tokens, which must equal the generator's ``n_ctx``.

An empty string is the null text (what text dropout trains and what the
unconditional branch of text guidance uses). Tokens are computed once per
distinct text (:meth:`TextEncoder.encode_cached`): training never runs the text
encoder twice for the same caption.

``transformers`` is an optional dependency (``pip install 'mmldm[text]'``),
imported only when a text encoder is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, WeightsError

#: subfolders of a folder that carries its text encoder (the diffusers layout)
TEXT_ENCODER_SUBFOLDER = "text_encoder"
TOKENIZER_SUBFOLDER = "tokenizer"
#: what a text encoder folder must hold, for the error messages
_NEEDED = ("a local Hugging Face CLIP text model folder (config.json of model_type clip or clip_text_model and "
           "model.safetensors, with its tokenizer: vocab.json + merges.txt or tokenizer.json), e.g. a copy of "
           "openai/clip-vit-large-patch14, or a folder with text_encoder/ and tokenizer/ subfolders; nothing is "
           "downloaded")
_CLIP_MODEL_TYPES = ("clip", "clip_text_model")
#: distinct texts whose tokens :meth:`TextEncoder.encode_cached` keeps (a caption set larger than this
#: is encoded again when it comes round; the cache then holds the most recent ones)
CACHE_LIMIT = 65536


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("text prompts need the 'transformers' package: pip install 'mmldm[text]'") from None
    return transformers


def text_encoder_parts(directory: str | Path) -> tuple[Path, Path]:
    """``(model folder, tokenizer folder)`` of a text encoder folder: ``DIR/text_encoder`` and
    ``DIR/tokenizer`` when present, else ``DIR`` for both. One WeightsError line when it is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(directory, "text encoder", f"not found; give {_NEEDED}")
    model_dir = directory / TEXT_ENCODER_SUBFOLDER
    tokenizer_dir = directory / TOKENIZER_SUBFOLDER
    return (model_dir if model_dir.is_dir() else directory, tokenizer_dir if tokenizer_dir.is_dir() else directory)


def _check_model_folder(model_dir: Path) -> None:
    """Refuse, in one line, a folder that is not a CLIP text model (before transformers sees it)."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise WeightsError(model_dir, "text encoder", f"has no config.json; give {_NEEDED}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(config_path, "text encoder config", f"not valid JSON ({exc})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in _CLIP_MODEL_TYPES:
        raise WeightsError(model_dir, "text encoder", f"is not a CLIP text model (config.json model_type "
                                                      f"{model_type!r}); give {_NEEDED}")
    if not any(model_dir.glob("*.safetensors")):
        raise WeightsError(model_dir, "text encoder", "holds no .safetensors weights (model.safetensors); "
                                                      f"give {_NEEDED}")


class TextEncoder(nn.Module):
    """A frozen CLIP text model and its tokenizer: texts -> tokens ``[B, length, hidden_size]``."""

    def __init__(self, model: nn.Module, tokenizer: Any, length: int, source: str = ""):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.length = int(length)
        self.source = source
        limit = int(model.config.max_position_embeddings)
        if not 0 < self.length <= limit:
            raise ConfigError(f"text encoder {source}: {self.length} tokens asked, it takes 1..{limit}")
        self._cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_folder(cls, directory: str | Path, length: int | None = None) -> TextEncoder:
        """Load from a local folder (see the module docstring); ``length``: tokens per text (default the
        model's ``max_position_embeddings``, 77 for CLIP). Every problem is one WeightsError line."""
        model_dir, tokenizer_dir = text_encoder_parts(directory)
        _check_model_folder(model_dir)
        if not ((tokenizer_dir / "tokenizer.json").is_file()
                or ((tokenizer_dir / "vocab.json").is_file() and (tokenizer_dir / "merges.txt").is_file())):
            raise WeightsError(tokenizer_dir, "text tokenizer", "no CLIP tokenizer here (tokenizer.json, or vocab.json "
                                                                f"and merges.txt); give {_NEEDED}")
        transformers = _transformers()
        try:
            model = transformers.CLIPTextModel.from_pretrained(model_dir, local_files_only=True,
                                                               use_safetensors=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(model_dir, "text encoder", f"cannot be read as a CLIP text model ({reason})") from None
        try:
            tokenizer = transformers.CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(tokenizer_dir, "text tokenizer", f"no CLIP tokenizer here ({reason}); give "
                                                                f"{_NEEDED}") from None
        if not getattr(tokenizer, "vocab_size", 0):
            raise WeightsError(tokenizer_dir, "text tokenizer", f"no CLIP tokenizer here; give {_NEEDED}")
        return cls(model, tokenizer, length or int(model.config.max_position_embeddings), str(directory))

    @property
    def hidden_size(self) -> int:
        """Width of the tokens (768 for CLIP-L): the generator's ``context_dim``."""
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """``texts`` (B strings; "" = the null text) -> ``last_hidden_state`` ``[B, length, hidden_size]``
        float32 on the encoder's device."""
        texts = [_check_text(text) for text in texts]
        ids = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.length,
                             return_tensors="pt")["input_ids"]  # [B, length]
        return self.model(input_ids=ids.to(self.device)).last_hidden_state.float()  # [B, length, D]

    def encode_cached(self, texts: Iterable[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Like :meth:`forward`, each distinct text encoded once per encoder (kept on the CPU):
        ``[B, length, hidden_size]`` on ``device`` (default the encoder's)."""
        texts = [_check_text(text) for text in texts]
        new = list(dict.fromkeys(text for text in texts if text not in self._cache))
        if new:
            if len(self._cache) + len(new) > CACHE_LIMIT:
                self._cache.clear()
            for text, tokens in zip(new, self.forward(new).cpu()):
                self._cache[text] = tokens
        return torch.stack([self._cache[text] for text in texts]).to(device or self.device)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``directory/text_encoder`` and ``directory/tokenizer`` (the layout :meth:`from_folder`
        reads back)."""
        directory = Path(directory)
        self.model.save_pretrained(directory / TEXT_ENCODER_SUBFOLDER, safe_serialization=True)
        self.tokenizer.save_pretrained(directory / TOKENIZER_SUBFOLDER)
        return directory


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise ConfigError(f"a text prompt must be a string, got {type(text).__name__}")
    return text


# --------------------------------------------------------------------------- small random encoders

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's byte -> printable character table (the alphabet of CLIP's BPE)."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = visible[:]
    extra = 0
    for byte in range(256):
        if byte not in visible:
            visible.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(visible, map(chr, chars)))


def random_text_encoder(words: Iterable[str], hidden_size: int = 32, layers: int = 2, heads: int = 2,
                        length: int = 16, seed: int = 0) -> TextEncoder:
    """A small CLIP text model with RANDOM weights and a CLIP BPE tokenizer whose vocabulary holds
    each of ``words`` as one token (plus CLIP's byte alphabet, so no text is ever unknown).

    For tests and for experiments where the real CLIP weights cannot be had: the tokens tell texts
    apart but carry none of CLIP's learned meaning.
    """
    transformers = _transformers()
    alphabet = sorted(set(_bytes_to_unicode().values()))
    vocab: dict[str, int] = {}
    for symbol in alphabet + [c + "</w>" for c in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[str] = []
    # longer words first: a word's merges then rank before those of a shorter word that could split it
    for word in sorted(dict.fromkeys(w.lower() for w in words), key=lambda w: (-len(w), w)):
        if not word.isalpha() or not word.isascii():
            raise ValueError(f"random_text_encoder: words are lower-case ASCII letters, got {word!r}")
        if len(word) == 1:
            continue
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        merged = symbols[0]
        for symbol in symbols[1:]:  # left to right: ((r e) d</w>)
            merge = f"{merged} {symbol}"
            merged += symbol
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(merged, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges])
    tokenizer.model_max_length = length
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=length,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.CLIPTextModel(config)
    return TextEncoder(model, tokenizer, length, source="random")


__all__ = ["CACHE_LIMIT", "TEXT_ENCODER_SUBFOLDER", "TOKENIZER_SUBFOLDER", "TextEncoder", "random_text_encoder",
           "text_encoder_parts"]
