"""Low-memory sampling: bf16 weights where native, and one stage's weights held at a time.

``SoundingVideoPipeline.from_pretrained(DIR, low_memory=True)`` (``mmldm generate --low-memory``)
holds the pipeline's four stages -- the generator (AVDiT), the multi-modal autoencoder (its
signal decoder), the KL-VAE (the frame decoder) and the vocoder -- as :class:`StageWeights`, and
a :class:`StagePlacement` gives the device to one of them at a time:

* **where the weights wait.** A stage read from a model folder keeps no weights while it waits:
  its parameters are on the ``meta`` device (shapes only) and are read again from the folder's
  safetensors file when the stage runs (on a CPU that is the whole saving; on a GPU they go
  straight to the GPU). A stage handed over in memory (``assemble``) waits in CPU memory and is
  moved to the device while it runs (on a CPU: it stays where it is).
* **the dtype of the weights.** Where the device multiplies bf16 natively
  (:func:`mmldm.devices.cpu_has_native_bf16` on a CPU, ``torch.cuda.is_bf16_supported``
  on CUDA) the weights of the linear and convolution layers -- almost all of them -- are read as
  bf16 and the networks run under bf16 autocast. Autocast rounds float32 weights to bf16 for
  exactly these layers, so the result equals a float32-weight pipeline under bf16 autocast
  (``dtype=torch.bfloat16``); normalisation layers, embeddings and buffers keep float32, which
  CPU kernels need (``group_norm`` refuses bf16 parameters with a float32 input). Elsewhere the
  weights stay float32 and only the one-stage-at-a-time placement saves memory.
* **smaller chunks.** The signal decoder denoises :data:`LOW_MEMORY_DECODER_CHUNK` frames at a
  time (at most its config's ``sampling.chunk_size``) and the KL-VAE takes
  :data:`LOW_MEMORY_IMAGE_CHUNK` images at a time: their activations, not their weights, are
  what the largest stage adds at its peak.
* The vocoder is small (HiFi-GAN V1: 14 M parameters) and keeps float32 weights; a vocoder read
  from a model folder is loaded once, not re-read.

Reading a stage uses ``safetensors.safe_open``, which memory-maps the file: a tensor it returns
views the mapping, and every page read counts towards the process's resident set until the file
is closed and no tensor views it. So each tensor is copied (into its dtype) and the file is
opened again for every :data:`READ_GROUP_BYTES` of tensors; a tensor kept viewing the file
would keep all of it counted (measured: 3.7 GiB of file pages on top of the autoencoder's
weights at the paper's scale).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from torch import nn

from ..autoencoder.config import AutoencoderConfig
from ..autoencoder.model import AUTOENCODER_WHAT, HierarchicalAVAutoencoder
from ..autoencoder.signal_decoder import SignalDecoder
from ..autoencoder.student import STUDENT_NAME, STUDENT_WHAT, StudentInfo
from ..config import from_dict
from ..errors import MMLDMError, WeightsError
from ..generator.dit import DIT_WHAT, AVDiT, DiTConfig
from ..generator.generation import GENERATION_NAME, read_generation_config
from ..vae.kl_vae import DIFFUSERS_CONFIG_NAME, DIFFUSERS_WEIGHTS_NAME, KLVAE
from ..vae.light_decoder import (
    FRAME_DECODER_NAME,
    FRAME_DECODER_WHAT,
    LightFrameDecoder,
    read_frame_decoder_info,
)
from ..weights import CONFIG_NAME, WEIGHTS_NAME, read_folder_config
from . import folder

#: the stages, in the order a generation first runs them (the pipeline's attribute names)
STAGES = ("generator", "autoencoder", "decoder_student", "vae", "frame_decoder", "vocoder")

#: bytes of tensors read from one opening of a safetensors file (see the module docstring)
READ_GROUP_BYTES = 256 * 2**20

#: layers whose weights may be bf16: the ones autocast runs in bf16 (it casts their inputs)
LOW_PRECISION_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                        nn.ConvTranspose3d)

#: images through the KL-VAE at a time in low-memory mode: decoding 16 SD-VAE frames of 256x256 at once
#: held 1.5 GiB of activations, 2 at a time 0.2 GiB, at the same 1.0 s per frame (bf16, one thread of
#: a 2-core Xeon with AMX)
LOW_MEMORY_IMAGE_CHUNK = 2

#: frames (or audio images) per signal-decoder run in low-memory mode, at most: with guidance the SD UNet
#: then sees 8 items a call; 16 frames (32 items) held 1.0 GiB of activations above 4 frames' 0.5 GiB,
#: at the same speed (17 s per step of a clip at 4, 16.8 s at 16; 2 frames: 24 s)
LOW_MEMORY_DECODER_CHUNK = 4


def low_memory_weight_dtype(device: torch.device) -> tuple[torch.dtype, str]:
    """``(weight dtype, why)`` of low-memory sampling on ``device``: bf16 where the device multiplies
    it natively, else float32 (bf16 emulated on a CPU is many times slower than float32)."""
    from ..devices import native_bf16

    why = {"cpu": ("native on this CPU", "this CPU has no native bfloat16: avx512_bf16 or amx"),
           "cuda": ("native on cuda", "this GPU has no native bfloat16")}.get(device.type)
    if why is None:
        return torch.float32, f"float32 (no bfloat16 check for device {device.type})"
    if native_bf16(str(device)):
        return torch.bfloat16, f"bfloat16 ({why[0]})"
    return torch.float32, f"float32 ({why[1]})"


def low_precision_parameters(module: nn.Module) -> set[str]:
    """Names of the parameters of ``module`` that take bf16 in low-memory mode (see
    :data:`LOW_PRECISION_LAYERS`)."""
    names = set()
    for prefix, layer in module.named_modules():
        if isinstance(layer, LOW_PRECISION_LAYERS):
            names.update(f"{prefix}.{name}" if prefix else name for name, _ in layer.named_parameters(recurse=False))
    return names


@dataclass
class StageWeights:
    """One stage's network and where its weights wait while another stage runs.

    ``source``: the safetensors file the parameters are read from when the stage runs (they are
    dropped when it stops: a model folder's stage); None: they stay in memory and are moved
    between the CPU and ``device``.
    """

    name: str
    module: nn.Module
    device: torch.device
    dtype: torch.dtype
    source: Path | None = None
    what: str = ""

    def __post_init__(self) -> None:
        self._low_precision = low_precision_parameters(self.module) if self.dtype != torch.float32 else set()
        if self.source is None:  # waits in CPU memory, in the dtype it runs in
            self.module.to("cpu")
            for name, param in self.module.named_parameters():
                if name in self._low_precision:
                    param.data = param.data.to(self.dtype)
        self.loaded = self._always_loaded

    @property
    def _always_loaded(self) -> bool:
        """Weights that wait in CPU memory are on a CPU device all the time."""
        return self.source is None and self.device.type == "cpu"

    def parameter_dtype(self, name: str, stored: torch.dtype) -> torch.dtype:
        """The dtype parameter ``name`` (``stored`` in the file) takes while the stage runs."""
        return self.dtype if name in self._low_precision and stored.is_floating_point else stored

    def load(self) -> None:
        """Put the weights on the device (read them from ``source``, or move them there)."""
        if self.loaded:
            return
        if self.source is None:
            self.module.to(self.device)
        else:
            names = [name for name, _ in self.module.named_parameters()]
            for name, tensor in read_tensors(self.source, names, self.what, self.device, self.parameter_dtype):
                set_parameter(self.module, name, tensor)
            move_buffers(self.module, self.device)
        self.loaded = True

    def park(self) -> None:
        """Take the weights off the device: drop them (``source``) or move them to the CPU."""
        if not self.loaded:
            return
        if self.source is None:
            if self.device.type != "cpu":
                self.module.to("cpu")
        else:
            for name, param in list(self.module.named_parameters()):
                set_parameter(self.module, name, torch.empty(param.shape, dtype=param.dtype, device="meta"))
            move_buffers(self.module, torch.device("cpu"))
        self.loaded = self._always_loaded
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class StagePlacement:
    """The pipeline's stages, one of them on the device at a time (:meth:`use`)."""

    def __init__(self, stages: Mapping[str, StageWeights]):
        self.stages = dict(stages)

    def use(self, *names: str) -> None:
        """Give the device to the stages ``names`` (one, or the autoencoder with the few-step decoder
        that needs its encoders): every other stage leaves it first (so no other stage's weights are
        there with them, but for stages waiting in memory on a CPU device, which never leave), then
        their weights arrive (nothing happens when they are there already)."""
        for key, other in self.stages.items():
            if key not in names:
                other.park()
        for name in names:
            self.stages[name].load()

    def park_all(self) -> None:
        """Every stage off the device (the end of a generation)."""
        for stage in self.stages.values():
            stage.park()


# --------------------------------------------------------------------------- reading weights

def set_parameter(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Make ``tensor`` the (frozen) parameter ``name`` (dotted) of ``module``."""
    owner, _, attr = name.rpartition(".")
    setattr(module.get_submodule(owner) if owner else module, attr, nn.Parameter(tensor, requires_grad=False))


def move_buffers(module: nn.Module, device: torch.device) -> None:
    """Every buffer of ``module`` to ``device``, persistent or not (``module.to`` would also move the
    parameters, which a waiting stage has on the meta device)."""
    for name, buffer in list(module.named_buffers()):
        if buffer.device != device:
            owner, _, attr = name.rpartition(".")
            (module.get_submodule(owner) if owner else module)._buffers[attr] = buffer.to(device)


def read_tensors(path: Path, names: list[str], what: str, device: torch.device,
                 dtype_of: Callable[[str, torch.dtype], torch.dtype] = lambda name, stored: stored
                 ) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of each of ``names`` from the safetensors file ``path``, on ``device`` in
    ``dtype_of(name, stored dtype)``; the file is reopened every :data:`READ_GROUP_BYTES` (see the
    module docstring)."""
    out = []
    pending = iter(names)
    name = next(pending, None)
    while name is not None:
        with _open_weights(path, what) as handle:
            read = 0
            while name is not None and read < READ_GROUP_BYTES:
                tensor = _get_tensor(handle, name, path, what)  # a view of the mapped file
                read += tensor.numel() * tensor.element_size()
                # a copy in any case (see the module docstring)
                out.append((name, tensor.to(device=device, dtype=dtype_of(name, tensor.dtype), copy=True)))
                del tensor
                name = next(pending, None)
    return out


def _open_weights(path: Path, what: str) -> Any:  # safetensors' handle type is private
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # noqa: BLE001 - checked when the pipeline was made: it changed or went away
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise WeightsError(path, what, f"cannot read the weights again ({detail})") from None


def _get_tensor(handle: Any, name: str, path: Path, what: str) -> torch.Tensor:
    try:
        return handle.get_tensor(name)
    except Exception as exc:  # noqa: BLE001 - as in _open_weights
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise WeightsError(path, what, f"cannot read the weights again ({detail})") from None


def check_weight_file(module: nn.Module, path: Path, what: str) -> None:
    """Every parameter and persistent buffer of ``module`` is in the safetensors file ``path`` with
    its shape, and nothing else is: one :class:`WeightsError` line otherwise (read from the file's
    header; the tensors are not read). The persistent buffers are read now: they stay."""
    from safetensors import safe_open

    if not path.is_file():
        raise WeightsError(path, what, f"{path.name} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 - a handle, not a dict
    except Exception as exc:  # noqa: BLE001 - an unreadable file becomes one line naming it
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise WeightsError(path, what, f"cannot read weight file: not a safetensors file ({detail})") from None
    own = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    wrong = [f"{k} {list(shapes[k])} != {list(own[k])}" for k in own if k in shapes and shapes[k] != own[k]]
    if missing or unexpected or wrong:
        parts = [f"{len(items)} {label} (e.g. {', '.join(items[:3])})"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if items]
        raise WeightsError(path, what, "do not fit the network: " + "; ".join(parts))
    parameters = {name for name, _ in module.named_parameters()}
    buffers = [key for key in own if key not in parameters]
    if buffers:
        module.load_state_dict(dict(read_tensors(path, buffers, what, torch.device("cpu"))), strict=False)


def _skeleton(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with every parameter on the meta device (buffers and other tensors real)."""
    with init_empty_weights(include_buffers=False):
        return build()


# --------------------------------------------------------------------------- the model folder

@dataclass
class ParkedFolder:
    """A model folder's parts with the networks' weights left in the folder, and where they are."""

    parts: folder.FolderParts
    weight_files: dict[str, Path]


def read_parked_folder(directory: Path) -> ParkedFolder:
    """The parts of the model folder ``directory`` (:func:`mmldm.pipeline.folder.load_folder`'s checks
    and errors), the KL-VAE, the autoencoder and the generator built with their parameters on the meta
    device: their weights are read from the folder when their stage runs."""
    index = folder.read_index(directory)
    files = {}

    vae_dir = folder._component(directory, index, "vae")
    vae_what = "KL-VAE diffusers folder"
    vae_config = read_folder_config(vae_dir, vae_what, DIFFUSERS_CONFIG_NAME)
    from diffusers import AutoencoderKL

    try:
        vae = _skeleton(lambda: KLVAE(AutoencoderKL.from_config(vae_config)))
    except (TypeError, ValueError) as exc:
        raise WeightsError(vae_dir / DIFFUSERS_CONFIG_NAME, vae_what,
                           f"config.json is not an AutoencoderKL config: {exc}") from None
    files["vae"] = vae_dir / DIFFUSERS_WEIGHTS_NAME
    check_weight_file(vae.autoencoder, files["vae"], vae_what)

    autoencoder_dir = folder._component(directory, index, "autoencoder")
    config = read_folder_config(autoencoder_dir, AUTOENCODER_WHAT)
    try:
        autoencoder = _skeleton(lambda: HierarchicalAVAutoencoder(from_dict(AutoencoderConfig, config)))
    except MMLDMError as exc:
        raise WeightsError(autoencoder_dir / CONFIG_NAME, AUTOENCODER_WHAT, str(exc)) from None
    files["autoencoder"] = autoencoder_dir / WEIGHTS_NAME
    check_weight_file(autoencoder, files["autoencoder"], AUTOENCODER_WHAT)

    generator_dir = folder._component(directory, index, "generator")
    config = read_folder_config(generator_dir, DIT_WHAT)
    try:
        generator = _skeleton(lambda: AVDiT(from_dict(DiTConfig, config, prefix="dit.")))
    except MMLDMError as exc:
        raise WeightsError(generator_dir / CONFIG_NAME, DIT_WHAT, str(exc)) from None
    files["generator"] = generator_dir / WEIGHTS_NAME
    check_weight_file(generator, files["generator"], DIT_WHAT)
    generation = read_generation_config(generator_dir / GENERATION_NAME)

    student = None
    if STUDENT_NAME in index.get("components", {}):
        student_dir = folder._component(directory, index, STUDENT_NAME)
        try:
            info = from_dict(StudentInfo, read_folder_config(student_dir, STUDENT_WHAT))
        except MMLDMError as exc:
            raise WeightsError(student_dir / CONFIG_NAME, STUDENT_WHAT, str(exc)) from None
        student = (_skeleton(lambda: SignalDecoder(autoencoder.resolved_config())), info)
        files["decoder_student"] = student_dir / WEIGHTS_NAME
        check_weight_file(student[0], files["decoder_student"], STUDENT_WHAT)

    frame_decoder = None
    if FRAME_DECODER_NAME in index.get("components", {}):
        frame_dir = folder._component(directory, index, FRAME_DECODER_NAME)
        frame_info = read_frame_decoder_info(frame_dir)
        frame_decoder = (_skeleton(lambda: LightFrameDecoder(frame_info.decoder)), frame_info)
        files["frame_decoder"] = frame_dir / WEIGHTS_NAME
        check_weight_file(frame_decoder[0], files["frame_decoder"], FRAME_DECODER_WHAT)

    audio_cfg, vocoder, spec = folder.read_audio(directory)
    # the sync critic is small: read whole, resident beside whichever stage runs
    parts = folder.FolderParts(vae, autoencoder, generator, generation, audio_cfg, vocoder, spec, student,
                               frame_decoder, folder.read_sync_critic(directory, index))
    return ParkedFolder(parts, files)


def stage_placement(modules: Mapping[str, nn.Module], device: torch.device, dtype: torch.dtype,
                    weight_files: Mapping[str, Path]) -> StagePlacement:
    """The placement of the pipeline's ``modules`` (by stage name): the stages named in
    ``weight_files`` are read from there, the others wait in memory; the vocoder keeps float32."""
    whats = {"generator": DIT_WHAT, "autoencoder": AUTOENCODER_WHAT, "decoder_student": STUDENT_WHAT,
             "vae": "KL-VAE diffusers folder", "frame_decoder": FRAME_DECODER_WHAT, "vocoder": "vocoder"}
    stages = {}
    for name in STAGES:
        module = modules.get(name)
        if not isinstance(module, nn.Module):
            continue
        if name == "vae" and name in weight_files:  # the file is diffusers' network, which KLVAE wraps
            module = module.autoencoder
        stages[name] = StageWeights(name, module, device, torch.float32 if name == "vocoder" else dtype,
                                    weight_files.get(name), whats[name])
    return StagePlacement(stages)


__all__ = ["LOW_MEMORY_DECODER_CHUNK", "LOW_MEMORY_IMAGE_CHUNK", "STAGES", "ParkedFolder", "StagePlacement", "StageWeights",
           "low_memory_weight_dtype", "read_parked_folder", "stage_placement"]
