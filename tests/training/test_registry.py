"""Stage registry: names, module:Class strings, one-line errors."""

from __future__ import annotations

import pytest
from toy_stage import ToyStage

from mmldm.errors import ConfigError
from mmldm.training import registry


def test_register_and_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_STAGES", dict(registry._STAGES))  # keep the table as it was
    registry.register_stage("toy-test", ToyStage)
    assert registry.get_stage("toy-test") is ToyStage
    assert registry.get_stage("toy_stage:ToyStage") is ToyStage
    assert {"vae", "autoencoder", "generator"} <= set(registry.stage_names())


@pytest.mark.parametrize("name, needle", [
    ("nonsense", "unknown stage 'nonsense'"),
    ("mmldm.no_such_module:Stage", "is not available"),
    ("toy_stage:NoSuchStage", "has no class NoSuchStage"),
])
def test_errors_are_one_line(name: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        registry.get_stage(name)
    assert "\n" not in str(err.value)
