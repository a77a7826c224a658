"""AV-Align and the A/V offset estimate on clips with known events, and on real Big Buck Bunny windows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mmldm.errors import DataError
from mmldm.evaluation import av_align as avs

FPS = 10.0
SR = 16000
NUM_FRAMES = 24
EVENTS = (5, 11, 18)  # frames where the square jumps
BBB = Path(__file__).resolve().parents[2] / "assets" / "bbb" / "bbb.mp4"


def jumping_square(events=EVENTS, num_frames=NUM_FRAMES, size=64) -> np.ndarray:
    """A white square that jumps between two places at ``events`` and is still otherwise: uint8 [T, H, W, 3]."""
    frames = np.full((num_frames, size, size, 3), 90, np.uint8)
    x = 8
    for t in range(num_frames):
        if t in events:
            x = 40 if x == 8 else 8
        frames[t, 24:40, x:x + 16] = 230
    return frames


def clicks(shift=0.0, events=EVENTS, num_frames=NUM_FRAMES, sample_rate=SR) -> np.ndarray:
    """Decaying noise bursts at frames ``events + shift`` (silence elsewhere): float32 [T * sr / fps]."""
    wave = np.zeros(int(round(num_frames * sample_rate / FPS)), np.float32)
    rng = np.random.default_rng(0)
    for k in events:
        first = int(round((k + shift) * sample_rate / FPS))
        if 0 <= first < len(wave):
            n = min(400, len(wave) - first)
            wave[first:first + n] += (rng.standard_normal(n) * np.exp(-np.arange(n) / 80)).astype(np.float32)
    return wave


def test_motion_peaks_are_the_jumps():
    video = avs.video_events(jumping_square(), FPS)
    assert np.allclose(video.peaks, np.asarray(EVENTS) / FPS)
    still = np.delete(np.arange(NUM_FRAMES), EVENTS)
    assert video.motion[list(EVENTS)].min() > 1.0 and np.abs(video.motion[still]).max() < 1e-3


def test_aligned_clicks_score_one_and_shifts_score_lower():
    frames = jumping_square()
    aligned = avs.av_align(frames, clicks(), FPS, SR)
    assert aligned["score"] == 1.0 and aligned["audio_onsets"] == aligned["video_peaks"] == 3
    for shift in (1.5, 2, 4):
        assert avs.av_align(frames, clicks(shift), FPS, SR)["score"] < 0.5


@pytest.mark.parametrize("shift", [-3, 0, 1, 2, 4])
def test_offset_finds_a_known_shift(shift):
    result = avs.av_align(jumping_square(), clicks(shift), FPS, SR)
    assert result["offset_frames"] == shift
    assert result["offset_correlation"] > 0.9


def test_any_sample_rate_gives_the_same_onsets():
    at_16k = avs.audio_events(clicks(), SR, FPS, NUM_FRAMES)
    at_44k = avs.audio_events(clicks(sample_rate=44100), 44100, FPS, NUM_FRAMES)
    assert np.allclose(at_16k.onsets, at_44k.onsets, atol=0.03)


def test_one_to_one_matching_stays_an_iou():
    # Two onsets within a frame of one peak: the released count matches both (score 2), one-to-one only one.
    assert avs.matched_events([0.95, 1.05], [1.0], FPS, "released") == 2
    assert avs.iou_score([0.95, 1.05], [1.0], FPS, "released") == 2.0
    assert avs.matched_events([0.95, 1.05], [1.0], FPS) == 1
    assert avs.iou_score([0.95, 1.05], [1.0], FPS) == 0.5
    # Within one frame is strict; each side's unmatched events count in the union.
    assert avs.iou_score([1.1], [1.0], FPS) == 0.0
    assert avs.iou_score([0.5, 2.0], [0.52, 1.0, 3.0], FPS) == pytest.approx(1 / 4)
    assert math.isnan(avs.iou_score([], [], FPS))


def test_still_silent_clip_has_no_score_and_is_left_out_of_the_mean():
    still = np.full((16, 32, 32, 3), 128, np.uint8)
    silent = avs.av_align(still, np.zeros(25600, np.float32), FPS, SR)
    assert math.isnan(silent["score"]) and silent["audio_onsets"] == silent["video_peaks"] == 0
    clip = avs.combine(avs.video_events(jumping_square(), FPS), avs.audio_events(clicks(), SR, FPS, NUM_FRAMES))
    folder = avs.aggregate([clip, silent])
    assert folder["clips"] == 2 and folder["clips_with_events"] == 1 and folder["av_align_mean"] == 1.0
    # the events per clip, over every clip (the silent one has none)
    assert folder["audio_onsets_mean"] == clip["audio_onsets"] / 2 > 0
    assert folder["video_peaks_mean"] == clip["video_peaks"] / 2 > 0


def test_pooled_offset_follows_a_shift_of_every_clip():
    events = [(4, 12, 19), (3, 9, 15), (6, 13, 20)]
    for shift in (0, 2, -1):
        clips = [avs.combine(avs.video_events(jumping_square(e), FPS),
                             avs.audio_events(clicks(shift, e), SR, FPS, NUM_FRAMES)) for e in events]
        assert avs.aggregate(clips)["pooled_offset_frames"] == shift


def test_bad_input_is_a_data_error():
    with pytest.raises(DataError, match="uint8 frames"):
        avs.av_align(np.zeros((8, 16, 16, 3), np.float32), np.zeros(100), FPS, SR)
    with pytest.raises(DataError, match="at least 3 frames"):
        avs.av_align(np.zeros((2, 16, 16, 3), np.uint8), np.zeros(100), FPS, SR)
    with pytest.raises(DataError, match="mono audio"):
        avs.av_align(jumping_square(), np.zeros((2, 100)), FPS, SR)
    with pytest.raises(DataError, match="NaN"):
        avs.av_align(jumping_square(), np.full(100, np.nan), FPS, SR)


@pytest.mark.skipif(not BBB.is_file(), reason="needs assets/bbb/bbb.mp4: run `make assets`")
def test_real_windows_offset_follows_a_shifted_soundtrack():
    """Two Big Buck Bunny windows with audible actions (6.4 s at 10 fps from 8.8 s and 40.8 s):
    the per-clip estimate moves with the soundtrack, frame for frame."""
    from mmldm.data.media_io import read_av

    margin, frames, sample_rate = 8, 64, avs.ONSET_SAMPLE_RATE
    per_frame = sample_rate / FPS
    for start in (88, 408):
        clip = read_av(BBB, fps=FPS, sample_rate=sample_rate, size=256, start=(start - margin) / FPS,
                       duration=(frames + 2 * margin) / FPS)
        video = avs.video_events(clip.frames[margin:margin + frames], FPS)
        assert np.isfinite(video.motion).all() and len(video.peaks) > 5
        offsets = {}
        for shift in (0, 2, 4):  # the sound at time t is the film's at t - shift frames
            first = int(round((margin - shift) * per_frame))
            audio = avs.audio_events(clip.audio[first:first + int(round(frames * per_frame))], sample_rate, FPS,
                                     frames)
            measures = avs.combine(video, audio)
            assert 0.0 <= measures["score"] <= 1.0 and measures["audio_onsets"] > 5
            offsets[shift] = measures["offset_frames"]
        assert offsets[0] in (0, 1, 2)  # real footage: the sound of an action follows its peak motion
        assert offsets[2] == offsets[0] + 2 and offsets[4] == offsets[0] + 4
