"""EMA: starts as a copy, then follows the warmed-up decay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmldm.training.ema import EMA, ema_decay


def test_decay_schedule() -> None:
    assert ema_decay(0, 0.99, 10) == 0.0
    assert ema_decay(5, 0.99, 10) == pytest.approx(0.495)
    assert ema_decay(50, 0.99, 10) == 0.99
    assert ema_decay(0, 0.99, 0) == 0.0 and ema_decay(1, 0.99, 0) == 0.99


def test_ema_starts_as_copy_and_tracks_the_average() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = EMA(net, decay=0.5, warmup_steps=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(7.0)
    ema.update(net)  # decay 0: a copy of the current weights
    for a, b in zip(ema.module.parameters(), net.parameters()):
        assert torch.equal(a, b)
    before = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(2.0)
    ema.update(net)  # decay 0.5: halfway
    for old, new, cur in zip(before, ema.module.parameters(), net.parameters()):
        assert torch.allclose(new, 0.5 * old + 0.5 * cur)
    assert torch.equal(ema.module[1].running_mean, torch.full((3,), 7.0))
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.updates == 2
