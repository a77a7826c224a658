"""Vocoders: Griffin-Lim quality and determinism, HiFi-GAN public checkpoint format, the factory,
the distances to the original."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mmldm.data.audio_image import AudioConfig, audio_image_to_waveform, log_mel, waveform_to_audio_image
from mmldm.data.vocoders import (
    GriffinLim,
    HiFiGAN,
    HiFiGANConfig,
    Vocoder,
    build_vocoder,
    load_hifigan,
    log_mel_distance,
    multi_resolution_stft_distance,
    save_hifigan,
)
from mmldm.errors import ConfigError, DataError, WeightsError

CFG16 = AudioConfig.preset("16k")


# The public V1 layout (upsample 8,8,2,2; kernels 16,16,4,4; MRF 3,7,11 x dilations 1,3,5) at
# 16 kHz, narrowed to 32 channels so that it runs in milliseconds.
TINY_V1 = dict(
    resblock="1", upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=32,
    resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    num_mels=80, num_freq=513, n_fft=1024, hop_size=256, win_size=1024, sampling_rate=16000, fmin=0, fmax=8000,
    # training keys of the public config.json, ignored by the loader
    num_gpus=0, batch_size=16, learning_rate=0.0002, adam_b1=0.8, adam_b2=0.99, lr_decay=0.999, seed=1234,
    segment_size=8192, fmax_for_loss=None, num_workers=4,
    dist_config={"dist_backend": "nccl", "dist_url": "tcp://localhost:54321", "world_size": 1},
)
TINY_V3 = dict(TINY_V1, resblock="2", resblock_kernel_sizes=[3, 5, 7], resblock_dilation_sizes=[[1, 2], [2, 6], [3, 12]])


def public_v1_parameter_names(config: dict) -> set[str]:
    """Parameter names of jik876/hifi-gan models.Generator under torch.nn.utils.weight_norm."""
    convs = ["conv_pre", "conv_post"] + [f"ups.{i}" for i in range(len(config["upsample_rates"]))]
    blocks = len(config["upsample_rates"]) * len(config["resblock_kernel_sizes"])
    for j in range(blocks):
        dilations = config["resblock_dilation_sizes"][j % len(config["resblock_kernel_sizes"])]
        lists = ("convs1", "convs2") if config["resblock"] == "1" else ("convs",)
        convs += [f"resblocks.{j}.{name}.{k}" for name in lists for k in range(len(dilations))]
    return {f"{conv}.{leaf}" for conv in convs for leaf in ("weight_g", "weight_v", "bias")}


def public_style_generator(config: dict, seed: int) -> nn.Module:
    """A generator whose state dict is written exactly as the public release's: the old
    torch.nn.utils.weight_norm API, with g and v drawn independently (g != ||v||)."""
    model = HiFiGAN(HiFiGANConfig.from_mapping(config), use_weight_norm=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old API is deprecated; the public checkpoints used it
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                torch.nn.utils.weight_norm(module)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            values = torch.randn(param.shape, generator=generator)
            param.copy_(values.abs() + 0.5 if name.endswith("weight_g") else values * 0.1)
    return model.eval()


def write_public_checkpoint(folder, config: dict, seed: int = 0):
    model = public_style_generator(config, seed)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": model.state_dict()}, folder / "g_02500000")
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    return model, folder / "g_02500000"


# ------------------------------------------------------------------ HiFi-GAN
@pytest.mark.parametrize("config", [TINY_V1, TINY_V3], ids=["v1-resblock1", "v3-resblock2"])
def test_public_format_checkpoint_reloads_to_identical_output(tmp_path, config):
    reference, checkpoint = write_public_checkpoint(tmp_path / "hifigan", config)
    saved = torch.load(checkpoint, weights_only=True)["generator"]
    assert set(saved) == public_v1_parameter_names(config)  # our layers carry the public names
    mel = torch.randn(2, 80, 12, generator=torch.Generator().manual_seed(1)) - 4
    with torch.no_grad():
        expected = reference(mel)
    vocoder = load_hifigan(checkpoint)
    assert not vocoder.has_weight_norm and not vocoder.training
    assert not any(p.requires_grad for p in vocoder.parameters())
    with torch.no_grad():
        out = vocoder(mel)
    assert out.shape == (2, 12 * 256)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert out.std() > 1e-3  # the random weights produce a signal, so the comparison means something


@pytest.mark.parametrize(
    "changes, published_millions",
    [
        ({}, 13.92),  # V1
        ({"upsample_initial_channel": 128}, 0.92),  # V2
        ({"resblock": "2", "upsample_rates": [8, 8, 4], "upsample_kernel_sizes": [16, 16, 8],
          "upsample_initial_channel": 256, "resblock_kernel_sizes": [3, 5, 7],
          "resblock_dilation_sizes": [[1, 2], [2, 6], [3, 12]]}, 1.46),  # V3
    ],
    ids=["V1", "V2", "V3"],
)
def test_full_size_generators_have_the_published_parameter_counts(changes, published_millions):
    # Kong et al. 2020, Table 1: V1 13.92M, V2 0.92M, V3 1.46M generator parameters.
    config = dict(TINY_V1, upsample_initial_channel=512, sampling_rate=22050)
    config.update(changes)
    model = HiFiGAN(HiFiGANConfig.from_mapping(config), use_weight_norm=False)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(published_millions, abs=0.01)  # two decimals in the table


def test_load_from_folder_picks_latest_generator(tmp_path):
    folder = tmp_path / "hifigan"
    write_public_checkpoint(folder, TINY_V1, seed=0)
    (folder / "g_02500000").rename(folder / "g_00000100")
    newer, _ = write_public_checkpoint(folder, TINY_V1, seed=5)
    mel = torch.randn(1, 80, 6) - 4
    with torch.no_grad():
        torch.testing.assert_close(load_hifigan(folder)(mel), newer(mel), atol=1e-6, rtol=1e-5)


def test_save_hifigan_round_trip_with_and_without_weight_norm(tmp_path):
    model = HiFiGAN(HiFiGANConfig.from_mapping(TINY_V1)).eval()
    with torch.no_grad():  # make g differ from ||v|| so that both tensors matter
        for name, param in model.named_parameters():
            if name.endswith("original0"):
                param.mul_(torch.rand(param.shape) + 0.5)
    mel = torch.randn(1, 80, 8) - 4
    with torch.no_grad():
        expected = model(mel)
    path = save_hifigan(model, tmp_path / "a" / "g_00000001")
    assert set(torch.load(path, weights_only=True)["generator"]) == public_v1_parameter_names(TINY_V1)
    with torch.no_grad():
        torch.testing.assert_close(load_hifigan(path)(mel), expected, atol=1e-6, rtol=1e-5)
        folded = save_hifigan(model.remove_weight_norm(), tmp_path / "b" / "g_00000001")
        torch.testing.assert_close(load_hifigan(folded)(mel), expected, atol=1e-6, rtol=1e-5)


def test_missing_checkpoint_or_config_says_what_is_needed(tmp_path):
    with pytest.raises(WeightsError, match=r"g_XXXXXXXX.*config\.json.*not found") as info:
        load_hifigan(tmp_path / "g_02500000")
    assert "g_02500000" in str(info.value) and "\n" not in str(info.value)
    torch.save({"generator": {}}, tmp_path / "g_02500000")
    with pytest.raises(WeightsError, match="config.json not found"):
        load_hifigan(tmp_path / "g_02500000")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no g_XXXXXXXX file"):
        load_hifigan(empty)


def test_corrupt_or_mismatched_checkpoint_is_weights_error(tmp_path):
    _, checkpoint = write_public_checkpoint(tmp_path / "h", TINY_V1)
    wider = dict(TINY_V1, upsample_initial_channel=64)
    (tmp_path / "h" / "wider.json").write_text(json.dumps(wider))
    with pytest.raises(WeightsError, match="does not match its config.json"):
        load_hifigan(checkpoint, tmp_path / "h" / "wider.json")
    v3 = tmp_path / "h" / "v3.json"
    v3.write_text(json.dumps(TINY_V3))
    with pytest.raises(WeightsError, match="does not match its config.json: missing"):
        load_hifigan(checkpoint, v3)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a loadable torch checkpoint"):
        load_hifigan(checkpoint)


def test_hifigan_config_validation():
    with pytest.raises(ConfigError, match="multiply to 256, not hop_size 200"):
        HiFiGANConfig.from_mapping(dict(TINY_V1, hop_size=200))
    missing = {k: v for k, v in TINY_V1.items() if k != "upsample_rates"}
    with pytest.raises(ConfigError, match="missing key 'upsample_rates'"):
        HiFiGANConfig.from_mapping(missing)


@pytest.mark.parametrize(
    "key, value, message",
    [("sampling_rate", 22050, "sampling_rate=22050"), ("num_mels", 64, "num_mels=64"), ("fmax", 7600, "fmax=7600")],
)
def test_build_vocoder_rejects_a_hifigan_for_other_mels(tmp_path, key, value, message):
    config = dict(TINY_V1, **{key: value})
    _, checkpoint = write_public_checkpoint(tmp_path / "h", config)
    with pytest.raises(ConfigError, match=message):
        build_vocoder(str(checkpoint), CFG16)


def test_build_vocoder_rejects_other_hop(tmp_path):
    config = dict(TINY_V1, upsample_rates=[8, 8, 2, 1], upsample_kernel_sizes=[16, 16, 4, 3], hop_size=128)
    _, checkpoint = write_public_checkpoint(tmp_path / "h", config)
    with pytest.raises(ConfigError, match="hop_size=128"):
        build_vocoder(checkpoint, CFG16)


def test_build_vocoder_both_kinds(tmp_path):
    griffin_lim = build_vocoder("griffin-lim", CFG16)
    assert isinstance(griffin_lim, GriffinLim) and isinstance(griffin_lim, Vocoder)
    _, checkpoint = write_public_checkpoint(tmp_path / "h", TINY_V1)
    hifigan = build_vocoder(str(checkpoint), CFG16)
    assert isinstance(hifigan, HiFiGAN) and isinstance(hifigan, Vocoder)
    out = audio_image_to_waveform(torch.rand(2, 3, 32, 32), CFG16, hifigan)
    assert out.shape == (2, CFG16.clip_samples)
    with pytest.raises(WeightsError, match="HiFi-GAN"):
        build_vocoder("no/such/g_00000001", CFG16)


# ------------------------------------------------------------------ Griffin-Lim
def fft_pitch(wave: torch.Tensor, sample_rate: int) -> float:
    """Frequency of the strongest FFT peak (Hann window, 8x zero padding, parabolic
    interpolation of the log magnitude), on the middle 3/4 of the wave."""
    w = wave.double().numpy()
    w = w[len(w) // 8 : -len(w) // 8]
    n = len(w)
    spectrum = np.abs(np.fft.rfft(w * np.hanning(n), 8 * n))
    k = int(np.argmax(spectrum[1:])) + 1
    left, centre, right = np.log(spectrum[k - 1 : k + 2] + 1e-20)
    offset = 0.5 * (left - right) / (left - 2 * centre + right)
    return (k + offset) * sample_rate / (8 * n)


def test_fft_pitch_estimator_is_accurate():
    t = torch.arange(CFG16.clip_samples, dtype=torch.float64) / CFG16.sample_rate
    assert fft_pitch(torch.sin(2 * math.pi * 447.3 * t), 16000) == pytest.approx(447.3, abs=0.5)


def test_griffin_lim_tone_through_64px_audio_image_keeps_pitch():
    freqs = [220.0, 330.0, 440.0, 660.0, 880.0, 1320.0]  # the Sounding Shapes range, 220-1760 Hz
    t = torch.arange(CFG16.clip_samples, dtype=torch.float64) / CFG16.sample_rate
    waves = torch.stack([0.5 * torch.sin(2 * math.pi * f * t) for f in freqs]).float()
    image = waveform_to_audio_image(waves, CFG16, 64)
    out = audio_image_to_waveform(image, CFG16, GriffinLim(CFG16, n_iter=16))
    assert out.shape == (len(freqs), CFG16.clip_samples)
    for f, wave in zip(freqs, out):
        semitones = 12 * math.log2(fft_pitch(wave, CFG16.sample_rate) / f)
        assert abs(semitones) < 0.5, f"{f} Hz came back {semitones:+.2f} semitones off"


def test_griffin_lim_output_matches_its_mel():
    noise = torch.randn(CFG16.clip_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    target = log_mel(noise, CFG16)
    db = math.log(10) / 20
    error_few = (log_mel(GriffinLim(CFG16, n_iter=1)(target), CFG16) - target).abs().mean() / db
    error_many = (log_mel(GriffinLim(CFG16, n_iter=16)(target), CFG16) - target).abs().mean() / db
    assert error_many < 1.0  # dB
    assert error_many < error_few  # the iterations make the phase consistent with the magnitude


def test_griffin_lim_keeps_timing_for_audio_video_sync():
    # A tone burst must come back where it was: our frames are centred on t*hop + hop/2,
    # so getting that convention wrong would shift the output by half a hop (128 samples).
    n = torch.arange(CFG16.clip_samples)
    start, length = 8100, 6000
    burst = 0.5 * torch.sin(2 * math.pi * 600 * n / CFG16.sample_rate) * ((n >= start) & (n < start + length))
    out = GriffinLim(CFG16, n_iter=16)(log_mel(burst, CFG16))[0]

    def envelope(wave: torch.Tensor) -> np.ndarray:
        return np.convolve(wave.double().numpy() ** 2, np.ones(128) / 128, mode="same")

    reference, rebuilt = envelope(burst), envelope(out)
    score = np.correlate(rebuilt, reference[300:-300], mode="valid")  # lags -300 ... +300
    lag = int(np.argmax(score)) - 300
    assert abs(lag) <= CFG16.hop // 8, f"Griffin-Lim output is {lag} samples late"


def test_nnls_magnitude_is_non_negative_and_reproduces_the_mel():
    gl = GriffinLim(CFG16, n_iter=1)
    target = log_mel(torch.randn(2, 8000, generator=torch.Generator().manual_seed(3)) * 0.1, CFG16)
    magnitude = gl.mel_to_magnitude(target)
    assert magnitude.shape == (2, CFG16.n_freqs, target.shape[-1]) and (magnitude >= 0).all()
    mel = gl.mel_basis @ magnitude
    relative = (mel - target.exp()).norm() / target.exp().norm()
    assert relative < 0.05


def test_griffin_lim_is_deterministic_and_seeded():
    mel = log_mel(torch.randn(1, 6000, generator=torch.Generator().manual_seed(0)) * 0.2, CFG16)
    gl = GriffinLim(CFG16, n_iter=4, nnls_iters=10)
    torch.testing.assert_close(gl(mel), gl(mel), atol=0, rtol=0)
    seeded = gl(mel, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(seeded, gl(mel, generator=torch.Generator().manual_seed(7)), atol=0, rtol=0)
    assert not torch.allclose(seeded, gl(mel))
    zero = GriffinLim(CFG16, n_iter=4, nnls_iters=10, init="zero")
    torch.testing.assert_close(zero(mel), zero(mel, generator=torch.Generator().manual_seed(7)), atol=0, rtol=0)
    assert gl(mel).shape == (1, mel.shape[-1] * CFG16.hop)


def test_griffin_lim_row_does_not_depend_on_its_batch():
    """Without a generator every row starts from the seed's phase: vocoding a batch gives each row
    what vocoding it alone gives (up to the batched FFT's arithmetic)."""
    waves = torch.randn(3, 6000, generator=torch.Generator().manual_seed(1)) * 0.2
    mels = log_mel(waves, CFG16)  # [3, M, L]
    gl = GriffinLim(CFG16, n_iter=4, nnls_iters=10)
    batch = gl(mels)
    for i in range(3):
        torch.testing.assert_close(batch[i], gl(mels[i:i + 1])[0], atol=1e-5, rtol=0)
    assert (batch[0] - batch[1]).abs().max() > 1e-3


def test_griffin_lim_rejects_bad_settings_and_input():
    with pytest.raises(ConfigError, match="momentum"):
        GriffinLim(CFG16, momentum=1.0)
    with pytest.raises(ConfigError, match="init"):
        GriffinLim(CFG16, init="noise")
    with pytest.raises(ConfigError, match="nnls_iters"):
        GriffinLim(CFG16, nnls_iters=0)
    with pytest.raises(DataError, match=r"\[B, 80, L\]"):
        GriffinLim(CFG16, n_iter=1)(torch.zeros(1, 64, 10))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_griffin_lim_runs_on_cuda():
    gl = GriffinLim(CFG16, n_iter=4).to("cuda")
    mel = log_mel(torch.randn(1, 6000) * 0.2, CFG16)
    out = gl(mel.cuda(), generator=torch.Generator("cuda").manual_seed(0))
    assert out.device.type == "cuda" and out.shape == (1, mel.shape[-1] * CFG16.hop)
    torch.testing.assert_close(gl(mel.cuda(), generator=torch.Generator("cuda").manual_seed(0)), out)


# ------------------------------------------------------------------ release files and foreign checkpoints
def test_folder_with_a_released_generator_file_loads_it(tmp_path):
    folder = tmp_path / "release"
    reference, checkpoint = write_public_checkpoint(folder, TINY_V1)
    checkpoint.rename(folder / "generator_universal.pth.tar")
    mel = torch.randn(1, 80, 6, generator=torch.Generator().manual_seed(2)) - 4
    with torch.no_grad():
        expected = reference(mel)
        torch.testing.assert_close(load_hifigan(folder)(mel), expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(build_vocoder(folder / "generator_universal.pth.tar", CFG16)(mel), expected,
                                   atol=1e-6, rtol=1e-5)
    (folder / "generator_other.pth").write_bytes((folder / "generator_universal.pth.tar").read_bytes())
    with pytest.raises(WeightsError, match=r"several generator files \(generator_other.pth, generator_universal"):
        load_hifigan(folder)


def test_foreign_checkpoint_is_named_as_not_a_hifigan(tmp_path):
    folder = tmp_path / "h"
    write_public_checkpoint(folder, TINY_V1)
    foreign = folder / "g_00000001"
    torch.save({"encoder.weight": torch.zeros(4, 4), "encoder.bias": torch.zeros(4)}, foreign)
    with pytest.raises(WeightsError, match=r"not a HiFi-GAN generator: none of its 2 tensors .*'encoder.weight'") as err:
        load_hifigan(foreign)
    assert str(foreign) in str(err.value) and "\n" not in str(err.value)
    # a training-state file of the release (discriminators and optimisers) holds no generator
    torch.save({"mpd": {"w": torch.zeros(1)}, "optim_g": {"state": {}}, "steps": 10}, foreign)
    with pytest.raises(WeightsError, match="holds no generator state dict"):
        load_hifigan(foreign)


def test_config_json_that_cannot_build_a_generator_names_the_file(tmp_path):
    _, checkpoint = write_public_checkpoint(tmp_path / "h", TINY_V1)
    config = checkpoint.parent / "config.json"
    config.write_text(json.dumps(dict(TINY_V1, hop_size=200)))
    with pytest.raises(ConfigError, match="multiply to 256, not hop_size 200") as info:
        load_hifigan(checkpoint)
    assert str(config) in str(info.value) and "\n" not in str(info.value)
    config.write_text(json.dumps(dict(TINY_V1, upsample_rates="eight")))
    with pytest.raises(ConfigError, match="bad value") as info:
        load_hifigan(checkpoint)
    assert str(config) in str(info.value)


def test_wrong_rate_vocoder_names_the_preset_it_fits(tmp_path):
    hifigan_22k = dict(TINY_V1, sampling_rate=22050)  # exactly the released universal V1 mel settings
    _, checkpoint = write_public_checkpoint(tmp_path / "h", hifigan_22k)
    with pytest.raises(ConfigError, match=r"sampling_rate=22050 .* needs 16000.*audio preset 'hifigan-22k'") as info:
        build_vocoder(checkpoint, CFG16)
    assert str(checkpoint) in str(info.value)
    assert isinstance(build_vocoder(checkpoint, AudioConfig.preset("hifigan-22k")), HiFiGAN)


# ------------------------------------------------------------------ distances to the original
def test_distances_are_zero_for_the_original_and_exact_for_a_gain():
    wave = torch.randn(2, 22050, generator=torch.Generator().manual_seed(0)) * 0.1
    assert log_mel_distance(wave, wave, CFG16).tolist() == [0.0, 0.0]
    same = multi_resolution_stft_distance(wave, wave)
    assert same.total.tolist() == [0.0, 0.0]
    # twice as loud: every mel bin and STFT bin doubles (noise: nothing near the floors)
    louder = multi_resolution_stft_distance(wave, 2 * wave)
    doubled = log_mel_distance(wave, 2 * wave, CFG16)
    torch.testing.assert_close(doubled, torch.full((2,), math.log(2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(louder.spectral_convergence, torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(louder.log_magnitude, torch.full((2,), math.log(2)), atol=1e-5, rtol=0)
    # a vocoder's output is L * hop samples long: the longer wave is trimmed to the shorter
    assert log_mel_distance(wave[0], wave[0, :20000], CFG16).item() == 0.0


def test_distances_rank_a_coarser_copy_as_farther():
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    slightly = wave + 0.01 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(2))
    badly = wave + 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(3))
    assert log_mel_distance(wave, slightly, CFG16) < log_mel_distance(wave, badly, CFG16)
    assert multi_resolution_stft_distance(wave, slightly).total < multi_resolution_stft_distance(wave, badly).total


def test_distances_reject_bad_waves():
    with pytest.raises(DataError, match="batch sizes differ"):
        log_mel_distance(torch.zeros(2, 4000), torch.zeros(3, 4000), CFG16)
    with pytest.raises(DataError, match=r"reference wave: expected a tensor \[N\] or \[B, N\]"):
        multi_resolution_stft_distance(torch.zeros(1, 1, 4000), torch.zeros(1, 4000))
    with pytest.raises(DataError, match="too short for an STFT of 2048 points"):
        multi_resolution_stft_distance(torch.zeros(1, 900), torch.zeros(1, 900))


# ------------------------------------------------------------------ long inputs in chunks
@pytest.mark.parametrize("config", [TINY_V1, TINY_V3], ids=["v1-resblock1", "v3-resblock2"])
def test_receptive_frames_bound_the_reach_of_one_frame(config):
    model = HiFiGAN(HiFiGANConfig.from_mapping(config), use_weight_norm=False, chunk_frames=None).double().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights large enough that no influence underflows
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64) * 0.2)
    before_tanh = []  # tanh saturates to exactly +-1 in places: compare what goes into it
    model.conv_post.register_forward_hook(lambda module, args, out: before_tanh.append(out))
    mel = torch.randn(1, 80, 80, generator=generator, dtype=torch.float64)
    frame = 40
    poked = mel.clone()
    poked[0, :, frame] += 1.0
    with torch.no_grad():
        model(mel), model(poked)
    changed = (before_tanh[1] - before_tanh[0])[0, 0].abs() > 0
    samples = changed.nonzero().squeeze(1)
    earliest, latest = samples.min().item() / 256, (samples.max().item() + 1) / 256
    reach = model.receptive_frames()
    assert frame - reach <= earliest and latest <= frame + 1 + reach
    assert frame - earliest > reach - 2 and latest - frame - 1 > reach - 2  # a tight bound, not a huge one


def test_long_log_mel_in_chunks_is_the_one_piece_wave():
    model = public_style_generator(TINY_V1, seed=3)
    mel = torch.randn(2, 80, 75, generator=torch.Generator().manual_seed(4)) - 4  # 4 full chunks and a short one
    with torch.no_grad():
        model.chunk_frames = None
        expected = model(mel)
        model.chunk_frames = 16
        out = model(mel)
    assert out.shape == expected.shape == (2, 75 * 256)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert expected.std() > 1e-3
    with pytest.raises(ValueError, match="chunk_frames"):
        HiFiGAN(HiFiGANConfig.from_mapping(TINY_V1), chunk_frames=0)
