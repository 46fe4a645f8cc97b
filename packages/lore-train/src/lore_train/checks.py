"""The numbers an API call takes, checked where it is called.

A NaN learning rate, a negative step count or a posterior precision that is
not positive definite would otherwise surface later and elsewhere: as a
checkpoint that `load()` refuses, a std of 0, a RuntimeError or a
LinAlgError from deep inside torch. Each check raises ValueError naming the
argument (or the user) at fault.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def positive_finite(name: str, value: object) -> float:
    """``value`` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def finite_rows(name: str, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` unless some row holds NaN or inf (that row is named)."""
    if rows.is_floating_point() and not bool(torch.isfinite(rows).all()):
        bad = (~torch.isfinite(rows)).reshape(rows.shape[0], -1).any(dim=1).nonzero()
        raise ValueError(f"{name}: row {int(bad[0, 0])} is not finite (NaN or inf)")
    return rows


def precision_ok(H: torch.Tensor, user: str) -> torch.Tensor:
    """A user's Laplace precision [K, K], checked: finite, symmetric and positive definite
    on the logits' identifiable subspace (orthogonal to 1), so a covariance exists."""
    K = H.shape[-1]
    if H.shape != (K, K) or not bool(torch.isfinite(H).all()):
        raise ValueError(f"user {user!r}: posterior precision is not a finite [{K}, {K}] matrix")
    if K == 1:
        return H
    H64 = H.to(torch.float64)
    if not torch.allclose(H64, H64.T, rtol=1e-6, atol=1e-9 * max(1.0, float(H64.abs().max()))):
        raise ValueError(f"user {user!r}: posterior precision is not symmetric")
    A = torch.eye(K, dtype=torch.float64, device=H.device) - 1.0 / K
    B, _ = torch.linalg.qr(A[:, : K - 1])
    inner = B.T @ H64 @ B
    _, info = torch.linalg.cholesky_ex(0.5 * (inner + inner.T))
    if int(info) != 0:
        raise ValueError(f"user {user!r}: posterior precision is not positive definite")
    return H
