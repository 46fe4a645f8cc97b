"""``lore-train`` under ``torchrun``: one process per device, each holding its users.

    torchrun --nproc_per_node 8 $(which lore-train) --dataset data/big --K 1 2 4

``WORLD_SIZE`` > 1 in the environment (torchrun sets it, with ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) makes the command
distributed. Each process joins the default process group (``nccl`` when
training on CUDA, ``gloo`` on CPU), reads its pair-balanced share of the data
(`DataSource.load_process_share`), and runs the same sweep as one process: V fitted
jointly (`fit_distributed`), its own unseen users fitted few-shot, per-user
accuracies and Laplace posteriors computed on its own users (under the prior
of every process's seen users, gathered to all). Process 0 gathers the
per-user accuracies, the logits and the posteriors, and writes results.json, results.csv, the plot and
the checkpoints only after every cell of every process has finished, through
a staging directory beside the output moved into place at the end: a failed
run leaves the output directory as it was.

Every collective is bounded (`lore_datasets.runtime.collectives`): a process that raises, dies or
hangs makes every other process exit non-zero with one line within
``timeout`` seconds (plus the watchdog's grace), never hang.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from lore_datasets import SPLITS, Benchmark
from lore_datasets.runtime import durable
from lore_datasets.runtime.collectives import (
    Process,
    all_gather_object,
    check_agree,
    gather_object,
    on_terminate,
)
from lore_datasets.runtime.outputs import publish

from .config import TrainConfig
from .experiment import cell_entry, save_cell, sweep_config, write_outputs
from .metrics import per_user_accuracy, summarize
from .model import PersonalRewardModel
from .results import new_results
from .sweep import SweepRun, sweep


def run_distributed_sweep(
    process: Process,
    part: Benchmark,
    Ks: list[int],
    alphas: list[float],
    config: TrainConfig,
    out_dir: Path,
    *,
    run_config: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any] | None:
    """`run_sweep` across processes: ``part`` is this process's share
    (`DataSource.load_process_share`); the results on process 0, None on the others."""
    block = part.meta.get("users_block", {})
    meta = {k: v for k, v in part.meta.items() if k != "users_block"}
    settings = sweep_config(Ks, alphas, config, run_config)
    settings["train"] = {**settings["train"], "device": None}  # processes differ only there
    check_agree((block.get("digest"), part.dim, repr(sorted(meta.items())), repr(settings)),
                "data or settings (every process must read the same data with the same flags)")
    root = process.rank == 0
    run_config = {**run_config, "processes": {"world_size": process.world_size,
                                              "backend": process.backend}}
    results = new_results(sweep_config(Ks, alphas, config, run_config), meta, config.device)
    users = gather_object((part.seen_train.user_ids, part.unseen_fewshot.user_ids), "the user ids")
    cells: list[tuple[SweepRun, torch.Tensor, dict[str, torch.Tensor]]] = []
    for run in sweep(part, Ks, alphas, config, progress=progress and root, distributed=True):
        entry = cell_entry(run)
        if run.model is not None:
            precisions = _own_posteriors(run.model, part, f"K={run.K} alpha={run.alpha:g}")
            mine = ({s: per_user_accuracy(run.model.margin(part.split(s)), part.split(s))
                     for s in SPLITS}, run.model.W.detach().cpu(), precisions)
            every = gather_object(mine, f"the results of K={run.K} alpha={run.alpha:g}")
            if every is not None:
                for s in SPLITS:
                    entry[s] = summarize({u: a for scores, _, _ in every
                                          for u, a in scores[s].items()})
                cells.append((run, _full_logits(every, users),
                              {u: h for _, _, (ids, H) in every for u, h in zip(ids, H)}))
        results["runs"].append(entry)
    if not root:
        return None
    assert users is not None
    _write(results, cells, users, meta, out_dir)
    return results


def _own_posteriors(model: PersonalRewardModel, part: Benchmark,
                    cell: str) -> tuple[list[str], torch.Tensor]:
    """This process's users and their Laplace precisions [N, K, K] (as `run_sweep` stores
    them; one tensor, not a pickled tensor per user), under the population prior of every
    process's seen users (gathered here: each holds a share)."""
    seen = torch.tensor(model.seen, dtype=torch.bool, device=model.W.device)
    every = all_gather_object(model.weights().detach()[seen].cpu(),
                              f"the seen users' weights of {cell}")
    alpha = model.population_prior(seen_weights=torch.cat(every))
    mine: list[str] = []
    for pairs in (part.seen_train, part.unseen_fewshot):
        if pairs.num_users:
            model.fit_posterior(pairs, alpha=alpha)
            mine += map(str, pairs.user_ids)
    held = model.posterior_precisions()
    K = model.K
    H = torch.stack([held[u] for u in mine]) if mine else torch.zeros(0, K, K, dtype=torch.float64)
    return mine, H.cpu()


def _full_logits(every: list[Any], users: list[Any]) -> torch.Tensor:
    """All processes' logits in the single-process order: seen users, then unseen users."""
    seen = [W[: len(s)] for (_, W, _), (s, _) in zip(every, users, strict=True)]
    unseen = [W[len(s):] for (_, W, _), (s, _) in zip(every, users, strict=True)]
    return torch.cat(seen + unseen)


def _write(results: dict[str, Any],
           cells: list[tuple[SweepRun, torch.Tensor, dict[str, torch.Tensor]]],
           users: list[Any], meta: dict[str, Any], out_dir: Path) -> None:
    """Write every output into a staging directory beside ``out_dir``, then move them in."""
    seen_ids = [u for s, _ in users for u in s]
    unseen_ids = [u for _, u in users for u in u]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = durable.new_dir(out_dir, "partial")
    cancel = on_terminate(lambda: shutil.rmtree(staging, ignore_errors=True))
    try:
        for (run, W, precisions), entry in zip(cells, [r for r in results["runs"] if not r.get("skipped")],
                                   strict=True):
            local = run.model
            assert local is not None
            model = PersonalRewardModel(
                local.V, W, seen_ids + unseen_ids, tau=local.tau, K=local.K, v_ref=local.v_ref,
                seen=[True] * len(seen_ids) + [False] * len(unseen_ids), meta=local.meta,
                train_config=local.train_config,
            ).add_posteriors(precisions)  # score(..., return_std=True), as one process's run
            entry["checkpoint"] = save_cell(model, meta, staging, run.K, run.alpha)
        write_outputs(results, staging)
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        cancel()
