"""A model folder's few-step signal decoder (``decoder_student/``): saved and loaded with the folder,
run when the decoder steps are its steps (without a guidance batch), the autoencoder's own decoder
at any other count; in low-memory mode too."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mmldm import devices
from mmldm.autoencoder.student import STUDENT_NAME, StudentInfo
from mmldm.cli.main import main
from mmldm.errors import WeightsError
from mmldm.pipeline import SoundingVideoPipeline

STUDENT_STEPS = 2


@pytest.fixture(scope="module")
def student_dir(pipe, tmp_path_factory):
    """The test model with a student: the teacher's decoder, perturbed (a student is not its teacher)."""
    student = copy.deepcopy(pipe.autoencoder.decoder)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    info = StudentInfo(steps=STUDENT_STEPS, teacher_steps_per_step=3, video_guidance=2.0, audio_guidance=2.0)
    withstudent = SoundingVideoPipeline.assemble(vae=pipe.vae, autoencoder=pipe.autoencoder, generator=pipe.generator,
                                                 objective=pipe.objective, audio_cfg=pipe.audio_cfg,
                                                 generation=pipe.generation, decoder_student=(student, info))
    return withstudent.save_pretrained(tmp_path_factory.mktemp("student") / "model")


@pytest.fixture(scope="module")
def taught(student_dir) -> SoundingVideoPipeline:
    return SoundingVideoPipeline.from_pretrained(student_dir)


def latents_of(pipe: SoundingVideoPipeline, seed: int = 0) -> dict[str, torch.Tensor]:
    return pipe.latent_noise([torch.Generator().manual_seed(seed)])


def unet_batches(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """The batch size of every call of a signal decoder's UNet, observed with a forward hook."""
    sizes: list[int] = []
    handle = module.unet.register_forward_hook(lambda _m, args, _out: sizes.append(args[0].shape[0]))
    return sizes, handle


def test_the_folder_keeps_its_student(student_dir, taught):
    index = json.loads((student_dir / "model_index.json").read_text())
    assert index["components"][STUDENT_NAME] == STUDENT_NAME
    student, info = taught.decoder_student
    assert info.steps == STUDENT_STEPS and info.video_guidance == 2.0
    teacher = taught.autoencoder.decoder.state_dict()
    assert any(not torch.equal(v, teacher[k]) for k, v in student.state_dict().items())
    # saving the loaded pipeline again keeps it
    again = SoundingVideoPipeline.from_pretrained(taught.save_pretrained(student_dir.parent / "again"))
    assert all(torch.equal(v, again.decoder_student[0].state_dict()[k]) for k, v in student.state_dict().items())


def test_its_steps_select_the_student_without_a_guidance_batch(taught):
    latents = latents_of(taught)
    student_calls, h1 = unet_batches(taught.decoder_student[0])
    teacher_calls, h2 = unet_batches(taught.autoencoder.decoder)
    try:
        frames, image = taught.decode(latents, generator=torch.Generator().manual_seed(1), steps=STUDENT_STEPS)
        assert teacher_calls == [] and len(student_calls) == 2 * STUDENT_STEPS  # video chunk + audio, per step
        frames_per_clip = taught.autoencoder.cfg.num_frames
        assert sorted(set(student_calls)) == [1, frames_per_clip]  # no guidance batch: one item per image
        student_calls.clear()
        taught.decode(latents, generator=torch.Generator().manual_seed(1), steps=STUDENT_STEPS + 1)
        assert student_calls == [] and len(teacher_calls) == 2 * (STUDENT_STEPS + 1)
        assert sorted(set(teacher_calls)) == [2, 2 * frames_per_clip]  # the teacher's guidance batch
    finally:
        h1.remove()
        h2.remove()
    # what the autoencoder computes with the student, guidance 1 and deterministic steps
    video_z = latents["video"] / taught.generation.video_latent_scale
    audio_z = latents["audio"] / taught.generation.audio_latent_scale
    direct = taught.autoencoder.decode(video_z, audio_z, steps=STUDENT_STEPS, generator=torch.Generator().manual_seed(1),
                                       decoder=taught.decoder_student[0], video_guidance=1.0, audio_guidance=1.0,
                                       eta=0.0)
    expected_frames, expected_image = taught._pixels(*direct)
    assert torch.equal(frames, expected_frames) and torch.equal(image, expected_image)


def test_generate_records_which_decoder_ran(taught, pipe):
    kw = {"n": 1, "seed": 3, "steps": 2, "progress": False}
    fast = taught(task="svg", decoder_steps=STUDENT_STEPS, **kw)
    assert fast.settings["signal_decoder"] == "few-step student"
    slow = taught(task="svg", decoder_steps=STUDENT_STEPS + 1, **kw)
    assert slow.settings["signal_decoder"] == "autoencoder"
    # the teacher at the same count is another decoder: the student's samples are its own
    plain = pipe(task="svg", decoder_steps=STUDENT_STEPS, **kw)
    assert plain.settings["signal_decoder"] == "autoencoder"
    assert not torch.equal(fast.frames, plain.frames)
    # the same seed and settings reproduce the student's sample
    assert torch.equal(fast.frames, taught(task="svg", decoder_steps=STUDENT_STEPS, **kw).frames)


def test_low_memory_runs_the_student_from_the_folder(student_dir, taught):
    low = SoundingVideoPipeline.from_pretrained(student_dir, low_memory=True)
    kw = {"n": 1, "seed": 5, "steps": 2, "decoder_steps": STUDENT_STEPS, "progress": False}
    out = low(task="svg", **kw)
    assert out.settings["signal_decoder"] == "few-step student"
    # the student's weights are read for its stage and dropped after it
    assert {p.device.type for p in low.decoder_student[0].parameters()} == {"meta"}
    dtype = torch.bfloat16 if devices.cpu_has_native_bf16() else None
    reference = SoundingVideoPipeline.from_pretrained(student_dir, dtype=dtype)(task="svg", **kw)
    assert (out.frames - reference.frames).abs().max() < 2e-2


def test_cli_decoder_steps_pick_the_student(student_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", "--model", str(student_dir), "--n", "1", "--steps", "2", "--decoder-steps",
                 str(STUDENT_STEPS), "--out", str(out), "--quiet"]) == 0
    records = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    assert any(r.get("signal_decoder") == "few-step student" for r in records), records


def test_a_broken_student_is_a_one_line_error(student_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(student_dir, broken)
    (broken / STUDENT_NAME / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="few-step signal decoder"):
        SoundingVideoPipeline.from_pretrained(broken)
    shutil.rmtree(broken / STUDENT_NAME)
    with pytest.raises(WeightsError, match="decoder_student"):
        SoundingVideoPipeline.from_pretrained(broken)
