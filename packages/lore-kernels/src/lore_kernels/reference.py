"""Pure-torch reference of the ops: the oracle every kernel is tested against.

For row m of user u = user[m] (docs/architecture.md, "The op"):

    margin_m = Z_m . V S_u          loss = sum_m c_m softplus(-tau margin_m)
    g_m      = -c_m tau sigmoid(-tau margin_m)
    dV = Z^T (g . S[user])          dS[u] = sum_{m: user_m = u} g_m (Z V)_m

With label noise eps > 0 the per-row likelihood is
p_m = eps + (1 - 2 eps) sigmoid(tau margin_m) (a label flipped with
probability eps whatever the margin): loss = -sum_m c_m log p_m.

Written the plain per-row way (two skinny matmuls with Z), not the per-user
head way the kernels use, so that the oracle shares no algorithm with them.
Accumulation in fp32 whatever Z's storage dtype (fp64 stays fp64).
"""

from __future__ import annotations

import math

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
    margin: torch.Tensor, weight: torch.Tensor, tau: float, label_noise: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss c * -log P(label | margin) and its margin gradient g.

    P = sigmoid(tau margin) (Bradley-Terry), or with ``label_noise`` eps > 0
    eps + (1 - 2 eps) sigmoid(tau margin), which bounds a mislabelled pair's
    loss by -log eps.
    """
    logit = tau * margin
    c = weight.to(margin.dtype)
    if label_noise == 0.0:
        return c * F.softplus(-logit), -c * tau * torch.sigmoid(-logit)
    log_p = label_log_likelihood(logit, label_noise)
    slope = torch.exp(F.logsigmoid(logit) + F.logsigmoid(-logit) - log_p)
    return -c * log_p, -c * tau * (1.0 - 2.0 * label_noise) * slope


def label_log_likelihood(logit: torch.Tensor, label_noise: float) -> torch.Tensor:
    """log P(label) = log(eps + (1 - 2 eps) sigmoid(logit)), stable for any logit."""
    check_label_noise(label_noise)
    if label_noise == 0.0:
        return F.logsigmoid(logit)
    floor = torch.full_like(logit, math.log(label_noise))
    return torch.logaddexp(floor, F.logsigmoid(logit) + math.log1p(-2.0 * label_noise))


def label_probability(logit: torch.Tensor, label_noise: float) -> torch.Tensor:
    """P(label) = eps + (1 - 2 eps) sigmoid(logit): the likelihood's probability."""
    check_label_noise(label_noise)
    return label_noise + (1.0 - 2.0 * label_noise) * torch.sigmoid(logit)


def label_fisher(logit: torch.Tensor, label_noise: float) -> torch.Tensor:
    """Fisher information of one label about its logit: p'^2 / (p (1 - p)).

    sigmoid(x) sigmoid(-x) for plain Bradley-Terry; with label noise a sure
    prediction teaches less, since its label may be one of the flipped ones.
    """
    check_label_noise(label_noise)
    slope = torch.sigmoid(logit) * torch.sigmoid(-logit)
    if label_noise == 0.0:
        return slope
    p = label_probability(logit, label_noise)
    return (1.0 - 2.0 * label_noise) ** 2 * slope * slope / (p * (1.0 - p))


def check_label_noise(label_noise: float) -> None:
    """The label-noise likelihood needs 0 <= eps < 0.5 (at 0.5 a label says nothing)."""
    if not 0.0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}")


def lowrank_bt_reference(
    Z: torch.Tensor,
    user: torch.Tensor,
    weight: torch.Tensor,
    V: torch.Tensor,
    S: torch.Tensor,
    tau: float,
    label_noise: float = 0.0,
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
    losses, g = bt_terms_reference(margin, weight, tau, label_noise)
    dV = Zf.T @ (g[:, None] * S_rows)
    dS = torch.zeros_like(Sf).index_add_(0, user, g[:, None] * P)
    return losses.sum(), margin, dV, dS
