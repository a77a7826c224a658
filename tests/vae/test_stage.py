"""VAEStage through the training engine, on Sounding Shapes."""

import warnings

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from mmldm.cli.main import main
from mmldm.config import load_config
from mmldm.training.engine import Trainer
from mmldm.training.registry import get_stage
from mmldm.vae.kl_vae import KLVAE
from mmldm.vae.losses import LPIPS, save_lpips
from mmldm.vae.stage import VAEStage, VAEStageConfig, export_pretrained, load_vae


class ItemsInMemory(Dataset):
    """The items of a dataset, decoded once (the tests train many steps on 9 clips)."""

    def __init__(self, dataset):
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class InMemoryVAEStage(VAEStage):
    datasets: dict = {}

    def dataset(self, cfg, split):
        key = (cfg.data.root, cfg.data.size, split)
        if key not in self.datasets:
            self.datasets[key] = ItemsInMemory(super().dataset(cfg, split))
        return self.datasets[key]


def make_config(shapes_dir, out_dir, *overrides):
    base = [
        f"data.root={shapes_dir}", "data.size=32", "data.val_fraction=0.0", "data.frames_per_clip=1",
        "model.preset=tiny", "loss.lpips_weight=0.0",
        "train.batch_size=2", "train.mixed_precision=no", "train.device=cpu", "train.ema.enabled=false",
        "train.log.tensorboard=false", "train.log.progress_bar=false", "train.log.every=1",
        "train.checkpoint.every=1000", f"train.out_dir={out_dir}",
    ]
    return load_config(VAEStageConfig, None, base + list(overrides))


def test_registered_under_vae():
    assert get_stage("vae") is VAEStage


def test_presets_load():
    tiny = load_config(VAEStageConfig, "configs/vae/tiny.yaml")
    assert tiny.model.preset == "tiny" and tiny.model.train_mode == "full"
    paper = load_config(VAEStageConfig, "configs/vae/sd-v1-finetune.yaml")
    assert paper.model.train_mode == "decoder" and paper.train.optim.lr == 1e-5
    assert paper.data.size == 256 and paper.loss.disc_weight > 0 and paper.loss.lpips_weight > 0


def reconstruction_l1(vae, images):
    with torch.no_grad():
        recon, _, _ = vae.eval()(images, sample_posterior=False)
    return (recon - images).abs().mean().item()


def test_tiny_training_reduces_reconstruction_loss(shapes_dir, tmp_path):
    cfg = make_config(shapes_dir, tmp_path / "run", "train.max_steps=20", "train.optim.lr=2e-3")
    stage = InMemoryVAEStage()
    data = stage.dataset(cfg, "train")
    # frame 0, frame 8 and the audio image of every clip
    images = torch.cat([torch.cat([item["frames"][[0, 8]], item["audio_image"][None]]) for item in data.items])
    torch.manual_seed(cfg.train.seed)
    before = reconstruction_l1(VAEStage().build(cfg)["model"], images)

    result = Trainer(stage, cfg).fit()
    l1 = [terms["rec/l1"] for _, terms in result.history]
    assert len(l1) == 20
    assert sum(l1[-8:]) / 8 < 0.7 * sum(l1[:3]) / 3, l1
    after = reconstruction_l1(load_vae(result.checkpoint, use_ema=False), images)
    assert after < 0.5 * before, (before, after)

    # the run exports to a diffusers folder that later stages load
    exported = export_pretrained(result.checkpoint, tmp_path / "vae")
    from_folder = KLVAE.from_pretrained(exported)
    from_checkpoint = load_vae(result.checkpoint)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(from_folder.encode_images(x), from_checkpoint.encode_images(x), rtol=0, atol=0)

    # with calibration the exported latents of the training clips have unit standard deviation
    calibrated = KLVAE.from_pretrained(export_pretrained(result.checkpoint, tmp_path / "cal", calibration_clips=3))
    assert calibrated.scaling_factor != from_folder.scaling_factor
    data = InMemoryVAEStage().dataset(cfg, "train")
    images = torch.cat([torch.cat([data[i]["frames"], data[i]["audio_image"][None]]) for i in range(3)])
    with torch.no_grad():
        assert calibrated.encode_images(images).std().item() == pytest.approx(1.0, rel=1e-3)


def test_decoder_only_mode_leaves_encoder_unchanged(shapes_dir, tmp_path):
    cfg = make_config(shapes_dir, tmp_path / "run", "train.max_steps=3", "model.train_mode=decoder",
                      "train.optim.lr=4e-3")
    stage = InMemoryVAEStage()
    trainer = Trainer(stage, cfg)
    before = {k: v.clone() for k, v in trainer.wrapped["model"].state_dict().items()}
    result = trainer.fit()
    after = load_file(str(result.checkpoint / "model_model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(k.startswith(("autoencoder.decoder.", "autoencoder.post_quant_conv.")) for k in changed), changed
    assert any(k.startswith("autoencoder.decoder.") for k in changed)


def test_lpips_and_discriminator_path(shapes_dir, tmp_path):
    lpips = LPIPS()
    with torch.no_grad():
        for n in range(5):
            getattr(lpips, f"lin{n}").model[1].weight.uniform_(0, 1)
    lpips_file = save_lpips(lpips, tmp_path / "lpips.safetensors")
    gan = ["loss.lpips_weight=1.0", f"loss.lpips_path={lpips_file}", "loss.disc_weight=0.5", "loss.disc_start=2",
           "loss.disc_channels=8", "loss.disc_layers=2"]
    stage = InMemoryVAEStage()
    trainer = Trainer(stage, make_config(shapes_dir, tmp_path / "run", "train.max_steps=2", *gan))
    assert [g.name for g in trainer.groups] == ["model", "disc"]
    disc_before = {k: v.clone() for k, v in trainer.wrapped["disc"].state_dict().items()}
    # steps 0 and 1: before disc_start the discriminator gets no gradient and does not move
    first = trainer.fit()
    assert all("gan/g" not in terms and terms["rec/lpips"] > 0 for _, terms in first.history)
    for key, value in trainer.wrapped["disc"].state_dict().items():
        assert torch.equal(value, disc_before[key]), key
    # step 2 (resumed): the adversarial term counts and the discriminator trains
    resumed = Trainer(stage, make_config(shapes_dir, tmp_path / "run", "train.max_steps=3", *gan), resume="auto")
    result = resumed.fit()
    step, terms = result.history[-1]
    assert step == 3 and "gan/g" in terms and terms["loss/disc"] > 0 and terms["gan/weight"] > 0
    moved = [k for k, v in resumed.wrapped["disc"].state_dict().items() if not torch.equal(v, disc_before[k])]
    assert moved


def test_lpips_without_weights_warns_and_is_off(shapes_dir, tmp_path):
    cfg = make_config(shapes_dir, tmp_path / "run", "loss.lpips_weight=1.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modules = VAEStage().build(cfg)
    assert "lpips" not in modules
    assert any("LPIPS is off" in str(w.message) for w in caught)


def test_training_images_and_preview(shapes_dir, tmp_path):
    cfg = make_config(shapes_dir, tmp_path / "run", "data.frames_per_clip=3")
    stage = VAEStage()
    modules = stage.build(cfg)
    data = stage.dataset(cfg, "train")
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("frames", "audio_image")}
    images = stage.training_images(batch, torch.Generator().manual_seed(0))
    assert images.shape == (2 * 3 + 2, 3, 32, 32)
    # every picked image is one of the clip's frames, three distinct ones per clip
    for clip in range(2):
        picked = images[clip * 3:(clip + 1) * 3]
        matches = [int(torch.nonzero((batch["frames"][clip] == img).flatten(1).all(1))[0]) for img in picked]
        assert len(set(matches)) == 3
    assert torch.equal(images[6:], batch["audio_image"])
    media = stage.preview({k: m.eval() for k, m in modules.items()}, batch)
    assert media["video"].shape == (2, 8, 3, 32, 32)
    assert torch.equal(media["video"][:, :4], batch["frames"][:, [0, 5, 10, 15]])
    assert media["image"].shape == (4, 3, 32, 32)


def test_cli_trains_tiny_preset(shapes_dir, tmp_path, capsys):
    code = main(["train", "vae", "--config", "configs/vae/tiny.yaml", "--out", str(tmp_path / "cli"),
                 "--max-steps", "2", "--set", f"data.root={shapes_dir}", "data.size=32", "data.val_fraction=0.0",
                 "train.batch_size=2", "train.num_workers=0", "train.log.tensorboard=false",
                 "train.log.progress_bar=false", "train.mixed_precision=no"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "cli" / "checkpoints").is_dir()
    assert list((tmp_path / "cli" / "checkpoints").glob("*/model_model.safetensors"))


def test_missing_pretrained_weights_is_one_line_cli_error(shapes_dir, tmp_path, capsys):
    code = main(["train", "vae", "--config", "configs/vae/sd-v1-finetune.yaml", "--out", str(tmp_path / "x"),
                 "--set", f"data.root={shapes_dir}", f"model.pretrained={tmp_path}/vae-ft-mse.safetensors"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "vae-ft-mse.safetensors" in err and "not found" in err
