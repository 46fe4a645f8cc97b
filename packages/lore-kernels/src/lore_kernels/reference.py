"""Pure-torch reference of the fused op: the source of truth in tests.

Math (DESIGN §4): for row m of user u = user[m],

    margin_m = Z_m . V S_u          loss = sum_m c_m softplus(-tau margin_m)
    g_m      = -c_m tau sigmoid(-tau margin_m)
    dV = Z^T (g . S[user])          dS[u] = sum_{m: user_m = u} g_m (Z V)_m

Two skinny matmuls with Z (Z V and Z^T G); accumulation in fp32 whatever
Z's storage dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def project_reference(Z: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """P = Z V in fp32, [M, K]."""
    return Z.to(torch.float32) @ V.to(torch.float32)


def lowrank_bt_reference(
    Z: torch.Tensor,
    user: torch.Tensor,
    weight: torch.Tensor,
    V: torch.Tensor,
    S: torch.Tensor,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (loss [], margin [M], dV [d, K], dS [N, K]), all fp32."""
    Zf = Z.to(torch.float32)
    Sf = S.to(torch.float32)
    P = Zf @ V.to(torch.float32)
    S_rows = Sf[user]
    margin = (P * S_rows).sum(dim=1)
    logit = tau * margin
    c = weight.to(torch.float32)
    loss = (c * F.softplus(-logit)).sum()
    g = -c * tau * torch.sigmoid(-logit)
    dV = Zf.T @ (g[:, None] * S_rows)
    dS = torch.zeros_like(Sf).index_add_(0, user, g[:, None] * P)
    return loss, margin, dV, dS
