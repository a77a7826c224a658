"""GeneratorStage through the training engine on small latent caches; every config preset loads."""

import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from mmldm.cli.main import main
from mmldm.config import load_config
from mmldm.data.latent_cache import write_latent_cache
from mmldm.errors import ConfigError, DataError, WeightsError
from mmldm.generator.dit import AVDiT
from mmldm.generator.latents import GeneratorLatentDataset, estimate_latent_scales, pair_consecutive
from mmldm.export import export_generator
from mmldm.generator.stage import GeneratorStage, GeneratorStageConfig, load_generator, load_generator_with_scales
from mmldm.training.engine import Trainer
from mmldm.training.registry import get_stage, stage_names

REPO = Path(__file__).resolve().parents[2]
AUDIO_SHAPE, VIDEO_SHAPE = (8, 4, 4), (8, 8, 8)  # the tiny DiT preset's latents
CLIP = 1.6


class PatternLatents(Dataset):
    """Latents = a fixed pattern per class + small noise; 4 consecutive 1.6 s windows per source file."""

    def __init__(self, n: int = 24, classes: int = 3, scale: float = 1.0):
        g = torch.Generator().manual_seed(123)
        self.audio_patterns = torch.randn(classes, *AUDIO_SHAPE, generator=g) * scale
        self.video_patterns = torch.randn(classes, *VIDEO_SHAPE, generator=g) * scale
        self.n, self.classes, self.scale = n, classes, scale

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        c = i % self.classes
        return {"audio": self.audio_patterns[c] + 0.1 * self.scale * torch.randn(AUDIO_SHAPE, generator=g),
                "video": self.video_patterns[c] + 0.1 * self.scale * torch.randn(VIDEO_SHAPE, generator=g),
                "source": f"clips/{i // 4}.mp4", "start_time": (i % 4) * CLIP, "class_id": c, "index": i}


def identity_encoder(batch):
    return {"audio": batch["audio"], "video": batch["video"]}


@pytest.fixture(scope="module")
def latent_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("generator_cache")
    write_latent_cache(PatternLatents(), identity_encoder, out, {"test": "patterns", "clip_seconds": CLIP},
                       shard_size=10)
    return out


def make_config(cache, out_dir, *overrides):
    base = [
        f"data.cache={cache}", "model.preset=tiny", "model.dit.depth=2", "model.dit.width=64",
        "model.dit.num_heads=2", "model.dit.num_classes=3",
        "train.batch_size=8", "train.mixed_precision=no", "train.device=cpu", "train.ema.enabled=false",
        "train.log.tensorboard=false", "train.log.progress_bar=false", "train.log.every=1",
        "train.checkpoint.every=1000", "train.schedule.kind=constant", "train.schedule.warmup_steps=0",
        f"train.out_dir={out_dir}",
    ]
    return load_config(GeneratorStageConfig, None, base + list(overrides))


def fixed_loss(stage: GeneratorStage, model: AVDiT, batch: dict, seed: int = 0) -> float:
    """The stage's loss on ``batch`` with fixed timesteps, noise and conditions (seeded)."""
    model.eval()
    with torch.no_grad():
        losses = [float(stage.losses({"model": model}, batch, 0, torch.Generator().manual_seed(seed + k))["loss/model"])
                  for k in range(4)]
    return sum(losses) / len(losses)


def test_registered_under_generator():
    assert get_stage("generator") is GeneratorStage


# Seeded fixed-batch loss after 40 steps / before (observed: epsilon 0.45, flow 0.80; the
# velocity target eps - x0 is harder to learn from a zero-output start).
@pytest.mark.parametrize("objective,ratio", [("epsilon", 0.6), ("flow", 0.9)])
def test_training_lowers_the_loss(latent_cache, tmp_path, objective, ratio):
    cfg = make_config(latent_cache, tmp_path / "run", f"diffusion.objective={objective}", "train.max_steps=40",
                      "train.optim.lr=4e-3")
    stage = GeneratorStage()
    data = stage.dataset(cfg, "train")
    batch = torch.utils.data.default_collate([data[i] for i in range(len(data))])
    stage.build(cfg)
    torch.manual_seed(cfg.train.seed)
    initial = fixed_loss(stage, AVDiT(cfg.model.dit_config()), batch)

    result = Trainer(GeneratorStage(), cfg).fit()
    assert result.steps == 40 and result.checkpoint is not None
    history = [terms["loss/model"] for _, terms in result.history]
    assert all(torch.isfinite(torch.tensor(history)))
    trained, diffusion = load_generator(result.checkpoint)
    assert diffusion.objective == objective
    final = fixed_loss(stage, trained, batch)
    assert final < ratio * initial, (initial, final)
    for key in ("mse/audio", "mse/video", "cond/audio_given", "cond/prev_audio"):
        assert key in result.history[-1][1]


def test_loss_is_the_sum_of_both_modalities_and_can_skip_the_given_one(latent_cache, tmp_path):
    stage = GeneratorStage()
    cfg = make_config(latent_cache, tmp_path / "run", "conditioning.audio_to_video=1.0",
                      "conditioning.video_to_audio=0.0")
    model = stage.build(cfg)["model"]
    with torch.no_grad():  # non-zero outputs, so both MSE terms differ from the zero-output value
        for final in model.final.values():
            torch.nn.init.normal_(final.linear.weight, std=0.1)
    data = stage.dataset(cfg, "train")
    batch = torch.utils.data.default_collate([data[i] for i in range(8)])
    terms = stage.losses({"model": model}, batch, 0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms["loss/model"], terms["mse/audio"] + terms["mse/video"])
    assert float(terms["cond/audio_given"]) == 1.0

    cfg_off = make_config(latent_cache, tmp_path / "run", "conditioning.audio_to_video=1.0",
                          "conditioning.video_to_audio=0.0", "conditioning.loss_on_given=false")
    stage_off = GeneratorStage()
    stage_off.build(cfg_off)
    terms_off = stage_off.losses({"model": model}, batch, 0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms_off["loss/model"], terms_off["mse/video"])


def test_consecutive_windows_are_paired(latent_cache):
    data = GeneratorLatentDataset(latent_cache)
    assert data.clip_seconds == CLIP
    # 4 windows per source: the first of each has no previous clip
    assert data.previous == [-1 if i % 4 == 0 else i - 1 for i in range(24)]
    item, before = data[6], data[5]
    assert bool(item["has_previous"]) and torch.equal(item["prev_audio"], before["audio"])
    assert torch.equal(item["prev_video"], before["video"])
    first = data[4]
    assert not bool(first["has_previous"]) and bool((first["prev_video"] == 0).all())
    assert int(item["class_id"]) == 6 % 3


def test_pairing_needs_the_same_source_and_an_exact_gap():
    items = [{"source": "a", "start_time": 0.0}, {"source": "a", "start_time": 1.6},
             {"source": "b", "start_time": 3.2}, {"source": "a", "start_time": 4.0},
             {"source": "b", "start_time": 1.6}, {"source": "a", "start_time": 3.2}, {"index": 9}]
    assert pair_consecutive(items, 1.6) == [-1, 0, 4, -1, -1, 1, -1]


def test_clip_length_comes_from_the_data_config_or_must_be_given(tmp_path):
    with_data = tmp_path / "with_data"
    write_latent_cache(PatternLatents(n=8), identity_encoder, with_data, {"data": {"num_frames": 16, "fps": 10.0}})
    assert GeneratorLatentDataset(with_data).clip_seconds == pytest.approx(1.6)
    bare = tmp_path / "bare"
    write_latent_cache(PatternLatents(n=8), identity_encoder, bare, {"test": "no clip length"})
    with pytest.raises(DataError, match="clip_seconds"):
        GeneratorLatentDataset(bare)
    assert GeneratorLatentDataset(bare, clip_seconds=1.6).num_with_previous == 6
    assert GeneratorLatentDataset(bare, pair_previous=False).num_with_previous == 0


def test_latent_scales_are_estimated_and_applied(tmp_path):
    big = tmp_path / "big"
    write_latent_cache(PatternLatents(n=12, scale=5.0), identity_encoder, big, {"clip_seconds": CLIP})
    scales = estimate_latent_scales(big)
    plain = GeneratorLatentDataset(big)
    scaled = GeneratorLatentDataset(big, scales=scales)
    for key in ("audio", "video"):
        values = torch.stack([scaled[i][key] for i in range(len(scaled))])
        assert float(values.std()) == pytest.approx(1.0, rel=1e-3)
        torch.testing.assert_close(scaled[5][key], plain[5][key] * scales[key])
        torch.testing.assert_close(scaled[5][f"prev_{key}"], plain[4][key] * scales[key])


def test_cache_that_does_not_fit_the_model_is_refused(latent_cache, tmp_path):
    stage = GeneratorStage()
    with pytest.raises(DataError, match="video latents are \\[8, 8, 8\\] but the DiT expects \\[8, 16, 16\\]"):
        stage.dataset(make_config(latent_cache, tmp_path, "model.dit.video_size=[16,16]"), "train")
    with pytest.raises(DataError, match="num_classes=2"):
        stage.dataset(make_config(latent_cache, tmp_path, "model.dit.num_classes=2"), "train")
    kl_cache = tmp_path / "kl"
    write_latent_cache(PatternLatents(n=4), lambda b: {"video_latent": b["video"]}, kl_cache, {"x": 1})
    with pytest.raises(DataError, match="--autoencoder"):
        stage.dataset(make_config(kl_cache, tmp_path), "train")
    with pytest.raises(ConfigError, match="val_cache"):
        stage.dataset(make_config(latent_cache, tmp_path), "val")


def test_unknown_model_fields_fail_when_the_config_loads(latent_cache, tmp_path):
    with pytest.raises(ConfigError, match="dit.depht"):
        make_config(latent_cache, tmp_path, "model.dit.depht=3")
    with pytest.raises(ConfigError, match="preset 'M'"):
        make_config(latent_cache, tmp_path, "model.preset=M")
    with pytest.raises(ConfigError, match="objective"):
        make_config(latent_cache, tmp_path, "diffusion.objective=score")


def test_preview_without_decoders_shows_the_latents(latent_cache, tmp_path):
    stage = GeneratorStage()
    cfg = make_config(latent_cache, tmp_path, "preview.steps=3")
    modules = stage.build(cfg)
    data = stage.dataset(cfg, "train")
    batch = torch.utils.data.default_collate([data[i] for i in range(3)])
    media = stage.preview(modules, batch)
    assert set(media) == {"image"} and media["image"].shape == (6, 3, 8, 8)
    assert float(media["image"].min()) >= -1 and float(media["image"].max()) <= 1
    again = stage.preview(modules, batch)
    torch.testing.assert_close(media["image"], again["image"])  # seeded: the same picture every time


def test_export_and_reload_give_the_same_network(latent_cache, tmp_path):
    cfg = make_config(latent_cache, tmp_path / "run", "train.max_steps=2", "diffusion.objective=flow",
                      "train.ema.enabled=true")
    result = Trainer(GeneratorStage(), cfg).fit()
    folder = export_generator(result.checkpoint, tmp_path / "exported")
    from_folder, diffusion = load_generator(folder)
    from_checkpoint, _ = load_generator(result.checkpoint)
    raw, _ = load_generator(result.checkpoint, use_ema=False)
    assert diffusion.objective == "flow"
    for name, value in from_checkpoint.state_dict().items():
        assert torch.equal(value, from_folder.state_dict()[name]), name
    assert any(not torch.equal(v, raw.state_dict()[k]) for k, v in from_checkpoint.state_dict().items())


def test_pretrained_start_must_match_the_configured_size(latent_cache, tmp_path):
    cfg = make_config(latent_cache, tmp_path / "run", "train.max_steps=1")
    result = Trainer(GeneratorStage(), cfg).fit()
    start = make_config(latent_cache, tmp_path / "run2", f"model.pretrained={result.checkpoint}")
    model = GeneratorStage().build(start)["model"]
    trained, _ = load_generator(result.checkpoint)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    other = make_config(latent_cache, tmp_path / "run3", f"model.pretrained={result.checkpoint}",
                        "model.dit.depth=3")
    with pytest.raises(ConfigError, match="depth: 2 vs 3"):
        GeneratorStage().build(other)


def test_pretrained_start_can_be_deepened(latent_cache, tmp_path):
    cfg = make_config(latent_cache, tmp_path / "run", "train.max_steps=1")
    result = Trainer(GeneratorStage(), cfg).fit()
    trained, _ = load_generator(result.checkpoint)
    deeper = make_config(latent_cache, tmp_path / "run2", f"model.pretrained={result.checkpoint}",
                         "model.dit.depth=4", "model.deepen_pretrained=true")
    model = GeneratorStage().build(deeper)["model"]
    assert model.cfg.depth == 4
    assert torch.equal(model.blocks[2].attn.qkv.weight, trained.blocks[1].attn.qkv.weight)
    assert torch.count_nonzero(model.blocks[1].modulation[-1].weight) == 0
    wider = make_config(latent_cache, tmp_path / "run3", f"model.pretrained={result.checkpoint}",
                        "model.dit.depth=4", "model.dit.num_heads=4", "model.deepen_pretrained=true")
    with pytest.raises(ConfigError, match="differs.*num_heads: 2 vs 4"):
        GeneratorStage().build(wider)


def test_pretrained_start_warns_when_the_latent_scales_differ_from_its_training(latent_cache, tmp_path):
    cfg = make_config(latent_cache, tmp_path / "run", "train.max_steps=1", "data.audio_latent_scale=0.5",
                      "data.video_latent_scale=2.0")
    result = Trainer(GeneratorStage(), cfg).fit()
    exported = export_generator(result.checkpoint, tmp_path / "exported")
    for source in (result.checkpoint, exported):
        assert load_generator_with_scales(source)[2] == {"audio": 0.5, "video": 2.0}
        same = make_config(latent_cache, tmp_path / "same", f"model.pretrained={source}",
                           "data.audio_latent_scale=0.5", "data.video_latent_scale=2.0")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            GeneratorStage().build(same)
        unset = make_config(latent_cache, tmp_path / "unset", f"model.pretrained={source}")
        with pytest.warns(UserWarning, match=r"audio 0\.5 / video 2, this run scales them 1 / 1"):
            GeneratorStage().build(unset)
    (exported / "generation.json").unlink()  # an AVDiT folder alone: nothing recorded, nothing to warn about
    assert load_generator_with_scales(exported)[2] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GeneratorStage().build(make_config(latent_cache, tmp_path / "bare", f"model.pretrained={exported}"))


def test_train_command_runs_the_tiny_preset(latent_cache, tmp_path):
    code = main(["train", "generator", "--config", str(REPO / "configs/generator/tiny.yaml"),
                 "--set", f"data.cache={latent_cache}", "train.batch_size=4", "train.log.tensorboard=false",
                 "train.log.progress_bar=false", "train.mixed_precision=no",
                 "--out", str(tmp_path / "cli"), "--max-steps", "2"])
    assert code == 0
    trained, _ = load_generator(next((tmp_path / "cli" / "checkpoints").glob("step_*2")))
    assert trained.cfg.num_classes == 3 and trained.cfg.depth == 4  # the tiny preset, for Sounding Shapes


# --------------------------------------------------------------------------- every preset loads


def _stage_of(path: Path) -> str:
    """configs/<stage>/*.yaml, or configs/paper/<setup>/<stage>.yaml."""
    names = stage_names()
    if path.parent.name in names:
        return path.parent.name
    if path.stem in names:
        return path.stem
    raise AssertionError(f"{path}: cannot tell which stage this config is for (folder or file name "
                         f"must be one of {names})")


CONFIG_FILES = sorted(p.relative_to(REPO) for p in (REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=str)
def test_every_config_file_loads_strictly(path):
    stage_cls = get_stage(_stage_of(REPO / path))  # every config file's stage exists: a missing one fails
    cfg = load_config(stage_cls.config_cls, REPO / path)
    assert cfg.train.max_steps >= 1


@pytest.mark.parametrize("setup,classes", [("landscape", 9), ("aist", 60)])
def test_paper_setups_fit_together(setup, classes):
    """The three stages of a paper setup agree on data, sizes, classes and checkpoints."""
    from mmldm.data.audio_image import AudioConfig

    folder = REPO / "configs" / "paper" / setup
    assert sorted(p.stem for p in folder.glob("*.yaml")) == ["autoencoder", "generator", "vae"]
    vae = load_config(get_stage("vae").config_cls, folder / "vae.yaml")
    ae = load_config(get_stage("autoencoder").config_cls, folder / "autoencoder.yaml")
    gen = load_config(GeneratorStageConfig, folder / "generator.yaml")
    for key in ("root", "manifest", "fps", "num_frames", "sample_rate", "size", "geometry", "val_fraction"):
        assert getattr(vae.data, key) == getattr(ae.data, key), key
    assert (vae.data.fps, vae.data.num_frames, vae.data.size, vae.data.sample_rate) == (10.0, 16, 256, 44100)
    assert AudioConfig.for_sample_rate(vae.data.sample_rate) == AudioConfig.preset("paper-44k")
    assert vae.model.preset == "sd-v1" and vae.model.train_mode == "decoder" and vae.train.optim.lr == 1e-5
    assert ae.model.vae_latent_size * 8 == vae.data.size and ae.model.decoder.pretrained_unet is not None
    dit = gen.model.dit_config()
    assert (dit.audio_channels, *dit.audio_size) == ae.model.audio_latent_shape == (16, 8, 8)
    assert (dit.video_channels, *dit.video_size) == ae.model.video_latent_shape == (16, 16, 16)
    assert dit.num_classes == ae.model.semantic.num_classes == classes
    assert (dit.depth, dit.width, dit.num_heads, dit.n_ctx) == (28, 1152, 16, 77)  # the authors' size
    assert (gen.train.optim.lr, gen.train.batch_size, ae.train.optim.lr, ae.train.batch_size) == (1e-5, 28, 1e-4, 20)
    assert gen.diffusion.objective == "epsilon"
    assert (gen.conditioning.context_dropout, gen.conditioning.audio_to_video,
            gen.conditioning.video_to_audio) == (0.1, 0.05, 0.05)
    # the generator previews with the checkpoints the earlier stages end with
    assert ae.vae.path == gen.preview.vae == f"{vae.train.out_dir}/checkpoints/step_{vae.train.max_steps:06d}"
    assert gen.preview.autoencoder == f"{ae.train.out_dir}/checkpoints/step_{ae.train.max_steps:06d}"


# --------------------------------------------------------------------------- perceptual cache from videos


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    """Random-weight tiny KL-VAE and tiny autoencoder folders (64 px -> 4x16x16 -> audio 8x4x4, video 8x8x8)."""
    from mmldm.autoencoder import HierarchicalAVAutoencoder, tiny_config
    from mmldm.vae.kl_vae import KLVAE

    out = tmp_path_factory.mktemp("tiny_parts")
    torch.manual_seed(0)
    return (KLVAE.from_preset("tiny").save_pretrained(out / "vae"),
            HierarchicalAVAutoencoder(tiny_config()).save_pretrained(out / "ae"))


def test_mmldm_cache_with_an_autoencoder_feeds_the_generator(shapes_dir, tmp_path, tiny_parts):
    """Sounding Shapes -> tiny KL-VAE -> tiny autoencoder -> cache -> generator training step."""
    from mmldm.autoencoder import HierarchicalAVAutoencoder
    from mmldm.generator.latents import PerceptualEncoder
    from mmldm.vae.kl_vae import KLVAE

    vae, autoencoder = tiny_parts
    cache = tmp_path / "cache"
    code = main(["cache", "--config", str(REPO / "configs/vae/tiny.yaml"), "--set", f"data.root={shapes_dir}",
                 "data.val_fraction=0.0", "--vae", str(vae), "--autoencoder", str(autoencoder),
                 "--out", str(cache), "--num-workers", "0", "--batch-size", "9"])
    assert code == 0
    data = GeneratorLatentDataset(cache)
    assert len(data) == 9 and data.shapes == {"audio": AUDIO_SHAPE, "video": VIDEO_SHAPE}
    assert data.clip_seconds == pytest.approx(1.6) and data.num_with_previous == 0  # one window per clip
    assert data.cache.config["encoder"] == "perceptual"

    # the stored latents are the autoencoder's posterior modes of the KL-VAE latents
    from mmldm.vae.stage import VAEStage, VAEStageConfig
    clips = VAEStage().dataset(load_config(VAEStageConfig, REPO / "configs/vae/tiny.yaml",
                                           [f"data.root={shapes_dir}", "data.val_fraction=0.0"]), "train")
    batch = torch.utils.data.default_collate([clips[0]])
    encoder = PerceptualEncoder(HierarchicalAVAutoencoder.from_pretrained(autoencoder), KLVAE.from_pretrained(vae))
    expected = encoder(batch)
    torch.testing.assert_close(data[0]["video"], expected["video"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(data[0]["audio"], expected["audio"][0], rtol=1e-4, atol=1e-5)
    # a KL-VAE latent batch gives the same latents without the VAE
    from_latents = PerceptualEncoder(HierarchicalAVAutoencoder.from_pretrained(autoencoder))(
        KLVAE.from_pretrained(vae).encode_clips(batch))
    torch.testing.assert_close(from_latents["video"], expected["video"])
    with pytest.raises(DataError, match="no KL-VAE"):
        PerceptualEncoder(HierarchicalAVAutoencoder.from_pretrained(autoencoder))(batch)

    code = main(["train", "generator", "--config", str(REPO / "configs/generator/tiny.yaml"),
                 "--set", f"data.cache={cache}", "train.batch_size=3", "train.log.tensorboard=false",
                 "train.log.progress_bar=false", "train.mixed_precision=no",
                 "--out", str(tmp_path / "run"), "--max-steps", "1"])
    assert code == 0


def test_export_model_writes_a_folder_the_pipeline_loads(latent_cache, tmp_path, tiny_parts):
    from mmldm.export import export_model
    from mmldm.pipeline import SoundingVideoPipeline
    from mmldm.timing import AVTiming

    cfg = make_config(latent_cache, tmp_path / "run", "train.max_steps=1", "data.video_latent_scale=0.5")
    result = Trainer(GeneratorStage(), cfg).fit()
    vae, autoencoder = tiny_parts
    folder = export_model(result.checkpoint, tmp_path / "model", vae=vae, autoencoder=autoencoder,
                          timing=AVTiming(fps=10.0, num_frames=16, sample_rate=16000))
    pipe = SoundingVideoPipeline.from_pretrained(folder)
    trained, _ = load_generator(result.checkpoint)
    assert all(torch.equal(v, pipe.generator.state_dict()[k]) for k, v in trained.state_dict().items())
    assert pipe.generation.video_latent_scale == 0.5 and pipe.generation.diffusion.objective == "epsilon"
    assert pipe.generation.class_prior == (1 / 3, 1 / 3, 1 / 3)  # the cache's classes: 8 / 8 / 8
    # the model folder's generator/ is what export_generator writes
    generator, diffusion = load_generator(folder / "generator")
    assert diffusion.objective == "epsilon" and generator.cfg == trained.cfg
    whole, _ = load_generator(folder)  # a model folder: its generator
    assert all(torch.equal(v, whole.state_dict()[k]) for k, v in trained.state_dict().items())
    with pytest.raises(WeightsError, match="not found"):
        load_generator(tmp_path / "nothing")


def test_preview_with_decoders_gives_frames_and_audio_images(latent_cache, tmp_path, tiny_parts):
    vae, autoencoder = tiny_parts
    stage = GeneratorStage()
    cfg = make_config(latent_cache, tmp_path, "preview.steps=2", "preview.decode_steps=2", "preview.frames=[0,15]",
                      f"preview.vae={vae}", f"preview.autoencoder={autoencoder}", "data.audio_latent_scale=2.0")
    modules = stage.build(cfg)
    assert set(modules) == {"model", "vae", "autoencoder"}  # the engine freezes the two decoders
    data = stage.dataset(cfg, "train")
    batch = torch.utils.data.default_collate([data[i] for i in range(2)])
    seen = {}
    reconstruct = modules["autoencoder"].reconstruct

    def spy(vae_module, video_z, audio_z, **kwargs):
        seen.update(video=video_z, audio=audio_z)
        return reconstruct(vae_module, video_z, audio_z, **kwargs)

    modules["autoencoder"].reconstruct = spy
    media = stage.preview(modules, batch)
    assert media["video"].shape == (2, 2, 3, 64, 64) and media["image"].shape == (2, 3, 64, 64)
    sampled = stage.sample_latents(modules["model"], batch)  # seeded: the preview's latents again
    torch.testing.assert_close(seen["audio"], sampled["audio"] / 2.0)  # the latent scale is undone
    torch.testing.assert_close(seen["video"], sampled["video"])
    assert float(media["video"].abs().max()) <= 1 and float(media["image"].abs().max()) <= 1
    with pytest.raises(ConfigError, match="go together"):
        make_config(latent_cache, tmp_path, f"preview.vae={vae}")


class PatternChains(Dataset):
    """Source s holds windows k = 0..3 with pattern (s + k) % 3: only the previous clip tells which one."""

    def __init__(self, n: int = 48):
        g = torch.Generator().manual_seed(5)
        self.audio = torch.randn(3, *AUDIO_SHAPE, generator=g)
        self.video = torch.randn(3, *VIDEO_SHAPE, generator=g)
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        source, k = divmod(i, 4)
        c = (source + k) % 3
        return {"audio": self.audio[c], "video": self.video[c], "source": f"s{source}.mp4",
                "start_time": k * CLIP, "class_id": -1, "index": i}


@pytest.mark.slow
def test_the_previous_clip_is_learned_as_a_condition(tmp_path):
    """After training with previous clips, giving them lowers the loss of the items that have one."""
    write_latent_cache(PatternChains(), identity_encoder, tmp_path / "cache", {"clip_seconds": CLIP}, shard_size=16)
    only_previous = ["model.dit.num_classes=0", "conditioning.previous_audio=0.0", "conditioning.previous_video=0.0"]
    cfg = make_config(tmp_path / "cache", tmp_path / "run", *only_previous, "conditioning.previous_both=0.8",
                      "train.max_steps=200", "train.optim.lr=4e-3")
    result = Trainer(GeneratorStage(), cfg).fit()
    model, _ = load_generator(result.checkpoint)
    losses = {}
    for given in (1.0, 0.0):
        stage = GeneratorStage()
        stage.build(make_config(tmp_path / "cache", tmp_path / "eval", *only_previous,
                                f"conditioning.previous_both={given}"))
        if given:
            data = stage.dataset(cfg, "train")
            batch = torch.utils.data.default_collate([data[i] for i in range(len(data)) if data.previous[i] >= 0])
        losses[given] = fixed_loss(stage, model, batch)
    assert losses[1.0] < 0.95 * losses[0.0], losses  # observed 0.50 vs 0.55


def test_weights_digest_sees_every_tensor_including_scalars():
    from mmldm.generator.latents import weights_digest

    module = torch.nn.Module()
    module.scale = torch.nn.Parameter(torch.tensor(2.0))  # 0-dim, like the contrastive logit scale
    module.linear = torch.nn.Linear(3, 2)
    first = weights_digest(module)
    assert first == weights_digest(module) and len(first) == 16
    with torch.no_grad():
        module.scale.fill_(3.0)
    assert weights_digest(module) != first


def test_a_resumed_run_ends_with_the_same_weights(latent_cache, tmp_path):
    """All of the stage's randomness (conditions, timesteps, noise) comes from the engine's generator."""
    straight = Trainer(GeneratorStage(), make_config(latent_cache, tmp_path / "a", "train.max_steps=4")).fit()
    Trainer(GeneratorStage(), make_config(latent_cache, tmp_path / "b", "train.max_steps=2",
                                          "train.checkpoint.every=2")).fit()
    resumed = Trainer(GeneratorStage(), make_config(latent_cache, tmp_path / "b", "train.max_steps=4"),
                      resume="auto").fit()
    a, _ = load_generator(straight.checkpoint)
    b, _ = load_generator(resumed.checkpoint)
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name


def test_export_command_writes_the_model_folder(latent_cache, tmp_path, tiny_parts, capsys):
    """`mmldm export model` writes what `export_model` writes; a wrong checkpoint is a one-line error."""
    from mmldm.pipeline import SoundingVideoPipeline

    cfg = make_config(latent_cache, tmp_path / "run", "train.max_steps=1")
    result = Trainer(GeneratorStage(), cfg).fit()
    vae, autoencoder = tiny_parts
    code = main(["export", "model", "--generator", str(result.checkpoint), "--vae", str(vae),
                 "--autoencoder", str(autoencoder), "--out", str(tmp_path / "model"),
                 "--timing", "10", "16", "16000"])
    assert code == 0
    pipe = SoundingVideoPipeline.from_pretrained(tmp_path / "model")
    trained, _ = load_generator(result.checkpoint)
    assert all(torch.equal(v, pipe.generator.state_dict()[k]) for k, v in trained.state_dict().items())
    capsys.readouterr()
    code = main(["export", "model", "--generator", str(tmp_path / "missing"), "--vae", str(vae),
                 "--autoencoder", str(autoencoder), "--out", str(tmp_path / "model2")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "generator" in err
    assert not (tmp_path / "model2").exists()


def test_class_frequencies_count_the_labelled_items_of_a_cache(tmp_path):
    from mmldm.generator.latents import class_frequencies

    def cache(name, classes):
        items = [{"audio": torch.zeros(AUDIO_SHAPE), "video": torch.zeros(VIDEO_SHAPE), "source": f"{i}.mp4",
                  "start_time": 0.0, "class_id": c, "index": i} for i, c in enumerate(classes)]
        write_latent_cache(items, identity_encoder, tmp_path / name, {"test": name}, shard_size=10)
        return tmp_path / name

    unbalanced = cache("unbalanced", [0, 0, 0, 1, -1, 2, 2, 0])
    assert class_frequencies(unbalanced, 3) == (4 / 7, 1 / 7, 2 / 7)
    assert class_frequencies(unbalanced, 2) == (4 / 5, 1 / 5)  # classes the model does not have are left out
    assert class_frequencies(cache("unlabelled", [-1, -1]), 3) == ()
