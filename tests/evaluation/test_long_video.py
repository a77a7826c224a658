"""Long-video measures (sync per clip position, seams) and the evaluation report table."""

from __future__ import annotations

import numpy as np
import pytest

from mmldm.data.sounding_shapes import ShapesConfig, synth_clip
from mmldm.errors import ConfigError
from mmldm.evaluation.long_video import long_clip_measures, long_summary, seam_jumps
from mmldm.evaluation.report import results_table

FPS, RATE = 10.0, 16000


def test_seam_jumps_compares_the_steps_at_seams_with_every_other_step() -> None:
    wave = np.zeros(100)
    wave[50:] = 0.5  # a click: the step from sample 49 to 50
    wave[10] = 0.2  # a spike inside: steps 9->10 and 10->11
    assert seam_jumps(wave, [50]) == (0.5, 0.2)
    assert seam_jumps(wave, [30]) == (0.0, 0.5)
    # a radius counts the steps next to the seam too
    assert seam_jumps(wave, [12], radius=0) == (0.0, 0.5) and seam_jumps(wave, [12], radius=2) == (0.2, 0.5)
    assert seam_jumps(wave, [200, 0]) == (0.0, 0.5)  # seams outside the wave are left out


def _long_shapes_clip(seed: int) -> tuple[np.ndarray, np.ndarray]:
    clip = synth_clip(ShapesConfig(num_frames=32), seed=seed)
    return clip.frames, clip.audio.astype(np.float64)


def test_long_clip_measures_real_clip_is_in_sync_and_seamless() -> None:
    frames, audio = _long_shapes_clip(3)
    result = long_clip_measures(frames, audio, FPS, RATE, clip_frames=16)
    assert result["windows"] == 2
    assert max(result["sync_error_per_window"]) < 0.5 and result["sync_error"] < 0.5
    assert result["max_seam_jump"] <= result["max_inside_jump"]


def test_long_clip_measures_flags_a_click_and_a_foreign_window() -> None:
    frames, audio = _long_shapes_clip(3)
    seam = 16 * RATE // 10
    tone = 0.5 * np.sin(2 * np.pi * 220.0 * np.arange(len(audio)) / RATE)  # jumps of at most 0.044
    smooth = long_clip_measures(frames, tone, FPS, RATE, clip_frames=16)
    assert smooth["max_seam_jump"] <= smooth["max_inside_jump"] < 0.05
    tone[seam:] += 0.4  # a step at the seam: a click
    clicked = long_clip_measures(frames, tone, FPS, RATE, clip_frames=16)
    assert clicked["max_seam_jump"] > 0.36 and clicked["max_inside_jump"] < 0.05

    other_frames, _ = _long_shapes_clip(11)
    mixed = np.concatenate([frames[:16], other_frames[16:]])  # second window: another clip's picture
    measures = long_clip_measures(mixed, audio, FPS, RATE, clip_frames=16)
    errors = measures["sync_error_per_window"]
    assert errors[0] < 0.5 and errors[1] > 1.0
    # the whole clip: the median over all its frames, between the two windows' errors
    assert errors[0] < measures["sync_error"] <= errors[1]


def test_results_table_lists_every_row_with_its_numbers() -> None:
    def measures(clips: int, sync: float) -> dict[str, float]:
        return {"clips": clips, "sync_error_median": sync, "sync_error_within_1_semitone_pct": 50.0,
                "class_agreement_pct": 75.0, "one_object_pct": 99.5}

    shapes = {"generated": measures(64, 1.23), "reference": measures(64, 0.07), "shuffled_pairs": measures(64, 8.5)}
    long = {"clips": 4, "sync_error_max_clip": 0.95, "sync_error_median": 0.8, "sync_error_max_window": 2.5,
            "windows_within_1_semitone_pct": 62.5, "sync_error_median_per_position": [0.5, 0.75, 1.25],
            "seam_jump_max": 0.01, "inside_jump_max": 0.2}
    table = results_table({"svg": shapes, "a2v": shapes, "long": long,
                           "reconstruction_ceiling": {"vae": measures(16, 0.11)}})
    assert "| real test clips | 64 | 0.07 |" in table and "| shuffled real pairs | 64 | 8.50 |" in table
    assert "| generated svg | 64 | 1.23 |" in table and "| generated a2v |" in table and "v2a" not in table
    assert "| real clips through the vae | 16 | 0.11 |" in table
    assert "Long (4 videos)" in table and "worst whole video 0.95" in table and "worst 2.50 semitones" in table and "0.010 vs inside clips 0.200" in table
    assert "62.5 % within 1" in table and "k-th window over the videos 0.50, 0.75, 1.25" in table


def test_long_summary_takes_the_median_of_each_window_position_over_the_videos() -> None:
    def video(windows: list[float], seam: float = 0.01) -> dict:
        return {"sync_error": float(sorted(windows)[len(windows) // 2]), "sync_error_per_window": windows,
                "max_seam_jump": seam, "max_inside_jump": 0.3}

    summary = long_summary([video([0.2, 0.4, 3.0]), video([0.6, 1.5, 0.9], seam=0.05), video([0.4, 0.8, 2.0])])
    assert summary["sync_error_median_per_position"] == [0.4, 0.8, 2.0]
    assert summary["sync_error_max_window"] == 3.0 and summary["sync_error_median"] == 0.8
    assert summary["windows_within_1_semitone_pct"] == pytest.approx(100 * 6 / 9)
    assert summary["seam_jump_max"] == 0.05 and summary["clips"] == 3
    with pytest.raises(ConfigError):
        long_summary([])
