"""Early stopping's parts: the validation-loss monitor and the best-step records.

A fixed step budget at a large learning rate lets extra columns memorise the
training pairs (training accuracy climbs while held-out accuracy does not).
The validation loss is watched during a fit and the best step kept; the two
fits that do this orchestrate it themselves, on these records:

- the joint fit (`lore_train.trainer.fit` with ``config.early_stopping``):
  a validation split carved from the training pairs
  (`TrainConfig.validation_split`), `BestStep` every ``eval_every`` steps,
  stop after ``patience`` steps without improvement, then a refit on *all*
  pairs for the best number of steps (same seed, so the same start); given
  an explicit validation set (model selection) the best-step parameters are
  kept instead.
- few-shot fits (`lore_train.fewshot.personalize`): users are independent
  problems, so each unseen user gets their own best step (`UserBestSteps`)
  on a by-pair split of their few-shot pairs, then all are refitted on
  their full few-shot pairs and each user's logits are taken at their step.

This module imports neither the trainer nor the model: it is a leaf.
"""

from __future__ import annotations

import math

import torch

from lore_datasets import PreferencePairs

from .objective import row_weights


class BestStep:
    """Remembers the step with the lowest validation loss and its parameters."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.best_step = -1
        self.best_loss = math.inf
        self.state: list[torch.Tensor] = []

    def update(self, step: int, loss: float, *params: torch.Tensor) -> bool:
        """Record ``loss`` at ``step``; True when ``patience`` steps passed without a better one."""
        self.steps.append(step)
        self.losses.append(loss)
        if math.isfinite(loss) and loss < self.best_loss:
            self.best_step, self.best_loss = step, loss
            self.state = [p.detach().clone() for p in params]
        return self.patience > 0 and step - self.best_step >= self.patience


class UserBestSteps:
    """Each user's step with the lowest validation loss (users are independent fits).

    ``counts`` [N] are the users' validation pairs; a user without any keeps
    ``default`` until `fill_without_validation` gives them the others' median.
    """

    def __init__(self, counts: torch.Tensor, default: int) -> None:
        self.counts = counts
        self.best_loss = torch.full(counts.shape, math.inf, device=counts.device)
        self.best_step = torch.full(counts.shape, default, dtype=torch.int64, device=counts.device)

    def update(self, step: int, losses: torch.Tensor) -> None:
        """Record the users' validation ``losses`` [N] at ``step``."""
        better = (self.counts > 0) & (losses < self.best_loss)
        self.best_loss[better] = losses[better]
        self.best_step[better] = step

    def fill_without_validation(self) -> torch.Tensor:
        """Users without validation pairs take the median best step of the others;
        returns the mask of users that had validation pairs."""
        has_val = self.counts > 0
        if bool(has_val.any()):
            self.best_step[~has_val] = self.best_step[has_val].median()
        return has_val


def mean_loss_scale(pairs: PreferencePairs, reduction: str) -> float:
    """Turns the training objective (with ``user_mean``, a sum of user means) into a mean."""
    if reduction == "pair_mean":
        return 1.0
    return 1.0 / max(int((pairs.pairs_per_user() > 0).sum()), 1)


def mean_user_weights(pairs: PreferencePairs, reduction: str) -> torch.Tensor:
    """Row weights that make the loss a mean (over users' means, or over pairs), so
    training and validation losses are on one scale whatever their sizes."""
    return row_weights(pairs, reduction) * mean_loss_scale(pairs, reduction)
