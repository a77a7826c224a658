"""benchmarks/light_frame_decoder_rfvd.py: both frame decoders' reconstructions of real clips, scored alike."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling common.py
    spec = importlib.util.spec_from_file_location("light_frame_decoder_rfvd", BENCHMARKS / "light_frame_decoder_rfvd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_decoders_reconstruct_every_clip_and_are_scored_against_the_same_reference(tmp_path, monkeypatch):
    from mmldm.data.media_io import probe
    from mmldm.data.sounding_shapes import write_dataset
    from mmldm.evaluation import evaluate
    from mmldm.pipeline.pipeline import BUILTIN_MODEL

    clips = tmp_path / "clips"
    write_dataset(clips, n=3, seed=7)
    scored = []

    def score(folder, reference, protocol, metrics, i3d_path, seed):  # FVD's plumbing, without I3D weights
        files = sorted(Path(folder).glob("*.mp4"))
        scored.append((Path(folder).name, Path(reference), len(files), protocol.num_samples))
        assert all(probe(f).has_video and probe(f).num_frames == 16 for f in files)
        return {"metrics": {"fvd": {"value": float(len(files))}, "kvd": {"value": 0.0}},
                "generated": {"clips_scored": len(files)}}

    monkeypatch.setattr(evaluate, "evaluate_folders", score)
    module = _module()
    result = module.run(BUILTIN_MODEL, clips, tmp_path / "train", tmp_path / "i3d.safetensors", tmp_path / "work",
                        clips=3, threads=1)
    assert [name for name, *_ in scored] == ["full", "light"]
    assert all(reference == tmp_path / "train" and n == 3 and samples == 3 for _, reference, n, samples in scored)
    full, light = result["tables"]["decoders"]
    # the built-in model's light decoder reproduces its full decoder closely (47 dB in docs/speed.md)
    assert light["psnr_full"] > 35 and full["psnr_full"] is None
    assert 20 < light["psnr_real"] < full["psnr_real"] + 1
    assert result["settings"]["light_vs_full_psnr_worst_clip"] > 30


def test_a_model_without_a_light_decoder_is_an_error(tmp_path, model_without_light_decoder):
    from mmldm.errors import ConfigError

    plain = model_without_light_decoder
    with pytest.raises(ConfigError, match="no frame_decoder/"):
        _module().run(plain, tmp_path, tmp_path, tmp_path / "i3d", tmp_path / "work", clips=1, threads=1)
