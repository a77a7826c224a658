"""I3D and VGGish: weight-file layout, strict reload, exact front ends, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmldm.errors import DataError, WeightsError
from mmldm.evaluation.audio_features import (
    VGGISH_WHAT,
    load_vggish,
    log_mel_examples,
    mel_matrix,
    random_vggish,
    vggish_embeddings,
)
from mmldm.evaluation.features import i3d_features, letterbox, preprocess_video
from mmldm.evaluation.i3d import I3D_WHAT, load_i3d, random_i3d, trunk_output_size


@pytest.fixture(scope="module")
def i3d():
    return random_i3d(seed=0)


def test_i3d_state_dict_has_the_ported_layout(i3d):
    state = i3d.state_dict()
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Conv3d_2c_3x3.bn.running_var"].shape == (192,)
    assert state["Mixed_3b.b1b.conv3d.weight"].shape == (128, 96, 3, 3, 3)
    assert state["Mixed_5c.b3b.bn.weight"].shape == (128,)
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert state["logits.conv3d.bias"].shape == (400,)
    conv_weights = [k for k in state if k.endswith("conv3d.weight")]
    # 3 stem units + 9 inception modules x 6 units + logits
    assert len(conv_weights) == 3 + 9 * 6 + 1
    assert not any(k.endswith("conv3d.bias") for k in conv_weights if not k.startswith("logits"))
    assert not any(k.startswith("logits.bn") for k in state)
    assert sum(p.numel() for p in i3d.parameters()) == 12_697_264


def test_i3d_reload_strict_gives_identical_features(i3d, tmp_path):
    # Smallest input the [2, 7, 7] logits pool accepts: 9 frames of 193 x 193.
    video = torch.rand(1, 3, 9, 193, 193, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        before = i3d(video)
    # A plain dict without num_batches_tracked, as files saved by old PyTorch versions are.
    state = {k: v for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "i3d_pretrained_400.pt")
    reloaded = load_i3d(tmp_path / "i3d_pretrained_400.pt")
    with torch.inference_mode():
        assert torch.equal(reloaded(video), before)
    assert before.shape == (1, 400) and torch.isfinite(before).all()
    save_file(i3d.state_dict(), tmp_path / "i3d.safetensors")
    from_safetensors = load_i3d(tmp_path / "i3d.safetensors").state_dict()
    assert all(torch.equal(from_safetensors[k], v) for k, v in i3d.state_dict().items())


def test_trunk_output_size_matches_the_network(i3d):
    assert trunk_output_size(16, 224, 224) == (2, 7, 7)
    assert trunk_output_size(9, 193, 193) == (2, 7, 7)
    assert trunk_output_size(8, 192, 256) == (1, 6, 8)
    x = torch.zeros(1, 3, 5, 40, 72)
    with torch.inference_mode():
        for layer in i3d._trunk:
            x = layer(x)
    assert tuple(x.shape[2:]) == trunk_output_size(5, 40, 72)


def test_i3d_features_of_16_frame_clips(i3d):
    clip = np.random.default_rng(2).integers(0, 256, (16, 48, 64, 3), dtype=np.uint8)
    feats = i3d_features(i3d, [clip], downsample_to=64)
    assert feats.shape == (1, 400) and feats.dtype == np.float64 and np.isfinite(feats).all()


def test_same_padding_and_zero_padded_max_pool():
    """TF 'SAME' as the port computes it: pad total max(k - s, 0) (or k - size % s), front half rounded down."""
    from mmldm.evaluation.i3d import MaxPool3dSamePadding, Unit3D

    unit = Unit3D(1, 1, kernel_shape=(7, 7, 7), stride=(2, 2, 2), activation=False, use_batch_norm=False)
    x = torch.randn(1, 1, 16, 15, 9, generator=torch.Generator().manual_seed(3))
    # T=16 (even): total 5 -> (2, 3); H=15 (odd): 7 - 1 = 6 -> (3, 3); W=9 (odd): 7 - 1 = 6 -> (3, 3)
    padded = F.pad(x, (3, 3, 3, 3, 2, 3))
    torch.testing.assert_close(unit(x), F.conv3d(padded, unit.conv3d.weight, stride=2))
    assert unit(x).shape[2:] == (8, 8, 5)
    pool = MaxPool3dSamePadding((1, 3, 3), (1, 2, 2))
    negative = -torch.ones(1, 1, 1, 4, 4)
    # zero padding (not -inf): border windows of an all-negative input see the padded 0
    assert pool(negative).flatten().tolist() == [-1.0, 0.0, 0.0, 0.0]


def test_i3d_rejects_inputs_the_pool_cannot_take(i3d):
    with pytest.raises(ValueError, match="193 <= H, W <= 224"):
        i3d(torch.zeros(1, 3, 16, 96, 96))


def test_i3d_weight_errors_name_file_and_net(tmp_path):
    with pytest.raises(WeightsError) as missing:
        load_i3d(tmp_path / "i3d_pretrained_400.pt")
    assert "i3d_pretrained_400.pt" in str(missing.value) and "I3D" in str(missing.value)
    assert "\n" not in str(missing.value)
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(WeightsError, match="does not fit"):
        load_i3d(tmp_path / "wrong.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_i3d(tmp_path / "garbage.pt")
    assert I3D_WHAT.startswith("I3D")


def test_letterbox_keeps_aspect_and_pads_black():
    frames = torch.full((2, 3, 48, 80), 200, dtype=torch.uint8)
    boxed = letterbox(frames, 64)
    # scale min(64/48, 64/80) = 0.8 -> 38 x 64 content, 26 rows of padding split 13 / 13
    assert boxed.shape == (2, 3, 64, 64)
    assert (boxed[:, :, :13] == 0).all() and (boxed[:, :, 51:] == 0).all()
    assert (boxed[:, :, 13:51] == 200).all()


def test_letterbox_antialias_is_an_explicit_choice():
    # Vertical stripes 4 px wide: the 4x downsize lands each output pixel inside one stripe.
    stripes = ((np.arange(256) // 4 % 2) * 255).astype(np.uint8)
    frames = torch.from_numpy(np.broadcast_to(stripes, (1, 3, 256, 256)).copy())
    plain, smooth = letterbox(frames, 64), letterbox(frames, 64, antialias=True)
    expected = F.interpolate(frames.float(), size=(64, 64), mode="bicubic", align_corners=False)
    assert torch.equal(plain, expected.round().clamp(0, 255).to(torch.uint8))
    # Without antialiasing the stripes become full-contrast 1 px stripes; antialiasing blurs them.
    assert plain.float().std() > 120 > 100 > smooth.float().std()


def test_preprocess_scales_to_minus_one_one_and_224():
    frames = np.zeros((16, 64, 64, 3), dtype=np.uint8)
    frames[:, :, 32:] = 255
    video = preprocess_video(frames, downsample_to=64)
    assert video.shape == (3, 16, 224, 224)
    torch.testing.assert_close(video[:, :, :, :100], torch.full((3, 16, 224, 100), -1.0))
    torch.testing.assert_close(video[:, :, :, -100:], torch.full((3, 16, 224, 100), 1.0))


def test_mm_diffusion_64px_step_changes_high_resolution_input():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (16, 256, 256, 3), dtype=np.uint8)
    assert not torch.allclose(preprocess_video(frames, 64), preprocess_video(frames, None))
    # a 64 px square clip is untouched by the letterbox step
    small = frames[:, :64, :64]
    assert torch.equal(preprocess_video(small, 64), preprocess_video(small, None))


# ---------------------------------------------------------------- VGGish


def _reference_log_mel(audio: np.ndarray) -> np.ndarray:
    """tensorflow/models audioset mel_features, re-derived with explicit loops."""
    window, hop, nfft, sr = 400, 160, 512, 16000
    hann = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / window) for n in range(window)])
    frames = [audio[s:s + window] for s in range(0, len(audio) - window + 1, hop)]
    spec = np.array([np.abs(np.fft.rfft(f * hann, nfft)) for f in frames])
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    bins = mel(np.linspace(0, sr / 2, spec.shape[1]))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    weights = np.zeros((spec.shape[1], 64))
    for band in range(64):
        lo, mid, hi = edges[band:band + 3]
        for k in range(1, spec.shape[1]):
            weights[k, band] = max(0.0, min((bins[k] - lo) / (mid - lo), (hi - bins[k]) / (hi - mid)))
    log_mel = np.log(spec @ weights + 0.01)
    return np.stack([log_mel[s:s + 96] for s in range(0, len(log_mel) - 96 + 1, 96)])


def test_log_mel_matches_reference_front_end():
    audio = np.random.default_rng(4).uniform(-0.5, 0.5, 32000)
    ours = log_mel_examples(audio, 16000)
    assert ours.shape == (2, 96, 64)
    np.testing.assert_allclose(ours, _reference_log_mel(audio), rtol=1e-10, atol=1e-12)


def test_log_mel_example_count_and_pitch():
    assert log_mel_examples(np.zeros(25600), 16000).shape == (1, 96, 64)  # 1.6 s: one window, 0.64 s dropped
    assert log_mel_examples(np.zeros(8000), 16000).shape == (0, 96, 64)
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(25600) / 16000)
    band = int(np.argmax(log_mel_examples(tone, 16000)[0].mean(axis=0)))
    weights = mel_matrix(257)
    assert band == int(np.argmax(weights[round(1000.0 / 16000 * 512)]))
    with pytest.raises(DataError, match="16000 Hz"):
        log_mel_examples(tone, 44100)


def test_vggish_reload_strict_gives_identical_embeddings(tmp_path):
    model = random_vggish(seed=0)
    assert list(model.state_dict())[:2] == ["features.0.weight", "features.0.bias"]
    assert model.state_dict()["embeddings.0.weight"].shape == (4096, 12288)
    assert model.state_dict()["embeddings.4.weight"].shape == (128, 4096)
    audio = np.random.default_rng(5).uniform(-0.5, 0.5, 32000)
    before = vggish_embeddings(model, audio, 16000)
    assert before.shape == (2, 128) and (before >= 0).all()
    torch.save(model.state_dict(), tmp_path / "vggish-10086976.pth")
    after = vggish_embeddings(load_vggish(tmp_path / "vggish-10086976.pth"), audio, 16000)
    np.testing.assert_array_equal(before, after)
    with pytest.raises(WeightsError) as missing:
        load_vggish(tmp_path / "absent.pth")
    assert "absent.pth" in str(missing.value) and VGGISH_WHAT.split(" ")[0] in str(missing.value)
