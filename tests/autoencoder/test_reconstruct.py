"""``mmldm reconstruct`` and its measures."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmldm.autoencoder.config import tiny_config
from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.autoencoder.reconstruct import frame_psnr
from mmldm.cli.main import main
from mmldm.vae.kl_vae import KLVAE


def test_frame_psnr():
    a = torch.zeros(2, 3, 4, 4)
    assert frame_psnr(a, a) == math.inf
    # a difference of 0.2 on the [-1, 1] scale is 0.1 on [0, 1]: MSE 0.01 -> 20 dB
    assert frame_psnr(a, a + 0.2) == pytest.approx(20.0)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("reconstruct")
    model_dir = HierarchicalAVAutoencoder(tiny_config()).save_pretrained(root / "ae")
    vae_dir = KLVAE.from_preset("tiny").save_pretrained(root / "vae")
    return model_dir, vae_dir


def test_reconstruct_cli_writes_a_clip_and_prints_measures(shapes_dir, saved_models, tmp_path, capsys):
    model_dir, vae_dir = saved_models
    clip = sorted(shapes_dir.glob("**/*.mp4"))[0]
    out, measures = tmp_path / "recon.mp4", tmp_path / "measures.json"
    code = main(["reconstruct", str(clip), "--model", str(model_dir), "--vae", str(vae_dir), "--out", str(out),
                 "--steps", "2", "--shapes", "--json", str(measures)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "frame_psnr" in printed and "waveform_mel_l1" in printed and "sync_error_reconstruction" in printed
    values = json.loads(measures.read_text())
    assert math.isfinite(values["frame_psnr"]) and values["audio_image_mel_l1"] >= 0
    assert values["class_agreement_input"] is True  # the real clip obeys the law
    from mmldm.data.media_io import read_av

    clip_out = read_av(out, fps=10, sample_rate=16000)
    assert clip_out.frames.shape == (16, 64, 64, 3)


def test_reconstruct_cli_needs_a_vae(shapes_dir, saved_models, tmp_path, capsys):
    model_dir, _ = saved_models
    clip = sorted(shapes_dir.glob("**/*.mp4"))[0]
    code = main(["reconstruct", str(clip), "--model", str(model_dir), "--out", str(tmp_path / "x.mp4")])
    assert code != 0
    assert "--vae" in capsys.readouterr().err


def test_reconstruct_cli_refuses_a_too_short_clip(saved_models, tmp_path, capsys):
    from mmldm.data.media_io import write_av

    model_dir, vae_dir = saved_models
    short = write_av(tmp_path / "short.mp4", torch.zeros(5, 3, 64, 64), torch.zeros(8000).numpy(), 10.0, 16000)
    code = main(["reconstruct", str(short), "--model", str(model_dir), "--vae", str(vae_dir),
                 "--out", str(tmp_path / "x.mp4")])
    assert code != 0 and not (tmp_path / "x.mp4").exists()
    err = capsys.readouterr().err
    assert "short.mp4" in err and "needs 16" in err and len(err.strip().splitlines()) == 1
