"""Shared test set-up: small, seeded, CPU-only.

One intra-op thread per test process: the networks here are tiny, so threads
bring nothing, and two OpenMP threads per process spin against each other (and
against the second pytest-xdist worker) and run small ops several times slower.
The suite uses both cores through two xdist workers instead (``-n 2``).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

# Test helper modules beside this file (e.g. ``micro_models``) import by name.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A small Sounding Shapes folder (9 mp4 clips, 3 per class, 64x64, 10 fps, 16 kHz), written once."""
    from mmldm.data.sounding_shapes import ShapesConfig, write_dataset

    out = tmp_path_factory.mktemp("sounding_shapes")
    write_dataset(out, n=9, seed=0, cfg=ShapesConfig(size=64, sample_rate=16000))
    return out


@pytest.fixture(scope="session")
def shapes_manifest(shapes_dir):
    """The records of ``shapes_dir``'s manifest.jsonl (dicts; ``path`` made absolute)."""
    from mmldm.data.sounding_shapes import read_manifest

    return read_manifest(shapes_dir)


@pytest.fixture
def config_yaml_describes():
    """``check(folder, pipe, part)``: a model folder's ``config.yaml`` (for people) carries the loaded
    pipeline's config of the optional ``part`` and its generation defaults, as a fresh save would."""
    import yaml

    from mmldm.config import dump_yaml, read_yaml

    def check(folder: Path, pipe, part: str) -> None:
        written = read_yaml(folder / "config.yaml")
        resolved = yaml.safe_load(dump_yaml(pipe.resolved_config()))
        assert written[part] is not None and written[part] == resolved[part]
        assert written["generation"] == resolved["generation"]

    return check
