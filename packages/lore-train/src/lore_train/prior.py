"""The population prior: what the seen users' weights say about a new user's.

A new user's weights s = softmax(w) live on the K-simplex. The seen users'
fitted weights are a sample from the population, and a Dirichlet(alpha)
fitted to them by maximum likelihood is the prior. In logit space its
log-density is, up to a constant and the softmax's shift invariance,

    log p(w) = alpha . log softmax(w)

(the Dirichlet density times the softmax Jacobian, prod_k s_k), whose
gradient ``alpha - sum(alpha) s`` is what `fit_few_shot` adds to the data
gradient. Its mode in logit space is s = alpha / sum(alpha), the Dirichlet
mean: with no pairs a new user is the population's mean user.

Why a Dirichlet and not the empirical mixture of the seen users' weights:
measured on LLMFAO, UKPConvArg1 and planted users (README, "Cold start"),
MAP under the Dirichlet is at least as accurate as the empirical mixture's
posterior mean at every shot count and gives a smooth, cheap objective;
`empirical_log_weights` keeps the mixture for that comparison.
"""

from __future__ import annotations

import numpy as np
import torch

from lore_kernels import Likelihood

# Softmax weights of confident seen users reach 1e-30; their logs would make
# the fitted concentration collapse toward 0. A weight below this counts as this.
WEIGHT_FLOOR = 1e-3
# A population of identical users has an infinite MLE concentration; cap sum(alpha)
# so a degenerate population is a strong prior, not one no data can move.
MAX_CONCENTRATION = 100.0


def fit_dirichlet(
    S: torch.Tensor, *, floor: float = WEIGHT_FLOOR, iterations: int = 200, tol: float = 1e-8
) -> torch.Tensor:
    """Maximum-likelihood Dirichlet concentration alpha [K] of simplex rows S [N, K].

    Minka's fixed point psi(alpha_k) = psi(sum alpha) + mean log s_k, started
    from the moment estimate. Rows are floored at ``floor`` and renormalized,
    so near-one-hot users do not drive alpha to 0. K = 1 returns [1.0].
    """
    if S.ndim != 2 or S.shape[0] == 0:
        raise ValueError(f"fit_dirichlet needs weights [N >= 1, K], got {tuple(S.shape)}")
    S = S.detach().to(torch.float64).cpu()
    K = S.shape[1]
    if K == 1:
        return torch.ones(1, dtype=torch.float32)
    S = S.clamp(min=floor)
    S = S / S.sum(dim=1, keepdim=True)
    mean_log = S.log().mean(dim=0)
    mean = S.mean(dim=0)
    var = S.var(dim=0, unbiased=False).clamp(min=1e-12)
    # moment estimate of sum(alpha): var_k = m_k (1 - m_k) / (A + 1)
    total = float((mean * (1 - mean) / var - 1).clamp(min=1e-2).median())
    alpha = mean * total
    for _ in range(iterations):
        new = _inverse_digamma(torch.digamma(alpha.sum()) + mean_log)
        if float((new - alpha).abs().max()) < tol:
            alpha = new
            break
        alpha = new
    total = float(alpha.sum())
    if not total <= MAX_CONCENTRATION:  # also catches NaN
        alpha = mean * MAX_CONCENTRATION if total != total else alpha * (MAX_CONCENTRATION / total)
    return alpha.to(torch.float32)


def prior_mean(alpha: torch.Tensor) -> torch.Tensor:
    """The Dirichlet mean alpha / sum(alpha): the population's mean user."""
    return alpha / alpha.sum()


def prior_logits(alpha: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is the prior mean (the MAP with no pairs)."""
    return torch.log(prior_mean(alpha))


def log_prior_grad(W: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """d/dW of alpha . log softmax(W) for each row of W [N, K]: alpha - sum(alpha) softmax(W)."""
    return alpha.to(W) - alpha.sum().to(W) * torch.softmax(W, dim=1)


def sample_dirichlet(alpha: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` seeded draws [n, K] from Dirichlet(alpha)."""
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(alpha.detach().cpu().to(torch.float64).numpy(), size=n)
    return torch.from_numpy(draws).to(torch.float32)


def empirical_log_weights(
    P: torch.Tensor, user: torch.Tensor, num_users: int, particles: torch.Tensor,
    likelihood: Likelihood,
) -> torch.Tensor:
    """Log posterior weights [N, n] of each particle s_p [n, K] for each user.

    With the empirical mixture prior (particles = the seen users' weights,
    equally likely) or with Dirichlet draws as particles, the posterior of a
    user is the particles reweighted by the likelihood of that user's rows
    (projected rows P [M, K], owners ``user``). Normalized per user.
    """
    margins = P.to(torch.float64) @ particles.to(torch.float64).T  # [M, n]
    nll, _ = likelihood.terms(margins, torch.ones(1, dtype=torch.float64))
    logw = torch.zeros(num_users, particles.shape[0], dtype=torch.float64, device=P.device)
    logw.index_add_(0, user.to(P.device), -nll)
    return logw - torch.logsumexp(logw, dim=1, keepdim=True)


def _inverse_digamma(y: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """x with digamma(x) = y (Minka's initialization, then Newton)."""
    x = torch.where(y >= -2.22, torch.exp(y) + 0.5, -1.0 / (y - torch.digamma(torch.ones(1, dtype=y.dtype))))
    for _ in range(steps):
        x = x - (torch.digamma(x) - y) / torch.polygamma(1, x)
    return x.clamp(min=1e-6)
