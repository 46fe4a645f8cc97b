"""How sure we are of a user's weights: a Laplace posterior over their logits.

K is small, so each user's posterior is a K x K Gaussian around the MAP
logits w* in the (K-1)-dimensional subspace orthogonal to 1 (softmax ignores
shifts along 1). Its precision is the Gauss-Newton Hessian of the negative
log posterior,

    H = sum_m F(m) (J p_m)(J p_m)^T + A J,
    J = diag(s) - s s^T,   s = softmax(w*),   A = sum(alpha)

(rows' projected features p_m = V^T z_m, F the label's Fisher information
about its margin -- tau^2 sig (1 - sig) at tau m for plain Bradley-Terry, see
`lore_kernels.Likelihood.fisher` -- and the Dirichlet prior's term A J).
A prediction's std is by default the delta method's (`delta_std`: the
prediction linearized at the MAP, closed form); on request, predictions
average over seeded logit draws pushed through the softmax, so probability
stays on the simplex however wide the posterior is.
`lore_train.prior.empirical_log_weights` is the particle alternative.
"""

from __future__ import annotations

import torch

from lore_kernels import Likelihood

DEFAULT_SAMPLES = 512
# Prior precision of the logits when there is no population prior (the
# reference's N(0, 1) initialization read as a prior): keeps H invertible.
FLAT_PRECISION = 1.0


def softmax_jacobian(S: torch.Tensor) -> torch.Tensor:
    """J = diag(s) - s s^T for each row of S [N, K] -> [N, K, K]."""
    return torch.diag_embed(S) - S[:, :, None] * S[:, None, :]


def laplace_precision(
    P: torch.Tensor,
    user: torch.Tensor,
    W: torch.Tensor,
    likelihood: Likelihood,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gauss-Newton precision [N, K, K] of the logits W [N, K] at the MAP.

    ``P`` [M, K] are the projected rows, ``user`` [M] their owner (row of W).
    ``prior`` is the Dirichlet concentration; None means an N(0, I) logit prior.
    ``likelihood``: the model's (`PersonalRewardModel.likelihood`).
    """
    N, K = W.shape
    S = torch.softmax(W.to(torch.float64), dim=1)
    J = softmax_jacobian(S)
    if prior is None:
        H = FLAT_PRECISION * torch.eye(K, dtype=torch.float64, device=W.device).expand(N, K, K).clone()
    else:
        H = prior.to(S).sum() * J
    if P.shape[0]:
        P = P.to(torch.float64)
        u = user.to(W.device)
        margin = (P * S[u]).sum(dim=1)
        curvature = likelihood.fisher(margin)
        grad = torch.einsum("mkl,ml->mk", J[u], P)  # dm/dw = J p
        H.index_add_(0, u, curvature[:, None, None] * grad[:, :, None] * grad[:, None, :])
    return H


def covariance(H: torch.Tensor) -> torch.Tensor:
    """Covariance [N, K, K] of the logits restricted to the subspace orthogonal to 1."""
    K = H.shape[-1]
    B = _centered_basis(K, H.dtype, H.device)  # [K, K-1]
    if K == 1:
        return torch.zeros_like(H)
    inner = B.T @ H @ B
    inner = 0.5 * (inner + inner.transpose(-1, -2))
    return B @ torch.linalg.inv(inner) @ B.T


def delta_std(Q: torch.Tensor, w: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value q_r . s and its delta-method std [R] for rows Q [R, K] of one user
    (MAP logits w [K], logit covariance cov [K, K]).

    Linearized at w*: d(q . s)/dw = J q = s * (q - q . s), so var = (J q)^T Sigma (J q).
    Closed form, no draws: the std of a reward, and, times the slope of the
    likelihood's probability, that of a preference probability.
    """
    s = torch.softmax(w.to(torch.float64), dim=0)
    Q = Q.to(torch.float64)
    value = Q @ s
    G = s * (Q - value[:, None])  # J q, rows
    var = ((G @ cov.to(torch.float64)) * G).sum(dim=1)
    return value, var.clamp(min=0).sqrt()


def logit_draws(W: torch.Tensor, cov: torch.Tensor, n: int = DEFAULT_SAMPLES, *, seed: int = 0) -> torch.Tensor:
    """Seeded weight draws softmax(w* + L eps) [N, n, K] from the Laplace posterior."""
    K = W.shape[1]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    eps = torch.randn(n, K, generator=gen, dtype=torch.float64).to(W.device)
    L = _sqrt_psd(cov.to(torch.float64))
    w = W.to(torch.float64)[:, None, :] + torch.einsum("nkl,sl->nsk", L, eps)
    return torch.softmax(w, dim=-1)


def reward_moments(Q: torch.Tensor, draws: torch.Tensor, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std [R] of reward q_r . s over draws, row r = projected item Q [R, K]
    of user ``owner[r]`` (an index into draws [N, n, K])."""
    values = torch.einsum("rk,rsk->rs", Q.to(torch.float64), draws[owner])
    return values.mean(dim=1), values.std(dim=1, unbiased=False)


def preference_moments(
    Q: torch.Tensor, draws: torch.Tensor, owner: torch.Tensor, likelihood: Likelihood,
) -> tuple[torch.Tensor, torch.Tensor]:
    """P(first preferred) and its std over the posterior, for rows Q [R, K]
    = V^T (phi_a - phi_b): mean and std of ``likelihood.probability`` of the
    margins q . s over draws."""
    values = likelihood.probability(torch.einsum("rk,rsk->rs", Q.to(torch.float64), draws[owner]))
    return values.mean(dim=1), values.std(dim=1, unbiased=False)


def _centered_basis(K: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An orthonormal basis [K, K-1] of the vectors orthogonal to 1."""
    if K == 1:
        return torch.zeros(1, 0, dtype=dtype, device=device)
    A = torch.eye(K, dtype=dtype, device=device) - 1.0 / K
    Q, _ = torch.linalg.qr(A[:, : K - 1])
    return Q


def _sqrt_psd(C: torch.Tensor) -> torch.Tensor:
    """A square root L L^T = C of PSD matrices [N, K, K] (eigen, negatives clipped)."""
    C = 0.5 * (C + C.transpose(-1, -2))
    values, vectors = torch.linalg.eigh(C)
    return vectors * values.clamp(min=0).sqrt()[..., None, :]
