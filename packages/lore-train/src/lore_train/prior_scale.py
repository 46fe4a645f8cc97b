"""How strong the population prior should be: its concentration's scale by empirical Bayes.

The Dirichlet fitted to the seen users' weights (`lore_train.prior`) fixes
the prior's shape; its strength -- a scale c on the concentration, prior
c * alpha -- decides how far a new user's few pairs may pull them from the
population's mean. A fixed c = 1 helped at one shot but cost accuracy at
fifty on held-out data, so c is chosen on data: for the new users (their
few-shot pairs; the seen users' training pairs when there are too few new
users), each trial holds out all but n of a user's pairs (n over a range of shot counts),
fits their weights MAP from the n under c * alpha (one batched Newton solve
per c, `lore_train.newton`), and scores the held-out pairs' log-likelihood.
Optionally (``mean_weights``) the prior's mean is also moved toward uniform
weights at the same total concentration, for a population whose seen users'
fitted weights are a poor guide to a new user's. The (mean, c) with the best mean over shot counts, trials and users is kept: the
prior a new user is best served by, read off the users at hand. On the seen
users' own training pairs it comes out too weak (V was fitted to those pairs
with those users' near one-hot weights), hence the new users first. Its weight
still fades with a user's pairs, since each pair adds a likelihood term
while the prior stays one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import lore_kernels
from lore_datasets import PreferencePairs

from .newton import newton_map

# A `lore_train.PersonalRewardModel` (the model module imports this one, so the type is
# named here, not imported): what the functions below read of it.
Model = Any

SCALES = (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0, 16.0)
SHOTS = (1, 2, 5, 10, 20, 50)
# Weight of the population's mean user in the prior's mean (the rest: uniform weights).
# Only 1 by default: with 1, 0.5, 0 on the bundled data the held-out likelihood chose 1 everywhere
# (docs/accuracy.md), so the other means only tripled the cost.
MEAN_WEIGHTS = (1.0,)
# New users with at least two pairs (one to fit, one to hold out) needed to choose on theirs
MIN_NEW_USERS = 10


def choose_for_new_users(model: Model, new: PreferencePairs,
                         seen: PreferencePairs | None, *, seed: int = 0) -> dict[str, Any]:
    """`choose_prior_scale` on the new users' own pairs when at least `MIN_NEW_USERS`
    of them have two or more (empirical Bayes proper: their pairs are not in V's fit),
    else on the seen users' training pairs (V was fitted to those, which makes a
    weak prior look better than it is for a new user)."""
    enough = int((new.pairs_per_user() >= 2).sum()) >= MIN_NEW_USERS
    if not enough and seen is None:
        return {"scale": 1.0, "mean_weight": 1.0, "scores": {}, "source": "none",
                "rule": f"fewer than {MIN_NEW_USERS} new users with two pairs and no seen pairs"}
    choice = choose_prior_scale(model, new if enough else seen, seed=seed)
    return {**choice, "source": "new users' pairs" if enough else "seen users' training pairs"}


def choose_prior_scale(
    model: Model,
    pairs: PreferencePairs,
    *,
    scales: Sequence[float] = SCALES,
    mean_weights: Sequence[float] = MEAN_WEIGHTS,
    shots: Sequence[int] = SHOTS,
    trials: int = 2,
    seed: int = 0,
    criterion: str = "log_likelihood",
    by_prompt: bool = True,
) -> dict[str, Any]:
    """The strength c and mean weight lam of ``model``'s population prior with the best
    held-out likelihood (the prior `adjust`(alpha, c, lam)).

    ``pairs``: the users to learn from (each fitted from n of their pairs,
    scored on the rest). Returns ``{"scale", "mean_weight", "scores", "shots",
    "trials", "users"}``: scores maps "lam/c" to the mean held-out
    log-likelihood per pair (macro over users, then over shot counts and
    trials). With no user holding more than one pair, c = lam = 1.
    ``by_prompt``: when the pairs carry prompt ids (4 or more prompts), each
    trial splits the prompts in two halves, draws a user's n pairs from one
    and holds out their pairs on the other, as new users are scored on
    prompts they did not label. ``criterion="accuracy"`` scores held-out accuracy instead (noisier; an
    experiment's option).
    """
    if criterion not in ("log_likelihood", "accuracy"):
        raise ValueError(f"criterion must be 'log_likelihood' or 'accuracy', got {criterion!r}")
    if not scales or any(c <= 0 for c in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    alpha = model.population_prior(scaled=False).to(torch.float64)
    V = model.V.detach()
    if pairs.num_pairs == 0 or V.shape[1] <= 1:
        return {"scale": 1.0, "mean_weight": 1.0, "scores": {}, "shots": [], "trials": trials,
                "users": pairs.num_users, "rule": "nothing to choose from (K <= 1 or no pairs)"}
    with torch.no_grad():
        P = lore_kernels.project(pairs.features.to(V.device), V).to(torch.float64)
    user = pairs.user.cpu().numpy()
    counts = np.bincount(user, minlength=pairs.num_users)
    U = pairs.num_users
    shot_list = [n for n in sorted({int(s) for s in shots}) if n >= 1 and (counts > n).any()]
    if not shot_list:
        return {"scale": 1.0, "mean_weight": 1.0, "scores": {}, "shots": [], "trials": trials,
                "users": U, "rule": "no user has two pairs to hold one out"}
    rng = np.random.default_rng([seed, 7919])
    prompts = None
    if by_prompt and pairs.prompt_ids is not None:
        names = {p: i for i, p in enumerate(dict.fromkeys(pairs.prompt_ids))}
        if len(names) >= 4:  # enough prompts to hold some out
            prompts = np.array([names[p] for p in pairs.prompt_ids])
    train_rows, train_owner, held_rows, held_owner = [], [], [], []
    groups = []  # (pseudo-user offset) per (trial, shot count)
    for t in range(trials):
        keys = rng.random(user.size)
        # by prompt: a user's shots come from half of the prompts, the held-out pairs from the
        # other half (new users are scored on prompts they did not label)
        side = (np.ones(user.size, dtype=bool) if prompts is None
                else (rng.random(prompts.max() + 1) < 0.5)[prompts])
        order = np.lexsort((keys, ~side, user))  # within a user: shot-side rows first
        rank = np.empty(user.size, dtype=np.int64)
        starts = np.cumsum(counts) - counts
        rank[order] = np.arange(user.size) - starts[user[order]]
        side_count = np.bincount(user[side], minlength=U)
        for n in shot_list:
            base = len(groups) * U
            groups.append((t, n))
            eligible = (side_count[user] >= n) & (counts[user] > n)
            train = eligible & (rank < n)
            held = eligible & (rank >= n) & (~side if prompts is not None else True)
            train_rows.append(np.flatnonzero(train))
            train_owner.append(base + user[train])
            held_rows.append(np.flatnonzero(held))
            held_owner.append(base + user[held])
    rows_t = torch.from_numpy(np.concatenate(train_rows)).to(P.device)
    owner_t = torch.from_numpy(np.concatenate(train_owner)).to(P.device)
    rows_h = torch.from_numpy(np.concatenate(held_rows)).to(P.device)
    owner_h = torch.from_numpy(np.concatenate(held_owner)).to(P.device)
    pseudo = len(groups) * U
    held_count = torch.bincount(owner_h, minlength=pseudo).to(torch.float64)
    has_held = held_count > 0
    group_of = torch.arange(pseudo, device=P.device) // U
    one = torch.ones(1, dtype=torch.float64, device=P.device)
    scores: dict[tuple[float, float], float] = {}
    for lam in mean_weights:
        for c in scales:
            W = newton_map(P[rows_t], owner_t, pseudo, model.likelihood,
                           prior=adjust(alpha, c, lam)).W
            margin = (P[rows_h] * torch.softmax(W, 1)[owner_h]).sum(1)
            if criterion == "accuracy":
                value = (margin > 0).to(torch.float64)
            else:
                value = -model.likelihood.terms(margin, one)[0]
            per_user = torch.zeros(pseudo, dtype=torch.float64, device=P.device).index_add_(
                0, owner_h, value) / held_count.clamp(min=1)
            per_group = torch.zeros(len(groups), dtype=torch.float64, device=P.device).index_add_(
                0, group_of[has_held], per_user[has_held]) / torch.bincount(
                group_of[has_held], minlength=len(groups)).clamp(min=1)
            scores[(float(lam), float(c))] = float(per_group.mean())
    # ties: the population's own mean first, then the strength nearest 1
    lam, c = max(scores, key=lambda k: (scores[k], k[0], -abs(np.log(k[1]))))
    return {"scale": c, "mean_weight": lam,
            "scores": {f"{k[0]:g}/{k[1]:g}": v for k, v in scores.items()},
            "shots": shot_list, "trials": trials, "users": U, "by_prompt": prompts is not None,
            "rule": "best mean held-out log-likelihood per pair given n of a user's pairs, over "
                    "shot counts and trials; keys mean_weight/scale"}


def adjust(alpha: torch.Tensor, scale: float, mean_weight: float = 1.0) -> torch.Tensor:
    """The prior c * A * (lam * alpha / A + (1 - lam) / K): strength c times the fitted
    one, mean moved toward uniform weights by 1 - lam (lam = 1: c * alpha)."""
    if mean_weight == 1.0:
        return scale * alpha
    total = alpha.sum()
    mean = mean_weight * alpha / total + (1.0 - mean_weight) / alpha.shape[0]
    return scale * total * mean
