"""Where the clip-length windows of a given span lie (a2v, v2a, continuations)."""

from __future__ import annotations

import pytest

from mmldm.generator.tasks import window_starts


@pytest.mark.parametrize(("frames", "at_end", "starts"), [
    (64, False, [0, 16, 32, 48]),  # whole clips: one after the other, either way
    (64, True, [0, 16, 32, 48]),
    (56, False, [0, 16, 32, 40]),  # 3.5 clips: the last window ends at the span's end
    (56, True, [0, 8, 24, 40]),  # aligned to the end: the first starts at the span's start
    (17, False, [0, 1]),
    (16, True, [0]),
    (10, False, [0]),  # shorter than a clip: one window, padded after the span
    (10, True, [-6]),  # or before it
])
def test_windows_are_whole_clips_of_the_span(frames, at_end, starts):
    assert window_starts(frames, 16, at_end) == starts
    if frames >= 16:  # every window lies in the span and together they cover it
        assert all(0 <= s <= frames - 16 for s in starts)
        covered = set().union(*(range(s, s + 16) for s in starts))
        assert covered == set(range(frames))
