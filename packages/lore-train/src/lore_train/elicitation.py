"""Which comparisons to ask a user: greedy expected information gain under the posterior.

Under the Laplace posterior N(w*, Sigma) of a user's logits, linearized at
w*, the answer to comparison c (projected difference q_c = V^T (phi_a -
phi_b)) is a Bernoulli in the margin m_c = q_c . s, whose gradient in the
logits is g_c = J q_c. The expected information gain about w of asking c is

    IG_c = 1/2 log(1 + lambda_c g_c^T Sigma g_c),   lambda_c = F(m_c)

(F the label's Fisher information about its margin, tau^2 p_c (1 - p_c) for
plain Bradley-Terry with p_c the predicted preference;
`lore_kernels.Likelihood.fisher`), the mutual information of the answer and
the weights in the linear-Gaussian approximation. It is the same whichever
way round the pair is shown, and, like the posterior update it implies, does
not depend on the answer, so a batch is chosen greedily: pick the best,
shrink Sigma as if it had been answered (a rank-one update), and repeat.
That keeps the n suggestions from asking the same thing twice.
"""

from __future__ import annotations

import torch

from lore_kernels import Likelihood

from .posterior import softmax_jacobian


def greedy_information_gain(
    Q: torch.Tensor,
    W: torch.Tensor,
    cov: torch.Tensor,
    likelihood: Likelihood,
    n: int,
    *,
    available: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``n`` candidates per user, greedily by information gain, batch-aware.

    Q [B, C, K] projected candidates of B users (padding allowed),
    W [B, K] MAP logits, cov [B, K, K] logit covariance, ``available``
    [B, C] bool (False: padding or already asked). Returns the picked
    indices [B, n] (-1 when a user ran out of candidates) and their gains
    [B, n] (each given the ones picked before it).
    """
    B, C, _ = Q.shape
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    Q = Q.to(torch.float64)
    S = torch.softmax(W.to(torch.float64), dim=1)
    G = torch.einsum("bkl,bcl->bck", softmax_jacobian(S), Q)  # margin gradients [B, C, K]
    lam = likelihood.fisher(torch.einsum("bck,bk->bc", Q, S))
    Sigma = cov.to(torch.float64).clone()
    free = torch.ones(B, C, dtype=torch.bool, device=Q.device) if available is None else available.clone()
    picked = torch.full((B, n), -1, dtype=torch.int64, device=Q.device)
    gains = torch.zeros(B, n, dtype=torch.float64, device=Q.device)
    rows = torch.arange(B, device=Q.device)
    for i in range(n):
        SG = torch.einsum("bkl,bcl->bck", Sigma, G)
        quad = (G * SG).sum(dim=2).clamp(min=0)
        gain = 0.5 * torch.log1p(lam * quad)
        gain = torch.where(free, gain, torch.full_like(gain, -1.0))
        best = gain.argmax(dim=1)
        ok = free[rows, best]
        picked[:, i] = torch.where(ok, best, torch.full_like(best, -1))
        gains[:, i] = torch.where(ok, gain[rows, best], torch.zeros_like(gain[:, 0]))
        free[rows[ok], best[ok]] = False
        # rank-one posterior update as if the picked comparison had been answered
        sg = SG[rows, best]  # [B, K]
        denom = 1 + lam[rows, best] * quad[rows, best]
        update = (lam[rows, best] / denom)[:, None, None] * sg[:, :, None] * sg[:, None, :]
        Sigma = Sigma - torch.where(ok[:, None, None], update, torch.zeros_like(update))
    return picked, gains
