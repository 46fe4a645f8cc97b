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
) -> Iterator[SweepRun]:
    """Yield one `SweepRun` per (alpha, K), alpha outer, K inner (the reference's order).

    A cell the data cannot support (`skip_reason`) is yielded skipped with the
    reason, not raised. Cells are yielded as they finish so a caller can
    report or save each.
    """
    config = config or TrainConfig()
    for alpha in alphas:
        for K in Ks:
            cell = config.with_(K=K, alpha=alpha)
            reason = skip_reason(cell, has_v_ref=benchmark.v_ref is not None)
            if reason:
                yield SweepRun(K, alpha, None, None, skipped=reason)
                continue
            start = time.perf_counter()
            model, history = fit(benchmark.seen_train, cell, v_ref=benchmark.v_ref, progress=progress)
            train_seconds = time.perf_counter() - start
            start = time.perf_counter()
            model = personalize(model, benchmark.unseen_fewshot, cell, progress=progress)
            yield SweepRun(K, alpha, model, history, train_seconds, time.perf_counter() - start)


def skip_reason(cell: TrainConfig, *, has_v_ref: bool) -> str | None:
    """Why ``cell`` cannot be fitted on data with or without a reference head (None: it can).

    K = 0 *is* the reference head; alpha > 0 needs v_ref only when the anchor
    insists on it (the default falls back to the population head).
    """
    if has_v_ref:
        return None
    if cell.K == 0:
        return "no reference head (v_ref) in this data"
    if cell.alpha > 0 and cell.anchor == "v_ref":
        return "anchor 'v_ref' (alpha > 0) needs v_ref; this data has none"
    return None
