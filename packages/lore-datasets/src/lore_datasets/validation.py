"""A seeded validation split carved from training pairs, by prompt where possible.

Model choices (training length, rank, regularization) must be made on pairs
the fit did not see, and never on test pairs. This split takes them from the
*training* side only. Like the test split it holds out whole prompts when the
training pairs cover enough distinct prompts, so validation measures what the
test measures (unseen prompts) instead of near-duplicates of training pairs;
with too few prompts (or none recorded) it falls back to a per-user fraction
of pairs. Which one was used, and why, travels with the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .errors import DataError
from .pairs import PreferencePairs

ValSplitBy = Literal["auto", "prompt", "pair"]
_STREAM = 0x5E1EC7  # keeps these draws apart from the benchmark split's own streams


@dataclass
class ValidationSplit:
    """``train`` and ``val`` share ``pairs``' user list and partition its rows."""

    train: PreferencePairs
    val: PreferencePairs
    split_by: str
    reason: str
    fraction: float
    seed: int
    prompts: list[str] | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (results.json records it)."""
        return {
            "split_by": self.split_by,
            "reason": self.reason,
            "fraction": self.fraction,
            "seed": self.seed,
            "train_pairs": self.train.num_pairs,
            "val_pairs": self.val.num_pairs,
            "val_users": int((self.val.pairs_per_user() > 0).sum()),
            "val_prompts": None if self.prompts is None else len(self.prompts),
        }


def split_validation(
    pairs: PreferencePairs,
    fraction: float = 0.2,
    *,
    seed: int = 0,
    split_by: ValSplitBy = "auto",
    min_prompts: int = 20,
) -> ValidationSplit:
    """Hold out a seeded ``fraction`` of ``pairs`` for validation.

    ``split_by="auto"`` holds out whole prompts (one global seeded set,
    ``round(fraction * n_prompts)`` of them, at least one, never all) when
    the pairs carry prompt ids and cover at least ``min_prompts`` distinct
    prompts; otherwise, per user, ``round(fraction * n)`` seeded pairs clipped
    to [1, n - 1] (a user with a single pair keeps it for training).
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"val_fraction must be strictly between 0 and 1, got {fraction}")
    if split_by not in ("auto", "prompt", "pair"):
        raise DataError(f"val_split_by must be 'auto', 'prompt' or 'pair', got {split_by!r}")
    mode, reason = _choose(pairs, split_by, min_prompts)
    rng = np.random.default_rng([_STREAM, seed])
    prompts = None
    if mode == "prompt":
        is_val, prompts = _by_prompt(pairs, fraction, rng)
    else:
        is_val = _by_pair(pairs, fraction, rng)
    rows = torch.arange(pairs.num_pairs)
    mask = torch.from_numpy(is_val)
    return ValidationSplit(pairs.select_rows(rows[~mask]), pairs.select_rows(rows[mask]),
                           mode, reason, fraction, seed, prompts)


def _choose(pairs: PreferencePairs, split_by: str, min_prompts: int) -> tuple[str, str]:
    n_prompts = 0 if pairs.prompt_ids is None else len(set(pairs.prompt_ids))
    if split_by == "pair":
        return "pair", "requested"
    if split_by == "prompt":
        if n_prompts < 2:
            raise DataError(f"val_split_by='prompt' needs >= 2 distinct training prompts, "
                            f"the pairs have {n_prompts}")
        return "prompt", "requested"
    if pairs.prompt_ids is None:
        return "pair", "the pairs have no prompt ids"
    if n_prompts >= min_prompts:
        return "prompt", f"{n_prompts} training prompts >= {min_prompts}"
    return "pair", f"only {n_prompts} training prompts < {min_prompts}"


def _by_prompt(pairs: PreferencePairs, fraction: float,
               rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    prompts, row_prompt = np.unique(np.asarray(pairs.prompt_ids), return_inverse=True)
    n = len(prompts)
    n_val = min(max(round(fraction * n), 1), n - 1)
    held = np.zeros(n, dtype=bool)
    held[rng.permutation(n)[:n_val]] = True
    return held[row_prompt], sorted(prompts[held].tolist())


def _by_pair(pairs: PreferencePairs, fraction: float, rng: np.random.Generator) -> np.ndarray:
    row_user = pairs.user.cpu().numpy()
    counts = np.bincount(row_user, minlength=pairs.num_users)
    n_val = np.where(counts >= 2, np.clip(np.round(fraction * counts), 1, counts - 1), 0)
    keys = rng.random(row_user.size)
    order = np.lexsort((keys, row_user))  # rows shuffled within each user
    rank = np.empty(row_user.size, dtype=np.int64)
    rank[order] = np.arange(row_user.size) - pairs.offsets.numpy()[row_user[order]]
    return rank < n_val[row_user]
