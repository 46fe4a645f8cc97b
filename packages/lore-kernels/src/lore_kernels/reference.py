"""Pure-torch reference of the ops: the oracle every kernel is tested against.

For row m of user u = user[m] (docs/architecture.md, "The op"):

    margin_m = Z_m . V S_u          loss = sum_m c_m softplus(-tau margin_m)
    g_m      = -c_m tau sigmoid(-tau margin_m)
    dV = Z^T (g . S[user])          dS[u] = sum_{m: user_m = u} g_m (Z V)_m

Written the plain per-row way (two skinny matmuls with Z), not the per-user
head way the kernels use, so that the oracle shares no algorithm with them.
Accumulation in fp32 whatever Z's storage dtype (fp64 stays fp64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def acc_dtype(Z: torch.Tensor) -> torch.dtype:
    """The ops' accumulation and output dtype: float64 for float64 Z, else float32."""
    return torch.float64 if Z.dtype == torch.float64 else torch.float32


def project_reference(
    Z: torch.Tensor, V: torch.Tensor, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """P = Z V, [M, K], computed in ``dtype`` (default: the accumulation dtype)."""
    dtype = dtype or acc_dtype(Z)
    return Z.to(dtype) @ V.to(dtype)


def lowrank_margin_reference(
    Z: torch.Tensor,
    user: torch.Tensor,
    V: torch.Tensor,
    S: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """margin_m = Z_m . V S_{user_m}, [M]."""
    P = project_reference(Z, V, dtype=dtype)
    return (P * S.to(P.dtype)[user]).sum(dim=1)


def bt_terms_reference(
    margin: torch.Tensor, weight: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row Bradley-Terry loss c softplus(-tau margin) and its margin gradient g."""
    logit = tau * margin
    c = weight.to(margin.dtype)
    return c * F.softplus(-logit), -c * tau * torch.sigmoid(-logit)


def lowrank_bt_reference(
    Z: torch.Tensor,
    user: torch.Tensor,
    weight: torch.Tensor,
    V: torch.Tensor,
    S: torch.Tensor,
    tau: float,
    *,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (loss [], margin [M], dV [d, K], dS [N, K]).

    Everything is computed in ``dtype``, by default the accumulation dtype;
    tests pass float64 for the ground truth, or bf16/fp16 for "plain torch in
    low precision" (the error budget a kernel is held to).
    """
    Zf = Z.to(dtype or acc_dtype(Z))
    Sf = S.to(Zf.dtype)
    P = Zf @ V.to(Zf.dtype)
    S_rows = Sf[user]
    margin = (P * S_rows).sum(dim=1)
    losses, g = bt_terms_reference(margin, weight, tau)
    dV = Zf.T @ (g[:, None] * S_rows)
    dS = torch.zeros_like(Sf).index_add_(0, user, g[:, None] * P)
    return losses.sum(), margin, dV, dS
