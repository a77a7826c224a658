"""`mmldm data synth` into a folder that already holds a dataset: refused, or replaced with --overwrite."""

from __future__ import annotations

import json

from mmldm.cli.main import main


def _clips(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.mp4"))


def test_synth_refuses_a_folder_holding_another_dataset_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["data", "synth", "--out", str(out), "--n", "4", "--size", "16"]) == 0
    before = _clips(out)
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(out), "--n", "2", "--size", "16", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "another dataset" in err and "--overwrite" in err
    assert _clips(out) == before
    assert main(["data", "synth", "--out", str(out), "--n", "2", "--size", "16", "--seed", "3", "--overwrite"]) == 0
    listed = [json.loads(line)["path"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert _clips(out) == sorted(listed) and len(listed) == 2  # the replaced dataset's other clips are gone
