"""Choosing K, alpha and the regularizer without looking at test pairs.

A validation set is carved from the seen users' *training* pairs with
`TrainConfig.validation_split` (``config.val_fraction``, ``config.seed``,
``config.val_split_by``; the split early stopping and calibration use): whole prompts where the training pairs cover
enough of them, else a seeded fraction of each user's pairs. Every
(variant, alpha, K) -- a variant is a set of TrainConfig changes such as
``{"v_l2": 0.1}`` -- is fitted on the rest and scored on it (macro accuracy
over users); with ``config.early_stopping`` the same validation pairs pick
each candidate's best step. The best wins, ties going to the smaller K,
then the smaller alpha, then the earlier variant.

With ``folds`` > 1 every candidate is fitted and scored on that many
validation splits (seeds ``config.seed``, ``config.seed + 1``, ...: repeated
holdout) and ranked by the mean: on small data one split's accuracy moves
by about as much as the candidates differ, and the mean over splits is a
steadier guide to which will hold on new pairs.

The chosen cell is then refitted on the *full* ``seen_train`` with the same
config: the validation rows were only held back to rank the candidates, and
the larger fit is the model a user would deploy. In ``lore-train --select``
that refit is exactly the sweep's cell for (K, alpha) (same data, config and
seed), so its test numbers are read from there instead of fitting twice.

A variant outside the sweep's own config has no sweep cell: its refit on
the full ``seen_train`` is fitted and evaluated here (`choice_test_numbers`).

The grid (`variant_grid`: the config, plus the label-noise likelihood at
``SELECT_LABEL_NOISE`` and any extra v_l2 values) and the number of folds
are a `SelectionSettings`; `run_sweep(..., select=SelectionSettings())` is
what `lore-train` does by default, and `select_model` alone uses the same
grid unless given other variants.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lore_datasets import SPLITS, Benchmark

from .config import TrainConfig
from .fewshot import personalize
from .heldout import HeldoutFits
from .metrics import accuracy, evaluate
from .sweep import skip_reason
from .trainer import fit

# --select also tries the label-noise likelihood at this rate (docs/accuracy.md)
SELECT_LABEL_NOISE: tuple[float, ...] = (0.1,)
TIE_TOLERANCE = 1e-12
RULE = ("max macro validation accuracy over seen users; ties (within 1e-12) -> smaller K, "
        "then smaller alpha, then the earlier variant; the chosen cell is refitted on the "
        "full seen_train")


class NothingToSelect(ValueError):
    """No candidate could be scored: no validation pairs, or every cell was skipped."""


def variant_grid(config: TrainConfig, *, v_l2: Sequence[float] = (),
                 label_noise: Sequence[float] = SELECT_LABEL_NOISE) -> list[dict[str, Any]]:
    """The config as given (``{}``), then every other combination of the ``v_l2`` and
    ``label_noise`` values with the config's own, as TrainConfig changes."""
    levels = {name: list(dict.fromkeys([getattr(config, name), *values]))
              for name, values in (("v_l2", v_l2), ("label_noise", label_noise))}
    variants = []
    for v in levels["v_l2"]:
        for noise in levels["label_noise"]:
            variants.append({name: value for name, value in (("v_l2", v), ("label_noise", noise))
                             if value != getattr(config, name)})
    return variants


@dataclass(frozen=True)
class SelectionSettings:
    """How a sweep chooses its cell: the variant grid's extra values and the folds."""

    v_l2: tuple[float, ...] = ()
    label_noise: tuple[float, ...] = SELECT_LABEL_NOISE
    folds: int = 1

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ValueError(f"folds must be >= 1, got {self.folds}")

    def variants(self, config: TrainConfig) -> list[dict[str, Any]]:
        """`variant_grid` of ``config``, each variant checked (a bad value names its field)."""
        variants = variant_grid(config, v_l2=self.v_l2, label_noise=self.label_noise)
        for variant in variants:
            try:
                config.with_(**variant)
            except ValueError as err:
                raise ValueError(f"selection variant {variant}: {err}") from None
        return variants

    def record(self, config: TrainConfig) -> dict[str, Any]:
        """What results.json's ``config.select`` stores: how the choice is made."""
        return {"val_fraction": config.val_fraction, "val_split_by": config.val_split_by,
                "variants": self.variants(config), "folds": self.folds}


@dataclass
class Candidate:
    """One (K, alpha): its validation accuracy, or why it was skipped."""

    K: int
    alpha: float
    variant: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    best_step: int | None = None
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
    validation_split: dict[str, Any] | None = None
    folds: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": {"K": self.chosen.K, "alpha": self.chosen.alpha,
                       "variant": self.chosen.variant, "best_step": self.chosen.best_step,
                       "validation": self.chosen.validation},
            "rule": self.rule,
            "validation_split": self.validation_split,
            "folds": self.folds,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "validation_pairs": self.validation_pairs,
            "training_pairs": self.training_pairs,
            "candidates": [asdict(c) for c in self.candidates],
        }


def select_model(
    benchmark: Benchmark,
    Ks: Sequence[int],
    alphas: Sequence[float],
    config: TrainConfig,
    *,
    variants: Sequence[dict[str, Any]] | None = None,
    folds: int = 1,
    progress: bool = False,
    fits: HeldoutFits | None = None,
) -> Selection:
    """Fit every (variant, alpha, K) on the training part of ``seen_train`` and pick by
    validation (the mean over ``folds`` seeded splits; see the module doc).
    ``variants`` default to `variant_grid` of ``config`` (what `lore-train` tries).

    Only ``seen_train`` is read (and ``v_ref``); test pairs and unseen users
    play no part. The split follows ``config`` (fraction, seed, by prompt or pair).
    ``fits``: held-out fits shared with the calibration (`lore_train.heldout`).
    """
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    variants = variant_grid(config) if variants is None else variants
    fits = HeldoutFits() if fits is None else fits
    splits = [config.validation_split(benchmark.seen_train, fold=f) for f in range(folds)]
    split = splits[0]
    train, val = split.train, split.val
    if val.num_pairs == 0:
        raise NothingToSelect("no seen user has two or more training pairs: nothing to "
                              "validate on")
    candidates = []
    for variant in variants:
        for alpha in alphas:
            for K in Ks:
                cand = Candidate(K=K, alpha=alpha, variant=dict(variant))
                candidates.append(cand)
                cell = config.with_(K=K, alpha=alpha, **variant)
                cand.skipped = skip_reason(cell, has_v_ref=benchmark.v_ref is not None)
                if cand.skipped:
                    continue
                start = time.perf_counter()
                per_fold = []
                for fold in splits:
                    model, history = fits.fit(benchmark.seen_train, fold, cell,
                                                  v_ref=benchmark.v_ref, pass_validation=True,
                                                  progress=progress)
                    scores = accuracy(model, fold.val)
                    per_fold.append({k: scores[k] for k in ("mean", "std", "n_users")})
                    if cand.best_step is None and history.early_stopping:
                        cand.best_step = history.early_stopping["best_step"]  # first split's
                cand.train_seconds = time.perf_counter() - start
                cand.kept_rank = model.kept_rank
                cand.validation = dict(per_fold[0])
                if folds > 1:
                    cand.validation["mean"] = sum(f["mean"] for f in per_fold) / folds
                    cand.validation["folds"] = [f["mean"] for f in per_fold]
    return Selection(candidates, choose(candidates), config.val_fraction, config.seed,
                     val.num_pairs, train.num_pairs, validation_split=split.describe(),
                     folds=folds)


def choose(candidates: Sequence[Candidate]) -> Candidate:
    """The best validation accuracy; among ties, the smaller K, then the smaller alpha,
    then the earlier variant."""
    scored = [c for c in candidates if c.validation is not None]
    if not scored:
        raise NothingToSelect("every candidate was skipped: " + "; ".join(
            f"K={c.K} alpha={c.alpha:g}: {c.skipped}" for c in candidates))
    best = max(c.validation["mean"] for c in scored)
    return min((c for c in scored if c.validation["mean"] >= best - TIE_TOLERANCE),
               key=lambda c: (c.K, c.alpha, candidates.index(c)))


def with_test_numbers(selection: Selection, results: dict[str, Any]) -> dict[str, Any]:
    """``selection.to_dict()`` plus the chosen cell's test numbers from a sweep's results.

    The sweep's cell is the refit on the full ``seen_train`` (see the module doc).
    """
    chosen = selection.chosen
    for run in results["runs"]:
        if (run["K"] == chosen.K and run["alpha"] == chosen.alpha and not chosen.variant
                and not run.get("skipped")):
            test = {key: {k: run[key][k] for k in ("mean", "std", "n_users")} for key in SPLITS}
            return {**selection.to_dict(), "refit": "full seen_train (the sweep's cell)",
                    "checkpoint": run.get("checkpoint"), "test": test}
    raise ValueError(f"the sweep has no trained cell K={chosen.K} alpha={chosen.alpha:g}"
                     + (f" variant={chosen.variant}" if chosen.variant else ""))


def choice_test_numbers(selection: Selection, benchmark: Benchmark, config: TrainConfig,
                        results: dict[str, Any], *, progress: bool = False) -> dict[str, Any]:
    """`with_test_numbers`, or -- for a variant the sweep did not run -- the chosen
    cell refitted on the full ``seen_train`` (plus few-shot users) and evaluated.

    This is the only place test pairs are read, after the choice is fixed.
    """
    chosen = selection.chosen
    if not chosen.variant:
        return with_test_numbers(selection, results)
    cell = config.with_(K=chosen.K, alpha=chosen.alpha, **chosen.variant)
    model, _ = fit(benchmark.seen_train, cell, v_ref=benchmark.v_ref, progress=progress)
    model = personalize(model, benchmark.unseen_fewshot, cell, progress=progress,
                        seen_pairs=benchmark.seen_train)
    scores = evaluate(model, benchmark)
    test = {key: {k: scores[key][k] for k in ("mean", "std", "n_users")} for key in SPLITS}
    return {**selection.to_dict(), "refit": "full seen_train (refitted for the variant)",
            "checkpoint": None, "test": test}


def sweep_selection(benchmark: Benchmark, Ks: Sequence[int], alphas: Sequence[float],
                    config: TrainConfig, settings: SelectionSettings, results: dict[str, Any],
                    *, progress: bool = False, fits: HeldoutFits | None = None
                    ) -> dict[str, Any]:
    """results.json's ``selection`` for a finished sweep: the choice with its test
    numbers, or ``{"skipped": why}`` when nothing could be scored."""
    try:
        selection = select_model(benchmark, Ks, alphas, config, variants=settings.variants(config),
                                 folds=settings.folds, progress=progress, fits=fits)
    except NothingToSelect as err:  # the sweep's table stands on its own
        return {"skipped": str(err)}
    return choice_test_numbers(selection, benchmark, config, results, progress=progress)
