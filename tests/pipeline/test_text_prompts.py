"""Text prompts: the CLIP text encoder from a local folder, captions through the data, text dropout,
the prompt and text guidance in the pipeline and the CLI (a tiny random-weight CLIP throughout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from micro_models import micro_autoencoder_config, micro_vae

from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.cli.main import main
from mmldm.data.audio_image import AudioConfig
from mmldm.errors import ConfigError, DataError, WeightsError
from mmldm.generator.conditioning import ConditioningConfig, mix_conditions
from mmldm.generator.dit import AVDiT, DiTConfig
from mmldm.generator.generation import SamplingSettings
from mmldm.generator.text_encoder import TextEncoder, random_text_encoder
from mmldm.pipeline import SoundingVideoPipeline

N_CTX, WIDTH = 6, 16
WORDS = ["a", "red", "green", "blue", "disc", "square", "triangle", "and", "sine", "tone", "wave", "sawtooth",
         "rising", "falling", "steady"]
GREEN = "a green square and a square wave, rising"
RED = "a red disc and a sine tone, falling"


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny random-weight CLIP text model + tokenizer saved with save_pretrained (the diffusers layout)."""
    directory = tmp_path_factory.mktemp("clip") / "tiny-clip"
    random_text_encoder(WORDS, hidden_size=WIDTH, layers=1, heads=2, length=N_CTX, seed=0).save_pretrained(directory)
    return directory


def text_pipeline(kit, encoder: TextEncoder | None) -> SoundingVideoPipeline:
    torch.manual_seed(0)
    generator = AVDiT(DiTConfig.preset("tiny", depth=2, width=32, num_heads=2, n_ctx=N_CTX, context_dim=WIDTH,
                                       audio_channels=4, audio_size=(2, 2), video_channels=4, video_size=(4, 4)))
    kit.perturb(generator, 2, std=0.2)  # the zero-initialised paths must react to the context
    autoencoder = HierarchicalAVAutoencoder(micro_autoencoder_config())
    kit.perturb(autoencoder, 1)
    return SoundingVideoPipeline.assemble(vae=micro_vae(), autoencoder=autoencoder, generator=generator,
                                          objective="epsilon", audio_cfg=AudioConfig(clip_seconds=kit.frames / kit.fps),
                                          text_encoder=encoder)


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory, encoder_dir, kit) -> Path:
    directory = tmp_path_factory.mktemp("text_model") / "model"
    text_pipeline(kit, TextEncoder.from_folder(encoder_dir, length=N_CTX)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def text_pipe(text_model_dir) -> SoundingVideoPipeline:
    return SoundingVideoPipeline.from_pretrained(text_model_dir)


# --------------------------------------------------------------------------- the text encoder

def test_encoder_loads_from_its_folder_and_tells_texts_apart(encoder_dir):
    encoder = TextEncoder.from_folder(encoder_dir)
    assert (encoder.length, encoder.hidden_size) == (N_CTX, WIDTH)
    assert encoder.tokenizer.tokenize(GREEN) == ["a</w>", "green</w>", "square</w>", "and</w>", "a</w>", "square</w>",
                                                 "wave</w>", ",</w>", "rising</w>"]
    tokens = encoder([GREEN, RED, ""])
    assert tokens.shape == (3, N_CTX, WIDTH)
    assert (tokens[0] - tokens[1]).abs().max() > 1e-3 and (tokens[0] - tokens[2]).abs().max() > 1e-3
    # the same folder given as its two parts' parent or as the model part itself
    again = TextEncoder.from_folder(encoder_dir, length=N_CTX)
    torch.testing.assert_close(again([GREEN]), tokens[:1])


def test_each_distinct_text_is_encoded_once(encoder_dir, monkeypatch):
    encoder = TextEncoder.from_folder(encoder_dir)
    calls = []
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda texts: calls.append(list(texts)) or original(texts))
    first = encoder.encode_cached([GREEN, RED, GREEN, ""])
    second = encoder.encode_cached([RED, GREEN])
    assert calls == [[GREEN, RED, ""]]
    torch.testing.assert_close(second, first[[1, 0]])
    torch.testing.assert_close(first, original([GREEN, RED, GREEN, ""]))


def test_bad_text_encoder_folders_are_one_line_errors(encoder_dir, tmp_path):
    with pytest.raises(WeightsError, match="not found.*CLIP text model") as missing:
        TextEncoder.from_folder(tmp_path / "nowhere")
    assert "\n" not in str(missing.value)
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(WeightsError, match="is not a CLIP text model.*'bert'"):
        TextEncoder.from_folder(bert)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="has no config.json"):
        TextEncoder.from_folder(empty)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((encoder_dir / "text_encoder" / "config.json").read_text())
    with pytest.raises(WeightsError, match="no .safetensors weights"):
        TextEncoder.from_folder(no_weights)
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((encoder_dir / "text_encoder" / name).read_bytes())
    with pytest.raises(WeightsError, match="text tokenizer.*no CLIP tokenizer") as no_tok:
        TextEncoder.from_folder(no_tokenizer)
    assert "\n" not in str(no_tok.value)


# --------------------------------------------------------------------------- data

def test_synth_writes_captions_from_the_law_and_they_reach_the_generator_data(tmp_path):
    from mmldm.data.datasets import VideoFolderDataset
    from mmldm.data.latent_cache import write_latent_cache
    from mmldm.data.sounding_shapes import (
        ShapesConfig,
        caption,
        pitch_direction,
        read_manifest,
        write_dataset,
    )
    from mmldm.generator.latents import GeneratorLatentDataset
    from mmldm.timing import AVTiming

    write_dataset(tmp_path / "shapes", 3, seed=0, cfg=ShapesConfig(size=16))
    records = read_manifest(tmp_path / "shapes")
    for record in records:
        assert record["text"] == caption(record["class_id"], pitch_direction(record["f0"]))
    assert records[1]["text"].startswith("a green square and a square wave, ")
    assert pitch_direction([220.0, 440.0]) == "rising" and pitch_direction([440.0, 220.0]) == "falling"
    assert pitch_direction([440.0, 450.0]) == "steady"

    dataset = VideoFolderDataset(tmp_path / "shapes", AVTiming(10.0, 16, 16000), size=16, split="all")
    assert [dataset[i]["text"] for i in range(3)] == [r["text"] for r in records]

    def encode(batch):  # stands in for the autoencoder: a latent per item
        n = len(batch["text"])
        return {"audio": torch.zeros(n, 8, 4, 4), "video": torch.ones(n, 8, 8, 8)}

    write_latent_cache(dataset, encode, tmp_path / "cache", {"test": "text", "clip_seconds": 1.6}, shard_size=2)
    latents = GeneratorLatentDataset(tmp_path / "cache")
    assert [latents[i]["text"] for i in range(3)] == [r["text"] for r in records]


def test_a_csv_manifest_text_column_and_bad_text_values(tmp_path):
    from mmldm.data.datasets import VideoFolderDataset
    from mmldm.data.sounding_shapes import ShapesConfig, write_dataset
    from mmldm.timing import AVTiming

    write_dataset(tmp_path, 2, seed=1, cfg=ShapesConfig(size=16))
    (tmp_path / "list.csv").write_text("path,class_id,text\nsine/00000.mp4,0,a humming disc\nsquare/00001.mp4,1,\n")
    dataset = VideoFolderDataset(tmp_path, AVTiming(10.0, 16, 16000), size=16, split="all", manifest="list.csv")
    assert [dataset[i]["text"] for i in range(2)] == ["a humming disc", ""]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"path": "sine/00000.mp4", "text": 3}) + "\n")
    with pytest.raises(DataError, match="row 1 column 'text' must be a string"):
        VideoFolderDataset(tmp_path, AVTiming(10.0, 16, 16000), size=16, split="all", manifest="bad.jsonl")


def test_text_dropout_replaces_captions_by_the_null_text():
    audio, video = torch.zeros(400, 2, 2, 2), torch.zeros(400, 2, 4, 4)
    texts = [GREEN] * 400

    def mixed(p, seed=0):
        return mix_conditions(audio, video, ConditioningConfig(text_dropout=p), torch.Generator().manual_seed(seed),
                              texts=texts)

    assert mixed(0.0).texts == texts and mixed(1.0).texts == [""] * 400
    half = mixed(0.5)
    dropped = half.text_dropped
    assert 150 < int(dropped.sum()) < 250
    assert [t == "" for t in half.texts] == dropped.tolist()
    assert mixed(0.5).texts == half.texts and mixed(0.5, seed=1).texts != half.texts
    # without captions the draws of the other conditions are unchanged
    plain = mix_conditions(audio, video, ConditioningConfig(), torch.Generator().manual_seed(3))
    with_text = mix_conditions(audio, video, ConditioningConfig(), torch.Generator().manual_seed(3), texts=texts)
    assert plain.texts is None and torch.equal(plain.audio_given, with_text.audio_given)
    with pytest.raises(ValueError, match="text_dropout"):
        ConditioningConfig(text_dropout=1.5)


def test_generator_stage_trains_on_captions_encoding_each_once(encoder_dir, tmp_path, monkeypatch):
    from mmldm.config import load_config
    from mmldm.data.latent_cache import write_latent_cache
    from mmldm.generator.stage import GeneratorStage, GeneratorStageConfig
    from mmldm.training.engine import Trainer

    captions = [GREEN, RED, "a blue triangle and a sawtooth wave, steady"]

    class Captioned(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"audio": torch.randn(8, 4, 4, generator=g), "video": torch.randn(8, 8, 8, generator=g),
                    "source": f"{i}.mp4", "start_time": 0.0, "class_id": i % 3, "index": i, "text": captions[i % 3]}

    cache = tmp_path / "cache"
    write_latent_cache(Captioned(), lambda b: {"audio": b["audio"], "video": b["video"]}, cache,
                       {"test": "captions", "clip_seconds": 1.6}, shard_size=6)
    base = [f"data.cache={cache}", "model.preset=tiny", "model.dit.depth=1", "model.dit.width=32",
            "model.dit.num_heads=2", f"model.dit.n_ctx={N_CTX}", f"model.dit.context_dim={WIDTH}",
            f"model.text_encoder={encoder_dir}", "train.batch_size=6", "train.mixed_precision=no", "train.device=cpu",
            "train.ema.enabled=false", "train.log.tensorboard=false", "train.log.progress_bar=false",
            "train.checkpoint.every=1000", "train.max_steps=3", f"train.out_dir={tmp_path / 'run'}"]
    encoded = []
    original = TextEncoder.forward
    monkeypatch.setattr(TextEncoder, "forward", lambda self, texts: encoded.append(list(texts)) or original(self, texts))
    result = Trainer(GeneratorStage(), load_config(GeneratorStageConfig, None, base)).fit()
    assert result.steps == 3 and "cond/text_dropped" in result.history[-1][1]
    seen = [text for call in encoded for text in call]
    assert len(seen) == len(set(seen)) and set(seen) <= {*captions, ""}  # each caption through the encoder once
    # an export of the checkpoint takes the text encoder it trained with
    from mmldm.export import _text_encoder_of

    exported = _text_encoder_of(tmp_path / "run" / "checkpoints" / "step_000003", N_CTX)
    assert exported is not None and Path(exported.source) == Path(encoder_dir) and exported.length == N_CTX

    with pytest.raises(ConfigError, match="model.text_encoder and model.dit.context_dim go together"):
        load_config(GeneratorStageConfig, None, [b for b in base if "context_dim" not in b])
    uncaptioned = tmp_path / "plain"
    write_latent_cache(torch.utils.data.Subset(Captioned(), range(2)),
                       lambda b: {"audio": b["audio"], "video": b["video"]}, uncaptioned,
                       {"test": "plain", "clip_seconds": 1.6}, shard_size=6)
    for index in (json.loads((uncaptioned / "index.json").read_text()),):
        for item in index["items"]:
            item.pop("text")
        (uncaptioned / "index.json").write_text(json.dumps(index))
    cfg = load_config(GeneratorStageConfig, None, base + [f"data.cache={uncaptioned}"])
    with pytest.raises(DataError, match="holds no captions"):
        GeneratorStage().dataset(cfg, "train")


# --------------------------------------------------------------------------- pipeline and CLI

def test_prompt_changes_the_output_and_the_same_prompt_and_seed_reproduce(text_pipe):
    assert text_pipe.takes_text
    kwargs = {"n": 1, "seed": 3, "steps": 2, "decoder_steps": 1, "progress": False}
    green = text_pipe.generate("svg", prompt=GREEN, **kwargs)
    again = text_pipe.generate("svg", prompt=GREEN, **kwargs)
    red = text_pipe.generate("svg", prompt=RED, **kwargs)
    torch.testing.assert_close(green.frames, again.frames)
    assert (green.frames - red.frames).abs().max() > 1e-3
    # no prompt is the null text; guidance 1 is the prompt alone, other scales differ
    null = text_pipe.generate("svg", **kwargs)
    torch.testing.assert_close(null.frames, text_pipe.generate("svg", prompt="", **kwargs).frames)
    guided = text_pipe.generate("svg", prompt=GREEN, text_guidance=3.0, **kwargs)
    assert (guided.frames - green.frames).abs().max() > 1e-3
    assert guided.settings["prompt"] == GREEN and guided.settings["text_guidance"] == 3.0
    assert null.settings["prompt"] == ""


def test_text_guidance_extrapolates_from_the_null_text(text_pipe):
    """One guided step equals uncond + s * (cond - uncond) of the generator's own outputs."""
    prompt_tokens, null_tokens = text_pipe._text_tokens(GREEN, 2)
    network = text_pipe._text_network((prompt_tokens, null_tokens), SamplingSettings(text_guidance=2.5))
    dit = text_pipe.generator.cfg
    g = torch.Generator().manual_seed(0)
    x = {"audio": torch.randn(2, dit.audio_channels, *dit.audio_size, generator=g),
         "video": torch.randn(2, dit.video_channels, *dit.video_size, generator=g)}
    t = torch.tensor([500.0, 200.0])
    cond = text_pipe.denoise(x, t, context=prompt_tokens)
    uncond = text_pipe.denoise(x, t, context=null_tokens)
    out = network(x, t)
    for m in ("audio", "video"):
        torch.testing.assert_close(out[m], uncond[m] + 2.5 * (cond[m] - uncond[m]), atol=1e-5, rtol=1e-4)


def test_prompts_for_models_without_text_and_bad_settings_are_errors(pipe, text_pipe):
    assert not pipe.takes_text
    with pytest.raises(ConfigError, match="no text conditioning"):
        pipe.generate("svg", prompt=GREEN, steps=1, progress=False)
    with pytest.raises(ConfigError, match="text guidance needs a text-conditioned model"):
        pipe.generate("svg", text_guidance=3.0, steps=1, progress=False)
    with pytest.raises(ConfigError, match="guidance scales must be finite"):
        text_pipe.generate("svg", prompt=GREEN, text_guidance=float("nan"), steps=1, progress=False)
    with pytest.raises(ConfigError, match="prompt must be a string"):
        text_pipe.generate("svg", prompt=3, steps=1, progress=False)


def test_model_folders_carry_or_name_their_text_encoder(text_model_dir, encoder_dir, model_dir, kit, tmp_path):
    assert (text_model_dir / "text_encoder" / "config.json").is_file()
    assert (text_model_dir / "tokenizer").is_dir()
    encoder = TextEncoder.from_folder(encoder_dir, length=N_CTX)
    slim = tmp_path / "slim"
    text_pipeline(kit, encoder).save_pretrained(slim, text_encoder=False)
    assert not (slim / "text_encoder").exists()
    with pytest.raises(ConfigError, match="carries no text_encoder/.*--text-encoder DIR"):
        SoundingVideoPipeline.from_pretrained(slim)
    loaded = SoundingVideoPipeline.from_pretrained(slim, text_encoder=encoder_dir)
    assert loaded.takes_text
    with pytest.raises(ConfigError, match="takes no text"):
        SoundingVideoPipeline.from_pretrained(model_dir, text_encoder=encoder_dir)
    wrong = tmp_path / "wide-clip"
    random_text_encoder(WORDS, hidden_size=2 * WIDTH, layers=1, heads=2, length=N_CTX).save_pretrained(wrong)
    with pytest.raises(ConfigError, match=f"6 x 32 tokens, the generator takes 6 x {WIDTH}"):
        SoundingVideoPipeline.from_pretrained(slim, text_encoder=wrong)


def test_cli_prompt_end_to_end(text_model_dir, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--model", str(text_model_dir), "--prompt", GREEN, "--text-guidance", "2",
                 "--steps", "2", "--decoder-steps", "1", "--out", str(out), "--quiet", "--no-preview"])
    assert code == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["prompt"] == GREEN and settings["text_guidance"] == 2.0
    assert (out / "sample_0000.mp4").is_file() or any(out.glob("*.mp4"))
    capsys.readouterr()
    code = main(["generate", "--model", str(model_dir), "--prompt", GREEN, "--steps", "1", "--out",
                 str(tmp_path / "none"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "no text conditioning" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").glob("*.mp4"))


def test_web_app_shows_the_prompt_box_and_passes_the_prompt(text_pipe, tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio", reason="the web app needs gradio (pip install -e '.[test]')")
    from mmldm.app import WebApp, build_app

    demo = build_app(text_pipe)
    try:
        labels = {block.label: block for block in demo.blocks.values()
                  if isinstance(block, gr.components.Component) and getattr(block, "label", None)}
        assert labels["Prompt"].visible is True
    finally:
        demo.mmldm_app.close()
    outputs = []
    generate = text_pipe.generate
    monkeypatch.setattr(text_pipe, "generate", lambda *a, **k: outputs.append(generate(*a, decoder_steps=1, **k))
                        or outputs[-1])
    app = WebApp(text_pipe, max_seconds=10.0, output_root=tmp_path / "outputs")
    try:
        mp4, _, _ = app.generate("svg", None, None, 0, 0, 0, 2, 1.0, 1.0, 1, "any", f"  {GREEN} ",
                                 progress=lambda *args, **kwargs: None)
    finally:
        app.close()
    assert mp4.endswith(".mp4") and outputs[0].settings["prompt"] == GREEN


def test_text_guidance_inside_cross_modal_guidance_and_reranking(text_pipe, kit):
    """a2v: the cross-modal guidance's two branches are each text-guided (4 rows per sample), with candidates."""
    wave = torch.from_numpy(kit.tone(440.0))
    kwargs = {"audio": wave, "n": 2, "seed": 0, "steps": 2, "decoder_steps": 1, "guidance": (1.0, 3.0),
              "candidates": 2, "progress": False}
    batches = []
    denoise = text_pipe.denoise
    text_pipe.denoise = lambda x, t, **c: batches.append(t.shape[0]) or denoise(x, t, **c)
    try:
        guided = text_pipe.generate("a2v", prompt=GREEN, text_guidance=2.0, **kwargs)
        plain = text_pipe.generate("a2v", prompt=GREEN, **kwargs)
    finally:
        del text_pipe.denoise
    assert 2 * 2 * 2 * 2 in batches  # n * candidates * (cond, uncond) * (prompt, null text)
    torch.testing.assert_close(guided.waveforms, plain.waveforms)  # a2v keeps the given audio
    assert (guided.frames - plain.frames).abs().max() > 1e-4
