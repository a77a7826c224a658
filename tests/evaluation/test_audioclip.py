"""AudioCLIP audio head: checkpoint layout, strict reload from a full AudioCLIP-style file, FBSP front end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import get_window

from mmldm.errors import DataError, WeightsError
from mmldm.evaluation.audioclip import (
    AUDIOCLIP_SAMPLE_RATE,
    audioclip_embeddings,
    load_audioclip,
    random_audioclip,
)


@pytest.fixture(scope="module")
def model():
    return random_audioclip(seed=0)


def _tone(seconds: float = 1.6, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(round(seconds * AUDIOCLIP_SAMPLE_RATE))) / AUDIOCLIP_SAMPLE_RATE
    return 0.3 * np.sin(2 * np.pi * freq * t)


def test_state_dict_has_the_checkpoint_layout(model):
    state = model.state_dict()
    expected = {
        "window": (1654,), "fbsp.m": (1025,), "fbsp.fb": (1025,), "fbsp.fc": (1025,), "fbsp.bias": (0,),
        "conv1.weight": (64, 3, 7, 7), "layer1.0.conv2.weight": (128, 4, 3, 3),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer2.3.bn3.running_var": (512,),
        "layer4.2.conv3.weight": (2048, 1024, 1, 1), "att1.conv_depth.weight": (64, 1, 3, 1),
        "att1.conv_point.weight": (256, 64, 1, 1), "att5.conv_depth.weight": (2048, 1, 3, 5),
        "att5.bn.weight": (2048,), "fc.weight": (1024, 2048), "fc.bias": (1024,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(k.startswith(f"layer{i}.") and k.endswith("conv1.weight") for i in range(1, 5) for k in state) == 16


def test_reload_from_full_audioclip_checkpoint_is_strict_and_identical(model, tmp_path):
    audio = _tone(seconds=0.3)  # short: the comparison does not need a whole clip
    before = audioclip_embeddings(model, audio, AUDIOCLIP_SAMPLE_RATE)
    assert before.shape == (1, 1024) and np.isfinite(before).all()
    # AudioCLIP-Full-Training.pt holds the whole CLIP model; the audio head is under "audio.".
    full = {f"audio.{k}": v for k, v in model.state_dict().items()}
    full.update({"visual.conv1.weight": torch.zeros(2, 3, 3, 3), "logit_scale_ai": torch.tensor(4.6)})
    torch.save(full, tmp_path / "AudioCLIP-Full-Training.pt")
    after = audioclip_embeddings(load_audioclip(tmp_path / "AudioCLIP-Full-Training.pt"), audio, AUDIOCLIP_SAMPLE_RATE)
    np.testing.assert_array_equal(before, after)

    del full["audio.att3.bn.weight"]
    torch.save(full, tmp_path / "incomplete.pt")
    with pytest.raises(WeightsError, match="AudioCLIP.*att3.bn.weight"):
        load_audioclip(tmp_path / "incomplete.pt")
    with pytest.raises(WeightsError, match="AudioCLIP-Full-Training.pt"):
        load_audioclip(tmp_path / "absent" / "AudioCLIP-Full-Training.pt")


def _reference_db(audio: np.ndarray) -> np.ndarray:
    """The FBSP front end at its initial parameters (m=0, fb=1, fc=k: a plain Fourier sum on the t grid)."""
    window = get_window("blackmanharris", 1654, fftbins=True)
    count = 1 + int(np.ceil((len(audio) - 1654) / 561))
    missing = (count - 1) * 561 + 1654 - len(audio)
    padded = np.concatenate([np.zeros(missing // 2), audio, np.zeros(missing - missing // 2)])
    frames = np.stack([padded[i * 561:i * 561 + 1654] * window for i in range(count)])
    frames = np.pad(frames, [(0, 0), (197, 197)])  # centred in 2048
    t = np.pi * np.linspace(-1, 1, 2048) + 1e-8
    k = np.arange(1025)[:, None]
    spectrum = frames @ (np.exp(-1j * k * t).T / np.sqrt(2048))  # [F, 1025]
    power = np.abs(spectrum[:, :1023]).T ** 2  # [1023, F]
    return 10 * np.log10(power.reshape(3, 341, count))


def test_front_end_matches_reference_and_int16_scale(model):
    audio = _tone(freq=9000.0) + _tone(freq=300.0)  # bins 14 and 418: bands 0 and 1 of 0-340, 341-681, 682-1022
    scaled = torch.from_numpy(audio).float()[None] * 32768
    with torch.inference_mode():
        ours = model.log_power_bands(scaled)[0].double().numpy()
        unit = model.log_power_bands(scaled / 32768)[0].double().numpy()
    reference = _reference_db(audio)
    assert ours.shape == reference.shape == (3, 341, 124)
    loud = reference > reference.max() - 60
    np.testing.assert_allclose(ours[loud], reference[loud], atol=0.05)
    # [-1, 1] audio fed as is reaches the net 20 log10(32768) = 90.3 dB quieter (the released evaluator's trap).
    assert np.median(ours[loud] - unit[loud]) == pytest.approx(20 * np.log10(32768), abs=0.1)
    assert min(ours[0].max(), ours[1].max()) > ours[2].max() + 40


def test_embedding_input_checks(model):
    with pytest.raises(DataError, match="44100 Hz"):
        audioclip_embeddings(model, _tone(), 16000)
    quiet = audioclip_embeddings(model, _tone(seconds=0.3), AUDIOCLIP_SAMPLE_RATE, int16_range=False)
    loud = audioclip_embeddings(model, _tone(seconds=0.3), AUDIOCLIP_SAMPLE_RATE, int16_range=True)
    assert not np.allclose(quiet, loud)
