"""A sweep over K (basis columns) and regularization strengths alpha on one benchmark.

Each (K, alpha) fits V and the seen users on ``seen_train``, then adds the
unseen users fitted few-shot on ``unseen_fewshot`` with V frozen, so one
model scores all four evaluation settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lore_datasets import Benchmark, DataError

from .config import TrainConfig
from .distributed import fit_distributed, population_prior_across, user_block
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


def check_sweep(benchmark: Benchmark, Ks: Iterable[int], alphas: Iterable[float],
                config: TrainConfig, *, source: str = "the data") -> None:
    """Refuse a sweep before it trains anything: K > d, or every cell would be skipped.

    A sweep whose cells are all skipped would write an empty table and exit
    as if it had worked; some skipped cells (say, K = 0 on data without a
    reference head next to K = 2) are fine and reported per cell.
    """
    Ks, alphas = list(Ks), list(alphas)
    if not Ks or not alphas:
        raise ValueError("nothing to train: give at least one K and one alpha")
    for K in Ks:
        config.with_(K=K).check_dim(benchmark.dim, source=source)
    has_v_ref = benchmark.v_ref is not None
    reasons = {skip_reason(config.with_(K=K, alpha=a), has_v_ref=has_v_ref)
               for a in alphas for K in Ks}
    if None not in reasons:
        raise DataError(f"{source}: nothing can train, every (K, alpha) cell would be skipped: "
                        + "; ".join(sorted(r for r in reasons if r)))


def sweep(
    benchmark: Benchmark,
    Ks: Iterable[int],
    alphas: Iterable[float] = (0.0,),
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    fit_options: dict[str, Any] | None = None,
    distributed: bool = False,
) -> Iterator[SweepRun]:
    """Yield one `SweepRun` per (alpha, K), alpha outer, K inner (the reference's order).

    A cell the data cannot support (`skip_reason`) is yielded skipped with the
    reason, not raised. Cells are yielded as they finish so a caller can
    report or save each. ``fit_options`` go to every `fit` (say, a
    training-state directory). ``distributed``: ``benchmark`` is this
    process's block of seen and of unseen users (`lore_datasets.read_process_share`);
    V is fitted with `fit_distributed` and each process fits its own unseen
    users, so every model holds V and this process's users only.
    """
    config = config or TrainConfig()
    fit_cell = fit_distributed if distributed else fit
    options = dict(fit_options or {})
    if distributed and options:
        raise ValueError(f"training-state checkpoints ({', '.join(options)}) are not supported "
                         "across processes; run without --resume/--checkpoint-every under torchrun")
    unseen = user_block(benchmark.unseen_fewshot, "the unseen users of each process") \
        if distributed else None
    for alpha in alphas:
        for K in Ks:
            cell = config.with_(K=K, alpha=alpha)
            reason = skip_reason(cell, has_v_ref=benchmark.v_ref is not None)
            if reason:
                yield SweepRun(K, alpha, None, None, skipped=reason)
                continue
            start = time.perf_counter()
            model, history = fit_cell(benchmark.seen_train, cell, v_ref=benchmark.v_ref,
                                      progress=progress, **options)
            train_seconds = time.perf_counter() - start
            start = time.perf_counter()
            population = None
            if unseen is not None and cell.fewshot_prior == "population" and K > 1:
                population = population_prior_across(model)
            model = personalize(
                model, benchmark.unseen_fewshot, cell, progress=progress and unseen is None,
                first_user=unseen.first_user if unseen else 0,
                total_users=unseen.total_users if unseen else None,
                population=population, seen_pairs=benchmark.seen_train,
            )
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
