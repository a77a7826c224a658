"""Sounding Shapes: the generator follows /work/shared/spec/sounding-shapes.md exactly."""

import json
import math

import numpy as np
import pytest

from mmldm.cli.main import main
from mmldm.data import sounding_shapes as ss
from mmldm.data.sounding_shapes import (
    CLASSES,
    ShapesConfig,
    clip_seed,
    pitch_track,
    read_manifest,
    render_frames,
    synth_audio,
    synth_clip,
    write_dataset,
)
from mmldm.errors import ConfigError, DataError

CFG = ShapesConfig()


def spec_f0(y, height):
    """The law as the spec writes it, computed here independently of the package."""
    return 220.0 * 8.0 ** (1.0 - np.asarray(y, dtype=np.float64) / height)


def test_classes_are_the_spec_table():
    table = [(c.id, c.name, c.shape, c.colour, c.tone) for c in CLASSES]
    assert table == [
        (0, "sine", "disc", (230, 40, 40), "sine"),
        (1, "square", "square", (40, 200, 60), "square"),
        (2, "saw", "triangle", (50, 90, 230), "saw"),
    ]


@pytest.mark.parametrize("kwargs", [{"size": 8}, {"size": 15}, {"sample_rate": 8000},
                                    {"fps": 0.0}, {"num_frames": 0}, {"sample_rate": 16001}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        ShapesConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"size": 100_000}, {"num_frames": 1_000_000}])
def test_a_clip_too_big_to_draw_is_refused_before_any_memory_is_taken(kwargs):
    with pytest.raises(ConfigError, match="GiB to draw"):
        ShapesConfig(**kwargs)
    ShapesConfig(size=1024)  # large but drawable


def test_config_loads_strictly_through_the_config_system():
    from mmldm.config import from_dict

    assert from_dict(ShapesConfig, {"size": 32, "sample_rate": 24000}) == ShapesConfig(size=32, sample_rate=24000)
    with pytest.raises(ConfigError, match="size"):
        from_dict(ShapesConfig, {"size": 8})
    with pytest.raises(ConfigError, match="colour"):
        from_dict(ShapesConfig, {"colour": 1})


def test_clip_layout_and_amplitude():
    clip = synth_clip(CFG, seed=3)
    assert clip.frames.shape == (16, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (16 * 16000 // 10,) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() == pytest.approx(0.5, abs=1e-7)
    fade = 160  # 10 ms at 16 kHz
    ramp = np.arange(fade) / fade
    assert clip.audio[0] == 0.0 and clip.audio[-1] == 0.0
    assert np.all(np.abs(clip.audio[:fade]) <= 0.5 * ramp + 1e-6)
    assert np.all(np.abs(clip.audio[::-1][:fade]) <= 0.5 * ramp + 1e-6)
    assert np.abs(clip.audio[fade:-fade]).max() > 0.4
    assert set(clip.truth) == {"class_id", "class_name", "r", "x", "y", "f0", "seed", "text"}
    assert clip.truth["class_name"] == CLASSES[clip.truth["class_id"]].name


def test_frames_hold_exactly_background_and_class_colour():
    for class_id in range(3):
        clip = synth_clip(CFG, seed=11, class_id=class_id)
        packed = np.unique(clip.frames.astype(np.int64) @ np.array([65536, 256, 1]))
        colours = {(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in packed}
        assert colours == {(16, 16, 16), CLASSES[class_id].colour}


def test_law_holds_exactly_at_frame_instants_and_between():
    for seed in range(6):
        clip = synth_clip(CFG, seed)
        y = np.asarray(clip.truth["y"])
        np.testing.assert_allclose(clip.truth["f0"], spec_f0(y, 64), rtol=1e-12)
        f0, _ = pitch_track(CFG, y)
        at_frames = f0[np.arange(16) * 1600]
        np.testing.assert_allclose(at_frames, spec_f0(y, 64), rtol=1e-12)
        # halfway between frame instants y is the mean of its neighbours; after the last frame it is held
        np.testing.assert_allclose(f0[np.arange(15) * 1600 + 800], spec_f0((y[:-1] + y[1:]) / 2, 64), rtol=1e-12)
        np.testing.assert_allclose(f0[15 * 1600:], spec_f0(y[-1], 64), rtol=1e-12)


def test_sine_audio_equals_independent_synthesis():
    """Interpolated y, integrated phase, fades and peak 0.5, rebuilt here by numerical integration."""
    clip = synth_clip(CFG, seed=5, class_id=0)
    y = np.asarray(clip.truth["y"])
    oversample = 16
    t_fine = np.arange(25600 * oversample) / (16000 * oversample)
    f0_fine = spec_f0(np.interp(t_fine, np.arange(16) / 10.0, y), 64)
    cycles_fine = np.concatenate([[0.0], np.cumsum((f0_fine[1:] + f0_fine[:-1]) / 2) / (16000 * oversample)])
    wave = np.sin(2 * np.pi * cycles_fine[::oversample])
    n = np.arange(25600)
    wave *= np.clip(np.minimum(n, 25599 - n) / 160, 0, 1)
    expected = 0.5 * wave / np.abs(wave).max()
    np.testing.assert_allclose(clip.audio, expected, atol=2e-3)


def test_phase_is_continuous():
    _, cycles = pitch_track(CFG, np.asarray(synth_clip(CFG, seed=9).truth["y"]))
    step = np.diff(cycles)  # cycles per sample = f0 / sr, never a jump
    assert np.all(step > 220 / 16000 * 0.99) and np.all(step < 1760 / 16000 * 1.01)
    assert np.abs(np.diff(step)).max() < 1e-4


@pytest.mark.parametrize("class_id,present", [(1, [1, 3]), (2, [1, 2, 3, 4])])
def test_harmonics_are_band_limited(class_id, present):
    """At 16 kHz a 1760 Hz tone (top of frame) may only hold partials below 8 kHz: no aliases."""
    audio = synth_audio(CFG, class_id, np.zeros(16)).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
    near = {k: np.abs(freqs - k * 1760) < 15 for k in range(1, 5)}
    total = spectrum.sum()
    for k in range(1, 5):
        share = spectrum[near[k]].sum() / total
        if k in present:
            assert share == pytest.approx((1 / k**2) / sum(1 / j**2 for j in present), rel=0.02)
        else:
            assert share < 1e-8
    elsewhere = ~np.any(list(near.values()), axis=0)
    assert spectrum[elsewhere].sum() / total < 1e-6


def test_objects_never_leave_the_frame():
    for seed in range(1000):
        truth = ss.synth_truth(CFG, seed)
        r, cls = truth["r"], CLASSES[truth["class_id"]]
        assert 0.8 * 8 <= r <= 1.2 * 8
        left, right, up, down = ss.shape_extent(cls.shape, r)
        x, y = np.asarray(truth["x"]), np.asarray(truth["y"])
        assert np.all(x - left >= 0) and np.all(x + right <= 64)
        assert np.all(y - up >= 0) and np.all(y + down <= 64)
        step = np.hypot(np.diff(x), np.diff(y))
        assert np.all(step <= 0.75 * r + 1e-9)  # bounces only shorten a step
    # pixels too: the shape drawn on a larger canvas has as many pixels as the one in the frame
    clip = synth_clip(CFG, seed=1, class_id=2)
    pad = 16
    big = render_frames(64 + 2 * pad, 2, clip.truth["r"], np.asarray(clip.truth["x"]) + pad,
                        np.asarray(clip.truth["y"]) + pad)
    assert np.array_equal((clip.frames != 16).any(-1), (big != 16).any(-1)[:, pad:-pad, pad:-pad])


def test_elastic_bounce_reflects_at_both_walls():
    path = np.array([5.0, 9.0, 13.0, 17.0, 21.0, -3.0])
    folded = ss._bounce(path, 2.0, 10.0)
    np.testing.assert_allclose(folded, [5.0, 9.0, 7.0, 3.0, 5.0, 7.0])


def test_shapes_position_convention_and_orientation():
    size, r = 64, 8.0
    x, y = np.array([32.0]), np.array([32.0])
    rows, cols = np.nonzero((render_frames(size, 0, r, x, y)[0] != 16).any(-1))
    assert (cols.mean() + 0.5, rows.mean() + 0.5) == pytest.approx((32.0, 32.0), abs=1e-9)
    assert len(rows) == pytest.approx(math.pi * r**2, rel=0.05)
    square = (render_frames(size, 1, r, x, y)[0] != 16).any(-1)
    assert square.sum() == 16 * 16
    triangle = (render_frames(size, 2, r, x, y)[0] != 16).any(-1)
    assert triangle.sum() == pytest.approx(math.sqrt(3) * r**2, rel=0.08)
    widths = triangle.sum(axis=1)[triangle.any(axis=1)]
    assert widths[0] < widths[-1] and np.all(np.diff(widths) >= 0)  # apex up, base down
    trows, tcols = np.nonzero(triangle)
    assert trows.mean() + 0.5 == pytest.approx(32.0, abs=0.3)  # centred on its centroid


def test_same_seed_same_clip_and_class_override_keeps_other_draws():
    a, b = synth_clip(CFG, 42), synth_clip(CFG, 42)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and a.truth == b.truth
    forced = synth_clip(CFG, 42, class_id=a.truth["class_id"])
    assert np.array_equal(a.audio, forced.audio) and forced.truth == a.truth
    c = synth_clip(CFG, 43)
    assert not np.array_equal(a.frames, c.frames) and a.truth["y"] != c.truth["y"]


def test_bad_seed_and_class_are_errors():
    with pytest.raises(DataError):
        synth_clip(CFG, -1)
    with pytest.raises(DataError):
        synth_clip(CFG, 0, class_id=3)


def test_other_sizes_and_rates_scale_the_law():
    cfg = ShapesConfig(size=32, sample_rate=24000, num_frames=4)
    clip = synth_clip(cfg, seed=0)
    assert clip.frames.shape == (4, 32, 32, 3) and clip.audio.shape == (4 * 2400,)
    np.testing.assert_allclose(clip.truth["f0"], spec_f0(clip.truth["y"], 32), rtol=1e-12)


def test_dataset_folder_and_manifest(shapes_dir, shapes_manifest):
    lines = (shapes_dir / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 9 == len(shapes_manifest)
    for index, record in enumerate(shapes_manifest):
        cls = CLASSES[index % 3]
        assert record["path"] == shapes_dir / cls.name / f"{index:05d}.mp4"
        assert record["path"].is_file() and record["class_name"] == cls.name
        assert record["seed"] == clip_seed(0, index)
        truth = synth_clip(CFG, record["seed"], class_id=cls.id).truth
        assert {k: record[k] for k in truth} == truth
        assert json.loads(lines[index])["path"] == f"{cls.name}/{index:05d}.mp4"
    assert sorted(p.name for p in shapes_dir.iterdir()) == ["manifest.jsonl", "saw", "sine", "square"]


def test_manifest_bytes_depend_only_on_seed(tmp_path):
    cfg = ShapesConfig(num_frames=4)
    first = write_dataset(tmp_path / "a", n=3, seed=7, cfg=cfg).read_bytes()
    second = write_dataset(tmp_path / "b", n=3, seed=7, cfg=cfg).read_bytes()
    other = write_dataset(tmp_path / "c", n=3, seed=8, cfg=cfg).read_bytes()
    assert first == second and first != other


def test_interrupted_write_leaves_no_manifest(tmp_path, monkeypatch):
    from mmldm.data import media_io

    calls = []
    real_write = media_io.write_av

    def failing_write(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(media_io, "write_av", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path, n=3, seed=0, cfg=ShapesConfig(num_frames=2))
    assert len(calls) == 2 and not (tmp_path / "manifest.jsonl").exists()


def test_read_manifest_errors(tmp_path, shapes_dir):
    with pytest.raises(DataError, match="no manifest.jsonl"):
        read_manifest(tmp_path)
    good = (shapes_dir / "manifest.jsonl").read_text().splitlines()[0]
    (tmp_path / "manifest.jsonl").write_text(good + "\n")
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"path": "x.mp4"}\n')
    with pytest.raises(DataError, match="lacks"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match="line 1"):
        read_manifest(tmp_path)


def test_cli_synth_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "shapes"
    code = main(["data", "synth", "--out", str(out), "--n", "2", "--seed", "3", "--size", "32",
                 "--sample-rate", "16000"])
    assert code == 0
    records = read_manifest(out)
    assert [r["class_name"] for r in records] == ["sine", "square"] and records[0]["size"] == 32
    assert "wrote 2 clips" in capsys.readouterr().out


def test_cli_synth_longer_clips(tmp_path):
    out = tmp_path / "long"
    assert main(["data", "synth", "--out", str(out), "--n", "1", "--num-frames", "32", "--size", "32"]) == 0
    path = read_manifest(out)[0]["path"]
    from mmldm.data.media_io import read_av

    clip = read_av(path, fps=10.0, sample_rate=16000)
    assert clip.num_frames == 32 and len(clip.audio) == 32 * 1600


@pytest.mark.parametrize("args,message", [(["--n", "0"], "number of clips"), (["--size", "8"], "size"),
                                          (["--seed", "-2"], "seed"), (["--sample-rate", "8000"], "sample rate"),
                                          (["--size", "33"], "even frame size"),
                                          (["--num-frames", "0"], "num_frames")])
def test_cli_synth_bad_arguments(tmp_path, capsys, args, message):
    code = main(["data", "synth", "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("mmldm: error:") and message in err
    assert not (tmp_path / "x" / "manifest.jsonl").exists()
