"""The pieces of the training objective around the fused Bradley-Terry op.

The loss is sum_m c_m softplus(-tau margin_m) (computed by
`lore_kernels.lowrank_bt`); these are its row weights c, the optional
cosine pull of V's columns toward an anchor (the reference head v_ref, or
the population head: `lore_train.anchor`) with its alpha schedule, and the
optional norm control on V.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lore_datasets import PreferencePairs


def row_weights(pairs: PreferencePairs, reduction: str, *, total_pairs: int | None = None
                ) -> torch.Tensor:
    """c_m of the loss sum_m c_m softplus(-tau margin_m).

    ``user_mean`` (c = 1/n_u) sums each user's mean loss, the paper's
    objective; ``pair_mean`` (c = 1/M) weighs users by their number of pairs.
    ``total_pairs`` is M when ``pairs`` is one process's share of the users
    (which may then hold no pairs at all).
    """
    total = pairs.num_pairs if total_pairs is None else total_pairs
    if total == 0:
        raise ValueError("no pairs to train on")
    if reduction == "pair_mean":
        return torch.full((pairs.num_pairs,), 1.0 / total, dtype=torch.float32)
    if reduction == "user_mean":
        counts = pairs.pairs_per_user().to(torch.float32)
        return 1.0 / counts[pairs.user.cpu()]
    raise ValueError(f"unknown reduction {reduction!r}")


def alpha_at(step: int, steps: int, alpha: float, schedule: str = "ramp") -> float:
    """The cosine weight at ``step``. "ramp" (the reference): 0 before int(0.2T),
    alpha from int(0.8T), linear between; "constant": alpha throughout."""
    if schedule == "constant":
        return alpha
    if schedule != "ramp":
        raise ValueError(f"unknown alpha schedule {schedule!r}")
    start, end = int(0.2 * steps), int(0.8 * steps)
    if step < start:
        return 0.0
    if step >= end or end == start:
        return alpha
    return alpha * (step - start) / (end - start)


def cosine_penalty(V: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    """mean_j (1 - cos(V[:, j], v_ref))."""
    return (1.0 - F.cosine_similarity(V, v_ref[:, None].to(V), dim=0)).mean()


def basis_norm_penalty(V: torch.Tensor, tau: float) -> torch.Tensor:
    """mean_j |tau V[:, j]|^2: tau V is what scales the logits, so this bounds them."""
    return (tau * V).square().sum(dim=0).mean()
