"""lore_kernels: the per-user low-rank Bradley-Terry loss and its gradients.

    loss, margin, dV, dS = lowrank_bt(Z, user, weight, V, S, tau)   # one pass
    lowrank_bt(..., tau, label_noise=0.05)   # labels flipped at rate 0.05
    likelihood = Likelihood(tau=0.01, label_noise=0.05)   # the label model, one home
    likelihood.probability(margin)   # P(label); also terms, log_likelihood, fisher
    loss, margin = lowrank_bt_loss(Z, user, weight, V, S, likelihood)   # autograd
    margin = lowrank_margin(Z, user, V, S)                          # evaluation
    P = project(Z, V)
    backend(device)   # "torch" | "cpu" | "cuda": what runs for tensors on device

The native kernels (C++/OpenMP, CUDA) are optional: without them the ops run
on the pure-torch reference. LORE_BACKEND=torch|cpu|cuda forces a backend.
"""

from .ops import backend, lowrank_bt, lowrank_bt_loss, lowrank_margin, project
from .reference import (
    Likelihood,
    lowrank_bt_reference,
    lowrank_margin_reference,
    project_reference,
)

__all__ = [
    "Likelihood",
    "backend",
    "lowrank_bt",
    "lowrank_bt_loss",
    "lowrank_bt_reference",
    "lowrank_margin",
    "lowrank_margin_reference",
    "project",
    "project_reference",
]
__version__ = "0.1.0"
