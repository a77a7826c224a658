"""`mmldm data inspect`: stream report and contact sheet, one-line errors."""

from pathlib import Path

import numpy as np
from PIL import Image

from mmldm.cli.main import main
from mmldm.data.inspect import SHEET_FRAMES, THUMB, inspect_file
from mmldm.data.media_io import write_av, write_wav


def sounding_clip(path: Path) -> Path:
    """16 frames of 32x32 with a white block moving right, and a 1 kHz tone."""
    frames = np.zeros((16, 32, 32, 3), np.uint8)
    for k in range(16):
        frames[k, 8:24, k:k + 8] = 255
    t = np.arange(25600) / 16000
    return write_av(path, frames, (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 10.0, 16000)


def test_inspect_good_file_writes_sheet(tmp_path, capsys):
    path = sounding_clip(tmp_path / "clip.mp4")
    sheets = tmp_path / "sheets"
    assert main(["data", "inspect", str(path), "--sheet-dir", str(sheets)]) == 0
    out = capsys.readouterr().out
    assert "video: h264, 32x32, 10.000 fps, 16 frames" in out
    assert "audio: aac, 16000 Hz, 1 channel(s), 1.600 s" in out
    png = sheets / "clip.sheet.png"
    assert f"contact sheet: {png}" in out
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (SHEET_FRAMES * THUMB, 2 * THUMB)
        sheet = np.asarray(image.convert("RGB")).astype(float)
    strip, spectrogram = sheet[:THUMB], sheet[THUMB:]
    assert strip.max() > 200 and strip.min() < 10  # moving white block on black
    # the tone's mel band is a bright row, the high frequencies (top) dark
    row_means = spectrogram.mean(axis=(1, 2))
    assert row_means.max() > 150 and row_means[: THUMB // 4].mean() < row_means.max() / 2


def test_inspect_sheet_beside_file_and_no_sheet(tmp_path):
    path = sounding_clip(tmp_path / "clip.mp4")
    report = inspect_file(path, sheet=False)
    assert "contact sheet" not in report and not (tmp_path / "clip.sheet.png").exists()
    report = inspect_file(path)
    assert (tmp_path / "clip.sheet.png").is_file() and str(tmp_path / "clip.sheet.png") in report


def test_inspect_says_how_a_player_turns_and_stretches_the_picture(tmp_path):
    import av

    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(-90)  # a phone held upright: stored on its side, turned clockwise
        stream.codec_context.sample_aspect_ratio = 2
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 64, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    report = inspect_file(path, sheet=False)
    assert "64x32 (pixel aspect 2; shown turned 90 degrees clockwise)" in report
    plain = inspect_file(sounding_clip(tmp_path / "clip.mp4"), sheet=False)
    assert "32x32, 10.000 fps" in plain and "turned" not in plain


def test_inspect_audio_only_file(tmp_path):
    path = write_wav(tmp_path / "tone.wav", 0.3 * np.sin(np.arange(16000) / 5.0), 16000)
    report = inspect_file(path)
    assert "video: none" in report and "audio: pcm_s16le, 16000 Hz, 1 channel(s)" in report
    with Image.open(tmp_path / "tone.sheet.png") as image:
        assert image.size == (SHEET_FRAMES * THUMB, THUMB)


def test_inspect_bad_file_is_one_line_and_nonzero(tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video at all\n")
    good = sounding_clip(tmp_path / "clip.mp4")
    assert main(["data", "inspect", str(bad), "--no-sheet"]) != 0
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmldm: error:") and str(bad) in lines[0]
    assert "Traceback" not in captured.out + captured.err
    # a bad file among good ones: the good one is still reported, the exit code says one failed
    assert main(["data", "inspect", str(bad), str(good), "--no-sheet"]) == 2
    captured = capsys.readouterr()
    assert "video: h264" in captured.out and "mmldm: error:" not in captured.out
    assert captured.err.count("mmldm: error:") == 1 and str(bad) in captured.err
