"""Every ``mmldm`` command against bad input, as a new user would hit it.

The standard: a corrupt or wrong file, a missing stream, too short a clip, an empty
folder, a missing weight file, a wrong config key or value, a non-positive count is
ONE ``mmldm: error:`` line on stderr naming the thing, a non-zero exit, no traceback,
no hang, and nothing left behind that looks complete (no mp4 without its settings,
no model folder or cache index, no run config, and nothing already there deleted).

The commands run in-process through :func:`mmldm.cli.main.main`; a few run as
subprocesses with a timeout to show that bad files do not hang them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmldm.cli.main import main
from mmldm.errors import DataError, MediaError

REPO = Path(__file__).resolve().parents[2]
VAE_CONFIG = REPO / "configs" / "vae" / "tiny.yaml"
FPS, FRAMES, RATE, SIZE = 10.0, 8, 16000, 16


# --------------------------------------------------------------------------- fixtures

def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * RATE))) / RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _frames(count: int, seed: int = 0) -> np.ndarray:
    """uint8 [count, SIZE, SIZE, 3]: a bright square moving over a dark background."""
    rng = np.random.default_rng(seed)
    out = np.full((count, SIZE, SIZE, 3), 20, np.uint8)
    for i in range(count):
        x = i % (SIZE - 6)
        out[i, 4:10, x:x + 6] = rng.integers(100, 255, size=3)
    return out


def _micro_pipeline():
    """A random-weight pipeline: 16x16 frames, 8 frames at 10 fps, 16 kHz (4x8x8 VAE latents)."""
    from micro_models import micro_autoencoder_config, micro_vae
    from mmldm.autoencoder.config import SamplingConfig
    from mmldm.autoencoder.model import HierarchicalAVAutoencoder
    from mmldm.data.audio_image import AudioConfig
    from mmldm.generator.dit import AVDiT, DiTConfig
    from mmldm.pipeline import SoundingVideoPipeline

    torch.manual_seed(0)
    ae_cfg = micro_autoencoder_config(sampling=SamplingConfig(steps=2, chunk_size=8))
    vae = micro_vae(SIZE)
    generator = AVDiT(DiTConfig.preset("tiny", depth=1, width=32, num_heads=2, n_ctx=2, audio_channels=4,
                                       audio_size=(2, 2), video_channels=4, video_size=(4, 4), num_classes=3))
    return SoundingVideoPipeline.assemble(vae=vae, autoencoder=HierarchicalAVAutoencoder(ae_cfg),
                                          generator=generator, objective="epsilon",
                                          audio_cfg=AudioConfig(clip_seconds=FRAMES / FPS))


def _remux(source: Path, target: Path, kinds: tuple[str, ...] = ("video", "audio")) -> Path:
    """The ``kinds`` streams of ``source`` copied into ``target`` (mp4 with its index first, "faststart")."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w", format="mp4",
                                              options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in kinds}
        for packet in src.demux():
            if packet.dts is not None and packet.stream.index in streams:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    return target


def _cut_in_the_middle(source: Path, target: Path) -> Path:
    """``source`` with its index first, cut at 60%: the header promises every frame, but decoding
    fails part way (what a copy interrupted mid-file gives)."""
    whole = _remux(source, target.with_suffix(".whole.mp4"))
    data = whole.read_bytes()
    whole.unlink()
    target.write_bytes(data[: int(len(data) * 0.6)])
    return target


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """Bad and good inputs, written once: media files, folders, a model folder and broken copies of it."""
    from mmldm.data.media_io import write_av, write_wav

    root = tmp_path_factory.mktemp("bad_input")
    p: dict[str, Path] = {"nope": root / "does-not-exist.mp4", "nodir": root / "no-such-folder"}
    p["sounding"] = write_av(root / "sounding.mp4", _frames(16), _tone(1.6), FPS, RATE)
    p["silent"] = write_av(root / "silent.mp4", _frames(12), None, FPS, RATE)
    p["wav"] = write_wav(root / "tone.wav", _tone(1.2), RATE)
    p["short"] = write_av(root / "short.mp4", _frames(4), _tone(0.4), FPS, RATE)
    p["zero"] = root / "zero.mp4"
    p["zero"].write_bytes(b"")
    p["text"] = root / "text.mp4"
    p["text"].write_text("this is not a video\n")
    data = p["sounding"].read_bytes()
    p["trunc"] = root / "truncated.mp4"
    p["trunc"].write_bytes(data[: len(data) // 2])
    p["empty"] = root / "empty-folder"
    p["empty"].mkdir()
    p["dataset"] = root / "dataset"
    p["dataset"].mkdir()
    for i in range(2):
        write_av(p["dataset"] / f"clip{i}.mp4", _frames(16, seed=i), _tone(1.6, 300 + 100 * i), FPS, RATE)
    p["audio_only"] = _remux(p["sounding"], root / "audio-only.mp4", kinds=("audio",))
    for name, source in {"silent_only": p["silent"], "trunc_only": p["trunc"], "short_only": p["short"],
                         "audio_only_dataset": p["audio_only"]}.items():
        folder = root / name
        folder.mkdir()
        shutil.copy(source, folder / "clip.mp4")
        p[name] = folder

    p["midtrunc_dataset"] = root / "dataset-with-a-cut-file"
    p["midtrunc_dataset"].mkdir()
    shutil.copy(p["dataset"] / "clip0.mp4", p["midtrunc_dataset"] / "clip0.mp4")
    p["midtrunc"] = _cut_in_the_middle(p["sounding"], p["midtrunc_dataset"] / "clip1.mp4")

    p["model"] = _micro_pipeline().save_pretrained(root / "model")
    for component in ("vae", "autoencoder", "generator"):
        broken = root / f"model-without-{component}"
        shutil.copytree(p["model"], broken)
        shutil.rmtree(broken / component)
        p[f"no_{component}"] = broken
    p["bad_vocoder"] = root / "model-bad-vocoder"
    shutil.copytree(p["model"], p["bad_vocoder"])
    audio_yaml = p["bad_vocoder"] / "audio.yaml"
    audio_yaml.write_text(audio_yaml.read_text().replace("vocoder: griffin-lim", "vocoder: /nope/g_00000000"))
    p["unknown_key_model"] = root / "model-unknown-key"
    shutil.copytree(p["model"], p["unknown_key_model"])
    with open(p["unknown_key_model"] / "audio.yaml", "a") as fh:
        fh.write("vocodr: griffin-lim\n")

    p["yaml_unknown"] = root / "unknown-key.yaml"
    p["yaml_unknown"].write_text("model:\n  chunk_sise: 8\n")
    p["yaml_type"] = root / "wrong-type.yaml"
    p["yaml_type"].write_text("train:\n  max_steps: [1, 2]\n")
    return p


def _fill(argv: list[str], paths: dict[str, Path], tmp_path: Path) -> list[str]:
    """Replace ``{name}`` by ``paths[name]`` and ``{tmp}`` by the test's own output folder."""
    mapping = {**{k: str(v) for k, v in paths.items()}, "tmp": str(tmp_path)}
    return [arg.format(**mapping) for arg in argv]


def _expect_one_line_error(argv: list[str], capsys, names: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    # progress bars (tqdm, on stderr) are not error lines
    lines = [line for line in err.strip("\n").split("\n") if not re.search(r"\d+%\|", line)]
    assert code != 0, f"exit code 0 for {argv}"
    assert len(lines) == 1 and lines[0].startswith("mmldm: error:"), f"not one error line: {err!r}"
    assert "Traceback" not in err
    assert names in lines[0], f"{names!r} not named in {lines[0]!r}"
    return lines[0]


# --------------------------------------------------------------------------- the sweep
# (argv with {placeholders}, the text the error line must contain)

USAGE = [  # argparse's own refusals are one line too
    (["no-such-command"], "no-such-command"),
    (["generate", "--n", "many", "--out", "{tmp}/out"], "--n"),
    (["generate", "--model", "{model}"], "--out"),
    (["data", "synth"], "--out"),
    (["evaluate", "--protocol", "no-such-protocol", "--generated", "{dataset}", "--reference", "{dataset}"],
     "--protocol"),
    (["train", "vae", "--set"], "--set"),
]

INSPECT = [
    (["data", "inspect", "{nope}"], "{nope}"),
    (["data", "inspect", "{zero}", "--no-sheet"], "{zero}"),
    (["data", "inspect", "{text}", "--no-sheet"], "{text}"),
    (["data", "inspect", "{trunc}", "--no-sheet"], "{trunc}"),
    (["data", "inspect", "{empty}"], "{empty}"),
]

SYNTH_DEMO_PRESETS = [
    (["data", "synth", "--out", "{tmp}/out", "--n", "0"], "number of clips"),
    (["data", "synth", "--out", "{tmp}/out", "--n", "-3"], "number of clips"),
    (["data", "synth", "--out", "{tmp}/out", "--n", "1", "--size", "7"], "size"),
    (["data", "synth", "--out", "{sounding}", "--n", "1"], "{sounding}"),
    (["demo", "--out", "{tmp}/out", "--n", "0"], "--n"),
    (["demo", "--out", "{sounding}", "--n", "1"], "{sounding}"),
    (["demo", "--model", "{nodir}", "--out", "{tmp}/out"], "{nodir}"),
    (["presets", "no-such-preset"], "no-such-preset"),
]

GEN = ["generate", "--model", "{model}", "--out", "{tmp}/out", "--quiet"]
GENERATE = [
    (GEN + ["--task", "a2v", "--audio", "{nope}"], "{nope}"),
    (GEN + ["--task", "a2v", "--audio", "{zero}"], "{zero}"),
    (GEN + ["--task", "a2v", "--audio", "{text}"], "{text}"),
    (GEN + ["--task", "a2v", "--audio", "{trunc}"], "{trunc}"),
    (GEN + ["--task", "a2v", "--audio", "{silent}"], "{silent}"),
    (GEN + ["--task", "a2v", "--audio", "{short}"], "{short}"),
    (GEN + ["--task", "audio-continuation", "--audio", "{short}"], "{short}"),
    (GEN + ["--task", "v2a", "--video", "{wav}"], "{wav}"),
    (GEN + ["--task", "v2a", "--video", "{short}"], "{short}"),
    (GEN + ["--task", "v2a", "--video", "{audio_only}"], "{audio_only}"),
    (GEN + ["--task", "video-continuation", "--video", "{wav}"], "{wav}"),
    (GEN + ["--task", "a2v", "--audio", "{silent}", "--continue-seconds", "2"], "--continue-seconds"),
    (GEN + ["--task", "audio-continuation", "--audio", "{silent}", "--continue-seconds", "0"], "--continue-seconds"),
    (GEN + ["--task", "audio-continuation", "--audio", "{silent}", "--continue-seconds", "0.01"], "one frame"),
    (GEN + ["--precision", "half"], "--precision"),
    (GEN + ["--task", "a2v"], "--audio"),
    (GEN + ["--task", "no-such-task"], "no-such-task"),
    (GEN + ["--sampler", "no-such-sampler"], "no-such-sampler"),
    (GEN + ["--n", "0"], "--n"),
    (GEN + ["--n", "-2"], "--n"),
    (GEN + ["--steps", "0"], "steps"),
    (GEN + ["--steps", "-1"], "steps"),
    (GEN + ["--decoder-steps", "0"], "decoder steps"),
    (GEN + ["--task", "long", "--seconds", "0"], "--seconds"),
    (GEN + ["--task", "long", "--seconds", "-1"], "--seconds"),
    (GEN + ["--task", "long", "--seconds", "0.1"], "--seconds"),
    (GEN + ["--task", "long"], "--seconds"),
    (GEN + ["--class", "99"], "class 99"),
    (GEN + ["--guidance", "1", "2", "3"], "guidance"),
    (GEN + ["--guidance", "nan"], "guidance"),
    (GEN + ["--prefix", "sub/sample"], "sub/sample"),
    (GEN + ["--device", "tpu"], "tpu"),
    (["generate", "--model", "{nodir}", "--out", "{tmp}/out"], "{nodir}"),
    (["generate", "--model", "{empty}", "--out", "{tmp}/out"], "model_index.json"),
    (["generate", "--model", "{no_vae}", "--out", "{tmp}/out"], "vae"),
    (["generate", "--model", "{no_autoencoder}", "--out", "{tmp}/out"], "autoencoder"),
    (["generate", "--model", "{no_generator}", "--out", "{tmp}/out"], "generator"),
    (["generate", "--model", "{bad_vocoder}", "--out", "{tmp}/out"], "/nope/g_00000000"),
    (["generate", "--model", "{unknown_key_model}", "--out", "{tmp}/out"], "vocodr"),
    (["generate", "--model", "{model}", "--out", "{sounding}"], "{sounding}"),
]

DATA_SET = ["data.root={dataset}", "data.size=16", "data.num_frames=8", "data.val_fraction=0"]
TRAIN = [
    (["train", "vae", "--config", "{nope}", "--out", "{tmp}/run"], "{nope}"),
    (["train", "vae", "--config", "{empty}", "--out", "{tmp}/run"], "{empty}"),
    (["train", "vae", "--config", "{sounding}", "--out", "{tmp}/run"], "{sounding}"),
    (["train", "vae", "--config", "{text}", "--out", "{tmp}/run"], "{text}"),
    (["train", "vae", "--config", "{yaml_unknown}", "--out", "{tmp}/run"], "model.chunk_sise"),
    (["train", "vae", "--config", "{yaml_type}", "--out", "{tmp}/run"], "train.max_steps"),
    (["train", "vae", "--set", "modle.preset=tiny", "--out", "{tmp}/run"], "modle"),
    (["train", "vae", "--set", "train.max_steps=many", "--out", "{tmp}/run"], "train.max_steps"),
    (["train", "vae", "--set", "train.max_steps", "--out", "{tmp}/run"], "train.max_steps"),
    (["train", "vae", "--max-steps", "0", "--out", "{tmp}/run"], "max_steps"),
    (["train", "vae", "--set", "train.optim.lr=nan", "--out", "{tmp}/run"], "optim.lr"),
    (["train", "no-such-stage", "--out", "{tmp}/run"], "no-such-stage"),
    (["train", "vae", "--set", "model.pretrained={nodir}", "--out", "{tmp}/run"], "{nodir}"),
    (["train", "vae", "--config", str(VAE_CONFIG), "--set", "data.root={empty}", "--out", "{tmp}/run"], "{empty}"),
    (["train", "vae", "--config", str(VAE_CONFIG), "--set", "data.root={nodir}", "--out", "{tmp}/run"], "{nodir}"),
    (["train", "vae", "--config", str(VAE_CONFIG), "--set", *DATA_SET, "--resume", "{nodir}", "--out", "{tmp}/run"],
     "{nodir}"),
    (["train", "vae", "--config", str(VAE_CONFIG), "--set", *DATA_SET[1:], "data.root={silent_only}",
      "--out", "{tmp}/run"], "no audio track"),
    (["train", "vae", "--config", str(VAE_CONFIG), "--set", *DATA_SET[1:], "data.root={short_only}",
      "--out", "{tmp}/run"], "shorter than one window"),
    (["train", "vae", "--config", str(VAE_CONFIG), "--set", *DATA_SET[1:], "data.root={audio_only_dataset}",
      "--out", "{tmp}/run"], "{audio_only_dataset}"),
    (["train", "autoencoder", "--set", "vae.path={nodir}", "--out", "{tmp}/run"], "{nodir}"),
    (["train", "generator", "--set", "data.cache={empty}", "--out", "{tmp}/run"], "{empty}"),
]

CACHE_BASE = ["cache", "--config", str(VAE_CONFIG), "--vae", "{model}/vae", "--num-workers", "0", "--set", *DATA_SET]
CACHE = [
    (["cache", "--config", str(VAE_CONFIG), "--vae", "{nodir}", "--out", "{tmp}/cache"], "{nodir}"),
    (["cache", "--config", str(VAE_CONFIG), "--out", "{tmp}/cache"], "model.pretrained"),
    (["cache", "--config", str(VAE_CONFIG), "--vae", "{model}/vae", "--set", "data.root={empty}",
      "--out", "{tmp}/cache"], "{empty}"),
    (["cache", "--config", str(VAE_CONFIG), "--vae", "{model}/vae", "--set", "data.rot=x", "--out", "{tmp}/cache"],
     "data.rot"),
    (CACHE_BASE + ["--out", "{tmp}/cache", "--num-workers", "-1"], "num_workers"),
    (CACHE_BASE + ["--out", "{tmp}/cache", "--shard-size", "0"], "shard_size"),
    (CACHE_BASE + ["--out", "{tmp}/cache", "--batch-size", "0"], "batch_size"),
    (CACHE_BASE + ["--out", "{tmp}/cache", "--autoencoder", "{nodir}"], "{nodir}"),
    (CACHE_BASE + ["--out", "{sounding}"], "{sounding}"),
    # a file that probes fine but fails to decode, in a DataLoader worker process
    (["cache", "--config", str(VAE_CONFIG), "--vae", "{model}/vae", "--num-workers", "1", "--set",
      "data.root={midtrunc_dataset}", *DATA_SET[1:], "--out", "{tmp}/cache"], "{midtrunc}"),
]

MODEL_EXPORT = ["export", "model", "--generator", "{model}/generator", "--vae", "{model}/vae",
                "--autoencoder", "{model}/autoencoder", "--timing", "10", "8", "16000"]
EXPORT = [
    (["export", "vae", "{nodir}", "--out", "{tmp}/out"], "{nodir}"),
    (["export", "vae", "{model}/vae", "--out", "{tmp}/out"], "{model}/vae"),
    (["export", "autoencoder", "{nodir}", "--out", "{tmp}/out"], "{nodir}"),
    (["export", "autoencoder", "{empty}", "--out", "{tmp}/out"], "{empty}"),
    (["export", "autoencoder", "{model}/autoencoder", "--out", "{sounding}"], "{sounding}"),
    (["export", "vae", "{nodir}", "--out", "{tmp}/out", "--calibration-clips", "-1"], "calibration clips"),
    (["export", "model", "--generator", "{nodir}", "--vae", "{model}/vae", "--autoencoder", "{model}/autoencoder",
      "--out", "{tmp}/out"], "{nodir}"),
    (MODEL_EXPORT[:-4] + ["--out", "{tmp}/out", "--vae", "{nodir}", "--timing", "10", "8", "16000"], "{nodir}"),
    (MODEL_EXPORT + ["--out", "{tmp}/out", "--vocoder", "{nodir}/g_00000000"], "{nodir}/g_00000000"),
    (MODEL_EXPORT[:-4] + ["--out", "{tmp}/out", "--timing", "10", "9", "16000"], "9 frames"),
    (MODEL_EXPORT[:-4] + ["--out", "{tmp}/out", "--timing", "10", "eight", "16000"], "--timing"),
    (MODEL_EXPORT + ["--out", "{sounding}"], "{sounding}"),
]

EVAL = ["evaluate", "--features", "random", "--num-samples", "2", "--metrics", "fad", "--audio-net", "vggish"]
EVALUATE = [
    (EVAL + ["--generated", "{nodir}", "--reference", "{dataset}"], "{nodir}"),
    (EVAL + ["--generated", "{empty}", "--reference", "{dataset}"], "{empty}"),
    (EVAL + ["--generated", "{dataset}", "--reference", "{empty}"], "{empty}"),
    (EVAL + ["--generated", "{silent_only}", "--reference", "{dataset}"], "no audio track"),
    (EVAL + ["--generated", "{trunc_only}", "--reference", "{dataset}"], "not a readable media file"),
    (EVAL + ["--generated", "{audio_only_dataset}", "--reference", "{dataset}"], "{audio_only_dataset}"),
    (EVAL + ["--generated", "{dataset}", "--reference", "{short_only}"], "{short_only}"),
    (EVAL + ["--generated", "{dataset}", "--reference", "{silent_only}"], "needs a video and an audio"),
    (EVAL + ["--generated", "{dataset}", "--reference", "{dataset}", "--metrics", "fvdd"], "fvdd"),
    (EVAL + ["--generated", "{dataset}", "--reference", "{dataset}", "--num-samples", "0"], "num_samples"),
    (EVAL + ["--generated", "{dataset}", "--reference", "{dataset}", "--batch-size", "0"], "batch size"),
    (EVAL + ["--generated", "{dataset}", "--reference", "{dataset}", "--out", "{empty}"], "{empty}"),
    (["evaluate", "--generated", "{dataset}", "--reference", "{dataset}", "--metrics", "fvd", "--i3d", "{nodir}"],
     "{nodir}"),
    (["evaluate", "--generated", "{dataset}", "--reference", "{dataset}", "--metrics", "fvd", "--i3d", "{text}"],
     "{text}"),
    (["evaluate", "--generated", "{dataset}", "--reference", "{dataset}", "--metrics", "fad",
      "--audio-weights", "{nodir}"], "{nodir}"),
]

REC = ["reconstruct", "--model", "{model}/autoencoder", "--vae", "{model}/vae"]
RECONSTRUCT = [
    (REC + ["{nope}", "--out", "{tmp}/out.mp4"], "{nope}"),
    (REC + ["{silent}", "--out", "{tmp}/out.mp4"], "{silent}"),
    (REC + ["{wav}", "--out", "{tmp}/out.mp4"], "{wav}"),
    (REC + ["{trunc}", "--out", "{tmp}/out.mp4"], "{trunc}"),
    (REC + ["{zero}", "--out", "{tmp}/out.mp4"], "{zero}"),
    (REC + ["{short}", "--out", "{tmp}/out.mp4"], "{short}"),
    (REC + ["{audio_only}", "--out", "{tmp}/out.mp4"], "{audio_only}"),
    (REC + ["{sounding}", "--out", "{tmp}/out.mp4", "--steps", "0"], "steps"),
    (REC + ["{sounding}", "--out", "{tmp}/out.mp4", "--video-guidance", "nan"], "guidance"),
    (REC + ["{sounding}", "--out", "{tmp}/out.mp4", "--start", "-1"], "{sounding}"),
    (REC + ["{sounding}", "--out", "{tmp}/out.mp4", "--fps", "0"], "fps"),
    (REC + ["{sounding}", "--out", "{tmp}/out.mp4", "--vocoder", "{nodir}"], "{nodir}"),
    (REC + ["{sounding}", "--out", "{tmp}/out.txt"], "{tmp}/out.txt"),
    (REC + ["{sounding}", "--out", "{empty}"], "{empty}"),
    (["reconstruct", "{sounding}", "--model", "{nodir}", "--vae", "{model}/vae", "--out", "{tmp}/out.mp4"],
     "{nodir}"),
    (["reconstruct", "{sounding}", "--model", "{model}/autoencoder", "--vae", "{nodir}", "--out", "{tmp}/out.mp4"],
     "{nodir}"),
    (["reconstruct", "{sounding}", "--model", "{model}/autoencoder", "--out", "{tmp}/out.mp4"], "--vae"),
]

CASES = USAGE + INSPECT + SYNTH_DEMO_PRESETS + GENERATE + TRAIN + CACHE + EXPORT + EVALUATE + RECONSTRUCT


def _case_id(case: tuple[list[str], str]) -> str:
    argv, _ = case
    words = [a.replace("{", "").replace("}", "").replace("/", "_") for a in argv if a != "--quiet"]
    return "-".join(words[:2] + words[-3:])[:80]


def _no_complete_output(tmp_path: Path) -> None:
    """Nothing under the test's output folder that a later step would take as a finished result."""
    leftovers = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    complete = [name for name in leftovers if Path(name).suffix in (".mp4", ".wav", ".png", ".safetensors", ".json")
                or Path(name).name in ("config.yaml", "index.json", "model_index.json", "manifest.jsonl")]
    assert not complete, f"a failed command left {complete}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_one_error_line(case, paths, tmp_path, capsys):
    argv, names = case
    _expect_one_line_error(_fill(argv, paths, tmp_path), capsys, _fill([names], paths, tmp_path)[0])
    _no_complete_output(tmp_path)


def test_inputs_given_are_left_as_they_were(paths, capsys):
    """The files the sweep pointed at (and wrote over, had a command misbehaved) are unchanged."""
    assert paths["sounding"].is_file() and paths["sounding"].stat().st_size > 1000
    assert paths["empty"].is_dir() and not any(paths["empty"].iterdir())
    main(["data", "inspect", str(paths["sounding"]), "--no-sheet"])
    assert "video: h264" in capsys.readouterr().out


# --------------------------------------------------------------------------- writes that must not lose data

def test_export_model_refuses_a_folder_that_is_not_a_model(paths, tmp_path, capsys):
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    argv = _fill(MODEL_EXPORT + ["--out", str(folder)], paths, tmp_path)
    _expect_one_line_error(argv, capsys, str(folder.absolute()))
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-notes"]  # no temporary folder left


def test_export_model_replaces_an_existing_model_folder(paths, tmp_path, capsys):
    target = tmp_path / "model"
    shutil.copytree(paths["model"], target)
    (target / "stale.txt").write_text("from the old model")
    assert main(_fill(MODEL_EXPORT + ["--out", str(target)], paths, tmp_path)) == 0
    assert (target / "model_index.json").is_file() and not (target / "stale.txt").exists()


def test_component_saves_refuse_a_file_in_the_way(paths, tmp_path):
    """diffusers only logs when asked to save a VAE over a file; ours is an error naming the path."""
    from mmldm.errors import ConfigError
    from mmldm.pipeline import SoundingVideoPipeline

    pipe = SoundingVideoPipeline.from_pretrained(paths["model"])
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for module in (pipe.vae, pipe.autoencoder, pipe.generator):
        with pytest.raises(ConfigError, match="a-file: is a file"):
            module.save_pretrained(blocker)
        with pytest.raises(ConfigError, match="a-file is a file"):
            module.save_pretrained(blocker / "inside")
    assert blocker.read_text() == "keep me"


def test_a_failed_training_start_keeps_the_run_config(paths, tmp_path, capsys):
    """--resume auto with data that cannot be read: the run folder's config.yaml is not replaced."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# the config of an earlier run\n")
    argv = ["train", "vae", "--config", str(VAE_CONFIG), "--set", f"data.root={paths['empty']}",
            "--resume", "auto", "--out", str(run)]
    _expect_one_line_error(argv, capsys, str(paths["empty"]))
    assert (run / "config.yaml").read_text() == "# the config of an earlier run\n"


def test_generate_output_is_removed_when_a_write_fails(paths, tmp_path, monkeypatch):
    """A sample whose write fails takes the samples already written with it: no mp4 without settings."""
    import mmldm.data.media_io as media_io
    from mmldm.errors import MediaError
    from mmldm.pipeline.output import SoundingVideoOutput

    real_write_av = media_io.write_av
    calls = []

    def write_av_failing_second(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise MediaError(path, "disk full")
        return real_write_av(path, *args, **kwargs)

    monkeypatch.setattr(media_io, "write_av", write_av_failing_second)
    output = SoundingVideoOutput(frames=torch.zeros(2, FRAMES, 3, SIZE, SIZE),
                                 waveforms=torch.zeros(2, int(FRAMES / FPS * RATE)), fps=FPS, sample_rate=RATE)
    with pytest.raises(MediaError, match="disk full"):
        output.save(tmp_path / "out")
    assert len(calls) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


class _FailingDataset(torch.utils.data.Dataset):
    def __init__(self, error: Exception):
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        if index == 2:
            raise self.error
        return torch.tensor(index)


@pytest.mark.parametrize("error", [MediaError("clip.mp4", "cannot decode (cut short)"),
                                   DataError("manifest.jsonl: line 3 is not JSON")], ids=["media", "data"])
def test_a_user_error_in_a_loader_worker_comes_out_as_itself(error):
    from torch.utils.data import DataLoader

    from mmldm.errors import iterate_loader

    loader = DataLoader(_FailingDataset(error), batch_size=1, num_workers=1)
    seen = []
    with pytest.raises(type(error)) as info:
        for batch in iterate_loader(loader):
            seen.append(int(batch))
    assert seen == [0, 1] and str(info.value) == str(error)


def test_other_worker_errors_pass_through_unchanged():
    from torch.utils.data import DataLoader

    from mmldm.errors import iterate_loader

    with pytest.raises(ValueError, match="Caught ValueError in DataLoader worker"):
        list(iterate_loader(DataLoader(_FailingDataset(ValueError("a bug")), batch_size=1, num_workers=1)))


# --------------------------------------------------------------------------- --debug and internal errors

def test_debug_after_the_command_shows_the_traceback(paths, tmp_path):
    from mmldm.errors import WeightsError

    for argv in (["generate", "--model", str(paths["nodir"]), "--out", str(tmp_path), "--debug"],
                 ["--debug", "generate", "--model", str(paths["nodir"]), "--out", str(tmp_path)]):
        with pytest.raises(WeightsError, match="model folder"):
            main(argv)


def test_an_internal_error_is_one_line_and_debug_raises_it(monkeypatch, capsys):
    import mmldm.cli.presets as presets_cli

    def broken(args):
        raise RuntimeError("unexpected\nstate of things")

    monkeypatch.setattr(presets_cli, "_presets", broken)
    assert main(["presets"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("mmldm: internal error: RuntimeError: unexpected state of things")
    assert "--debug" in err
    with pytest.raises(RuntimeError, match="unexpected"):
        main(["presets", "--debug"])


# --------------------------------------------------------------------------- no hangs

@pytest.mark.parametrize("argv", [
    ["data", "inspect", "{trunc}"],
    ["generate", "--model", "{model}", "--task", "a2v", "--audio", "{trunc}", "--out", "{tmp}/out", "--quiet"],
    ["reconstruct", "{trunc}", "--model", "{model}/autoencoder", "--vae", "{model}/vae", "--out", "{tmp}/out.mp4"],
], ids=["inspect", "generate-a2v", "reconstruct"])
def test_truncated_file_does_not_hang_a_subprocess(argv, paths, tmp_path):
    result = subprocess.run([sys.executable, "-m", "mmldm", *_fill(argv, paths, tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("mmldm: error:")
    assert str(paths["trunc"]) in result.stderr and "Traceback" not in result.stderr
