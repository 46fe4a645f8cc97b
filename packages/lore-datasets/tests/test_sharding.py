"""Pair-balanced user blocks: contiguous, covering, and each within one user's pairs of M / world."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lore_datasets import DataError
from lore_datasets.sharding import balanced_user_blocks, block_pairs


def offsets_of(counts) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def check_plan(counts, world: int) -> list[int]:
    off = offsets_of(counts)
    blocks = balanced_user_blocks(off, world)
    assert len(blocks) == world
    assert blocks[0][0] == 0 and blocks[-1][1] == len(counts)
    assert all(a <= b for a, b in blocks)
    assert all(blocks[i][1] == blocks[i + 1][0] for i in range(world - 1))
    pairs = block_pairs(off, blocks)
    assert sum(pairs) == int(off[-1])
    heaviest = max(counts, default=0)
    share = off[-1] / world
    assert all(abs(p - share) <= heaviest for p in pairs), (pairs, share, heaviest)
    return pairs


@pytest.mark.parametrize("seed", range(20))
def test_random_skewed_counts(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    counts = rng.zipf(1.8, size=n).clip(max=500) * rng.integers(0, 2, size=n)  # many empty users
    for world in (1, 2, 3, 4, 7, 8, 64, 1000):
        check_plan(counts.tolist(), world)


def test_equal_users_split_evenly():
    assert check_plan([20] * 1000, 4) == [5000] * 4
    assert balanced_user_blocks(offsets_of([20] * 1000), 4) == [(0, 250), (250, 500), (500, 750),
                                                                 (750, 1000)]


def test_balances_pairs_not_user_counts():
    # one heavy user then many light ones: equal user counts would give rank 0 almost everything
    counts = [1000] + [10] * 100
    pairs = check_plan(counts, 2)
    assert pairs == [1000, 1000]
    assert balanced_user_blocks(offsets_of(counts), 2) == [(0, 1), (1, 101)]


def test_more_ranks_than_users():
    pairs = check_plan([5, 5, 5], 8)
    assert sorted(pairs) == [0, 0, 0, 0, 0, 5, 5, 5]


def test_one_giant_user():
    pairs = check_plan([1, 1, 10_000, 1, 1], 4)
    assert max(pairs) >= 10_000 and sum(pairs) == 10_004


def test_empty_users_and_no_pairs():
    check_plan([0, 0, 7, 0, 0, 3, 0], 3)
    assert balanced_user_blocks([0, 0, 0], 2) == [(0, 0), (0, 2)]  # nothing to balance
    assert balanced_user_blocks([0], 3) == [(0, 0)] * 3  # no users at all


def test_accepts_a_tensor_and_is_deterministic():
    off = torch.tensor(offsets_of([3, 9, 1, 4, 4, 8]))
    assert balanced_user_blocks(off, 3) == balanced_user_blocks(off.numpy(), 3)


@pytest.mark.parametrize(
    ("offsets", "world", "match"),
    [
        ([0, 2, 1], 2, "never decrease"),
        ([1, 2], 2, "start at 0"),
        ([0.0, 2.0], 2, "integer"),
        ([[0, 1]], 2, "1-D"),
        ([0, 1], 0, "world_size"),
        ([0, 1], True, "world_size"),
    ],
)
def test_bad_arguments(offsets, world, match):
    with pytest.raises(DataError, match=match):
        balanced_user_blocks(np.asarray(offsets), world)
