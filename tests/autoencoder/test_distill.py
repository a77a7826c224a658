"""The few-step signal decoder: the distillation target, the stage on the engine, decoding with the student."""

from __future__ import annotations


import pytest
import torch

from mmldm.autoencoder.distill import DecoderDistillConfig, DecoderDistillStage, student_grid, teacher_target
from mmldm.autoencoder.model import HierarchicalAVAutoencoder
from mmldm.diffusion import DiffusionConfig, make_objective
from mmldm.training.registry import get_stage


@pytest.mark.parametrize("objective_name", ["epsilon", "flow"])
def test_the_target_of_an_exact_teacher_is_the_clean_latent(objective_name):
    """A teacher that knows x0 keeps every deterministic step on the forward path of x0, so the
    one-step target it gives the student implies x0 itself, from every grid point."""
    objective = make_objective(objective_name)
    grid = student_grid(objective, 4)
    assert len(grid) == 5 and grid[-1] is None
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    for start, end in zip(grid[:-1], grid[1:]):
        t = start.expand(3)
        x_t = objective.add_noise(x0, eps, t)
        exact = lambda x, t: objective.output_from_x0(x0, x, t)  # noqa: E731
        target = teacher_target(exact, objective, x_t, t, None if end is None else end.expand(3), pieces=3)
        torch.testing.assert_close(objective.predict_x0(target, x_t, t), x0, atol=2e-3, rtol=1e-3)


def test_a_student_step_matches_several_teacher_steps():
    """With a teacher that is not exact, one student step on its target lands where the teacher's
    sub-steps land (the flow objective's Euler steps)."""
    objective = make_objective("flow")
    teacher = lambda x, t: 0.5 * x - 0.2 * t.view(-1, 1, 1, 1)  # noqa: E731 - any smooth velocity field
    x_t, start, end = torch.randn(2, 4, 4, 4), torch.full((2,), 0.9), torch.full((2,), 0.4)
    target = teacher_target(teacher, objective, x_t, start, end, pieces=4)
    landed = x_t + (end - start).view(-1, 1, 1, 1) * target  # one Euler step with the student's velocity
    x = x_t
    for j in range(4):
        t = start + (end - start) * j / 4
        x = x + ((end - start) / 4).view(-1, 1, 1, 1) * teacher(x, t)
    torch.testing.assert_close(landed, x, atol=1e-5, rtol=1e-5)


def test_the_stage_trains_and_the_student_decodes_in_its_steps(make_config, make_batch, tmp_path):
    from mmldm.autoencoder.config import SamplingConfig
    from mmldm.autoencoder.stage import AutoencoderDataConfig

    teacher = HierarchicalAVAutoencoder(make_config(diffusion=DiffusionConfig(objective="flow"),
                                                    sampling=SamplingConfig(steps=8, video_guidance=2.0,
                                                                            audio_guidance=1.5, chunk_size=4)))
    teacher.save_pretrained(tmp_path / "teacher")
    cfg = DecoderDistillConfig(teacher=str(tmp_path / "teacher"),
                               data=AutoencoderDataConfig(latent_cache="unused: the test feeds batches"))
    cfg.student.steps, cfg.student.teacher_steps_per_step = 2, 2
    assert get_stage("decoder-distill") is DecoderDistillStage
    stage = DecoderDistillStage()
    modules = stage.build(cfg)
    student = modules["model"]
    assert student is not modules["teacher"].decoder and student.training
    raw = make_batch(batch=2, seed=3)
    batch = {"video_latent": raw["video_latents"], "audio_latent": raw["audio_latent"], "class_id": raw["labels"]}
    with torch.no_grad():  # away from the teacher, so there is something to learn
        for param in student.unet.parameters():
            param.add_(0.02 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-4)
    losses = []
    for step in range(5):
        out = stage.losses(modules, batch, step, generator=torch.Generator().manual_seed(7))  # same draws each step
        optimizer.zero_grad()
        out["loss/model"].backward()
        optimizer.step()
        losses.append(out["loss/model"].item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    # decoding with the student: its own steps, no guidance batch
    student.eval()
    video_z, audio_z = (p.mode() for p in teacher.encode(raw["video_latents"], raw["audio_latent"]))
    calls = []
    forward = student.forward
    student.forward = lambda x, t, cond: calls.append(x.shape[0]) or forward(x, t, cond)
    frames, image = teacher.decode(video_z, audio_z, [0, 3], steps=2, video_guidance=1.0, audio_guidance=1.0,
                                   decoder=student, generator=torch.Generator().manual_seed(0))
    assert frames.shape == (2, 2, 4, 8, 8) and image.shape == (2, 4, 8, 8)
    assert len(calls) == 2 * 2 and max(calls) <= 4  # 2 steps per chunk (frames, audio), never a doubled batch


def test_export_adds_the_student_to_its_teachers_model_folder_only(tmp_path, config_yaml_describes):
    """A decoder-distill checkpoint (config + student weights) goes into the model folder whose
    autoencoder taught it; another model folder is refused in one line."""
    import copy
    import json
    import shutil

    from safetensors.torch import save_file

    from mmldm.autoencoder.student import STUDENT_NAME, load_student
    from mmldm.autoencoder.stage import AutoencoderDataConfig
    from mmldm.config import save_config
    from mmldm.errors import ConfigError
    from mmldm.export import export_student
    from mmldm.pipeline.pipeline import BUILTIN_MODEL

    def without_student(folder):
        """A copy of the built-in model without the student it ships (this test adds one)."""
        shutil.copytree(BUILTIN_MODEL, folder)
        shutil.rmtree(folder / STUDENT_NAME, ignore_errors=True)
        index = json.loads((folder / "model_index.json").read_text())
        index["components"].pop(STUDENT_NAME, None)
        (folder / "model_index.json").write_text(json.dumps(index))

    model = tmp_path / "model"
    without_student(model)
    teacher = HierarchicalAVAutoencoder.from_pretrained(model / "autoencoder")
    checkpoint = tmp_path / "run" / "checkpoints" / "step_000010"
    checkpoint.mkdir(parents=True)
    cfg = DecoderDistillConfig(teacher=str(model / "autoencoder"), data=AutoencoderDataConfig(latent_cache="c"))
    save_config(cfg, checkpoint / "config.yaml")
    student = copy.deepcopy(teacher.decoder)
    with torch.no_grad():
        next(student.parameters()).add_(1.0)  # a student is not its teacher
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(checkpoint / "model_model.safetensors"))

    export_student(checkpoint, model, default=True)
    index = json.loads((model / "model_index.json").read_text())
    assert index["components"][STUDENT_NAME] == STUDENT_NAME
    loaded, info = load_student(model / STUDENT_NAME, teacher)
    assert info.steps == 4 and info.video_guidance == teacher.cfg.sampling.video_guidance
    assert torch.equal(next(loaded.parameters()), next(student.parameters()))
    sampling = json.loads((model / "generator" / "generation.json").read_text())["sampling"]
    assert sampling["decoder_steps"] == 4
    from mmldm.pipeline import SoundingVideoPipeline

    config_yaml_describes(model, SoundingVideoPipeline.from_pretrained(model), STUDENT_NAME)

    other = tmp_path / "other"
    without_student(other)
    with torch.no_grad():
        other_ae = HierarchicalAVAutoencoder.from_pretrained(other / "autoencoder")
        next(other_ae.decoder.parameters()).add_(0.5)
    other_ae.save_pretrained(other / "autoencoder")
    with pytest.raises(ConfigError, match="distilled from"):
        export_student(checkpoint, other)
    assert not (other / STUDENT_NAME).exists()
