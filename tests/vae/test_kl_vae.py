"""KL-VAE: presets, chunked encode/decode, diffusers-folder and original single-file loading."""

import re

import pytest
import torch
from safetensors.torch import save_file

from mmldm.errors import WeightsError
from mmldm.vae.kl_vae import KLVAE, estimate_scaling_factor


def to_ldm_names(state: dict[str, torch.Tensor], num_up_blocks: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to the original CompVis/LDM names.

    Written independently of the loader (which uses diffusers' converter), so the
    round trip checks the real format: attention projections become 1x1 convs and
    the decoder's up blocks are numbered from the lowest resolution.
    """
    out = {}
    for key, value in state.items():
        name = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        name = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", name)
        name = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", name)
        name = re.sub(r"up_blocks\.(\d+)\.resnets\.",
                      lambda m: f"up.{num_up_blocks - 1 - int(m.group(1))}.block.", name)
        name = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.",
                      lambda m: f"up.{num_up_blocks - 1 - int(m.group(1))}.upsample.", name)
        name = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", name)
        if "mid_block.attentions.0." in name:
            name = name.replace("mid_block.attentions.0.", "mid.attn_1.")
            for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                             ("to_out.0", "proj_out")):
                name = name.replace(f".{new}.", f".{old}.")
            if value.ndim == 2:
                value = value[:, :, None, None]
        out[name] = value.clone()
    return out


@pytest.fixture(scope="module")
def sd_vae():
    torch.manual_seed(1)
    vae = KLVAE.from_preset("sd-v1").eval()
    # diffusers zero-initialises nothing here, but perturb norms so a mix-up of keys shows.
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return vae


@pytest.fixture
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_sd_v1_preset_layout(sd_vae):
    cfg = sd_vae.autoencoder.config
    assert list(cfg.block_out_channels) == [128, 256, 512, 512]
    assert cfg.layers_per_block == 2 and cfg.latent_channels == 4
    assert sd_vae.scaling_factor == pytest.approx(0.18215)
    assert sd_vae.downsample_factor == 8
    n_params = sum(p.numel() for p in sd_vae.parameters())
    assert 80e6 < n_params < 90e6


def test_diffusers_folder_round_trip(sd_vae, images, tmp_path):
    sd_vae.save_pretrained(tmp_path / "vae")
    assert (tmp_path / "vae" / "config.json").is_file()
    loaded = KLVAE.from_pretrained(tmp_path / "vae").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(images), sd_vae.encode_images(images), rtol=0, atol=0)
        z = sd_vae.encode_images(images)
        torch.testing.assert_close(loaded.decode_images(z), sd_vae.decode_images(z), rtol=0, atol=0)


def test_original_single_file_round_trip(sd_vae, images, tmp_path):
    ldm = to_ldm_names(sd_vae.autoencoder.state_dict(), num_up_blocks=4)
    assert "encoder.down.0.block.0.norm1.weight" in ldm and "decoder.up.3.upsample.conv.weight" in ldm
    assert ldm["encoder.mid.attn_1.q.weight"].ndim == 4
    path = tmp_path / "vae-ft-mse-random.safetensors"
    save_file(ldm, str(path))
    loaded = KLVAE.load(path, preset="sd-v1").eval()
    for key, value in sd_vae.autoencoder.state_dict().items():
        assert torch.equal(loaded.autoencoder.state_dict()[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(images), sd_vae.encode_images(images), rtol=0, atol=0)


def test_full_sd_checkpoint_with_prefix_as_ckpt(tmp_path):
    vae = KLVAE.from_preset("tiny").eval()
    ldm = to_ldm_names(vae.autoencoder.state_dict(), num_up_blocks=3)
    full = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    full["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4, 3, 3)
    path = tmp_path / "sd-full.ckpt"
    torch.save({"state_dict": full, "global_step": 10}, path)
    loaded = KLVAE.from_single_file(path, preset="tiny").eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(x), vae.encode_images(x), rtol=0, atol=0)


def test_chunked_encode_decode_equals_unchunked():
    vae = KLVAE.from_preset("tiny", chunk_size=1000).eval()
    frames = torch.rand(2, 5, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        whole = vae.encode_frames(frames)
        vae.chunk_size = 3
        chunked = vae.encode_frames(frames)
        assert whole.shape == (2, 5, 4, 4, 4)
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
        # each frame is encoded on its own: frame (1, 2) equals encoding that image alone
        torch.testing.assert_close(vae.encode_images(frames[1, 2:3])[0], whole[1, 2], rtol=1e-5, atol=1e-5)
        decoded = vae.decode_frames(chunked)
        vae.chunk_size = 1000
        torch.testing.assert_close(decoded, vae.decode_frames(chunked), rtol=1e-5, atol=1e-5)
        assert decoded.shape == frames.shape
        audio = vae.encode_audio_image(frames[:, 0])
        assert audio.shape == (2, 4, 4, 4)


def test_scaling_factor_is_applied_and_estimated():
    vae = KLVAE.from_preset("tiny", scaling_factor=0.5).eval()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        raw = vae.posterior(x).mode()
        torch.testing.assert_close(vae.encode_images(x), 0.5 * raw)
        torch.testing.assert_close(vae.decode_images(0.5 * raw), vae.decode_unscaled(raw))
    factor = estimate_scaling_factor(vae, x)
    assert factor == pytest.approx(1.0 / raw.std().item(), rel=1e-4)


def test_sampling_uses_generator():
    vae = KLVAE.from_preset("tiny").eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a = vae.encode_images(x, sample=True, generator=torch.Generator().manual_seed(5))
        b = vae.encode_images(x, sample=True, generator=torch.Generator().manual_seed(5))
        c = vae.encode_images(x, sample=True, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_missing_and_wrong_weight_files_raise_one_line_errors(tmp_path):
    with pytest.raises(WeightsError) as err:
        KLVAE.load(tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    assert "\n" not in str(err.value) and "vae-ft-mse" in str(err.value) and "not found" in str(err.value)

    with pytest.raises(WeightsError, match="config.json is missing"):
        (tmp_path / "empty").mkdir()
        KLVAE.from_pretrained(tmp_path / "empty")

    unrelated = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(unrelated))
    with pytest.raises(WeightsError, match="holds no KL-VAE weights"):
        KLVAE.load(unrelated)

    tiny = KLVAE.from_preset("tiny")
    tiny_file = tmp_path / "tiny.safetensors"
    save_file(to_ldm_names(tiny.autoencoder.state_dict(), 3), str(tiny_file))
    with pytest.raises(WeightsError, match="do not fit|wrong preset"):
        KLVAE.load(tiny_file, preset="sd-v1")

    partial = to_ldm_names(tiny.autoencoder.state_dict(), 3)
    del partial["encoder.mid.attn_1.q.weight"]
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsError, match="1 missing .*to_q.weight"):
        KLVAE.load(tmp_path / "partial.safetensors", preset="tiny")

    garbage = tmp_path / "broken.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weight file"):
        KLVAE.load(garbage)
