"""Audio config presets, the Slaney mel filterbank, log-mel and the paper's audio-image mapping."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mmldm.data.audio_image import (
    AudioConfig,
    audio_image_to_waveform,
    fit_to_clip,
    hz_to_mel,
    image_to_mel,
    log_mel,
    mel_filterbank,
    mel_frequencies,
    mel_to_hz,
    mel_to_image,
    waveform_to_audio_image,
)
from mmldm.data.vocoders import GriffinLim
from mmldm.errors import ConfigError, DataError
from mmldm.timing import AVTiming

CFG16 = AudioConfig.preset("16k")
CFG44 = AudioConfig.preset("paper-44k")
CFG22 = AudioConfig.preset("hifigan-22k")
LN_DB = math.log(10.0) / 20.0  # natural-log units per dB


def tone(freq: float, cfg: AudioConfig, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(cfg.clip_samples, dtype=torch.float64) / cfg.sample_rate
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()


# ------------------------------------------------------------------ config
def test_16k_preset_matches_hifigan_settings_and_clip_lengths():
    cfg = CFG16
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.win, cfg.n_mels, cfg.fmin, cfg.fmax) == (16000, 1024, 256, 1024, 80, 0.0, 8000.0)
    assert cfg.clip_samples == 25600  # 1.6 s * 16 kHz
    assert cfg.mel_frames == 25600 // 256


def test_paper_44k_preset_is_consistent_with_its_rate():
    cfg = CFG44
    assert cfg.sample_rate == 44100 and cfg.n_mels == 80
    assert cfg.clip_samples == 70560  # the paper's 1.6 s clip
    assert cfg.mel_frames == 70560 // cfg.hop
    # same window and hop in seconds as HiFi-GAN's 22.05 kHz recipe (1024 / 256 at 22050 Hz)
    assert cfg.win / cfg.sample_rate == pytest.approx(1024 / 22050)
    assert cfg.hop / cfg.sample_rate == pytest.approx(256 / 22050)
    assert cfg.fmax <= cfg.sample_rate / 2 and cfg.fmax > 8000  # keeps the band above 8 kHz


def test_hifigan_22k_preset_is_the_released_universal_v1_analysis():
    # config.json of HiFi-GAN universal V1: sampling_rate 22050, n_fft 1024, hop_size 256,
    # win_size 1024, num_mels 80, fmin 0, fmax 8000
    cfg = CFG22
    settings = (cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.win, cfg.n_mels, cfg.fmin, cfg.fmax)
    assert settings == (22050, 1024, 256, 1024, 80, 0.0, 8000.0)
    assert cfg.mel_floor == 1e-5  # HiFi-GAN's clamp before the natural log
    assert cfg.clip_samples == 35280  # 16 frames at 10 fps = 1.6 s
    assert cfg.mel_frames == 137 and cfg.mel_frames * cfg.hop == 35072  # 137.8 hops: 208 samples left over
    assert AVTiming(fps=10, num_frames=16, sample_rate=22050).samples_per_clip == cfg.clip_samples
    with pytest.raises(ConfigError, match="whole number of samples per frame"):
        AVTiming(fps=24, num_frames=16, sample_rate=22050)  # 918.75 samples per frame


def test_for_sample_rate_and_unknown_preset():
    assert AudioConfig.for_sample_rate(16000) == CFG16
    assert AudioConfig.for_sample_rate(44100) == CFG44
    assert AudioConfig.for_sample_rate(22050) == CFG22
    assert set(AudioConfig.preset_names()) == {"16k", "paper-44k", "hifigan-22k"}
    with pytest.raises(ConfigError, match="48000"):
        AudioConfig.for_sample_rate(48000)
    with pytest.raises(ConfigError, match="unknown audio preset 'cd'"):
        AudioConfig.preset("cd")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(win=2048), "win"),
        (dict(hop=2048), "hop"),
        (dict(hop=255), "even"),
        (dict(fmax=9000.0), "fmax"),
        (dict(fmin=8000.0), "fmin"),
        (dict(n_mels=0), "n_mels"),
        (dict(clip_seconds=1.00001), "whole number of samples"),
        (dict(clip_seconds=0.01), "shorter than one STFT window"),
        (dict(image_range_db=0.0), "image_range_db"),
    ],
)
def test_bad_audio_config_is_one_line_config_error(change, message):
    with pytest.raises(ConfigError, match=message) as info:
        dataclasses.replace(CFG16, **change)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ mel scale and filterbank
def test_slaney_mel_scale_documented_values():
    # librosa's documented examples (htk=False): hz_to_mel(60) = 0.9, mel_to_hz(3) = 200
    assert float(hz_to_mel(60.0)) == pytest.approx(0.9)
    assert float(mel_to_hz(3.0)) == pytest.approx(200.0)
    # linear below 1 kHz (15 mel), then 27 mel per factor 6.4
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(6400.0)) == pytest.approx(42.0)
    hz = np.array([0.0, 123.0, 999.0, 1000.0, 2500.0, 22050.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def test_filterbank_peaks_at_centres_and_covers_fmin_to_fmax():
    cfg = dataclasses.replace(CFG16, fmin=50.0, fmax=6000.0)
    basis = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).double().numpy()
    fft_hz = np.linspace(0, cfg.sample_rate / 2, cfg.n_freqs)
    bin_hz = fft_hz[1]
    edges = mel_frequencies(cfg.n_mels, cfg.fmin, cfg.fmax)
    assert basis.shape == (80, 513) and (basis >= 0).all()
    assert edges[0] == pytest.approx(50.0) and edges[-1] == pytest.approx(6000.0)
    for m in range(cfg.n_mels):
        # the peak is at the FFT bin nearest the filter's centre, nothing outside its two edges
        assert abs(fft_hz[basis[m].argmax()] - edges[m + 1]) <= bin_hz / 2 + 1e-9
        outside = (fft_hz <= edges[m]) | (fft_hz >= edges[m + 2])
        assert (basis[m][outside] == 0).all()
        # Slaney normalisation: a triangle of area 1 in Hz (checked where it spans many bins)
        if edges[m + 2] - edges[m] > 20 * bin_hz:
            assert basis[m].sum() * bin_hz == pytest.approx(1.0, rel=0.02)
    total = basis.sum(axis=0)
    inside = (fft_hz > cfg.fmin) & (fft_hz < cfg.fmax)
    assert (total[inside] > 0).all()
    assert (total[~inside] == 0).all()


# Reference numbers computed once with librosa 0.11 (librosa.filters.mel defaults) and, for
# the log-mel, a NumPy HiFi-GAN front end (reflect pad (n_fft - hop) / 2, periodic Hann,
# sqrt(re^2 + im^2 + 1e-9), librosa filterbank, log clamp 1e-5): an independent implementation.
LIBROSA_FILTERBANK = {
    # preset: (row 0 sum, row 10 peak value, row 10 peak bin, row 79 sum, row 79 peak bin, non-zero bins of row 40)
    "16k": (0.062344543635845184, 0.02441513165831566, 26, 0.06397459656000137, 493, 8),
    "paper-44k": (0.045681461691856384, 0.01827896200120449, 25, 0.046438585966825485, 973, 14),
    "hifigan-22k": (0.04530277941375971, 0.026492536067962646, 19, 0.04641479390556924, 358, 7),
}
NUMPY_LOG_MEL_FRAME_20 = {  # mel bin: value at frame 20 of reference_wave(), 16k preset
    9: -4.16516, 10: 0.07884, 11: 1.05474, 12: -1.28501, 13: -5.01295,
    49: -3.86703, 50: -2.10584, 51: -1.38843, 53: -2.36712, 54: -0.69231,
}


def reference_wave() -> torch.Tensor:
    n = torch.arange(12000, dtype=torch.float64)
    return (
        0.3 * torch.sin(2 * math.pi * 440 * n / 16000)
        + 0.2 * torch.sin(2 * math.pi * 3000 * n / 16000 + 0.5) * torch.cos(2 * math.pi * 3 * n / 16000)
        + 0.05 * torch.sin(1e-4 * n**2)
    )


@pytest.mark.parametrize("preset", ["16k", "paper-44k", "hifigan-22k"])
def test_filterbank_matches_librosa_reference(preset):
    cfg = AudioConfig.preset(preset)
    basis = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax).double()
    row0_sum, peak10, peak10_bin, row79_sum, peak79_bin, nonzero40 = LIBROSA_FILTERBANK[preset]
    assert basis[0].sum().item() == pytest.approx(row0_sum, rel=1e-6)
    assert basis[10].max().item() == pytest.approx(peak10, rel=1e-6)
    assert basis[10].argmax().item() == peak10_bin
    assert basis[79].sum().item() == pytest.approx(row79_sum, rel=1e-6)
    assert basis[79].argmax().item() == peak79_bin
    assert (basis[40] > 0).sum().item() == nonzero40


def test_log_mel_matches_numpy_hifigan_reference():
    mel = log_mel(reference_wave(), CFG16)
    assert mel.shape == (1, 80, 12000 // 256) and mel.dtype == torch.float64
    for m, value in NUMPY_LOG_MEL_FRAME_20.items():
        assert mel[0, m, 20].item() == pytest.approx(value, abs=1e-4)
    # float32 input: the same up to float32 rounding (largest in quiet bins, ~0.03 dB)
    torch.testing.assert_close(log_mel(reference_wave().float(), CFG16).double(), mel, atol=1e-2, rtol=0)


# Computed once with the public HiFi-GAN front end itself (jik876/hifi-gan meldataset.mel_spectrogram
# with librosa 0.11's filterbank, torch.stft) on reference_wave() played at 22,050 Hz: frame 20.
HIFIGAN_LOG_MEL_FRAME_20 = {0: -8.23628, 10: 0.2108, 11: 0.93197, 12: -0.74348, 54: -1.95338,
                            59: -1.86386, 60: -1.66357, 79: -11.51293}


def test_hifigan_22k_log_mel_matches_the_public_hifigan_front_end():
    n = torch.arange(12000, dtype=torch.float64)
    wave = (
        0.3 * torch.sin(2 * math.pi * 440 * n / 22050)
        + 0.2 * torch.sin(2 * math.pi * 3000 * n / 22050 + 0.5) * torch.cos(2 * math.pi * 3 * n / 22050)
        + 0.05 * torch.sin(1e-4 * n**2)
    ).float()
    mel = log_mel(wave, CFG22)
    assert mel.shape == (1, 80, 12000 // 256) and mel.dtype == torch.float32
    for m, value in HIFIGAN_LOG_MEL_FRAME_20.items():
        assert mel[0, m, 20].item() == pytest.approx(value, abs=1e-4)


def test_native_size_audio_image_hands_the_vocoder_the_clamped_log_mel():
    # hifigan-22k round trip without resizing: the vocoder gets log_mel exactly, except that
    # the image's [-80, +20] dB range raises bins below -80 dB (HiFi-GAN's floor is -100 dB).
    n = torch.arange(CFG22.clip_samples, dtype=torch.float64)
    envelope = torch.exp(-((n - 17000) / 6000) ** 2)  # loud in the middle, silent at the ends
    tones = 0.8 * torch.sin(2 * math.pi * 330 * n / 22050) + 0.1 * torch.sin(2 * math.pi * 4100 * n / 22050)
    wave = (envelope * tones).float()
    mel = log_mel(wave, CFG22)
    assert (mel < -80 * LN_DB).any() and (mel > -20 * LN_DB).any()  # both ends of the range occur
    image = waveform_to_audio_image(wave, CFG22, (CFG22.n_mels, CFG22.mel_frames))
    back = image_to_mel(image, CFG22)
    assert back.shape == (1, 80, 137)
    torch.testing.assert_close(back, mel.clamp(-80 * LN_DB, 20 * LN_DB), atol=2e-5, rtol=0)


# ------------------------------------------------------------------ log-mel
@pytest.mark.parametrize("freq", [220.0, 700.0, 1500.0, 5000.0])
def test_sine_lands_in_the_mel_bin_nearest_its_frequency(freq):
    mel = log_mel(tone(freq, CFG16), CFG16)
    assert mel.shape == (1, 80, 100)
    centres = mel_frequencies(80, CFG16.fmin, CFG16.fmax)[1:-1]
    loudest = mel[0, :, 10:-10].mean(dim=-1).argmax().item()
    nearest = np.argsort(np.abs(np.log(centres / freq)))[:2]  # a tone between two centres excites both
    assert loudest in nearest.tolist()


def test_log_mel_silence_hits_the_floor_and_frames_follow_length():
    silence = log_mel(torch.zeros(2, 5000), CFG16)
    assert silence.shape == (2, 80, 5000 // 256)
    torch.testing.assert_close(silence, torch.full_like(silence, math.log(1e-5)))
    assert log_mel(torch.zeros(1, CFG44.clip_samples), CFG44).shape == (1, 80, CFG44.mel_frames)


def test_log_mel_rejects_bad_waveforms():
    with pytest.raises(DataError, match="too short"):
        log_mel(torch.zeros(100), CFG16)
    with pytest.raises(DataError, match="shape"):
        log_mel(torch.zeros(1, 1, 5000), CFG16)


def test_fit_to_clip_pads_and_trims_the_end():
    short = torch.randn(1000)
    padded = fit_to_clip(short, CFG16)
    assert padded.shape == (1, CFG16.clip_samples)
    torch.testing.assert_close(padded[0, :1000], short)
    assert (padded[0, 1000:] == 0).all()
    long = torch.randn(2, CFG16.clip_samples + 777)
    torch.testing.assert_close(fit_to_clip(long, CFG16), long[:, : CFG16.clip_samples])
    image_short = waveform_to_audio_image(short, CFG16, 32)
    torch.testing.assert_close(image_short, waveform_to_audio_image(padded, CFG16, 32))


# ------------------------------------------------------------------ image mapping
def test_image_mapping_end_points():
    db = torch.tensor([-120.0, -80.0, -30.0, 20.0, 40.0])
    image = mel_to_image(db.view(1, 1, 5).expand(1, 80, 5) * LN_DB, (80, 5))
    assert image.shape == (1, 3, 80, 5)
    torch.testing.assert_close(image[0, :, 0, :], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]).expand(3, 5))


def test_image_is_rgb_grey_in_range_and_resized():
    mel = torch.randn(2, 80, 100) * 4 - 3
    image = mel_to_image(mel, (64, 48))
    assert image.shape == (2, 3, 64, 48)
    assert image.min() >= 0 and image.max() <= 1
    assert torch.equal(image[:, 0], image[:, 1]) and torch.equal(image[:, 0], image[:, 2])


def test_mel_image_mel_round_trip_where_not_clipped():
    # A smooth log-mel within [-80, 20] dB survives upsizing to 256x256 and back.
    m = torch.linspace(0, 1, 80).view(80, 1)
    t = torch.linspace(0, 1, 100).view(1, 100)
    db = -30 + 40 * torch.sin(3 * m + 1) * torch.cos(4 * t)  # in [-70, 10] dB
    mel = (db * LN_DB).unsqueeze(0)
    back = image_to_mel(mel_to_image(mel, 256), CFG16)
    assert back.shape == (1, 80, 100)
    assert (back - mel).abs().max() / LN_DB < 0.5  # dB
    # Without resizing the mapping is inverted exactly; clipped values come back at the limits.
    clipped = mel.clone()
    clipped[0, :5] = -150 * LN_DB
    exact = image_to_mel(mel_to_image(clipped, (80, 100)), CFG16)
    torch.testing.assert_close(exact[0, 5:], mel[0, 5:], atol=1e-4, rtol=0)
    torch.testing.assert_close(exact[0, :5], torch.full((5, 100), -80 * LN_DB), atol=1e-4, rtol=0)


def test_image_to_mel_channels_and_shapes():
    image = torch.rand(2, 3, 64, 64)
    grey = image.mean(dim=1, keepdim=True)
    torch.testing.assert_close(image_to_mel(image, CFG16), image_to_mel(grey, CFG16))
    assert image_to_mel(image, CFG44).shape == (2, 80, CFG44.mel_frames)
    with pytest.raises(DataError, match="channels"):
        image_to_mel(torch.rand(1, 2, 64, 64), CFG16)


def test_paper_44k_shapes_through_the_whole_path():
    wave = tone(880.0, CFG44).unsqueeze(0).repeat(2, 1)
    image = waveform_to_audio_image(wave, CFG44, 256)
    assert image.shape == (2, 3, 256, 256)
    vocoder = GriffinLim(CFG44, n_iter=2, nnls_iters=5)
    out = audio_image_to_waveform(image, CFG44, vocoder)
    assert out.shape == (2, CFG44.clip_samples)
    assert out.abs().max() > 0


def test_vocoder_must_match_the_audio_config():
    image = torch.rand(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="44100 Hz"):
        audio_image_to_waveform(image, CFG16, GriffinLim(CFG44, n_iter=1))
