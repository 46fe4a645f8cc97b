"""A sweep over ranks K and regularization strengths alpha on one benchmark.

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
from .model import PersonalRewardModel
from .trainer import FitHistory, fit, personalize


@dataclass
class SweepRun:
    """One (K, alpha) cell: a model over seen and unseen users, or why it was skipped."""

    rank: int
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
    ranks: Iterable[int],
    alphas: Iterable[float] = (0.0,),
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
) -> Iterator[SweepRun]:
    """Yield one `SweepRun` per (alpha, K), alpha outer, K inner (the reference's order).

    K = 0 without a reference head is skipped with the reason, not an error
    (so is alpha > 0 with ``anchor="v_ref"``; the default anchor falls back
    to the population head).
    Cells are yielded as they finish so a caller can report or save each.
    """
    config = config or TrainConfig()
    for alpha in alphas:
        for rank in ranks:
            cell = config.with_(rank=rank, alpha=alpha)
            if rank == 0 and benchmark.v_ref is None:
                yield SweepRun(rank, alpha, None, None, skipped="no reference head (v_ref) in this data")
                continue
            if alpha > 0 and benchmark.v_ref is None and rank > 0 and cell.anchor == "v_ref":
                yield SweepRun(rank, alpha, None, None,
                               skipped="anchor 'v_ref' (alpha > 0) needs v_ref; this data has none")
                continue
            start = time.perf_counter()
            model, history = fit(benchmark.seen_train, cell, v_ref=benchmark.v_ref, progress=progress)
            train_seconds = time.perf_counter() - start
            start = time.perf_counter()
            model = personalize(model, benchmark.unseen_fewshot, cell, progress=progress)
            yield SweepRun(
                rank, alpha, model, history, train_seconds, time.perf_counter() - start
            )
