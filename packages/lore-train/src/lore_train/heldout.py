"""Fits on the training part of a seeded validation split, shared within one sweep.

Two parts of a sweep fit a cell's config on the same rows: the calibration
(T is fitted on the validation split of seen_train, for the cell refitted on
the rest; `lore_train.calibration`) and the model selection (each candidate
is fitted on the training part of the same kind of split and scored on its
validation part; `lore_train.selection`). With the same rows, split
settings, config and seed they are the same fit, bit for bit: with
lore-train's defaults, three of the twelve fits of the README's LLMFAO run.
`run_sweep` hands one `HeldoutFits` to both, so such a fit is made once; it
lives as long as the sweep (nothing is kept between runs).

The validation rows reach a fit only through early stopping, so without
``config.early_stopping`` a fit told of its validation rows equals one that
was not; with it, both must agree.
"""

from __future__ import annotations

from typing import Any

import torch

from lore_datasets import PreferencePairs
from lore_datasets.validation import ValidationSplit

from .config import TrainConfig
from .model import PersonalRewardModel
from .trainer import FitHistory, fit


class HeldoutFits:
    """The held-out fits of one sweep, each (rows, split, config) fitted once."""

    def __init__(self) -> None:
        # (rows, v_ref, fraction, seed, split_by, config, validation passed, model, history);
        # the rows and v_ref are kept alive here so their ids cannot be reused
        self._fits: list[tuple[Any, ...]] = []

    def fit(
        self,
        pairs: PreferencePairs,
        split: ValidationSplit,
        config: TrainConfig,
        *,
        v_ref: torch.Tensor | None,
        pass_validation: bool,
        progress: bool = False,
    ) -> tuple[PersonalRewardModel, FitHistory]:
        """``fit(split.train, config)`` where ``split`` is ``split_validation(pairs, ...)``
        (its fraction, seed and mode name it); with ``pass_validation`` the fit also gets
        ``split.val`` (early stopping uses it). The model is shared: do not change it."""
        uses_val = pass_validation and config.early_stopping
        for rows, ref, fraction, seed, mode, cfg, val, model, history in self._fits:
            if (rows is pairs and ref is v_ref and fraction == split.fraction
                    and seed == split.seed and mode == split.split_by and val == uses_val
                    and cfg == config):
                return model, history
        model, history = fit(split.train, config, v_ref=v_ref,
                             validation=split.val if pass_validation else None,
                             progress=progress)
        self._fits.append((pairs, v_ref, split.fraction, split.seed, split.split_by, config,
                           uses_val, model, history))
        return model, history
