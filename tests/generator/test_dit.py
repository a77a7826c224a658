import json
import math

import pytest
import torch

from mmldm.diffusion.objectives import make_objective
from mmldm.generator.dit import (DIT_PRESETS, PAPER_TABLE4, AdaLNZeroBlock, AVDiT, DiTConfig, build_on_meta,
                                 count_parameters, deepened)
from mmldm.generator.embeddings import TimestepEmbedder, sincos_2d_position_embedding
from mmldm.errors import ConfigError, WeightsError


def _tiny(**overrides) -> AVDiT:
    torch.manual_seed(0)
    return AVDiT(DiTConfig.preset("tiny", **overrides))


def _inputs(cfg: DiTConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = {"audio": torch.randn(batch, cfg.audio_channels, *cfg.audio_size, generator=g),
         "video": torch.randn(batch, cfg.video_channels, *cfg.video_size, generator=g)}
    return x, torch.rand(batch, generator=g) * 1000


def _randomize(model: AVDiT, seed: int = 1) -> AVDiT:
    """Give every parameter (zero-initialised ones included) a small random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_tiny_shapes_with_every_input():
    model = _tiny(num_classes=3, context_dim=8)
    cfg = model.cfg
    x, t = _inputs(cfg)
    out = _randomize(model)(x, t, audio_cond=x["audio"], video_cond=x["video"], prev_audio=x["audio"],
                            prev_video=x["video"], class_labels=torch.tensor([0, 3]), context=torch.randn(2, 4, 8))
    assert out["audio"].shape == (2, 8, 4, 4) and out["video"].shape == (2, 8, 8, 8)
    assert cfg.sequence_length == 1 + 4 + 1 + 16 + 1 + 64
    assert all(torch.isfinite(v).all() for v in out.values())


def test_patch_size_two_shapes():
    model = _randomize(_tiny(patch_size=2))
    x, t = _inputs(model.cfg)
    out = model(x, t)
    assert out["audio"].shape == x["audio"].shape and out["video"].shape == x["video"].shape
    assert model.cfg.sequence_length == 4 + 1 + 4 + 1 + 16


def test_frame_tokens_make_one_token_per_video_channel():
    model = _randomize(_tiny(video_channels=16, video_tokenization="frames", num_classes=3))
    cfg = model.cfg
    assert cfg.video_tokens == 16 and cfg.sequence_length == 1 + 4 + 1 + 16 + 1 + 16
    x, t = _inputs(cfg)
    out = model(x, t, video_cond=x["video"], prev_video=x["video"], class_labels=torch.tensor([0, 3]))
    assert out["audio"].shape == (2, 8, 4, 4) and out["video"].shape == (2, 16, 8, 8)
    # the embedding reads channel i into token i only, and the final layer writes token i to channel i only
    embed = model.patch_embed["video"]
    changed = x["video"].clone()
    changed[:, 5] += 1.0
    moved = (embed(changed) - embed(x["video"])).abs().amax(dim=(0, 2))  # [16]
    assert moved[5] > 0 and torch.count_nonzero(moved) == 1
    tokens = torch.randn(2, 16, cfg.width)
    c = torch.randn(2, cfg.width)
    nudged = tokens.clone()
    nudged[:, 9] += 1.0
    moved = (model.final["video"](nudged, c) - model.final["video"](tokens, c)).abs().amax(dim=(0, 2, 3))
    assert moved[9] > 0 and torch.count_nonzero(moved) == 1
    # the frame index is the position: a 1 x 16 sin-cos grid
    torch.testing.assert_close(model.pos_embed_video, sincos_2d_position_embedding(cfg.width, 1, 16))


def test_frame_tokens_start_at_zero_and_round_trip(tmp_path):
    model = _tiny(video_tokenization="frames")
    x, t = _inputs(model.cfg)
    assert all(torch.count_nonzero(v) == 0 for v in model(x, t).values())
    assert torch.count_nonzero(model.cond_embed["video"].proj.weight) == 0
    _randomize(model).save_pretrained(tmp_path / "dit")
    loaded = AVDiT.from_pretrained(tmp_path / "dit")
    assert loaded.cfg.video_tokenization == "frames"
    torch.testing.assert_close(loaded(x, t), model(x, t), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="video_tokenization 'pixels'"):
        DiTConfig.preset("tiny", video_tokenization="pixels")
    # frames do not need the video map to be a multiple of the patch size (the audio still does)
    assert DiTConfig.preset("tiny", patch_size=2, video_size=(5, 5), video_tokenization="frames").video_tokens == 8
    with pytest.raises(ConfigError, match=r"video_size \(0, 8\) must be 2 positive sizes"):
        DiTConfig.preset("tiny", video_size=(0, 8), video_tokenization="frames")


def test_deepened_generator_computes_the_same_function_until_its_new_blocks_train():
    model = _randomize(_tiny(depth=2, num_classes=3))
    grown = deepened(model, 6)
    assert grown.cfg.depth == 6 and grown.cfg.width == model.cfg.width
    for i in range(2):  # block i -> block 3 i, copied
        for name, value in model.blocks[i].state_dict().items():
            assert torch.equal(grown.blocks[3 * i].state_dict()[name], value), (i, name)
    x, t = _inputs(model.cfg)
    labels = torch.tensor([0, 2])
    kwargs = dict(audio_cond=x["audio"], prev_video=x["video"], class_labels=labels)
    before, after = model(x, t, **kwargs), grown(x, t, **kwargs)
    for m in before:
        torch.testing.assert_close(after[m], before[m], rtol=0, atol=1e-6)
    # the new blocks are not dead: their zero modulation gets a gradient, and once it moves, they act
    sum(v.square().sum() for v in grown(x, t, **kwargs).values()).backward()
    assert grown.blocks[1].modulation[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        grown.blocks[1].modulation[-1].bias.fill_(0.1)
    assert not torch.allclose(grown(x, t, **kwargs)["video"], before["video"])
    with pytest.raises(ConfigError, match="multiple of 2"):
        deepened(model, 3)


def test_output_is_zero_at_init():
    model = _tiny()
    x, t = _inputs(model.cfg)
    out = model(x, t)
    assert torch.count_nonzero(out["audio"]) == 0 and torch.count_nonzero(out["video"]) == 0


def test_adaln_zero_block_is_identity_at_init():
    model = _tiny()
    tokens = torch.randn(2, 10, model.cfg.width)
    c = torch.randn(2, model.cfg.width)
    for block in model.blocks:
        assert torch.equal(block(tokens, c), tokens)
    fresh = AdaLNZeroBlock(16, 2, 4.0)
    assert not torch.equal(fresh(torch.randn(1, 3, 16), torch.randn(1, 16)), torch.zeros(1, 3, 16))


def _last_tokens(model: AVDiT, x, t, **cond) -> torch.Tensor:
    """Token states before the final layers (the output itself is zero at init)."""
    captured = {}
    handle = model.final["video"].register_forward_pre_hook(lambda mod, args: captured.update(tokens=args[0]))
    model(x, t, **cond)
    handle.remove()
    return captured["tokens"]


def test_condition_paths_ignored_at_init_and_learned_after_steps():
    model = _tiny()
    x, t = _inputs(model.cfg)
    zeros = {k: torch.zeros_like(v) for k, v in x.items()}
    cond_a = dict(audio_cond=x["audio"], prev_video=x["video"])
    cond_b = dict(audio_cond=-x["audio"], prev_video=torch.zeros_like(x["video"]))
    assert torch.equal(_last_tokens(model, x, t, **cond_a), _last_tokens(model, x, t, **cond_b))
    assert torch.equal(_last_tokens(model, x, t), _last_tokens(model, x, t, audio_cond=zeros["audio"]))
    for embed in [*model.cond_embed.values(), *model.prev_embed.values()]:
        assert torch.count_nonzero(embed.proj.weight) == 0
    # a few steps on a loss that needs the condition make it matter
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        out = model(x, t, **cond_a)
        loss = sum(((o - x["audio"].mean()) ** 2).mean() for o in out.values()) + (out["video"] - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(model(x, t, **cond_a)["video"], model(x, t, **cond_b)["video"])
    assert torch.count_nonzero(model.cond_embed["audio"].proj.weight) > 0
    assert torch.count_nonzero(model.prev_embed["video"].proj.weight) > 0


def test_none_condition_equals_zero_latent():
    model = _randomize(_tiny(num_classes=2))
    x, t = _inputs(model.cfg)
    zeros = {k: torch.zeros_like(v) for k, v in x.items()}
    torch.testing.assert_close(model(x, t), model(x, t, audio_cond=zeros["audio"], video_cond=zeros["video"],
                                                  prev_audio=zeros["audio"], prev_video=zeros["video"],
                                                  class_labels=torch.full((2,), model.null_class)))


def test_outputs_depend_on_each_input_once_trained():
    model = _randomize(_tiny(num_classes=2))
    x, t = _inputs(model.cfg)
    base = model(x, t)
    changed = {"t": model(x, t + 100), "audio_cond": model(x, t, audio_cond=x["audio"]),
               "class": model(x, t, class_labels=torch.tensor([0, 1]))}
    for name, out in changed.items():
        assert not torch.allclose(out["video"], base["video"]), name
    # joint attention: changing only the audio changes the video output
    x2 = {"audio": x["audio"] + 1, "video": x["video"]}
    assert not torch.allclose(model(x2, t)["video"], base["video"])
    # each sample is independent of the others in the batch
    torch.testing.assert_close(model({k: v[:1] for k, v in x.items()}, t[:1])["audio"], base["audio"][:1],
                               atol=1e-5, rtol=1e-5)


def test_determinism_of_construction_and_forward():
    a, b = _tiny(), _tiny()
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    model = _randomize(a)
    x, t = _inputs(model.cfg)
    torch.testing.assert_close(model(x, t), model(x, t), rtol=0, atol=0)


def test_bf16_autocast_forward_on_cpu():
    model = _randomize(_tiny())
    x, t = _inputs(model.cfg)
    reference = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    for key in reference:
        assert out[key].dtype == torch.bfloat16
        assert torch.isfinite(out[key]).all()
        error = (out[key].float() - reference[key]).norm() / reference[key].norm()
        assert error < 0.05, (key, error)


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t = _inputs(DiTConfig.preset("tiny"))
    grads = []
    for checkpointing in (False, True):
        model = _randomize(_tiny(gradient_checkpointing=checkpointing))
        out = model(x, t)
        (out["audio"].square().mean() + out["video"].square().mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("name", ["S", "B", "L"])
def test_presets_match_paper_parameter_counts(name):
    cfg = DiTConfig.preset(name)
    assert cfg.sequence_length == 77 + 1 + 64 + 1 + 256
    params = count_parameters(build_on_meta(cfg))
    assert abs(params - PAPER_TABLE4[name]["params"]) / PAPER_TABLE4[name]["params"] < 0.05


def test_xl_is_authors_default_and_presets_validate():
    cfg = DiTConfig.preset("XL")
    assert (cfg.depth, cfg.width, cfg.num_heads) == (28, 1152, 16)
    assert 0.6e9 < count_parameters(build_on_meta(cfg)) < 0.75e9  # "about 0.7B" upstream
    assert set(DIT_PRESETS) == {"tiny", "S", "B", "L", "XL"}
    with pytest.raises(ConfigError, match="unknown DiT preset"):
        DiTConfig.preset("XXL")
    with pytest.raises(ConfigError, match="not divisible by num_heads"):
        DiTConfig.preset("tiny", num_heads=3)
    with pytest.raises(ConfigError, match="unknown config key 'dit.depht'"):
        DiTConfig.preset("tiny", depht=3)
    with pytest.raises(ConfigError, match="multiples of patch_size"):
        DiTConfig.preset("tiny", patch_size=3)


def test_bad_inputs_are_bugs_of_the_caller_not_user_errors():
    """Inside the network a wrong input is a programming error: ValueError naming the shape (the
    CLI shows it as an internal error with a traceback under --debug), never a ConfigError."""
    model = _tiny()
    x, t = _inputs(model.cfg)
    with pytest.raises(ValueError, match=r"x\['video'\]: expected shape \[2, 8, 8, 8\]"):
        model({"audio": x["audio"], "video": x["video"][:, :, :4]}, t)
    with pytest.raises(ValueError, match="keys audio and video"):
        model({"audio": x["audio"]}, t)
    with pytest.raises(ValueError, match="audio_cond"):
        model(x, t, audio_cond=x["video"])
    with pytest.raises(ValueError, match="num_classes=0"):
        model(x, t, class_labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class_labels: expected integers of shape \[2\]"):
        _tiny(num_classes=2)(x, t, class_labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="timestep"):
        model(x, torch.zeros(3))
    with pytest.raises(ValueError, match="previous_clip=false"):
        _tiny(previous_clip=False)(x, t, prev_audio=x["audio"])
    for call in (lambda: model({"audio": x["audio"]}, t), lambda: model(x, torch.zeros(3))):
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, ConfigError)


def test_save_and_load_round_trip(tmp_path):
    model = _randomize(_tiny(num_classes=3))
    model.save_pretrained(tmp_path / "dit")
    assert json.loads((tmp_path / "dit" / "config.json").read_text())["num_classes"] == 3
    loaded = AVDiT.from_pretrained(tmp_path / "dit")
    assert not any(p.is_meta for p in [*loaded.parameters(), *loaded.buffers()])
    x, t = _inputs(model.cfg)
    torch.testing.assert_close(loaded(x, t), model(x, t), rtol=0, atol=0)
    half = AVDiT.from_pretrained(tmp_path / "dit", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = half(x, t)
    assert torch.isfinite(out["video"]).all()


def test_loading_errors_are_one_line(tmp_path):
    with pytest.raises(WeightsError, match="config.json"):
        AVDiT.from_pretrained(tmp_path)
    _tiny().save_pretrained(tmp_path / "a")
    _tiny(depth=2).save_pretrained(tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").replace(tmp_path / "b" / "model.safetensors")
    with pytest.raises(WeightsError, match="unexpected") as info:
        AVDiT.from_pretrained(tmp_path / "b")
    assert "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="missing"):
        AVDiT.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="safetensors"):
        AVDiT.from_pretrained(tmp_path / "a")


def test_timestep_and_position_embeddings_follow_dit():
    torch.manual_seed(0)
    embedder = TimestepEmbedder(8, frequency_dim=6)
    t = torch.tensor([0.0, 10.0, 999.0])
    freqs = torch.exp(-math.log(10000) * torch.arange(3) / 3)
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(embedder.frequencies(t), expected)
    pos = sincos_2d_position_embedding(8, 2, 3)  # rows in channels 0..3, columns in 4..7
    assert pos.shape == (6, 8)
    row_freqs = 1.0 / 10000 ** (torch.arange(2) / 2)
    for index in range(6):
        row, col = divmod(index, 3)
        torch.testing.assert_close(pos[index], torch.cat([torch.sin(row * row_freqs), torch.cos(row * row_freqs),
                                                          torch.sin(col * row_freqs), torch.cos(col * row_freqs)]))


@pytest.mark.parametrize("objective_name", ["epsilon", "flow"])
def test_tiny_training_reduces_loss_on_toy_data(objective_name):
    torch.manual_seed(0)
    model = AVDiT(DiTConfig.preset("tiny", depth=2, width=64, num_heads=4))
    objective = make_objective(objective_name)
    g = torch.Generator().manual_seed(0)
    # toy data: 4 fixed audio/video latent pairs with spatial structure
    grid_a = torch.linspace(-1, 1, 4)
    grid_v = torch.linspace(-1, 1, 8)
    data = {"audio": torch.stack([torch.outer(grid_a * s, grid_a).expand(8, 4, 4) for s in (1, -1, 2, -2)]),
            "video": torch.stack([torch.outer(grid_v, grid_v * s).expand(8, 8, 8) for s in (1, -1, 2, -2)])}
    eval_t = objective.sample_timesteps(64, g)
    eval_noise = {k: torch.randn(64, *v.shape[1:], generator=g) for k, v in data.items()}
    eval_x0 = {k: v.repeat(16, 1, 1, 1) for k, v in data.items()}

    def eval_loss() -> float:
        with torch.no_grad():
            x_t = objective.add_noise(eval_x0, eval_noise, eval_t)
            out = model(x_t, objective.model_timestep(eval_t))
            return objective.loss(out, eval_x0, eval_noise, eval_t).mean().item()

    before = eval_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        t = objective.sample_timesteps(16, g)
        x0 = {k: v.repeat(4, 1, 1, 1) for k, v in data.items()}
        noise = {k: torch.randn(v.shape, generator=g) for k, v in x0.items()}
        out = model(objective.add_noise(x0, noise, t), objective.model_timestep(t))
        loss = objective.loss(out, x0, noise, t).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()
    assert after < 0.7 * before, (before, after)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_forward_and_guided_sampling():
    from mmldm.diffusion import guided_denoiser, sample

    device = torch.device("cuda")
    model = _randomize(_tiny(num_classes=2)).to(device).eval()
    x, t = _inputs(model.cfg)
    x, t = {k: v.to(device) for k, v in x.items()}, t.to(device)
    reference = model(x, t)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x, t)
        denoise = guided_denoiser(model, {"class_labels": torch.tensor([0, 1], device=device)},
                                  {"class_labels": torch.full((2,), 2, device=device)}, {"audio": 3.0, "video": 9.0})
        generated = sample(denoise, {k: torch.randn_like(v) for k, v in x.items()}, make_objective("epsilon"),
                           "ddim", steps=4)
    for key in reference:
        assert out[key].device.type == "cuda"
        assert (out[key].float() - reference[key]).norm() / reference[key].norm() < 0.05
        assert generated[key].shape == x[key].shape and torch.isfinite(generated[key]).all()


def test_tiny_preset_takes_the_tiny_autoencoder_latents():
    from mmldm.autoencoder import tiny_config

    autoencoder, cfg = tiny_config(), DiTConfig.preset("tiny")
    assert autoencoder.audio_latent_shape == (cfg.audio_channels, *cfg.audio_size)
    assert autoencoder.video_latent_shape == (cfg.video_channels, *cfg.video_size)


def test_batched_cross_modal_guidance_with_the_dit_equals_separate_calls():
    from mmldm.diffusion import guided_denoiser

    model = _randomize(_tiny(num_classes=2)).eval()
    x, t = _inputs(model.cfg)
    cond = {"audio_cond": x["audio"] * 0.5, "class_labels": torch.tensor([0, 1])}
    uncond = {"audio_cond": torch.zeros_like(x["audio"]), "class_labels": torch.full((2,), model.null_class)}
    with torch.no_grad():
        guided = guided_denoiser(model, cond, uncond, {"audio": 1.0, "video": 9.0})(x, t)
        c, u = model(x, t, **cond), model(x, t, **uncond)
    torch.testing.assert_close(guided["audio"], c["audio"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(guided["video"], u["video"] + 9.0 * (c["video"] - u["video"]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("objective_name,sampler", [("epsilon", "ddim"), ("flow", "euler")])
def test_sampling_the_dit_is_seeded(objective_name, sampler):
    from mmldm.diffusion import noise_like, sample

    model = _randomize(_tiny()).eval()
    like, _ = _inputs(model.cfg, batch=1)
    objective = make_objective(objective_name)
    runs = [sample(model, noise_like(like, torch.Generator().manual_seed(seed)), objective, sampler, steps=3)
            for seed in (0, 0, 1)]
    assert runs[0]["video"].shape == like["video"].shape
    assert torch.equal(runs[0]["video"], runs[1]["video"]) and not torch.equal(runs[0]["video"], runs[2]["video"])
