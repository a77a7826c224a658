"""``mmldm demo`` (the README's main job) with the built-in model shipped in the package."""

from __future__ import annotations

import json
import re

from mmldm.cli.main import main
from mmldm.data.media_io import read_av
from mmldm.pipeline.pipeline import BUILTIN_MODEL


def test_demo_generates_sounding_videos_with_the_builtin_model(tmp_path, capsys):
    assert (BUILTIN_MODEL / "model_index.json").is_file(), "the built-in model is not in the package"
    assert main(["demo", "--out", str(tmp_path / "demo"), "--n", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    paths = re.findall(r"^\s+(\S+\.mp4)\s", out, flags=re.M)
    assert len(paths) == 1 and "the built-in model" in out and "semitones" in out
    clip = read_av(paths[0])
    assert clip.frames.shape[0] == 16 and clip.audio.size > 0
    settings = json.loads((tmp_path / "demo" / "settings.json").read_text())
    assert settings["task"] == "svg" and settings["seed"] == 3 and settings["files"][0].endswith(".mp4")
