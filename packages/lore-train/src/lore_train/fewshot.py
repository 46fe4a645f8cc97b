"""Few-shot fitting: a new user's K logits on a frozen basis V.

P = Z V is computed once (by the fused op), so a step costs O(M K): the
margins of the projected rows, the Bradley-Terry loss gradient from the
reference (`lore_kernels.reference.bt_terms_reference`, the one Python copy
of that formula), its sum per user, the softmax chain rule and Adam. The
fused op itself is not called per step: on rows K wide its fixed cost made
the fit two to three times slower on CPU. `logit_gradient` is tested against
autograd through the reference op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

import lore_kernels
from lore_datasets import PreferencePairs
from lore_kernels.reference import bt_terms_reference

from ._util import progress_bar, seeded_generator
from .config import TrainConfig
from .newton import newton_map
from .objective import row_weights
from .prior import log_prior_grad, prior_logits
from .prior_scale import choose_for_new_users

if TYPE_CHECKING:  # the model imports this module; this one only needs its type
    from .model import PersonalRewardModel

DEFAULTS = TrainConfig()  # few-shot steps, lr, tau and reduction when none are given


def fit_few_shot(
    V: torch.Tensor,
    pairs: PreferencePairs,
    *,
    steps: int | None = None,
    lr: float | None = None,
    tau: float | None = None,
    reduction: str | None = None,
    label_noise: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    prior: torch.Tensor | None = None,
    first_user: int = 0,
    total_users: int | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    solver: str | None = None,
) -> torch.Tensor:
    """Fit logits [N, K] for ``pairs``' users on a frozen basis V.

    ``steps``, ``lr``, ``tau`` and ``reduction`` default to `TrainConfig`'s
    (``fewshot_steps``, ``fewshot_lr``, ...); ``label_noise`` is the
    likelihood's (`TrainConfig.label_noise`), which should be the basis's. Users are independent
    problems, so one Adam over all rows equals separate fits. Logits start
    at N(0, 1) like the reference; a user with no pairs keeps zero logits
    (uniform weights) rather than a random draw. K <= 1 needs no fitting
    (softmax of one logit is 1).

    ``prior``: a Dirichlet concentration [K] (`lore_train.prior`); the fit is
    then MAP, each user's log-prior weighted like one of their rows' loss,
    starting from the prior mean, and a user with no pairs gets the prior mean.
    When ``pairs`` is one process's block of users (``first_user`` on, of
    ``total_users``), the block's rows of the full initial draw are used, so
    the fit equals the one-process fit.

    ``solver``: "newton" (`TrainConfig.fewshot_solver`'s default) solves for
    the exact MAP (`lore_train.newton`; ``steps``, ``lr``, ``seed`` and
    ``on_step`` do not apply, and without a prior the reference's N(0, 1)
    logit initialization is read as the prior); "adam" runs ``steps`` Adam
    steps, the reference's fit and the one early stopping watches.
    """
    solver = (DEFAULTS.fewshot_solver if on_step is None else "adam") if solver is None else solver
    if solver == "newton":
        if on_step is not None:
            raise ValueError("on_step follows Adam steps; the Newton solver has none")
        return _fit_newton(V, pairs, tau=tau, reduction=reduction, label_noise=label_noise,
                           prior=prior)
    if solver != "adam":
        raise ValueError(f"solver must be 'adam' or 'newton', got {solver!r}")
    steps = DEFAULTS.fewshot_steps if steps is None else steps
    lr = DEFAULTS.fewshot_lr if lr is None else lr
    tau = DEFAULTS.tau if tau is None else tau
    reduction = DEFAULTS.reduction if reduction is None else reduction
    N, K = pairs.num_users, V.shape[1]
    device = V.device
    counts = pairs.pairs_per_user().to(device)
    if prior is not None and prior.shape != (K,):
        raise ValueError(f"prior has shape {tuple(prior.shape)}, the basis K={K}")
    # -- begin population prior (issue 12) --
    if prior is not None and K > 1:
        prior = prior.to(device, torch.float32)
        W = prior_logits(prior).expand(N, K).clone()
        if pairs.num_pairs == 0:
            return W
    # -- end population prior --
    elif K <= 1 or pairs.num_pairs == 0:
        return torch.zeros(N, K, device=device)
    else:
        total = N if total_users is None else total_users
        W = torch.randn(total, K, generator=seeded_generator(seed))[first_user:first_user + N]
        W = W.clone().to(device)
        W[counts == 0] = 0.0
    with torch.no_grad():
        P = lore_kernels.project(pairs.features.to(device), V.detach())
    user = pairs.user.to(device)
    c = row_weights(pairs, reduction).to(device)
    if prior is not None:  # each user's prior weighs like one of their rows (c is constant per user)
        c_user = torch.zeros(N, device=device).index_add_(0, user, c) / counts.clamp(min=1)
    # The problem is tiny (M x K), so autograd and torch.optim overhead would
    # dominate: the op's dS goes through the softmax Jacobian by hand and
    # Adam (torch's defaults: betas 0.9/0.999, eps 1e-8, no weight decay) is
    # applied in place.
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m1, m2 = torch.zeros_like(W), torch.zeros_like(W)
    update = torch.empty_like(W)
    with progress_bar(steps, f"few-shot K={K}", progress) as bar:
        for t in range(1, steps + 1):
            grad = logit_gradient(P, user, c, W, tau, label_noise)
            if prior is not None:
                grad.sub_(c_user[:, None] * log_prior_grad(W, prior))
            m1.lerp_(grad, 1 - beta1)
            m2.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            torch.div(m2, 1 - beta2**t, out=update).sqrt_().add_(eps)
            W.addcdiv_(m1, update, value=-lr / (1 - beta1**t))
            if on_step is not None:
                on_step(t, W)
            bar.update()
    return W


def _fit_newton(V: torch.Tensor, pairs: PreferencePairs, *, tau: float | None,
                reduction: str | None, label_noise: float, prior: torch.Tensor | None) -> torch.Tensor:
    """`fit_few_shot` by `newton_map`: all users in one batched solve, logits [N, K] fp32."""
    tau = DEFAULTS.tau if tau is None else tau
    reduction = DEFAULTS.reduction if reduction is None else reduction
    K = V.shape[1]
    if prior is not None and prior.shape != (K,):
        raise ValueError(f"prior has shape {tuple(prior.shape)}, the basis K={K}")
    with torch.no_grad():
        P = lore_kernels.project(pairs.features.to(V.device), V.detach())
    weight = row_weights(pairs, reduction).to(V.device) if pairs.num_pairs else None
    result = newton_map(P, pairs.user.to(V.device), pairs.num_users, tau=tau,
                        label_noise=label_noise, prior=prior, weight=weight)
    return result.W.to(torch.float32)


def logit_gradient(
    P: torch.Tensor, user: torch.Tensor, c: torch.Tensor, W: torch.Tensor, tau: float,
    label_noise: float = 0.0,
) -> torch.Tensor:
    """d loss / d W [N, K] for projected rows P = Z V (the loss of `lore_kernels.lowrank_bt`)."""
    S = torch.softmax(W, dim=1)
    margin = (P * S[user]).sum(dim=1)  # z . V s_u, with z V precomputed
    g = bt_terms_reference(margin, c, tau, label_noise)[1]  # d loss / d margin
    dS = torch.zeros_like(S).index_add_(0, user, P * g[:, None])
    return S * (dS - (dS * S).sum(dim=1, keepdim=True))  # softmax Jacobian


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
    """``model`` plus ``pairs``' users, fitted few-shot on the frozen basis
    (``first_user``/``total_users``: see `fit_few_shot`; ``population``: see
    `fewshot_settings`). With the population prior and
    ``config.fewshot_prior_scale`` 0, the prior's scale is chosen by empirical
    Bayes on ``pairs`` (or, with too few users, ``seen_pairs``, the seen users'
    training pairs: `lore_train.prior_scale.choose_for_new_users`) and kept
    in ``meta["prior_scale"]`` (not across processes: there c = 1). All users are one batched fit (one Newton solve with
    the default solver). With ``config.early_stopping`` each user stops at
    their own best Adam step (`lore_train.stopping.personalize_early_stopped`;
    the Newton solver has no steps to stop early, so early stopping uses Adam)."""
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
        from .stopping import personalize_early_stopped  # it builds on fit_few_shot

        return personalize_early_stopped(model, pairs, config, progress=progress)
    W = fit_few_shot(model.V.detach(), pairs, **fewshot_settings(model, config, population),
                     progress=progress, first_user=first_user, total_users=total_users)
    return model.with_users(pairs.user_ids, W)


def fewshot_settings(model: PersonalRewardModel, config: TrainConfig,
                     population: torch.Tensor | None = None) -> dict[str, Any]:
    """`fit_few_shot`'s settings for adding users to ``model`` under ``config``: its
    few-shot steps, lr, tau, reduction, label noise, seed (config.seed + 1), prior and
    solver (Adam under early stopping, which watches Adam's steps). The
    prior is ``population`` when given (the whole population's, when ``model``
    holds only some seen users), else the one fitted to ``model``'s seen users."""
    prior = None
    if config.fewshot_prior == "population":
        prior = population if population is not None else model.population_prior()
    return dict(steps=config.fewshot_steps, lr=config.fewshot_lr, tau=config.tau,
                reduction=config.reduction, label_noise=config.label_noise,
                seed=config.seed + 1, prior=prior,
                solver="adam" if config.early_stopping else config.fewshot_solver)


def single_user_pairs(user: str, data: PreferencePairs | torch.Tensor | None, dim: int) -> PreferencePairs:
    """One user's rows as a single-user `PreferencePairs`, checked (for adapting one user).

    ``data`` is a `PreferencePairs` (the user's rows, or all rows when it
    holds a single user), a raw [n, d] tensor of chosen-minus-rejected rows,
    or None (no rows: a new user gets the population prior's mean).
    """
    if data is None:
        features = torch.zeros(0, dim)
    elif isinstance(data, PreferencePairs):
        if user in data.user_ids:
            data = data.select_users([user])
        elif data.num_users != 1:
            raise ValueError(
                f"the pairs hold {data.num_users} users and not {user!r}; pass that user's "
                "rows (or pairs with a single user)"
            )
        features = data.features
    elif isinstance(data, torch.Tensor):
        features = data[None] if data.ndim == 1 else data
    else:
        raise TypeError(f"adapt() takes PreferencePairs or an [n, d] tensor, not {type(data).__name__}")
    if features.ndim != 2 or features.shape[1] != dim:
        raise ValueError(f"user {user!r}: rows must be [n, {dim}], got {tuple(features.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"user {user!r}: the rows contain NaN or Inf")
    n = features.shape[0]
    return PreferencePairs(features, torch.zeros(n, dtype=torch.int64, device=features.device), [user])
