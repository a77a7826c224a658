"""One intra-op thread for the VAE tests.

These tests run many small convolutions; on a shared 2-core machine two OpenMP
threads spin against other processes and run several times slower than one.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
