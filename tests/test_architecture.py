"""Who may import whom (docs/architecture.md), checked in fresh interpreters.

Networks never import the pipeline, training, evaluation or the CLI; the pipeline never
imports training; the CLI parser imports no torch, so ``mmldm --help`` and ``mmldm COMMAND
--help`` start at once (their wall time is measured in benchmarks/startup.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmldm.cli.commands import COMMANDS


def _modules_after(code: str) -> list[str]:
    """The modules loaded in a fresh interpreter after running ``code``."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _under(modules: list[str], *packages: str) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_the_pipeline_imports_nothing_from_training_or_evaluation():
    modules = _modules_after("import mmldm.pipeline")
    assert "mmldm.pipeline.pipeline" in modules
    assert _under(modules, "mmldm.training", "mmldm.evaluation", "mmldm.cli", "mmldm.export") == []


@pytest.mark.parametrize("network", ["mmldm.generator.dit", "mmldm.autoencoder.model", "mmldm.vae.kl_vae",
                                     "mmldm.critic.network",
                                     "mmldm.diffusion.samplers", "mmldm.diffusion.guidance"])
def test_networks_and_diffusion_import_neither_pipeline_nor_training(network):
    modules = _modules_after(f"import {network}")
    assert network in modules
    assert _under(modules, "mmldm.pipeline", "mmldm.training", "mmldm.evaluation", "mmldm.cli") == []


@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in COMMANDS]], ids=" ".join)
def test_cli_help_loads_no_torch(argv):
    modules = _modules_after(
        "from mmldm.cli.main import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n")
    assert not _under(modules, "torch", "diffusers", "accelerate", "numpy", "av")
    command = argv[0] if argv[0] != "--help" else None
    loaded = [m.removeprefix("mmldm.cli.") for m in _under(modules, "mmldm.cli")]
    assert set(loaded) <= {"mmldm.cli", "main", "commands", *([command] if command else [])}
