"""Pair-balanced contiguous user blocks for data-parallel ranks.

Splitting users into equal *counts* leaves the rank with the heavy users
doing most of the work while the others wait. Here rank r's block ends at
the user boundary nearest to (r + 1) * M / world in the cumulative pair
count, so every rank's pair count is within one user's pairs of M / world
(precisely: each boundary is at most half the straddling user's pairs from
its target). Blocks stay contiguous, so a rank reads one row range
(``storage.read_users``); the plan needs only the per-user offsets.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .errors import DataError
from .pairs import SPLITS, Benchmark


def balanced_user_blocks(
    offsets: torch.Tensor | np.ndarray | Sequence[int], world_size: int
) -> list[tuple[int, int]]:
    """``world_size`` contiguous ``(user_start, user_stop)`` blocks covering every user.

    ``offsets`` is int [N+1], nondecreasing from 0 (user u owns rows
    offsets[u]:offsets[u+1]). A block may be empty (more ranks than users,
    or a user holding more than a rank's share); users with no pairs go with
    the block whose boundary they sit beside. A pure function: every rank
    computes the same plan.
    """
    off = np.asarray(offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets)
    if isinstance(world_size, bool) or not isinstance(world_size, (int, np.integer)) or world_size < 1:
        raise DataError(f"world_size must be a positive integer, got {world_size!r}")
    if off.ndim != 1 or off.size < 1 or not np.issubdtype(off.dtype, np.integer):
        raise DataError(f"offsets must be a 1-D integer table [N+1], got shape {off.shape} {off.dtype}")
    if off[0] != 0 or (np.diff(off) < 0).any():
        raise DataError("offsets must start at 0 and never decrease")
    n, total = off.size - 1, int(off[-1])
    bounds = [0]
    for r in range(1, world_size):
        target = total * r / world_size
        # the user boundary whose cumulative count is nearest the target
        right = int(np.searchsorted(off, target, side="left"))
        left = max(right - 1, 0)
        right = min(right, n)
        best = left if target - off[left] <= off[right] - target else right
        bounds.append(max(best, bounds[-1]))
    bounds.append(n)
    return list(itertools.pairwise(bounds))


def block_pairs(offsets: torch.Tensor | np.ndarray | Sequence[int],
                blocks: Sequence[tuple[int, int]]) -> list[int]:
    """Pairs in each block (to log or check a plan)."""
    off = np.asarray(offsets.cpu() if isinstance(offsets, torch.Tensor) else offsets)
    return [int(off[b] - off[a]) for a, b in blocks]


def offsets_digest(offsets: Mapping[str, torch.Tensor]) -> str:
    """A short fingerprint of every split's user offsets, so processes can check
    they read the same data (same users per split, same pairs per user)."""
    crc = 0
    for split in SPLITS:
        crc = zlib.crc32(np.ascontiguousarray(np.asarray(offsets[split]), dtype=np.int64).tobytes(),
                         crc)
    return f"{crc:08x}"


def process_blocks(offsets: Mapping[str, torch.Tensor], process_rank: int, world_size: int
                   ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Process ``process_rank``'s (seen, unseen) user blocks: seen users balanced on
    ``seen_train`` pairs, unseen users on ``unseen_fewshot`` pairs (the pairs each process
    trains on)."""
    if not 0 <= process_rank < world_size:
        raise DataError(f"process_rank must be in [0, world_size={world_size}), "
                        f"got {process_rank}")
    return (balanced_user_blocks(offsets["seen_train"], world_size)[process_rank],
            balanced_user_blocks(offsets["unseen_fewshot"], world_size)[process_rank])


def process_share(bench: Benchmark, process_rank: int, world_size: int) -> Benchmark:
    """The same share `storage.read_process_share` reads from disk, cut from a Benchmark in memory."""
    offsets = {split: bench.split(split).offsets for split in SPLITS}
    seen, unseen = process_blocks(offsets, process_rank, world_size)
    parts = {split: bench.split(split).user_range(*(seen if split.startswith("seen") else unseen))
             for split in SPLITS}
    meta = {**bench.meta, "users_block": {"seen": list(seen), "unseen": list(unseen),
                                          "rank": process_rank, "world_size": world_size,
                                          "digest": offsets_digest(offsets)}}
    return Benchmark(**parts, v_ref=bench.v_ref, meta=meta)
