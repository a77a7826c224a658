"""Seeded, epoch-indexed, sharded batch order.

Epoch ``e`` is one permutation of the dataset drawn from a torch.Generator
seeded from ``(seed, e)``. It is cut into global batches of
``batch_size * num_processes`` items (an incomplete last global batch is
dropped) and process ``r`` takes the ``r``-th slice of each. The position
``(epoch, batch)`` therefore fixes the data order exactly, whatever happened
before, which is what resume relies on. Resuming with a different number of
processes or batch size gives a different (still valid) order.

Accelerate's prepared dataloaders are not used: their skip-to-position and
seeding are tied to their own sampler state, while this order is a pure
function of (seed, epoch, batch, rank).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def mixed_seed(*values: int) -> int:
    """A 63-bit seed mixing non-negative integers (no collisions between nearby tuples)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def batches_per_epoch(num_items: int, batch_size: int, num_processes: int) -> int:
    return num_items // (batch_size * num_processes)


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """[num_items] int64: the item order of ``epoch``."""
    gen = torch.Generator().manual_seed(mixed_seed(seed, epoch))
    return torch.randperm(num_items, generator=gen)


class ShardedEpochSampler(Sampler[list[int]]):
    """Batches of dataset indices for process ``rank`` in ``epoch``, from batch ``start_batch`` on."""

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int,
                 rank: int = 0, num_processes: int = 1, start_batch: int = 0):
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.rank = rank
        self.num_processes = num_processes
        self.start_batch = start_batch

    def __len__(self) -> int:
        return max(0, batches_per_epoch(self.num_items, self.batch_size, self.num_processes) - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_permutation(self.num_items, self.seed, self.epoch)
        for b in range(self.start_batch, self.start_batch + len(self)):
            yield self.batch_indices(b, order)

    def batch_indices(self, batch: int, order: torch.Tensor | None = None) -> list[int]:
        """Dataset indices of this process's part of global batch ``batch`` of the epoch."""
        if order is None:
            order = epoch_permutation(self.num_items, self.seed, self.epoch)
        first = batch * self.batch_size * self.num_processes + self.rank * self.batch_size
        return order[first:first + self.batch_size].tolist()
