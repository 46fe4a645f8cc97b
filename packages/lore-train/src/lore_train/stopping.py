"""Early stopping: the training length chosen on held-out pairs.

A fixed step budget at a large learning rate lets extra columns memorise the
training pairs (training accuracy climbs while held-out accuracy does not).
Here the validation loss is watched during the fit and the best step kept:

- joint fit: carve a validation split from the training pairs (by prompt
  where there are enough, `lore_datasets.split_validation`), fit on the rest
  while tracking the validation loss every ``eval_every`` steps, stop after
  ``patience`` steps without improvement, then refit on *all* pairs for the
  best number of steps (same seed, so the same start). Given an explicit
  ``validation`` set (model selection does this) there is no refit: the
  best-step parameters of that fit are returned.
- few-shot fits: users are independent problems, so each unseen user gets
  their own best step on a by-pair split of their few-shot pairs, then all
  are refitted on their full few-shot pairs and each user's logits are taken
  at their step.
"""

from __future__ import annotations

import math
from typing import Any

import torch

import lore_kernels
from lore_datasets import PreferencePairs, split_validation
from lore_kernels.reference import bt_terms_reference

from .config import TrainConfig
from .fewshot import fewshot_settings, fit_few_shot
from .model import PersonalRewardModel
from .objective import row_weights
from .trainer import FitHistory, finish, fit_steps


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


def mean_loss_scale(pairs: PreferencePairs, reduction: str) -> float:
    """Turns the training objective (with ``user_mean``, a sum of user means) into a mean."""
    if reduction == "pair_mean":
        return 1.0
    return 1.0 / max(int((pairs.pairs_per_user() > 0).sum()), 1)


def mean_user_weights(pairs: PreferencePairs, reduction: str) -> torch.Tensor:
    """Row weights that make the loss a mean (over users' means, or over pairs), so
    training and validation losses are on one scale whatever their sizes."""
    return row_weights(pairs, reduction) * mean_loss_scale(pairs, reduction)


def fit_early_stopped(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    v_ref: torch.Tensor | None = None,
    validation: PreferencePairs | None = None,
    progress: bool = True,
) -> tuple[PersonalRewardModel, FitHistory]:
    """The joint fit with its length chosen on validation loss (see the module doc)."""
    refit = validation is None
    if refit:
        split = split_validation(pairs, config.val_fraction, seed=config.seed,
                                 split_by=config.val_split_by)
        train, val, described = split.train, split.val, split.describe()
    else:
        train, val = pairs, validation
        described = {"split_by": "given", "train_pairs": train.num_pairs,
                     "val_pairs": val.num_pairs}
    if val.num_pairs == 0:
        raise ValueError("early stopping needs validation pairs, but no user has two or more "
                         "training pairs to hold one out")
    if val.user_ids != train.user_ids:
        raise ValueError("the validation pairs must be over the training pairs' user list")
    device = torch.device(config.device)
    Z, user = val.features.to(device), val.user.to(device)
    c = mean_user_weights(val, config.reduction).to(device)
    tracker = BestStep(config.patience)

    def monitor(step: int, V: torch.Tensor, W: torch.Tensor) -> bool:
        if step % config.eval_every and step != config.steps - 1:
            return False
        with torch.no_grad():
            loss = lore_kernels.lowrank_bt_loss(Z, user, c, V, torch.softmax(W, 1), config.tau,
                                                 config.label_noise)[0]
        return tracker.update(step, float(loss), V, W)

    model, first = fit_steps(train, config, v_ref=v_ref, validation=val, monitor=monitor,
                             progress=progress)
    if tracker.best_step < 0:
        raise FloatingPointError("the validation loss was never finite; lower --lr")
    scale = mean_loss_scale(train, config.reduction)
    curve: dict[str, Any] = {
        "best_step": tracker.best_step,
        "best_val_loss": tracker.best_loss,
        "steps_run": first.steps[-1] + 1 if first.steps else 0,
        "refit": refit,
        "validation": described,
        "val_steps": tracker.steps,
        "val_loss": tracker.losses,
        "train_steps": first.steps,
        "train_loss": [v * scale for v in first.loss],  # objective as a mean, like val_loss
    }
    if refit:  # all pairs, same start, exactly best_step + 1 updates
        model, history = fit_steps(pairs, config, v_ref=v_ref,
                                   monitor=lambda step, V, W: step >= tracker.best_step,
                                   progress=progress)
        history.seconds += first.seconds
    else:
        with torch.no_grad():
            model.V.copy_(tracker.state[0])
            model.W.copy_(tracker.state[1])
        history = first
    history.early_stopping = curve
    return finish(model, config), history


def personalize_early_stopped(
    model: PersonalRewardModel,
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    progress: bool = False,
) -> PersonalRewardModel:
    """``model`` plus ``pairs``' users, each fitted up to their own best few-shot step.

    A user too small to hold out a pair (one pair) takes the median best
    step of the others. The chosen steps are summarized in
    ``meta["fewshot_early_stopping"]``.
    """
    V = model.V.detach()
    K, steps = V.shape[1], config.fewshot_steps
    fewshot = fewshot_settings(model, config)  # the same fit as `personalize`, prior included
    if K <= 1 or pairs.num_pairs == 0 or steps == 0:
        return model.with_users(pairs.user_ids, fit_few_shot(V, pairs, **fewshot))
    split = split_validation(pairs, config.val_fraction, seed=config.seed + 1, split_by="pair")
    val = split.val
    N = pairs.num_users
    P = lore_kernels.project(val.features.to(V.device), V)
    user = val.user.to(V.device)
    counts = val.pairs_per_user().to(V.device, torch.float32)
    c = 1.0 / counts.clamp(min=1)[user]  # each user's mean validation loss
    best_loss = torch.full((N,), math.inf, device=V.device)
    best_step = torch.full((N,), steps, dtype=torch.int64, device=V.device)

    def track(t: int, W: torch.Tensor) -> None:
        if t % config.eval_every and t != steps:
            return
        margin = (P * torch.softmax(W, 1)[user]).sum(1)
        rows = bt_terms_reference(margin, c, config.tau, config.label_noise)[0]
        loss = torch.zeros(N, device=V.device).index_add_(0, user, rows)
        better = (counts > 0) & (loss < best_loss)
        best_loss[better] = loss[better]
        best_step[better] = t

    fit_few_shot(V, split.train, **fewshot, on_step=track, progress=progress)
    has_val = counts > 0
    if bool(has_val.any()):
        best_step[~has_val] = best_step[has_val].median()
    chosen = torch.empty(N, K, device=V.device)

    def snapshot(t: int, W: torch.Tensor) -> None:
        hit = best_step == t
        chosen[hit] = W[hit]

    fit_few_shot(V, pairs, **{**fewshot, "steps": int(best_step.max())}, on_step=snapshot)
    out = model.with_users(pairs.user_ids, chosen)
    chosen_steps = best_step[pairs.pairs_per_user().to(V.device) > 0].float()
    out.meta = {**out.meta, "fewshot_early_stopping": {
        "best_step_median": float(chosen_steps.median()),
        "best_step_min": int(chosen_steps.min()),
        "best_step_max": int(chosen_steps.max()),
        "users_without_validation": int((~has_val).sum()),
        "validation": split.describe(),
    }}
    return out
