"""Instant adaptation: the exact MAP of users' K logits on a frozen basis, by Newton.

A new user's problem is K-dimensional: with the projected rows p_m = V^T z_m
(P = Z V, computed once) the negative log posterior of logits w is

    f(w) = sum_m c_m l(tau p_m . s) - log p(w),     s = softmax(w)

(l the label's negative log-likelihood, plain Bradley-Terry or with label
noise, `lore_kernels.reference`; c_m the row weights divided by the user's
mean weight, so a user's prior weighs like one row, as in the Adam path).
The prior is the population Dirichlet, log p(w) = alpha . log softmax(w)
(`lore_train.prior`), or, with none, the reference's N(0, 1) logit
initialization read as a prior (`posterior.FLAT_PRECISION`): maximum
likelihood has no maximum on separable pairs (a user's logits run off to
infinity), so some prior is needed for a MAP to exist.

With a_m = dm/dw = J p_m (J = diag(s) - s s^T), b = sum_m c_m l'(m) a_m the
likelihood's gradient, the exact Hessian is

    H = sum_m c_m l''(m) a_m a_m^T + diag(b) - s b^T - b s^T + H_prior,

H_prior = A J for the Dirichlet (A = sum alpha), I for none. Each step
solves with the exact H where its Cholesky factor exists (near the MAP it
does), else with the Gauss-Newton/Fisher matrix (l'' replaced by the
label's Fisher information, b-terms dropped: always positive definite with
the prior), then backtracks on f (Armijo). The Dirichlet objective is
invariant to shifts along 1, so 1 1^T is added to H: it fixes the step's
component along 1 to zero and leaves the rest as Newton's. A user stops when
the gradient's norm is below ``tol``; users are independent problems solved
side by side, padded to one dense [N, n_max, K] block so every step is a
handful of batched matmuls and K x K solves.

The precision returned is the Fisher (Gauss-Newton) matrix at the MAP,
exactly what `posterior.laplace_precision` computes, so a caller can store
it as the user's Laplace posterior without a second pass over the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lore_kernels import Likelihood

from .posterior import FLAT_PRECISION

DEFAULT_TOL = 1e-5  # |grad f|: the weights are then within ~1e-7 of the MAP on the benchmarks
DEFAULT_MAX_ITER = 50
ARMIJO = 1e-4
MAX_HALVINGS = 40


@dataclass(frozen=True)
class NewtonResult:
    """The MAP logits and what the solve did.

    W: logits [N, K] (float64). precision: Laplace precision [N, K, K]
    (float64, the Fisher matrix of f at W). iterations: Newton steps taken
    (the most any user needed). grad_norm: |grad f| [N] at W. converged:
    [N] bool, grad_norm <= tol.
    """

    W: torch.Tensor
    precision: torch.Tensor
    iterations: int
    grad_norm: torch.Tensor
    converged: torch.Tensor


def newton_map(
    P: torch.Tensor,
    user: torch.Tensor,
    num_users: int,
    likelihood: Likelihood,
    *,
    prior: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    init: torch.Tensor | None = None,
) -> NewtonResult:
    """The MAP logits [N, K] of ``num_users`` users from projected rows P [M, K].

    ``user`` [M]: each row's owner (0..N-1, any order). ``likelihood``: the
    label model (`TrainConfig.likelihood`, `PersonalRewardModel.likelihood`). ``prior``: a
    Dirichlet concentration [K], or None for the N(0, I) logit prior.
    ``weight`` [M]: row weights (the config's reduction, `row_weights`);
    only their ratio within a user matters. ``init``: starting logits
    (default: the prior's mode). Computed in float64 whatever P's dtype.
    """
    if P.ndim != 2 or user.shape != (P.shape[0],):
        raise ValueError(f"P must be [M, K] with one owner per row, got P {tuple(P.shape)}, "
                         f"user {tuple(user.shape)}")
    tau, label_noise = likelihood.tau, likelihood.label_noise  # checked by Likelihood
    if tol <= 0 or max_iter < 0:
        raise ValueError(f"tol must be > 0 and max_iter >= 0, got {tol}, {max_iter}")
    K, device, dt = P.shape[1], P.device, torch.float64
    if prior is not None:
        if prior.shape != (K,):
            raise ValueError(f"prior has shape {tuple(prior.shape)}, the rows K={K}")
        if not bool((prior > 0).all()):
            raise ValueError("the Dirichlet prior's concentration must be positive")
        alpha = prior.to(device, dt)
    else:
        alpha = None
    problem = _Problem(P, user, num_users, tau, label_noise, alpha, weight)
    if init is not None:
        W = init.to(device, dt).clone()
    elif alpha is not None:
        W = torch.log(alpha / alpha.sum()).expand(num_users, K).clone()
    else:
        W = torch.zeros(num_users, K, dtype=dt, device=device)
    if K <= 1:  # softmax of one logit is 1: nothing to fit
        W = torch.zeros(num_users, K, dtype=dt, device=device)
        f, g, _, fisher = problem.evaluate(W, exact=False)
        norm = torch.linalg.vector_norm(g, dim=1)
        return NewtonResult(W, fisher, 0, norm, norm <= tol)
    shift = torch.ones(K, K, dtype=dt, device=device) if alpha is not None else None
    f, g, H, fisher = problem.evaluate(W)
    stuck = torch.zeros(num_users, dtype=torch.bool, device=device)
    iterations = 0
    while iterations < max_iter:
        active = (torch.linalg.vector_norm(g, dim=1) > tol) & ~stuck
        if not bool(active.any()):
            break
        iterations += 1
        step = _newton_step(H, fisher, g, shift)
        step[~active] = 0.0
        slope = (g * step).sum(dim=1)  # < 0: a descent direction
        slack = 1e-13 * (1.0 + f.abs())  # rounding, once f is flat to machine precision
        trial = W + step
        full = problem.evaluate(trial)  # the full step first: near the MAP it is taken
        ok = full[0] <= f + ARMIJO * slope + slack
        if bool(ok.all()):
            W, (f, g, H, fisher) = trial, full
            continue
        t = torch.where(ok, 1.0, 0.5).to(dt)
        todo = active & ~ok
        W_new = torch.where(ok[:, None], trial, W)
        for _ in range(MAX_HALVINGS):  # Armijo backtracking for the users the full step failed
            trial = W + t[:, None] * step
            ok = problem.objective(trial) <= f + ARMIJO * t * slope + slack
            W_new[todo & ok] = trial[todo & ok]
            todo &= ~ok
            if not bool(todo.any()):
                break
            t = torch.where(todo, 0.5 * t, t)
        stuck |= todo  # no decrease at any step length: at the MAP to rounding
        W = W_new
        f, g, H, fisher = problem.evaluate(W)
    norm = torch.linalg.vector_norm(g, dim=1)
    return NewtonResult(W, fisher, iterations, norm, norm <= tol)


def _newton_step(H: torch.Tensor, fisher: torch.Tensor, g: torch.Tensor,
                 shift: torch.Tensor | None) -> torch.Tensor:
    """-H^{-1} g per user: the exact Hessian where it factors, else the Fisher matrix."""
    if shift is not None:
        H, fisher = H + shift, fisher + shift
    L, info = torch.linalg.cholesky_ex(H)
    bad = info != 0
    if bool(bad.any()):
        L_f, info_f = torch.linalg.cholesky_ex(fisher[bad])
        if bool((info_f != 0).any()):  # rounding only: damp until it factors
            eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
            damp = 1e-10 * fisher[bad].diagonal(dim1=-2, dim2=-1).abs().amax(-1).clamp(min=1.0)
            while bool((info_f != 0).any()):
                L_f, info_f = torch.linalg.cholesky_ex(fisher[bad] + damp[:, None, None] * eye)
                damp = damp * 10
        L = L.clone()
        L[bad] = L_f
    return -torch.cholesky_solve(g[..., None], L)[..., 0]


class _Problem:
    """The users' rows as one dense padded block [N, n_max, K] and f's pieces on it."""

    def __init__(self, P: torch.Tensor, user: torch.Tensor, N: int, tau: float, label_noise: float,
                 alpha: torch.Tensor | None, weight: torch.Tensor | None) -> None:
        dt, device = torch.float64, P.device
        M, K = P.shape
        self.tau, self.eps, self.alpha, self.K = tau, label_noise, alpha, K
        user = user.to(device)
        if M and (int(user.min()) < 0 or int(user.max()) >= N):
            raise ValueError(f"row owners must be in [0, {N}), got {int(user.min())}..{int(user.max())}")
        c = (torch.ones(M, dtype=dt, device=device) if weight is None
             else weight.to(device, dt).expand(M))
        if M and not bool((c > 0).all()):
            raise ValueError("row weights must be positive")
        counts = torch.bincount(user, minlength=N) if M else torch.zeros(N, dtype=torch.int64,
                                                                          device=device)
        n_max = int(counts.max()) if N and M else 0
        if M and bool((user[1:] >= user[:-1]).all()):
            order = None  # already grouped by user (the usual case): no sort
            sorted_user = user
        else:
            order = torch.argsort(user, stable=True)
            sorted_user = user[order]
        offsets = torch.cumsum(counts, 0) - counts
        rank = torch.arange(M, device=device) - offsets[sorted_user]
        self.P = torch.zeros(N, n_max, K, dtype=dt, device=device)
        self.c = torch.zeros(N, n_max, dtype=dt, device=device)
        rows_P = P.to(dt) if order is None else P.to(dt)[order]
        rows_c = c if order is None else c[order]
        if M:
            if N == 1:
                self.P[0], self.c[0] = rows_P, rows_c
            else:
                self.P[sorted_user, rank] = rows_P
                self.c[sorted_user, rank] = rows_c
        mean_c = self.c.sum(1) / counts.clamp(min=1).to(dt)
        self.c = self.c / mean_c.clamp(min=torch.finfo(dt).tiny)[:, None]
        self.c_tau, self.c_tau2 = self.c * tau, self.c * tau * tau
        self.empty = n_max == 0

    def _margins(self, S: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.P, S[:, :, None])[..., 0]  # [N, n]

    def _with_prior(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(W) and -log p(w) per user (up to a constant)."""
        if self.alpha is None:
            return torch.softmax(W, dim=1), (0.5 * FLAT_PRECISION) * W.square().sum(1)
        log_s = torch.log_softmax(W, dim=1)
        return log_s.exp(), -(log_s @ self.alpha)

    def objective(self, W: torch.Tensor) -> torch.Tensor:
        """f(w) [N]."""
        S, out = self._with_prior(W)
        if not self.empty:
            out = out + (self.c * _nll(self.tau * self._margins(S), self.eps)).sum(1)
        return out

    def evaluate(self, W: torch.Tensor, *, exact: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """f [N], grad [N, K], exact Hessian [N, K, K] and the Fisher matrix [N, K, K]."""
        S, f = self._with_prior(W)
        N, K = W.shape
        if self.alpha is None:
            g = FLAT_PRECISION * W
            H_prior = FLAT_PRECISION * torch.eye(K, dtype=W.dtype, device=W.device).expand(N, K, K)
        else:
            AS = self.alpha.sum() * S
            g = AS - self.alpha
            H_prior = torch.diag_embed(AS) - AS[:, :, None] * S[:, None, :]  # A J
        if self.empty:
            return f, g, H_prior.clone(), H_prior.clone()
        m = self._margins(S)
        a = S[:, None, :] * (self.P - m[..., None])  # dm/dw = J p, [N, n, K]
        nll, d1, d2, fisher = _row_terms(self.tau * m, self.eps)  # derivatives in x = tau m
        f = f + (self.c * nll).sum(1)
        at = a.transpose(1, 2)
        b = torch.bmm(at, (self.c_tau * d1)[..., None])[..., 0]  # the likelihood's gradient [N, K]
        g = g + b
        fisher_H = torch.baddbmm(H_prior, at * (self.c_tau2 * fisher)[:, None, :], a)
        if not exact:
            return f, g, fisher_H, fisher_H
        if self.eps == 0.0:  # plain Bradley-Terry: l'' is the Fisher information
            H = fisher_H.clone()
        else:
            H = torch.baddbmm(H_prior, at * (self.c_tau2 * d2)[:, None, :], a)
        sb = S[:, :, None] * b[:, None, :]
        H.diagonal(dim1=1, dim2=2).add_(b)
        H.sub_(sb).sub_(sb.transpose(1, 2))
        return f, g, H, fisher_H


def _nll(x: torch.Tensor, eps: float) -> torch.Tensor:
    """-log P(label | logit x) (Bradley-Terry, or eps + (1 - 2 eps) sigmoid(x))."""
    if eps == 0.0:
        return F.softplus(-x)
    return -torch.logaddexp(torch.full_like(x, math.log(eps)), F.logsigmoid(x) + math.log1p(-2 * eps))


def _row_terms(x: torch.Tensor, eps: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: l(x), l'(x), l''(x) and the label's Fisher information in x.

    With p = eps + (1 - 2 eps) sigma(x): l = -log p, l' = -p'/p,
    l'' = (p'/p)^2 - p''/p, Fisher p'^2 / (p (1 - p)); plain Bradley-Terry
    is eps = 0 (l'' = Fisher = sigma(x) sigma(-x)). The same formulas as
    `lore_kernels.Likelihood` (`terms` and `fisher`).
    """
    sig, sig_neg = torch.sigmoid(x), torch.sigmoid(-x)
    slope = sig * sig_neg
    if eps == 0.0:
        return F.softplus(-x), -sig_neg, slope, slope
    nll = _nll(x, eps)
    p = torch.exp(-nll)
    q = 1.0 - 2.0 * eps
    dp, d2p = q * slope, q * slope * (sig_neg - sig)
    ratio = dp / p
    fisher = dp * dp / (p * (1.0 - p))
    return nll, -ratio, ratio * ratio - d2p / p, fisher
