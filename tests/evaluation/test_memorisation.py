"""The memorisation check: pure functions on synthetic features, the training-window plan, the
feature cache, and ``mmldm evaluate --training`` with random-weight features on tiny folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmldm.cli.main import main
from mmldm.data.media_io import write_av
from mmldm.errors import ConfigError, DataError
from mmldm.evaluation import memorisation as mem
from mmldm.evaluation.evaluate import FeatureNets, _plan_training, evaluate_folders
from mmldm.evaluation.protocol import get_protocol

FPS, RATE = 10.0, 16000


def gaussian_sets(n_train: int = 300, n_ref: int = 2000, n_gen: int = 2000, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_train, dim)), rng.normal(size=(n_ref, dim)), rng.normal(size=(n_gen, dim))


def test_nearest_distances_are_the_brute_force_ones_in_any_block_size(monkeypatch):
    train, queries, _ = gaussian_sets(n_train=37, n_ref=23, n_gen=1, dim=5)
    brute = np.linalg.norm(queries[:, None] - train[None], axis=-1)
    for entries in (mem.MAX_DISTANCE_ENTRIES, 40, 1):  # 40 // 37 = one query row per block
        monkeypatch.setattr(mem, "MAX_DISTANCE_ENTRIES", entries)
        distances, nearest = mem.nearest_distances(queries, train)
        np.testing.assert_allclose(distances, brute.min(axis=1), rtol=1e-12)
        np.testing.assert_array_equal(nearest, brute.argmin(axis=1))


def test_independent_clips_are_flagged_at_the_held_out_rate_and_meet_the_target():
    train, ref, gen = gaussian_sets()
    check = mem.memorisation(gen, ref, train)
    # clips drawn like the held-out ones sit below the 5th percentile about 5 % of the time
    assert 3.0 < check.flagged_pct < 7.5 and check.met
    assert 45.0 < check.nearer_than_reference_pct < 55.0
    assert check.threshold == pytest.approx(np.percentile(check.reference_distances, 5.0))
    summary = check.summary()
    assert summary["met"] and summary["flagged"] == int(check.flagged.sum())
    assert summary["generated"]["median_distance"] == pytest.approx(np.median(check.generated_distances))
    assert len(summary["reference"]["distances"]) == len(ref)


def test_a_copied_training_clip_is_flagged_and_points_at_what_it_copies():
    train, ref, gen = gaussian_sets(n_ref=200, n_gen=20)
    gen[3] = train[42] + 1e-6  # re-encoding moves a copy's features a hair
    check = mem.memorisation(gen, ref, train)
    assert check.flagged[3] and check.generated_nearest[3] == 42 and check.generated_distances[3] < 1e-5
    copies = train[np.random.default_rng(1).choice(len(train), 20, replace=False)]
    copied = mem.memorisation(copies, ref, train)
    assert copied.flagged.all() and copied.flagged_pct == 100.0 and not copied.met
    assert copied.nearer_than_reference_pct == 100.0


@pytest.mark.parametrize("copies, flagged_pct, met", [(0, 0.0, True), (2, 10.0, True), (3, 15.0, False)])
def test_the_verdict_is_the_share_below_the_percentile_against_the_target(copies, flagged_pct, met):
    """1-d features: one training point at 0, held-out clips at 1..20 (5th percentile 1.95),
    generated clips at 10 except ``copies`` of them at 0."""
    train = np.zeros((1, 1))
    ref = np.arange(1.0, 21.0)[:, None]
    gen = np.full((20, 1), 10.0)
    gen[:copies] = 0.0
    check = mem.memorisation(gen, ref, train)
    assert check.threshold == pytest.approx(1.95)
    assert check.flagged_pct == flagged_pct and check.met == met
    assert mem.memorisation(gen, ref, train, max_share_pct=100.0).met


def test_bad_features_are_one_line_errors():
    train, ref, gen = gaussian_sets(n_train=5, n_ref=5, n_gen=5)
    with pytest.raises(DataError, match="dimensions differ"):
        mem.memorisation(gen, ref, train[:, :3])
    with pytest.raises(DataError, match="non-empty"):
        mem.memorisation(gen, ref, train[:0])
    bad = gen.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        mem.memorisation(bad, ref, train)


# ----------------------------------------------------------------------------- reading the training clips


def write_clip(path, frames: int, seed: int):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, 32, 32, 3), dtype=np.uint8)
    audio = 0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * np.arange(int(frames / FPS * RATE)) / RATE)
    return write_av(path, video, audio, fps=FPS, sample_rate=RATE)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared-like folder: 3 training clips of 18 frames cut every 9 frames of one source
    (each clip's second 9-frame window is the next clip's first), a held-out clip in test/."""
    root = tmp_path_factory.mktemp("prepared")
    records = []
    for k in range(3):
        path = write_clip(root / "train" / "src" / f"{9 * k:07d}.mp4", 18, seed=k)
        records.append({"path": str(path.relative_to(root)), "split": "train", "source": "/films/src.mp4",
                        "start": 0.9 * k, "start_frame": 9 * k, "num_frames": 18, "fps": FPS})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_clip(root / "test" / "src" / "0000027.mp4", 18, seed=9)
    return root


def test_training_windows_of_a_manifest_show_each_source_frame_once(prepared):
    protocol = get_protocol("standard").with_overrides(num_frames=9)
    plan, record = _plan_training(prepared, protocol, 9, None, np.random.default_rng(0), lambda _: None)
    starts = {path.name: s for path, s in plan.starts.items()}
    # clip k's window at 9 shows what clip k+1's window at 0 shows: the start-of-clip one is kept
    assert starts == {"0000000.mp4": [0], "0000009.mp4": [0], "0000018.mp4": [0, 9]}
    assert record["windows_available"] == 4 and record["duplicate_windows_dropped"] == 2
    assert record["found"].startswith("manifest") and record["files_found"] == 3  # test/ is not training
    capped, capped_record = _plan_training(prepared, protocol, 9, 2, np.random.default_rng(0), lambda _: None)
    assert sum(map(len, capped.starts.values())) == 2 == capped_record["windows_drawn"]
    # a plain folder of videos: every window of every file, no grid to deduplicate on
    _, folder_record = _plan_training(prepared / "train", protocol, 9, None, np.random.default_rng(0),
                                     lambda _: None)
    assert folder_record["found"] == "folder" and folder_record["windows_available"] == 6


def test_training_input_errors_are_one_line(prepared, tmp_path):
    protocol = get_protocol("standard").with_overrides(num_samples=2)
    with pytest.raises(ConfigError, match="--training"):
        evaluate_folders(prepared / "test", prepared / "test", protocol, metrics=("memorisation",))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nopath": 1}\n')
    with pytest.raises(DataError, match="line 1"):
        _plan_training(bad, protocol, 16, None, np.random.default_rng(0), lambda _: None)
    with pytest.raises(DataError, match="neither a folder nor a manifest"):
        _plan_training(tmp_path / "missing", protocol, 16, None, np.random.default_rng(0), lambda _: None)
    with pytest.raises(DataError, match="no usable 19-frame window"):  # the clips hold 18 frames
        _plan_training(prepared, protocol.with_overrides(num_frames=19), 16, None, np.random.default_rng(0),
                       lambda _: None)


class CountingPixels(torch.nn.Module):
    """A cheap stand-in for I3D ([B, 3, T, 224, 224] -> [B, 16] pooled grey levels) that counts its clips."""

    def __init__(self):
        super().__init__()
        self.clips = 0

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        self.clips += len(video)
        return F.adaptive_avg_pool2d(video.mean(dim=(1, 2)), (4, 4)).flatten(1)


def test_cached_features_are_not_computed_again_and_give_the_same_numbers(prepared, tmp_path):
    net = CountingPixels()
    nets = FeatureNets(i3d=net, audio=None, record={"video": {"net": "pooled pixels (test)"}}, video_cache={})
    protocol = get_protocol("standard").with_overrides(num_frames=9, num_samples=3)
    runs = []
    for _ in range(2):
        runs.append(evaluate_folders(prepared / "train", prepared / "test", protocol, metrics=("fvd",), nets=nets,
                                     training=prepared, log=lambda _: None))
        if len(runs) == 1:
            first_count = net.clips
    # 3 generated + 3 reference + 4 training windows, of which 3 are the generated clips (each
    # training clip's first window): 7 distinct clips, each through the net once
    assert first_count == len(nets.video_cache) == 7
    assert net.clips == first_count  # the second run computed nothing
    assert runs[0]["metrics"] == runs[1]["metrics"] and runs[0]["memorisation"] == runs[1]["memorisation"]
    # the training clips scored as generated clips are copies: each at distance 0 from its own window,
    # below every held-out window's distance
    memo = runs[0]["memorisation"]
    assert memo["generated"]["distances"] == [0.0, 0.0, 0.0] and memo["reference"]["min_distance"] > 0.0
    assert memo["flagged_pct"] == 100.0 and not memo["met"]
    # the cache knows clips by their bytes: copies of the training clips elsewhere are not computed again
    copies = tmp_path / "copies"
    copies.mkdir()
    for clip in sorted((prepared / "train").rglob("*.mp4")):
        (copies / f"copy-{clip.name}").write_bytes(clip.read_bytes())
    copied = evaluate_folders(copies, prepared / "test", protocol, metrics=("fvd",), nets=nets, log=lambda _: None)
    assert net.clips == first_count and copied["metrics"]["fvd"] == runs[0]["metrics"]["fvd"]


def test_cli_training_flags_a_copied_clip_with_random_features(prepared, tmp_path, capsys):
    gen = tmp_path / "gen"
    (gen / "copy.mp4").parent.mkdir()
    (gen / "copy.mp4").write_bytes((prepared / "train" / "src" / "0000009.mp4").read_bytes())
    write_clip(gen / "new1.mp4", 9, seed=21)
    write_clip(gen / "new2.mp4", 9, seed=22)
    ref = tmp_path / "ref"
    for k in range(2):
        write_clip(ref / f"held{k}.mp4", 12, seed=30 + k)
    out = tmp_path / "result.json"
    code = main(["evaluate", "--generated", str(gen), "--reference", str(ref), "--training",
                 str(prepared / "manifest.jsonl"), "--metrics", "fvd", "--features", "random", "--num-frames", "9",
                 "--num-samples", "4", "--protocol", "standard", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "Memorisation" in printed and "RANDOM FEATURES" in printed
    result = json.loads(out.read_text())
    assert result["metrics_requested"] == ["fvd", "memorisation"] and "fvd" in result["metrics"]
    m, training = result["memorisation"], result["training"]
    assert training["windows_drawn"] == 4 and training["stride_frames"] == 9 and len(training["windows"]) == 4
    assert m["training_windows"] == 4 and m["percentile"] == 5.0 and m["max_share_pct"] == 10.0
    names = [p.split("/")[-1] for p, _ in m["generated"]["windows"]]
    assert names == ["copy.mp4", "new1.mp4", "new2.mp4"]
    copy = names.index("copy.mp4")
    assert m["generated"]["flagged"][copy] and m["generated"]["distances"][copy] < 1e-6 * m["threshold"]
    assert m["generated"]["nearest_training_windows"][copy][0].endswith("0000009.mp4")
    assert m["generated"]["nearest_training_windows"][copy][1] == 0
    assert min(d for i, d in enumerate(m["generated"]["distances"]) if i != copy) > 0.0
    assert m["reference"]["clips"] == 4 and len(m["reference"]["nearest_training_windows"]) == 4
