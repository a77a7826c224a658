"""The diffusion objective's settings, importable without torch (configs and the CLI read them)."""

from __future__ import annotations

import dataclasses
from typing import Literal

ObjectiveName = Literal["epsilon", "flow"]


@dataclasses.dataclass
class DiffusionConfig:
    """Objective settings (the sampler is chosen at sampling time; :func:`mmldm.diffusion.make_objective`)."""

    #: "epsilon" (the paper's DDPM) or "flow" (rectified flow)
    objective: ObjectiveName = "epsilon"
    #: DDPM steps T; for flow, the scale from t in [0,1] to the network's timestep input
    num_train_timesteps: int = 1000
    #: scaled-linear beta schedule (epsilon objective)
    beta_start: float = 0.00085
    beta_end: float = 0.012
    #: logit-normal timestep density (flow objective)
    logit_mean: float = 0.0
    logit_std: float = 1.0
