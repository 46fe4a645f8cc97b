"""Per-user pairwise accuracy and the four evaluation settings.

A pair is right when its margin is strictly positive (a zero margin is
wrong, as in the reference). Accuracy is computed per user, then
macro-averaged; the std is across users (ddof 0), never rescaled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lore_datasets import SPLITS, Benchmark, PreferencePairs

from .model import PersonalRewardModel


def per_user_accuracy(margin: torch.Tensor, pairs: PreferencePairs) -> dict[str, float]:
    """Accuracy of each user that has at least one row (users without rows are absent)."""
    correct = (margin.detach().cpu() > 0).to(torch.float64)
    user = pairs.user.cpu()
    hits = torch.zeros(pairs.num_users, dtype=torch.float64).index_add_(0, user, correct)
    counts = torch.bincount(user, minlength=pairs.num_users)
    return {
        uid: float(hits[i] / counts[i])
        for i, uid in enumerate(pairs.user_ids)
        if counts[i] > 0
    }


def summarize(per_user: dict[str, float]) -> dict[str, Any]:
    """{mean, std, n_users, per_user}; mean/std are None when no user has pairs."""
    values = np.fromiter(per_user.values(), dtype=np.float64, count=len(per_user))
    return {
        "mean": float(values.mean()) if values.size else None,
        "std": float(values.std(ddof=0)) if values.size else None,
        "n_users": int(values.size),
        "per_user": per_user,
    }


def accuracy(model: PersonalRewardModel, pairs: PreferencePairs) -> dict[str, Any]:
    """Macro-averaged accuracy of ``model`` on ``pairs`` (its users must be known to it)."""
    return summarize(per_user_accuracy(model.margin(pairs), pairs))


def evaluate(model: PersonalRewardModel, benchmark: Benchmark) -> dict[str, dict[str, Any]]:
    """Accuracy on each of the four splits, keyed by split name as in results.json."""
    return {split: accuracy(model, benchmark.split(split)) for split in SPLITS}
