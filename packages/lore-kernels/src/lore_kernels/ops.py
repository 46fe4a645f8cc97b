"""The public ops: backend dispatch and the differentiable entry point.

Backends (docs/architecture.md): ``"cuda"`` runs the fused CUDA kernel on CUDA tensors,
``"cpu"`` the C++/OpenMP kernel on CPU tensors, ``"torch"`` the pure-torch
reference. The choice is per call, from the device of Z: the native kernel
for that device when it is built, else the reference. ``LORE_BACKEND=torch|
cpu|cuda`` forces one; forcing a backend that is not built, or one that does
not match Z's device, is an error rather than a silent fallback.

Every backend is a torch op with one schema: ``torch.ops.lore.*`` from the
compiled extension, ``torch.ops.lore_ref.*`` (the reference, defined below)
otherwise. One fake and one autograd registration serve both.
"""

from __future__ import annotations

import os

import torch

from . import _native
from .reference import (
    Likelihood,
    acc_dtype,
    check_label_noise,
    lowrank_bt_reference,
    lowrank_margin_reference,
    project_reference,
)

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


def _ops(device: torch.device, name: str):
    """The op that runs ``name`` for tensors on ``device``: native or the reference op."""
    if _backend_for(device) != "torch" and _native.has_op(name):
        return getattr(torch.ops.lore, name)
    return getattr(torch.ops.lore_ref, name)


def lowrank_bt(Z, user, weight, V, S, tau: float, label_noise: float = 0.0):
    """Fused loss, margin and both gradients in one pass over Z (no autograd).

    Returns ``(loss [], margin [M], dV [d, K], dS [N, K])`` in float32 (float64
    when Z is float64). ``label_noise`` eps > 0 uses the likelihood
    eps + (1 - 2 eps) sigmoid(tau margin) (labels flipped with probability eps).
    """
    check_label_noise(label_noise)
    return _ops(Z.device, "lowrank_bt")(Z, user, weight, V, S, float(tau), float(label_noise))


def lowrank_bt_loss(Z, user, weight, V, S, likelihood: Likelihood):
    """Differentiable (loss, margin) under ``likelihood``: gradients flow to V and S
    through the loss only.

    The margin is returned for logging and accuracy; it carries no gradient.
    """
    loss, margin, _, _ = lowrank_bt(Z, user, weight, V, S, likelihood.tau, likelihood.label_noise)
    return loss, margin


def lowrank_margin(Z, user, V, S) -> torch.Tensor:
    """margin_m = Z_m . V S_{user_m} [M] through per-user reward heads (no autograd).

    The evaluation path: each row of Z is read once whatever K is.
    """
    return _ops(Z.device, "lowrank_margin")(Z, user, V, S)


def project(Z: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """P = Z V, fp32 [M, K] (float64 for float64 Z; differentiable w.r.t. Z and V)."""
    return _ops(Z.device, "project")(Z, V)


# -- the torch backend as custom ops -------------------------------------------
# The reference runs as ops of its own namespace (``lore_ref``) with the same
# schemas as the native ``lore`` ops, so that every backend goes through one
# fake and one autograd registration below.


@torch.library.custom_op("lore_ref::lowrank_bt", mutates_args=())
def _lowrank_bt_ref(
    Z: torch.Tensor,
    user: torch.Tensor,
    weight: torch.Tensor,
    V: torch.Tensor,
    S: torch.Tensor,
    tau: float,
    label_noise: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return lowrank_bt_reference(Z, user, weight, V, S, tau, label_noise)


@torch.library.custom_op("lore_ref::lowrank_margin", mutates_args=())
def _lowrank_margin_ref(
    Z: torch.Tensor, user: torch.Tensor, V: torch.Tensor, S: torch.Tensor
) -> torch.Tensor:
    return lowrank_margin_reference(Z, user, V, S)


@torch.library.custom_op("lore_ref::project", mutates_args=())
def _project_ref(Z: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return project_reference(Z, V)


def _bt_fake(Z, user, weight, V, S, tau, label_noise=0.0):
    torch._check(Z.dim() == 2, lambda: "lowrank_bt: Z must be 2-D")
    torch._check(V.dim() == 2 and V.shape[0] == Z.shape[1], lambda: "V must be [d, K]")
    torch._check(S.dim() == 2 and S.shape[1] == V.shape[1], lambda: "S must be [N, K]")
    acc = acc_dtype(Z)
    return (
        Z.new_empty((), dtype=acc),
        Z.new_empty((Z.shape[0],), dtype=acc),
        V.new_empty(V.shape, dtype=acc),
        S.new_empty(S.shape, dtype=acc),
    )


def _margin_fake(Z, user, V, S):
    torch._check(Z.dim() == 2, lambda: "lowrank_margin: Z must be 2-D")
    torch._check(V.dim() == 2 and V.shape[0] == Z.shape[1], lambda: "V must be [d, K]")
    return Z.new_empty((Z.shape[0],), dtype=acc_dtype(Z))


def _project_fake(Z, V):
    torch._check(Z.dim() == 2, lambda: "project: Z must be 2-D")
    torch._check(V.dim() == 2 and V.shape[0] == Z.shape[1], lambda: "V must be [d, K]")
    return Z.new_empty((Z.shape[0], V.shape[1]), dtype=acc_dtype(Z))


# The fused op computes dV and dS in its forward pass; backward only rescales
# them by the incoming loss gradient (as Liger's fused losses do).
def _bt_setup_context(ctx, inputs, output):
    _, margin, dV, dS = output
    ctx.save_for_backward(dV, dS)
    # Only the loss is differentiable: a gradient reaching margin, dV or dS
    # must fail loudly rather than be dropped.
    ctx.mark_non_differentiable(margin, dV, dS)


def _bt_backward(ctx, grad_loss, grad_margin, grad_dV, grad_dS):
    dV, dS = ctx.saved_tensors
    gV = grad_loss * dV if ctx.needs_input_grad[3] else None
    gS = grad_loss * dS if ctx.needs_input_grad[4] else None
    return None, None, None, gV, gS, None, None


def _project_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _project_backward(ctx, grad_p):
    Z, V = ctx.saved_tensors
    gZ = (grad_p @ V.T).to(Z.dtype) if ctx.needs_input_grad[0] else None
    gV = (Z.to(grad_p.dtype).T @ grad_p).to(V.dtype) if ctx.needs_input_grad[1] else None
    return gZ, gV


def _register(namespace: str) -> None:
    """Shapes (for torch.compile/FakeTensor) and autograd of one namespace's ops."""
    ops = {
        name
        for name in ("lowrank_bt", "lowrank_margin", "project")
        if namespace == "lore_ref" or _native.has_op(name)
    }
    if "lowrank_bt" in ops:
        torch.library.register_fake(f"{namespace}::lowrank_bt", _bt_fake)
        torch.library.register_autograd(
            f"{namespace}::lowrank_bt", _bt_backward, setup_context=_bt_setup_context
        )
    if "lowrank_margin" in ops:
        torch.library.register_fake(f"{namespace}::lowrank_margin", _margin_fake)
    if "project" in ops:
        torch.library.register_fake(f"{namespace}::project", _project_fake)
        torch.library.register_autograd(
            f"{namespace}::project", _project_backward, setup_context=_project_setup_context
        )


_register("lore_ref")
_native.when_loaded(lambda: _register("lore"))
