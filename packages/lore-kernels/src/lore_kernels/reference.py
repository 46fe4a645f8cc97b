"""Pure-torch reference of the ops: the oracle every kernel is tested against.

For row m of user u = user[m] (docs/architecture.md, "The op"):

    margin_m = Z_m . V S_u          loss = sum_m c_m softplus(-tau margin_m)
    g_m      = -c_m tau sigmoid(-tau margin_m)
    dV = Z^T (g . S[user])          dS[u] = sum_{m: user_m = u} g_m (Z V)_m

With label noise eps > 0 the per-row likelihood is
p_m = eps + (1 - 2 eps) sigmoid(tau margin_m) (a label flipped with
probability eps whatever the margin): loss = -sum_m c_m log p_m. `Likelihood`
holds (tau, eps) and is the one Python copy of these formulas.

Written the plain per-row way (two skinny matmuls with Z), not the per-user
head way the kernels use, so that the oracle shares no algorithm with them.
Accumulation in fp32 whatever Z's storage dtype (fp64 stays fp64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class Likelihood:
    """The label model every fit, posterior and probability uses: one home for it.

    The chosen response of a pair with margin m wins with probability

        P(label | m) = eps + (1 - 2 eps) sigmoid(tau m)

    (plain Bradley-Terry at eps = ``label_noise`` = 0; with eps > 0 each label
    is taken to be flipped with probability eps whatever the margin, so a
    pair the model is sure is mislabelled costs at most -log eps). Callers
    pass *margins*: tau is applied inside every method. The fused op keeps
    the two scalars at its boundary (``lowrank_bt(..., tau, label_noise)``);
    the C++ copy of these formulas is ``csrc/lowrank_bt_row.h``.
    """

    tau: float = 0.01
    label_noise: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be a finite number > 0, got {self.tau}")
        check_label_noise(self.label_noise)

    def logit(self, margin: torch.Tensor) -> torch.Tensor:
        """tau * margin: the Bradley-Terry logit of a margin."""
        return self.tau * margin

    def terms(self, margin: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row loss c * -log P(label | margin) and its margin gradient g (row weights c)."""
        logit = self.tau * margin
        c = weight.to(margin.dtype)
        eps = self.label_noise
        if eps == 0.0:
            return c * F.softplus(-logit), -c * self.tau * torch.sigmoid(-logit)
        log_p = _log_likelihood(logit, eps)
        slope = torch.exp(F.logsigmoid(logit) + F.logsigmoid(-logit) - log_p)
        return -c * log_p, -c * self.tau * (1.0 - 2.0 * eps) * slope

    def probability(self, margin: torch.Tensor) -> torch.Tensor:
        """P(label | margin) = eps + (1 - 2 eps) sigmoid(tau margin)."""
        eps = self.label_noise
        return eps + (1.0 - 2.0 * eps) * torch.sigmoid(self.tau * margin)

    def log_likelihood(self, margin: torch.Tensor) -> torch.Tensor:
        """log P(label | margin), stable for any margin."""
        return _log_likelihood(self.tau * margin, self.label_noise)

    def fisher(self, margin: torch.Tensor) -> torch.Tensor:
        """Fisher information of one label about its margin: tau^2 p'^2 / (p (1 - p)).

        tau^2 sigmoid(x) sigmoid(-x) at x = tau m for plain Bradley-Terry; with
        label noise a sure prediction teaches less, since its label may be
        one of the flipped ones.
        """
        logit = self.tau * margin
        slope = torch.sigmoid(logit) * torch.sigmoid(-logit)
        eps = self.label_noise
        if eps == 0.0:
            return self.tau * self.tau * slope
        p = eps + (1.0 - 2.0 * eps) * torch.sigmoid(logit)
        return self.tau * self.tau * ((1.0 - 2.0 * eps) ** 2 * slope * slope / (p * (1.0 - p)))

    def tempered(self, temperature: float) -> Likelihood:
        """The same likelihood at logit scale tau / T (a calibration temperature T)."""
        return replace(self, tau=self.tau / temperature)


def _log_likelihood(logit: torch.Tensor, label_noise: float) -> torch.Tensor:
    """log(eps + (1 - 2 eps) sigmoid(logit)), stable for any logit."""
    if label_noise == 0.0:
        return F.logsigmoid(logit)
    floor = torch.full_like(logit, math.log(label_noise))
    return torch.logaddexp(floor, F.logsigmoid(logit) + math.log1p(-2.0 * label_noise))


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
    losses, g = Likelihood(tau, label_noise).terms(margin, weight)
    dV = Zf.T @ (g[:, None] * S_rows)
    dS = torch.zeros_like(Sf).index_add_(0, user, g[:, None] * P)
    return losses.sum(), margin, dV, dS
