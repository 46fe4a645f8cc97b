"""Adding new users to a model: their K logits fitted on its frozen basis.

`personalize` fits every user of a `PreferencePairs` few-shot with the
settings `TrainConfig.fewshot()` hands out (the solver is
`lore_train.solver.fit_few_shot`: one batched Newton solve by default) under
the prior the config names, its scale chosen by empirical Bayes
(`lore_train.prior_scale`) unless the config sets it; with
``config.early_stopping`` each user stops at their own best Adam step on a
by-pair validation split of their pairs (`lore_train.stopping.UserBestSteps`;
the Newton solver has no steps to stop early, so early stopping uses Adam).
"""

from __future__ import annotations

import torch

import lore_kernels
from lore_datasets import PreferencePairs, split_validation

from .config import FewShotSettings, TrainConfig
from .model import PersonalRewardModel
from .prior_scale import choose_for_new_users
from .solver import fit_few_shot
from .stopping import UserBestSteps


def personalize(
    model: PersonalRewardModel,
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    progress: bool = False,
    first_user: int = 0,
    total_users: int | None = None,
    population: torch.Tensor | None = None,
    seen_pairs: PreferencePairs | None = None,
) -> PersonalRewardModel:
    """``model`` plus ``pairs``' users, fitted few-shot on the frozen basis with
    ``config.fewshot()`` (``first_user``/``total_users``: see `fit_few_shot`;
    ``population``: see `fewshot_prior`). With the population prior and
    ``config.fewshot_prior_scale`` 0, the prior's scale is chosen by empirical
    Bayes on ``pairs`` (or, with too few users, ``seen_pairs``, the seen users'
    training pairs: `lore_train.prior_scale.choose_for_new_users`) and kept in
    ``meta["prior_scale"]`` (not across processes: there c = 1). With
    ``config.early_stopping`` each user stops at their own best Adam step (see
    the module doc)."""
    settings = config.fewshot()
    if (population is None and not first_user and total_users is None
            and config.fewshot_prior == "population" and config.fewshot_prior_scale == 0
            and model.kept_rank > 1):
        choice = choose_for_new_users(model, pairs, seen_pairs, seed=config.seed)
        model.meta["prior_scale"] = choice["scale"]
        model.meta["prior_mean_weight"] = choice["mean_weight"]
        model.meta["prior_scale_choice"] = choice
    if config.early_stopping:
        if first_user or total_users is not None:
            raise ValueError("early stopping of few-shot users runs in one process")
        return _personalize_early_stopped(model, pairs, config, settings.with_(solver="adam"),
                                          progress=progress)
    W = fit_few_shot(model.V.detach(), pairs, settings, prior=fewshot_prior(model, settings, population),
                     progress=progress, first_user=first_user, total_users=total_users)
    return model.with_users(pairs.user_ids, W)


def fewshot_prior(model: PersonalRewardModel, settings: FewShotSettings,
                  population: torch.Tensor | None = None) -> torch.Tensor | None:
    """The Dirichlet concentration ``settings.prior`` names for users added to ``model``:
    ``population`` when given (the whole population's, when ``model`` holds only
    some seen users), else the one fitted to ``model``'s seen users; None for "none"."""
    if settings.prior != "population":
        return None
    return population if population is not None else model.population_prior()


def _personalize_early_stopped(
    model: PersonalRewardModel,
    pairs: PreferencePairs,
    config: TrainConfig,
    settings: FewShotSettings,
    *,
    progress: bool = False,
) -> PersonalRewardModel:
    """``model`` plus ``pairs``' users, each fitted up to their own best few-shot step.

    A user too small to hold out a pair (one pair) takes the median best
    step of the others. The chosen steps are summarized in
    ``meta["fewshot_early_stopping"]``.
    """
    V = model.V.detach()
    K, steps = V.shape[1], settings.steps
    prior = fewshot_prior(model, settings)  # the same fit as `personalize`, prior included
    if K <= 1 or pairs.num_pairs == 0:
        return model.with_users(pairs.user_ids, fit_few_shot(V, pairs, settings, prior=prior))
    split = split_validation(pairs, config.val_fraction, seed=config.seed + 1, split_by="pair")
    val = split.val
    N = pairs.num_users
    P = lore_kernels.project(val.features.to(V.device), V)
    user = val.user.to(V.device)
    counts = val.pairs_per_user().to(V.device, torch.float32)
    c = 1.0 / counts.clamp(min=1)[user]  # each user's mean validation loss
    best = UserBestSteps(counts, default=steps)

    def track(t: int, W: torch.Tensor) -> None:
        if t % config.eval_every and t != steps:
            return
        margin = (P * torch.softmax(W, 1)[user]).sum(1)
        rows = settings.likelihood.terms(margin, c)[0]
        best.update(t, torch.zeros(N, device=V.device).index_add_(0, user, rows))

    fit_few_shot(V, split.train, settings, prior=prior, on_step=track, progress=progress)
    has_val = best.fill_without_validation()
    best_step = best.best_step
    chosen = torch.empty(N, K, device=V.device)

    def snapshot(t: int, W: torch.Tensor) -> None:
        hit = best_step == t
        chosen[hit] = W[hit]

    fit_few_shot(V, pairs, settings.with_(steps=int(best_step.max())), prior=prior, on_step=snapshot)
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
