"""VideoFolderDataset: scanning, classes, manifests, split, window/audio alignment, workers."""

import json
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmldm.data.audio_image import AudioConfig, waveform_to_audio_image
from mmldm.data.datasets import VideoFolderDataset, split_of
from mmldm.data.media_io import write_av
from mmldm.errors import ConfigError, DataError
from mmldm.timing import AVTiming

TIMING = AVTiming(fps=10.0, num_frames=8, sample_rate=16000)
SIZE = 32
LEVEL_STEP = 6


def make_clip(path: Path, num_frames: int = 20, click_frame: int = 11, seed: int = 0) -> Path:
    """Frame k: grey background at 10 + LEVEL_STEP * k with a red block moving right; a tone
    with a click at the first sample of frame ``click_frame``."""
    frames = np.empty((num_frames, SIZE, SIZE, 3), np.uint8)
    for k in range(num_frames):
        frames[k] = 10 + LEVEL_STEP * k
        frames[k, 4:10, k:k + 6] = (230, 40, 40)
    t = np.arange(num_frames * 1600) / 16000
    audio = (0.1 * np.sin(2 * np.pi * (300 + 100 * seed) * t)).astype(np.float32)
    audio[click_frame * 1600] = 0.95
    return write_av(path, frames, audio, 10.0, 16000)


def frame_index(frame: torch.Tensor) -> int:
    """Index k of a [3, H, W] frame in [-1, 1] from its background level."""
    level = (frame[:, 16:, :].mean().item() + 1) * 127.5
    return int(round((level - 10) / LEVEL_STEP))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name in ("cats/c0.mp4", "cats/c1.mp4", "dogs/d0.mp4", "dogs/deep/d1.mp4"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_clip(root / name)
    (root / "dogs/broken.mp4").write_text("not a video")
    (root / "dogs/empty.mov").touch()
    make_clip(root / "cats/short.mp4", num_frames=5, click_frame=2)
    (root / "notes.txt").write_text("ignored: not a video suffix")
    return root


def dataset(root: Path, **kwargs) -> VideoFolderDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoFolderDataset(root, TIMING, size=SIZE, **kwargs)


def test_scan_skips_bad_files_in_one_warning(folder):
    with pytest.warns(UserWarning) as record:
        ds = VideoFolderDataset(folder, TIMING, size=SIZE, split="all", stride=4)
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 3" in message
    assert "dogs/broken.mp4" in message and "dogs/empty.mov" in message
    assert "cats/short.mp4 (shorter than one window (5 frames < 8))" in message
    assert [f.key for f in ds.files] == ["cats/c0.mp4", "cats/c1.mp4", "dogs/d0.mp4", "dogs/deep/d1.mp4"]
    # 20 frames, windows of 8 every 4 frames: starts 0, 4, 8, 12
    assert len(ds) == 4 * 4
    assert ds.classes == ["cats", "dogs"] and ds.num_classes == 2
    assert [f.class_id for f in ds.files] == [0, 0, 1, 1]


def test_item_frames_and_audio_are_the_same_window(folder):
    ds = dataset(folder, split="all", stride=4)
    item = ds[2]  # cats/c0.mp4, frames 8..15
    assert item["frames"].shape == (8, 3, SIZE, SIZE) and item["frames"].dtype == torch.float32
    assert item["frames"].min() >= -1 and item["frames"].max() <= 1
    assert [frame_index(f) for f in item["frames"]] == list(range(8, 16))
    assert item["start_time"] == pytest.approx(0.8)
    assert item["source"] == str(folder / "cats/c0.mp4") and item["class_id"] == 0 and item["index"] == 2
    waveform = item["waveform"]
    assert waveform.shape == (TIMING.samples_per_clip,)
    # the click of source frame 11 is the first sample of window frame 3
    assert abs(int(waveform.abs().argmax()) - 3 * 1600) <= 1
    image = item["audio_image"]
    assert image.shape == (3, SIZE, SIZE) and image.min() >= -1 and image.max() <= 1
    cfg = AudioConfig.for_sample_rate(16000)
    expected = waveform_to_audio_image(waveform, AudioConfig(**{**cfg.__dict__, "clip_seconds": 0.8}), SIZE)[0]
    torch.testing.assert_close(image, expected * 2 - 1)


def test_class_map_json_and_dict(folder, tmp_path):
    mapping = {"c0": "tabby", "d0": "beagle", "d1": "beagle"}
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(mapping))
    for class_map in (mapping, path):
        ds = dataset(folder, split="all", class_map=class_map)
        assert ds.classes == ["beagle", "tabby"]
        assert {f.key: f.class_id for f in ds.files} == {
            "cats/c0.mp4": 1, "cats/c1.mp4": -1, "dogs/d0.mp4": 0, "dogs/deep/d1.mp4": 0}
    with pytest.raises(DataError, match="class map not found"):
        dataset(folder, class_map=tmp_path / "missing.json")


def test_jsonl_and_csv_manifests(folder, tmp_path):
    jsonl = folder / "list.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"path": "dogs/d0.mp4", "class_id": 2}, {"path": "cats/c1.mp4", "class_id": 0},
        {"path": "dogs/broken.mp4", "class_id": 1}]) + "\n")
    ds = dataset(folder, split="all", manifest=jsonl)
    assert [(f.key, f.class_id) for f in ds.files] == [("dogs/d0.mp4", 2), ("cats/c1.mp4", 0)]
    assert ds.classes == [] and ds.num_classes == 3
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"path,label\n{folder / 'cats/c0.mp4'},kitten\n{folder / 'dogs/deep/d1.mp4'},\n")
    ds = dataset(folder, split="all", manifest=csv_path)
    assert [(f.key, f.class_id) for f in ds.files] == [("cats/c0.mp4", 0), ("dogs/deep/d1.mp4", -1)]
    assert ds.classes == ["kitten"]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(f"path,class\n{folder / 'cats/c0.mp4'},3\n{folder / 'dogs/d0.mp4'},dog\n")
    with pytest.raises(DataError, match="mix integer ids and names"):
        dataset(folder, manifest=mixed)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file_name": "x.mp4"}\n')
    with pytest.raises(DataError, match="row 1 has no 'path'"):
        dataset(folder, manifest=bad)


def test_split_is_by_file_and_deterministic(folder):
    keys = ["cats/c0.mp4", "cats/c1.mp4", "dogs/d0.mp4", "dogs/deep/d1.mp4"]
    fraction = 0.5
    val_keys = [k for k in keys if split_of(k, fraction, seed=0) == "val"]
    if not 0 < len(val_keys) < len(keys):
        pytest.fail(f"seed 0 puts {len(val_keys)} of 4 files in val; pick another fraction for this test")
    train = dataset(folder, split="train", val_fraction=fraction, stride=4)
    val = dataset(folder, split="val", val_fraction=fraction, stride=4)
    assert sorted(f.key for f in val.files) == sorted(val_keys)
    assert sorted(f.key for f in train.files) == sorted(set(keys) - set(val_keys))
    again = dataset(folder, split="val", val_fraction=fraction, stride=4)
    assert [f.key for f in again.files] == [f.key for f in val.files]
    assert len(train) + len(val) == 16  # all windows of a file stay on one side


def test_empty_and_unusable_folders(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        dataset(tmp_path)
    (tmp_path / "a.mp4").write_text("junk")
    with pytest.raises(DataError, match=r"no usable video file.*1 unusable"):
        dataset(tmp_path, split="all")
    with pytest.raises(DataError, match="does not exist"):
        dataset(tmp_path / "nowhere")


def test_bad_arguments(folder):
    with pytest.raises(ConfigError, match="split"):
        dataset(folder, split="test")
    with pytest.raises(ConfigError, match="does not match the timing"):
        dataset(folder, audio_cfg=AudioConfig.preset("16k"))  # 1.6 s clips, timing is 0.8 s


def test_crop_geometry_and_44k_timing(folder):
    timing = AVTiming(fps=10.0, num_frames=8, sample_rate=44100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = VideoFolderDataset(folder, timing, size=16, geometry="crop", split="all", stride=4)
    item = ds[2]  # frames 8..15 of cats/c0.mp4, resampled from 16 kHz
    assert item["frames"].shape == (8, 3, 16, 16)
    assert item["waveform"].shape == (8 * 4410,) and item["audio_image"].shape == (3, 16, 16)
    assert abs(int(item["waveform"].abs().argmax()) - 3 * 4410) <= 2


def test_dataloader_with_two_workers_matches_single_process(folder):
    ds = dataset(folder, split="all", stride=8)
    serial = list(DataLoader(ds, batch_size=3, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert len(parallel) == len(serial) == 3
    for a, b in zip(serial, parallel):
        assert a["frames"].shape[1:] == (8, 3, SIZE, SIZE)
        torch.testing.assert_close(a["frames"], b["frames"])
        torch.testing.assert_close(a["waveform"], b["waveform"])
        assert a["source"] == b["source"] and a["index"].tolist() == b["index"].tolist()


def test_header_longer_than_video_falls_back_to_last_full_window(tmp_path):
    """Matroska reports the longest stream: 12 frames of video with 2 s of audio look like 20+ frames."""
    path = tmp_path / "long_audio.mkv"
    audio = np.zeros(32000, np.float32)
    audio[6 * 1600] = 0.9  # at frame 6
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=10)
        vstream.width = vstream.height = SIZE
        astream = container.add_stream("aac", rate=16000)
        astream.layout = "mono"
        for k in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), 10 + LEVEL_STEP * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 10)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))
        for first in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(audio[None, first:first + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, first, Fraction(1, 16000)
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    ds = dataset(tmp_path, split="all", stride=4)
    assert len(ds) > 2  # the header promises more windows than the 12 frames hold
    for index in range(len(ds)):
        item = ds[index]
        first = round(item["start_time"] * 10)
        assert first <= 4
        assert [frame_index(f) for f in item["frames"]] == list(range(first, first + 8))
        assert abs(int(item["waveform"].abs().argmax()) - (6 - first) * 1600) <= 1


def test_sounding_shapes_folder_uses_its_manifest_class_ids(shapes_dir, shapes_manifest):
    """A scanned Sounding Shapes folder takes class ids from its manifest.jsonl (sine 0, square 1, saw 2),
    not from sorted sub-folder names (which would give saw 0)."""
    ds = VideoFolderDataset(shapes_dir, AVTiming(fps=10.0, num_frames=16, sample_rate=16000), split="all")
    truth = {Path(r["path"]).resolve(): r["class_id"] for r in shapes_manifest}
    assert len(ds.files) == len(truth)
    for f in ds.files:
        assert f.class_id == truth[Path(f.path).resolve()]
