"""Seeded, epoch-indexed, sharded batch order."""

from __future__ import annotations

import torch

from mmldm.training.data import ShardedEpochSampler, batches_per_epoch, epoch_permutation


def test_order_is_a_function_of_seed_and_epoch() -> None:
    a = list(ShardedEpochSampler(50, 4, seed=3, epoch=2))
    assert a == list(ShardedEpochSampler(50, 4, seed=3, epoch=2))
    assert a != list(ShardedEpochSampler(50, 4, seed=3, epoch=1))
    assert a != list(ShardedEpochSampler(50, 4, seed=4, epoch=2))
    assert len(a) == 12 and all(len(b) == 4 for b in a)  # incomplete last batch dropped
    flat = [i for b in a for i in b]
    assert len(set(flat)) == 48


def test_ranks_take_disjoint_slices_of_each_global_batch() -> None:
    shards = [list(ShardedEpochSampler(30, 3, seed=0, epoch=0, rank=r, num_processes=3)) for r in range(3)]
    assert batches_per_epoch(30, 3, 3) == 3 == len(shards[0])
    order = epoch_permutation(30, 0, 0).tolist()
    for b in range(3):
        assert shards[0][b] + shards[1][b] + shards[2][b] == order[9 * b: 9 * (b + 1)]


def test_start_batch_continues_the_same_order() -> None:
    full = list(ShardedEpochSampler(40, 2, seed=1, epoch=5, rank=1, num_processes=2))
    tail = list(ShardedEpochSampler(40, 2, seed=1, epoch=5, rank=1, num_processes=2, start_batch=6))
    assert tail == full[6:]
    sampler = ShardedEpochSampler(40, 2, seed=1, epoch=5, rank=1, num_processes=2)
    assert sampler.batch_indices(7) == full[7]
    assert torch.equal(torch.sort(epoch_permutation(40, 1, 5)).values, torch.arange(40))
