"""Joint training across torch.distributed processes (docs/architecture.md, "Scaling out").

Users are sharded: each process passes ``fit_distributed`` only its own
users' pairs (a contiguous block of one user list, blocks in process rank
order) and keeps their rows of W. V is replicated: every process draws the
same V0 from the seed, V's gradient is summed over processes every step, so
Adam takes the same step everywhere and the run equals the single-process
``fit`` on all users up to float summation order.

Here ``process_rank``/``world_size`` are torch.distributed's rank and world
size; K is always the number of basis columns (``TrainConfig.K``). The
``lore-train`` command under ``torchrun`` does all of this (``launch.py``);
by hand::

    # torchrun --nproc_per_node 8 train.py
    import os
    import torch, torch.distributed as dist
    from lore_datasets import read_process_share
    from lore_train import TrainConfig
    from lore_train.distributed import fit_distributed

    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl")            # "gloo" on CPU
    part = read_process_share("data/big", dist.get_rank(), dist.get_world_size())
    model, history = fit_distributed(part.seen_train, TrainConfig(K=3, device="cuda"))
    # model: V and this process's users
    dist.destroy_process_group()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from lore_datasets import PreferencePairs
from lore_datasets.runtime.collectives import (
    all_gather_object,
    all_reduce,
    check_agree,
    local_device,
)

from . import prior as prior_lib
from .config import TrainConfig
from .model import PersonalRewardModel
from .objective import row_weights
from .trainer import FitHistory, finish, fit, initial_params, optimize


@dataclass(frozen=True)
class UserBlock:
    """Where one process's users sit in the whole: users ``first_user`` on, of ``total_users``."""

    first_user: int
    total_users: int
    total_pairs: int


def user_block(pairs: PreferencePairs, what: str = "the users of each process") -> UserBlock:
    """This process's place among all processes' blocks (one all-gather of two counts)."""
    counts = all_gather_object((pairs.num_users, pairs.num_pairs), what)
    rank = dist.get_rank()
    return UserBlock(sum(n for n, _ in counts[:rank]), sum(n for n, _ in counts),
                     sum(m for _, m in counts))


def fit_distributed(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    v_ref: torch.Tensor | None = None,
    progress: bool = True,
) -> tuple[PersonalRewardModel, FitHistory]:
    """``fit`` over the default process group; each process passes its own users' pairs.

    The processes' ``pairs`` are consecutive blocks of one user list, in
    process rank order (``lore_datasets.read_process_share`` gives each its
    pair-balanced block); a block may be empty. Returns V and this
    process's users' logits (the same model ``fit`` on all users would give,
    restricted to them) and the loss curve of the whole objective.
    ``config.device`` "cuda" means this process's GPU (``LOCAL_RANK``). The
    cosine penalty on V is added by process 0 only, so it enters the summed
    gradient once; ``pair_mean`` divides by the pairs of all processes.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "fit_distributed needs an initialized default process group: launch with torchrun "
            "and call torch.distributed.init_process_group() first (or use lore_train.fit)"
        )
    process_rank = dist.get_rank()
    device = torch.device(local_device(config.device))
    settings = {k: v for k, v in config.to_dict().items() if k != "device"}
    check_agree((pairs.dim, sorted(settings.items())),
                "a TrainConfig or feature dim (every setting but device must agree)")
    if config.K == 0:  # the reference head: nothing to train, nothing to share
        return fit(pairs, config, v_ref=v_ref, progress=False)
    if config.early_stopping:
        raise ValueError("fit_distributed does not do early stopping; use lore_train.fit")
    if config.alpha > 0 and v_ref is None:
        raise ValueError("across processes, alpha > 0 needs the data's v_ref: the population "
                         "head that anchors V otherwise is fitted in one process (run without "
                         "torchrun, or with alpha 0)")
    block = user_block(pairs)
    V0, W0 = initial_params(pairs, config, first_user=block.first_user,
                            total_users=block.total_users)
    c = row_weights(pairs, config.reduction, total_pairs=block.total_pairs)
    V = V0.to(device).requires_grad_()
    W = W0.to(device).requires_grad_()
    history = optimize(
        V,
        W,
        pairs,
        c,
        v_ref,
        config,
        progress=progress and process_rank == 0,
        all_reduce=lambda t: all_reduce(t, "the sum of V's gradient"),
        penalize=process_rank == 0,
    )
    model = PersonalRewardModel(
        V.detach(), W.detach(), pairs.user_ids, tau=config.tau, K=config.K, v_ref=v_ref
    ).to(device)
    return finish(model, config, all_reduce_max=lambda t: all_reduce(
        t, "the column weights for pruning", dist.ReduceOp.MAX)), history


def population_prior_across(model: PersonalRewardModel) -> torch.Tensor:
    """The population prior of every process's seen users (each process holds only
    its own): their weights gathered in process order, then one Dirichlet fit, as
    one process holding all of them would fit it."""
    seen = torch.tensor(model.seen, dtype=torch.bool)
    mine = model.weights().detach()[seen.to(model.W.device)].cpu()
    every = all_gather_object(mine, "the seen users' weights for the population prior")
    return prior_lib.fit_dirichlet(torch.cat(every)).to(model.W.device)
