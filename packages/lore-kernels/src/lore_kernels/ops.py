"""The public ops: backend dispatch and the differentiable entry point.

Backends (DESIGN §4): ``"cuda"`` runs the fused CUDA kernel on CUDA tensors,
``"cpu"`` the C++/OpenMP kernel on CPU tensors, ``"torch"`` the pure-torch
reference. The choice is per call, from the device of Z: the native kernel
for that device when it is built, else the reference. ``LORE_BACKEND=torch|
cpu|cuda`` forces one; forcing a backend that is not built, or one that does
not match Z's device, is an error rather than a silent fallback.

The native op ``torch.ops.lore.lowrank_bt`` computes the loss and both
gradients in its forward pass; its registered backward only rescales the
saved dV, dS by the incoming loss gradient (as Liger's fused losses do).
"""

from __future__ import annotations

import os

import torch

from . import _native
from .reference import lowrank_bt_reference, project_reference

BACKENDS = ("torch", "cpu", "cuda")


def _forced() -> str | None:
    name = os.environ.get("LORE_BACKEND", "").strip().lower()
    if not name:
        return None
    if name not in BACKENDS:
        raise ValueError(f"LORE_BACKEND must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name != "torch" and not _native.has_kernel(name):
        why = f" (loading it failed: {_native.LOAD_ERROR})" if _native.LOAD_ERROR else ""
        extra = (
            " with a CUDA torch, the CUDA toolkit and LORE_BUILD_CUDA unset"
            if name == "cuda"
            else ""
        )
        raise RuntimeError(
            f"LORE_BACKEND={name} but the {name} kernel of lore_kernels is not built{why}: "
            f"{_native.BUILD_HINT}{extra}"
        )
    return name


def _backend_for(device: torch.device) -> str:
    forced = _forced()
    if forced is not None:
        if forced != "torch" and device.type != forced:
            raise RuntimeError(
                f"LORE_BACKEND={forced} but the tensors are on {device}; "
                f"move them to {forced} or unset LORE_BACKEND"
            )
        return forced
    if device.type in ("cpu", "cuda") and _native.has_kernel(device.type):
        return device.type
    return "torch"


def backend(device: torch.device | str | None = None) -> str:
    """Backend the ops run on for tensors on ``device``: ``"torch"``, ``"cpu"`` or ``"cuda"``.

    Without a device it answers for where a trainer would put Z: CUDA when a
    GPU is visible, else the CPU (or the forced ``LORE_BACKEND``). Pass
    ``Z.device`` for the exact answer when both kernels are built.
    """
    if device is None:
        forced = _forced()
        if forced is not None:
            return forced
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _backend_for(torch.device(device))


def lowrank_bt(Z, user, weight, V, S, tau: float):
    """Fused loss, margin and both gradients in one pass over Z (no autograd).

    Returns ``(loss [], margin [M], dV [d, K], dS [N, K])`` in float32 (float64
    on the native backends when Z is float64).
    """
    if _backend_for(Z.device) == "torch":
        return lowrank_bt_reference(Z, user, weight, V, S, tau)
    return torch.ops.lore.lowrank_bt(Z, user, weight, V, S, float(tau))


def project(Z: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """P = Z V, fp32 [M, K] (differentiable w.r.t. V and Z)."""
    if _backend_for(Z.device) == "torch":
        return project_reference(Z, V)
    return torch.ops.lore.project(Z, V)


class _ReferenceBT(torch.autograd.Function):
    """The torch backend's differentiable path: same saved-gradient scheme as the op."""

    @staticmethod
    def forward(ctx, Z, user, weight, V, S, tau):
        loss, margin, dV, dS = lowrank_bt_reference(Z, user, weight, V, S, tau)
        ctx.save_for_backward(dV, dS)
        ctx.mark_non_differentiable(margin)
        return loss, margin

    @staticmethod
    def backward(ctx, grad_loss, grad_margin):
        dV, dS = ctx.saved_tensors
        return None, None, None, grad_loss * dV, grad_loss * dS, None


def lowrank_bt_loss(Z, user, weight, V, S, tau: float):
    """Differentiable (loss, margin): gradients flow to V and S through the loss only.

    The margin is returned for logging and accuracy; it carries no gradient.
    """
    if _backend_for(Z.device) == "torch":
        loss, margin = _ReferenceBT.apply(Z, user, weight, V, S, tau)
    else:
        loss, margin, _, _ = torch.ops.lore.lowrank_bt(Z, user, weight, V, S, float(tau))
    return loss, margin.detach()


def _acc_dtype(Z: torch.Tensor) -> torch.dtype:
    return torch.float64 if Z.dtype == torch.float64 else torch.float32


def _register_native() -> None:
    """Shapes for torch.compile/FakeTensor and the autograd formulas of the native ops."""

    @torch.library.register_fake("lore::lowrank_bt")
    def _(Z, user, weight, V, S, tau):
        torch._check(Z.dim() == 2, lambda: "lore::lowrank_bt: Z must be 2-D")
        torch._check(V.dim() == 2 and V.shape[0] == Z.shape[1], lambda: "V must be [d, K]")
        torch._check(S.dim() == 2 and S.shape[1] == V.shape[1], lambda: "S must be [N, K]")
        acc = _acc_dtype(Z)
        return (
            Z.new_empty((), dtype=acc),
            Z.new_empty((Z.shape[0],), dtype=acc),
            V.new_empty(V.shape, dtype=acc),
            S.new_empty(S.shape, dtype=acc),
        )

    @torch.library.register_fake("lore::project")
    def _(Z, V):
        torch._check(Z.dim() == 2, lambda: "lore::project: Z must be 2-D")
        torch._check(V.dim() == 2 and V.shape[0] == Z.shape[1], lambda: "V must be [d, K]")
        return Z.new_empty((Z.shape[0], V.shape[1]), dtype=_acc_dtype(Z))

    def bt_setup_context(ctx, inputs, output):
        _, margin, dV, dS = output
        ctx.save_for_backward(dV, dS)
        # Only the loss is differentiable: a gradient reaching margin, dV or dS
        # must fail loudly rather than be dropped.
        ctx.mark_non_differentiable(margin, dV, dS)

    def bt_backward(ctx, grad_loss, grad_margin, grad_dV, grad_dS):
        dV, dS = ctx.saved_tensors
        gV = grad_loss * dV if ctx.needs_input_grad[3] else None
        gS = grad_loss * dS if ctx.needs_input_grad[4] else None
        return None, None, None, gV, gS, None

    torch.library.register_autograd("lore::lowrank_bt", bt_backward, setup_context=bt_setup_context)

    def project_setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def project_backward(ctx, grad_p):
        Z, V = ctx.saved_tensors
        gZ = (grad_p @ V.T).to(Z.dtype) if ctx.needs_input_grad[0] else None
        gV = (Z.to(grad_p.dtype).T @ grad_p).to(V.dtype) if ctx.needs_input_grad[1] else None
        return gZ, gV

    torch.library.register_autograd(
        "lore::project", project_backward, setup_context=project_setup_context
    )


if _native.LOAD_ERROR is None:
    _register_native()
