"""A few-step signal decoder on disk: a model folder's ``decoder_student/`` (config.json + model.safetensors).

Kept apart from :mod:`mmldm.autoencoder.distill` (its training) so that loading a model for
generation imports no training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .model import HierarchicalAVAutoencoder
from .signal_decoder import SignalDecoder

#: a model folder's component holding the student (config.json + model.safetensors)
STUDENT_NAME = "decoder_student"
STUDENT_WHAT = "few-step signal decoder"

@dataclass
class StudentInfo:
    """``decoder_student/config.json``: how the student samples and what it was distilled from."""

    #: sampler steps (the ``--decoder-steps`` that selects it)
    steps: int
    teacher_steps_per_step: int
    #: the teacher's guidance scales, folded into the student
    video_guidance: float
    audio_guidance: float


def save_student(student: SignalDecoder, info: StudentInfo, directory: Path) -> Path:
    """Write the student as a folder: ``config.json`` (:class:`StudentInfo`) + ``model.safetensors``."""
    from ..config import to_dict
    from ..weights import save_pretrained_folder

    return save_pretrained_folder(directory, to_dict(info), student)


def load_student(directory: Path, autoencoder: HierarchicalAVAutoencoder,
                 device: torch.device | str = "cpu") -> tuple[SignalDecoder, StudentInfo]:
    """The student of ``autoencoder`` (its decoder's architecture) from a :func:`save_student` folder."""
    from ..weights import load_folder_module, read_folder_info

    info = read_folder_info(directory, StudentInfo, STUDENT_WHAT)
    return load_folder_module(SignalDecoder(autoencoder.resolved_config()), directory, STUDENT_WHAT, device), info


__all__ = ["STUDENT_NAME", "STUDENT_WHAT", "StudentInfo", "load_student", "save_student"]
