"""A sweep over K (basis columns) and regularization strengths alpha on one benchmark.

Each (K, alpha) fits V and the seen users on ``seen_train``, then adds the
unseen users fitted few-shot on ``unseen_fewshot`` with V frozen, so one
model scores all four evaluation settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lore_datasets import Benchmark

from .config import TrainConfig
from .distributed import fit_distributed, user_block
from .fewshot import personalize
from .model import PersonalRewardModel
from .trainer import FitHistory, fit


@dataclass
class SweepRun:
    """One (K, alpha) cell: a model over seen and unseen users, or why it was skipped."""

    K: int
    alpha: float
    model: PersonalRewardModel | None
    history: FitHistory | None
    train_seconds: float = 0.0
    fewshot_seconds: float = 0.0
    skipped: str | None = None

    @property
    def kept_rank(self) -> int | None:
        return None if self.model is None else self.model.kept_rank


def sweep(
    benchmark: Benchmark,
    Ks: Iterable[int],
    alphas: Iterable[float] = (0.0,),
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    distributed: bool = False,
) -> Iterator[SweepRun]:
    """Yield one `SweepRun` per (alpha, K), alpha outer, K inner (the reference's order).

    K = 0 without a reference head is skipped with the reason, not an error.
    Cells are yielded as they finish so a caller can report or save each.
    ``distributed``: ``benchmark`` is this process's block of seen and of
    unseen users (`lore_datasets.read_rank`); V is fitted with
    `fit_distributed` and each process fits its own unseen users, so every
    model holds V and this process's users only.
    """
    config = config or TrainConfig()
    fit_cell = fit_distributed if distributed else fit
    unseen = user_block(benchmark.unseen_fewshot, "the unseen users of each process") \
        if distributed else None
    for alpha in alphas:
        for K in Ks:
            cell = config.with_(K=K, alpha=alpha)
            if K == 0 and benchmark.v_ref is None:
                yield SweepRun(K, alpha, None, None, skipped="no reference head (v_ref) in this data")
                continue
            if alpha > 0 and benchmark.v_ref is None and K > 0:
                yield SweepRun(K, alpha, None, None, skipped="alpha > 0 needs v_ref; this data has none")
                continue
            start = time.perf_counter()
            model, history = fit_cell(benchmark.seen_train, cell, v_ref=benchmark.v_ref,
                                      progress=progress)
            train_seconds = time.perf_counter() - start
            start = time.perf_counter()
            model = personalize(
                model, benchmark.unseen_fewshot, cell, progress=progress and unseen is None,
                first_user=unseen.first_user if unseen else 0,
                total_users=unseen.total_users if unseen else None,
            )
            yield SweepRun(K, alpha, model, history, train_seconds, time.perf_counter() - start)
