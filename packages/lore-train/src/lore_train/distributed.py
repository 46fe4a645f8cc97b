"""Joint training across torch.distributed processes (docs/architecture.md, "Scaling out").

Users are sharded: each process owns a contiguous block of users, their rows
of Z (the only rows it moves to its device) and their rows of W. V is
replicated: every process draws the same V0 from the seed, V's gradient is
summed over processes every step, so Adam takes the same step everywhere and
the run equals the single-process ``fit`` up to float summation order.

Here ``process_rank``/``world_size`` are torch.distributed's rank and world
size; K is always the number of basis columns (``TrainConfig.K``).

Launch one process per device with ``torchrun``; every process loads the same
data and calls ``fit_distributed``::

    # torchrun --nproc_per_node 8 train.py
    import os
    import torch, torch.distributed as dist
    from lore_datasets import load_dataset
    from lore_train import TrainConfig
    from lore_train.distributed import fit_distributed

    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")            # "gloo" on CPU
    bench = load_dataset("prism")
    model, history = fit_distributed(bench.seen_train, TrainConfig(K=3, device="cuda"))
    if dist.get_rank() == 0:
        model.save("runs/k3")
    dist.destroy_process_group()
"""

from __future__ import annotations

import os
import zlib

import torch
import torch.distributed as dist

from lore_datasets import PreferencePairs

from .anchor import cosine_anchor
from .config import TrainConfig
from .model import PersonalRewardModel
from .trainer import FitHistory, finish, fit, initial_params, optimize, row_weights


def shard_users(num_users: int, world_size: int, process_rank: int) -> range:
    """The users process ``process_rank`` owns: a contiguous block, sizes differing by at most one."""
    if not 0 <= process_rank < world_size:
        raise ValueError(f"process rank {process_rank} is outside a world of {world_size}")
    base, extra = divmod(num_users, world_size)
    start = process_rank * base + min(process_rank, extra)
    return range(start, start + base + (process_rank < extra))


def fit_distributed(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    v_ref: torch.Tensor | None = None,
    progress: bool = True,
) -> tuple[PersonalRewardModel, FitHistory]:
    """``fit`` over the default process group; every process passes the same ``pairs``.

    Returns the full model (all users, in ``pairs``' order) on every process
    and the loss curve of the whole objective. ``config.device`` "cuda" means
    this process's GPU (``LOCAL_RANK``). Row weights come from the full
    ``pairs``, so ``pair_mean`` divides by the global number of pairs; the
    cosine penalty on V is added by process 0 only, so it enters the summed
    gradient once.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "fit_distributed needs an initialized default process group: launch with torchrun "
            "and call torch.distributed.init_process_group() first (or use lore_train.fit)"
        )
    if config.K == 0:  # the reference head: nothing to train, nothing to share
        return fit(pairs, config, v_ref=v_ref, progress=False)
    if config.early_stopping:
        raise ValueError("fit_distributed does not do early stopping; use lore_train.fit")
    process_rank, world_size = dist.get_rank(), dist.get_world_size()
    device = _process_device(config.device)
    _check_same_run(pairs, config, device)

    V0, W0 = initial_params(pairs, config)
    mine = shard_users(pairs.num_users, world_size, process_rank)
    lo, hi = int(pairs.offsets[mine.start]), int(pairs.offsets[mine.stop])
    shard = PreferencePairs(
        pairs.features[lo:hi],
        pairs.user[lo:hi] - mine.start,
        pairs.user_ids[mine.start : mine.stop],
    )
    c = row_weights(pairs, config.reduction)[lo:hi]
    V = V0.to(device).requires_grad_()
    W = W0[mine.start : mine.stop].to(device).requires_grad_()

    def all_reduce(t: torch.Tensor) -> None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)

    # only process 0 adds the penalty, so only it needs the anchor (the population
    # head is a plain fit of every pair on this process)
    anchor = cosine_anchor(pairs, config, v_ref)[0] if process_rank == 0 else None
    history = optimize(
        V,
        W,
        shard,
        c,
        anchor,
        config,
        progress=progress and process_rank == 0,
        all_reduce=all_reduce,
        penalize=process_rank == 0,
    )
    model = PersonalRewardModel(
        V.detach(),
        _gather_rows(W.detach(), pairs.num_users, world_size),
        pairs.user_ids,
        tau=config.tau,
        K=config.K,
        v_ref=v_ref,
    ).to(device)
    return finish(model, config), history


def _process_device(name: str) -> torch.device:
    """A bare "cuda" means this process's GPU, not every process on GPU 0."""
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        local = os.environ.get("LOCAL_RANK")
        device = torch.device(
            "cuda", int(local) if local is not None else torch.cuda.current_device()
        )
    return device


def _check_same_run(pairs: PreferencePairs, config: TrainConfig, device: torch.device) -> None:
    """Fail on every process, rather than hang or drift, if they got different data or configs."""
    settings = {k: v for k, v in config.to_dict().items() if k != "device"}
    key = repr((pairs.num_pairs, pairs.dim, pairs.user_ids, sorted(settings.items())))
    mine = torch.tensor([zlib.crc32(key.encode())], dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    differ = [r for r, t in enumerate(every) if not torch.equal(t, every[0])]
    if differ:
        raise ValueError(
            f"process ranks {differ} were given other pairs or another TrainConfig than rank 0 "
            "(users, pair count, dim and every setting but device must agree)"
        )


def _gather_rows(W: torch.Tensor, num_users: int, world_size: int) -> torch.Tensor:
    """All processes' blocks of W, in user order (padded all_gather: blocks differ by one row)."""
    size = -(-num_users // world_size)
    padded = torch.zeros(size, W.shape[1], dtype=W.dtype, device=W.device)
    padded[: W.shape[0]] = W
    blocks = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(blocks, padded)
    return torch.cat([b[: len(shard_users(num_users, world_size, r))] for r, b in enumerate(blocks)])
