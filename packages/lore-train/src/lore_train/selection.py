"""Choosing K and alpha without looking at test pairs.

A validation set is carved from the seen users' *training* pairs: per user,
a seeded ``val_fraction`` of their rows (at least one when they have two or
more; a user with a single pair keeps it for training). Every (K, alpha) is
fitted on the rest and scored on it (macro accuracy over users); the best
wins, ties going to the smaller K, then the smaller alpha.

The chosen cell is then refitted on the *full* ``seen_train`` with the same
config: the validation rows were only held back to rank the candidates, and
the larger fit is the model a user would deploy. In ``lore-train --select``
that refit is exactly the sweep's cell for (K, alpha) (same data, config and
seed), so its test numbers are read from there instead of fitting twice.

The validation rows are drawn per pair within each user, not per prompt: a
seen user's validation pairs may share prompts with their training pairs,
so validation accuracy runs a little optimistic against ``seen_test`` when
that is split by prompt. It is used only to rank candidates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from lore_datasets import Benchmark, PreferencePairs

from .config import TrainConfig
from .metrics import SETTINGS, accuracy
from .trainer import fit

VAL_FRACTION = 0.2  # the default share of each seen user's training pairs held out
TIE_TOLERANCE = 1e-12
RULE = ("max macro validation accuracy over seen users; ties (within 1e-12) -> smaller K, "
        "then smaller alpha; the chosen cell is refitted on the full seen_train")
_STREAM = 0x5E1EC7  # keeps these draws apart from the split's own streams


@dataclass
class Candidate:
    """One (K, alpha): its validation accuracy, or why it was skipped."""

    K: int
    alpha: float
    validation: dict[str, Any] | None = None
    kept_rank: int | None = None
    train_seconds: float = 0.0
    skipped: str | None = None


@dataclass
class Selection:
    """The candidates and the winner; ``to_dict()`` is what results.json stores."""

    candidates: list[Candidate]
    chosen: Candidate
    val_fraction: float
    seed: int
    validation_pairs: int
    training_pairs: int
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": {"K": self.chosen.K, "alpha": self.chosen.alpha,
                       "validation": self.chosen.validation},
            "rule": self.rule,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "validation_pairs": self.validation_pairs,
            "training_pairs": self.training_pairs,
            "candidates": [asdict(c) for c in self.candidates],
        }


def validation_split(
    pairs: PreferencePairs, fraction: float = VAL_FRACTION, *, seed: int = 0
) -> tuple[PreferencePairs, PreferencePairs]:
    """(train, validation) over the same user list: per user, round(fraction * n)
    seeded random rows, clipped to [1, n - 1]; users with one pair get none."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {fraction}")
    row_user = pairs.user.cpu().numpy()
    counts = np.bincount(row_user, minlength=pairs.num_users)
    n_val = np.where(counts >= 2, np.clip(np.round(fraction * counts), 1, counts - 1), 0)
    keys = np.random.default_rng([_STREAM, seed]).random(row_user.size)
    order = np.lexsort((keys, row_user))  # rows shuffled within each user
    position = np.empty(row_user.size, dtype=np.int64)
    position[order] = np.arange(row_user.size) - pairs.offsets.numpy()[row_user[order]]
    is_val = torch.from_numpy(position < n_val[row_user])
    rows = torch.arange(row_user.size)
    return pairs.select_rows(rows[~is_val]), pairs.select_rows(rows[is_val])


def select_model(
    benchmark: Benchmark,
    Ks: Sequence[int],
    alphas: Sequence[float],
    config: TrainConfig,
    *,
    val_fraction: float = VAL_FRACTION,
    seed: int | None = None,
    progress: bool = False,
) -> Selection:
    """Fit every (K, alpha) on the training part of ``seen_train`` and pick by validation.

    Only ``seen_train`` is read (and ``v_ref``); test pairs and unseen users
    play no part. ``seed`` (default ``config.seed``) draws the validation rows.
    """
    seed = config.seed if seed is None else seed
    train, val = validation_split(benchmark.seen_train, val_fraction, seed=seed)
    if val.num_pairs == 0:
        raise ValueError("no seen user has two or more training pairs: nothing to validate on")
    candidates = []
    for alpha in alphas:
        for K in Ks:
            cand = Candidate(K=K, alpha=alpha)
            candidates.append(cand)
            if benchmark.v_ref is None and (K == 0 or alpha > 0):
                cand.skipped = ("no reference head (v_ref) in this data" if K == 0
                                else "alpha > 0 needs v_ref; this data has none")
                continue
            start = time.perf_counter()
            model, _ = fit(train, config.with_(K=K, alpha=alpha), v_ref=benchmark.v_ref,
                           progress=progress)
            cand.train_seconds = time.perf_counter() - start
            cand.kept_rank = model.kept_rank
            scores = accuracy(model, val)
            cand.validation = {k: scores[k] for k in ("mean", "std", "n_users")}
    return Selection(candidates, choose(candidates), val_fraction, seed, val.num_pairs,
                     train.num_pairs)


def choose(candidates: Sequence[Candidate]) -> Candidate:
    """The best validation accuracy; among ties, the smaller K, then the smaller alpha."""
    scored = [c for c in candidates if c.validation is not None]
    if not scored:
        raise ValueError("every candidate was skipped: " + "; ".join(
            f"K={c.K} alpha={c.alpha:g}: {c.skipped}" for c in candidates))
    best = max(c.validation["mean"] for c in scored)
    return min((c for c in scored if c.validation["mean"] >= best - TIE_TOLERANCE),
               key=lambda c: (c.K, c.alpha))


def with_test_numbers(selection: Selection, results: dict[str, Any]) -> dict[str, Any]:
    """``selection.to_dict()`` plus the chosen cell's test numbers from a sweep's results.

    The sweep's cell is the refit on the full ``seen_train`` (see the module doc).
    """
    chosen = selection.chosen
    for run in results["runs"]:
        if run["K"] == chosen.K and run["alpha"] == chosen.alpha and not run.get("skipped"):
            test = {key: {k: run[key][k] for k in ("mean", "std", "n_users")} for key in SETTINGS}
            return {**selection.to_dict(), "refit": "full seen_train (the sweep's cell)",
                    "checkpoint": run.get("checkpoint"), "test": test}
    raise ValueError(f"the sweep has no trained cell K={chosen.K} alpha={chosen.alpha:g}")
