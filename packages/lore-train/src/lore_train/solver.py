"""The few-shot solver: new users' K logits on a frozen basis V.

P = Z V is computed once (by the fused op), so a step costs O(M K): the
margins of the projected rows, the loss gradient from the likelihood
(`lore_kernels.Likelihood.terms`, the one Python copy of that formula), its
sum per user, the softmax chain rule and Adam. The
fused op itself is not called per step: on rows K wide its fixed cost made
the fit two to three times slower on CPU. `logit_gradient` is tested against
autograd through the reference op. `lore_train.fewshot` fits a model's new
users with it (and stops each early); `PersonalRewardModel.adapt` one user.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import lore_kernels
from lore_datasets import PreferencePairs
from lore_kernels import Likelihood

from ._util import progress_bar, seeded_generator
from .config import FewShotSettings
from .newton import newton_map
from .objective import row_weights
from .prior import log_prior_grad, prior_logits


def fit_few_shot(
    V: torch.Tensor,
    pairs: PreferencePairs,
    settings: FewShotSettings | None = None,
    *,
    prior: torch.Tensor | None = None,
    progress: bool = False,
    first_user: int = 0,
    total_users: int | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Fit logits [N, K] for ``pairs``' users on a frozen basis V.

    ``settings``: steps, lr, reduction, likelihood and seed (default
    `FewShotSettings()`, TrainConfig's defaults at seed 0; `TrainConfig.fewshot()`
    gives a config's). The likelihood should be the basis's. Users are
    independent problems, so one Adam over all rows equals separate fits.
    Logits start at N(0, 1) like the reference; a user with no pairs keeps
    zero logits (uniform weights) rather than a random draw. K <= 1 needs no
    fitting (softmax of one logit is 1).

    ``prior``: a Dirichlet concentration [K] (`lore_train.prior`; the caller
    resolves ``settings.prior`` into it); the fit is then MAP, each user's
    log-prior weighted like one of their rows' loss, starting from the prior
    mean, and a user with no pairs gets the prior mean. When ``pairs`` is one
    process's block of users (``first_user`` on, of ``total_users``), the
    block's rows of the full initial draw are used, so the fit equals the
    one-process fit. ``on_step(t, W)`` sees the logits after every step.

    ``settings.solver``: "newton" (`TrainConfig.fewshot_solver`'s default)
    solves for the exact MAP (`lore_train.newton`; steps, lr, seed and
    ``on_step`` do not apply, and without a prior the reference's N(0, 1)
    logit initialization is read as the prior); "adam" runs ``steps`` Adam
    steps, the reference's fit and the one early stopping watches.
    """
    settings = settings or FewShotSettings()
    if settings.solver == "newton":
        if on_step is not None:
            raise ValueError("on_step follows Adam steps; the Newton solver has none")
        return _fit_newton(V, pairs, settings, prior)
    steps, lr, seed = settings.steps, settings.lr, settings.seed
    N, K = pairs.num_users, V.shape[1]
    device = V.device
    counts = pairs.pairs_per_user().to(device)
    if prior is not None and prior.shape != (K,):
        raise ValueError(f"prior has shape {tuple(prior.shape)}, the basis K={K}")
    if prior is not None and K > 1:
        prior = prior.to(device, torch.float32)
        W = prior_logits(prior).expand(N, K).clone()
        if pairs.num_pairs == 0:
            return W
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
    c = row_weights(pairs, settings.reduction).to(device)
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
            grad = logit_gradient(P, user, c, W, settings.likelihood)
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


def _fit_newton(V: torch.Tensor, pairs: PreferencePairs, settings: FewShotSettings,
                prior: torch.Tensor | None) -> torch.Tensor:
    """`fit_few_shot` by `newton_map`: all users in one batched solve, logits [N, K] fp32."""
    K = V.shape[1]
    if prior is not None and prior.shape != (K,):
        raise ValueError(f"prior has shape {tuple(prior.shape)}, the basis K={K}")
    with torch.no_grad():
        P = lore_kernels.project(pairs.features.to(V.device), V.detach())
    weight = row_weights(pairs, settings.reduction).to(V.device) if pairs.num_pairs else None
    result = newton_map(P, pairs.user.to(V.device), pairs.num_users, settings.likelihood,
                        prior=prior, weight=weight)
    return result.W.to(torch.float32)


def logit_gradient(
    P: torch.Tensor, user: torch.Tensor, c: torch.Tensor, W: torch.Tensor, likelihood: Likelihood,
) -> torch.Tensor:
    """d loss / d W [N, K] for projected rows P = Z V (the loss of `lore_kernels.lowrank_bt`)."""
    S = torch.softmax(W, dim=1)
    margin = (P * S[user]).sum(dim=1)  # z . V s_u, with z V precomputed
    g = likelihood.terms(margin, c)[1]  # d loss / d margin
    dS = torch.zeros_like(S).index_add_(0, user, P * g[:, None])
    return S * (dS - (dS * S).sum(dim=1, keepdim=True))  # softmax Jacobian


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
