"""The public ops: backend dispatch and the differentiable entry point."""

from __future__ import annotations

import torch

from .reference import lowrank_bt_reference, project_reference


def backend() -> str:
    """Name of the backend the ops run on: ``"torch"``, ``"cpu"`` or ``"cuda"``."""
    return "torch"


def lowrank_bt(Z, user, weight, V, S, tau: float):
    """Fused loss, margin and both gradients in one pass over Z (no autograd)."""
    return lowrank_bt_reference(Z, user, weight, V, S, tau)


def project(Z: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """P = Z V, fp32 [M, K]."""
    return project_reference(Z, V)


class _LowRankBT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Z, user, weight, V, S, tau):
        loss, margin, dV, dS = lowrank_bt(Z, user, weight, V, S, tau)
        ctx.save_for_backward(dV, dS)
        return loss, margin

    @staticmethod
    def backward(ctx, grad_loss, grad_margin):
        dV, dS = ctx.saved_tensors
        return None, None, None, grad_loss * dV, grad_loss * dS, None


def lowrank_bt_loss(Z, user, weight, V, S, tau: float):
    """Differentiable (loss, margin): gradients flow to V and S through the loss only.

    The margin is returned for logging and accuracy; it carries no gradient.
    """
    loss, margin = _LowRankBT.apply(Z, user, weight, V, S, tau)
    return loss, margin.detach()
