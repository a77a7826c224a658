"""One intra-op thread for these tests.

The networks here are tiny (a few MFLOPs per step), so threads bring nothing,
and on a shared, oversubscribed CPU two threads per process make each small op
10-20x slower (measured: 0.13 s vs 1-2.7 s per tiny DiT training step).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
