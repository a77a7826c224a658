"""Stage lookup by name, importing a stage's module only when it is asked for.

``mmldm train vae`` resolves ``"vae"`` here. A ``"package.module:Class"`` string
is accepted too, for stages that live outside mmldm.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError

_STAGES: dict[str, str | type] = {
    "vae": "mmldm.vae.stage:VAEStage",
    "autoencoder": "mmldm.autoencoder.stage:AutoencoderStage",
    "generator": "mmldm.generator.stage:GeneratorStage",
    "decoder-distill": "mmldm.autoencoder.distill:DecoderDistillStage",
    "frame-decoder-distill": "mmldm.vae.light_decoder_distill:FrameDecoderDistillStage",
    "sync-critic": "mmldm.critic.stage:SyncCriticStage",
}


def register_stage(name: str, stage: str | type) -> None:
    """Make ``stage`` (a class or a ``"module:Class"`` string) available as ``name``."""
    _STAGES[name] = stage


def stage_names() -> list[str]:
    return sorted(_STAGES)


def _import(spec: str, name: str) -> type:
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"stage '{name}': '{spec}' is not of the form package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigError(f"stage '{name}': module {module_name} is not available ({exc})") from None
        raise
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ConfigError(f"stage '{name}': module {module_name} has no class {class_name}") from None


def get_stage(name: str) -> type:
    """The stage class registered as ``name`` (or named by ``"module:Class"``)."""
    if name in _STAGES:
        entry = _STAGES[name]
        return entry if isinstance(entry, type) else _import(entry, name)
    if ":" in name:
        return _import(name, name)
    raise ConfigError(f"unknown stage '{name}' (known: {', '.join(stage_names())})")
