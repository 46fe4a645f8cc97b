"""Seeded four-way splits: seen/unseen users, then train/test within each.

A split is a pure function of (pairs, config): every random draw comes from a
numpy Generator seeded with (seed, purpose), applied to sorted ids or to the
given row order, never to Python's hash order. Each purpose has its own
stream, so changing, say, the few-shot cap does not reshuffle the users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch

from .errors import DataError
from .pairs import SPLITS, Benchmark, PreferencePairs
from .runtime.settings import from_dict

SplitBy = Literal["auto", "prompt", "pair"]
_STREAMS = {"users": 1, "prompts": 2, "pairs": 3, "fewshot": 4}


@dataclass(frozen=True)
class SplitConfig:
    """How to cut a source into a Benchmark.

    ``split_by="auto"`` splits by prompt when the source has at least
    ``min_prompts_for_prompt_split`` distinct prompts (so held-out prompts are
    really unseen), else by pair. ``max_fewshot_pairs`` caps each unseen
    user's few-shot pool (None: all their training-side pairs).
    """

    seed: int = field(default=0, metadata={"help": "seed of every random draw of the split"})
    unseen_user_fraction: float = field(default=0.25, metadata={
        "flag": "--unseen-fraction", "help": "fraction of users held out as unseen"})
    min_pairs_per_user: int = field(default=20, metadata={
        "flag": "--min-pairs", "help": "users with fewer pairs are left out"})
    test_fraction: float = field(default=0.25, metadata={
        "help": "fraction of prompts (or pairs) held out for testing"})
    split_by: SplitBy = field(default="auto", metadata={
        "help": "hold out whole prompts or single pairs for testing (auto: prompts when there "
        "are enough)"})
    min_prompts_for_prompt_split: int = field(default=20, metadata={
        "help": "auto splits by prompt from this many distinct prompts"})
    max_fewshot_pairs: int | None = field(default=None, metadata={
        "help": "cap on each unseen user's few-shot pool (None: all their pairs)"})

    def __post_init__(self) -> None:
        if self.split_by not in get_args(SplitBy):
            raise DataError(f"split_by must be one of {', '.join(map(repr, get_args(SplitBy)))}, "
                            f"got {self.split_by!r}")
        for name in ("unseen_user_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise DataError(f"{name} must be strictly between 0 and 1, got {value}")
        if self.min_pairs_per_user < 1:
            raise DataError(f"min_pairs_per_user must be >= 1, got {self.min_pairs_per_user}")
        if self.max_fewshot_pairs is not None and self.max_fewshot_pairs < 1:
            raise DataError(f"max_fewshot_pairs must be >= 1 or None, got {self.max_fewshot_pairs}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "split config") -> SplitConfig:
        """A stored split config; unknown keys are an error naming ``source``."""
        return from_dict(cls, data, source=source)


def split_benchmark(
    pairs: PreferencePairs,
    config: SplitConfig = SplitConfig(),
    *,
    v_ref: torch.Tensor | None = None,
    meta: dict[str, Any] | None = None,
) -> Benchmark:
    """Cut ``pairs`` into seen_train / seen_test / unseen_fewshot / unseen_test.

    Users with fewer than ``min_pairs_per_user`` pairs are left out and listed
    in ``meta["split"]["excluded_users"]``; a user with no pairs at all is an
    error (the user list and the rows disagree). ``meta`` (the loader's) is
    copied and gets a ``"split"`` entry describing what was done.
    """
    counts = pairs.pairs_per_user().numpy()
    empty = [u for u, n in zip(pairs.user_ids, counts.tolist()) if n == 0]
    if empty:
        raise DataError(f"user {empty[0]!r} has no pairs ({len(empty)} such users: {empty[:5]})")
    excluded = sorted(
        u for u, n in zip(pairs.user_ids, counts.tolist()) if n < config.min_pairs_per_user
    )
    kept = sorted(
        u for u, n in zip(pairs.user_ids, counts.tolist()) if n >= config.min_pairs_per_user
    )
    if not kept:
        raise DataError(
            f"no user has >= {config.min_pairs_per_user} pairs (min_pairs_per_user); "
            f"the largest user has {int(counts.max())}"
        )
    seen, unseen = _seen_unseen(kept, config)

    split_by, reason = _choose_split(pairs, config)
    if split_by == "prompt":
        test_row, test_prompts = _prompt_test_rows(pairs, config)
    else:
        test_row, test_prompts = _pair_test_rows(pairs, config), None

    row_user = pairs.user.cpu().numpy()
    is_unseen = np.isin(np.asarray(pairs.user_ids), unseen)[row_user]
    fewshot = ~test_row & is_unseen
    if config.max_fewshot_pairs is not None:
        fewshot &= (
            _rank_within_user(row_user, fewshot, config.seed, "fewshot") < config.max_fewshot_pairs
        )
    selections = {
        "seen_train": (seen, ~test_row),
        "seen_test": (seen, test_row),
        "unseen_fewshot": (unseen, fewshot),
        "unseen_test": (unseen, test_row),
    }
    parts = {name: _take(pairs, users, rows) for name, (users, rows) in selections.items()}
    for name, part in parts.items():
        if part.num_pairs == 0:
            raise DataError(
                f"split {name!r} is empty ({len(kept)} users kept, split by {split_by}); "
                "lower min_pairs_per_user or change the fractions"
            )

    split_meta = {
        "split_by": split_by,
        "reason": reason,
        "seed": config.seed,
        "config": asdict(config),
        "counts": {
            name: {
                "pairs": part.num_pairs,
                "users": part.num_users,
                "users_with_pairs": int((part.pairs_per_user() > 0).sum()),
            }
            for name, part in parts.items()
        },
        "users_in": pairs.num_users,
        "excluded_users": {
            "count": len(excluded),
            "pairs": int(counts[counts < config.min_pairs_per_user].sum()),
            "reason": f"fewer than {config.min_pairs_per_user} pairs",
            "ids": excluded,
        },
        "test_prompts": test_prompts,
    }
    out_meta = {**(meta or {}), "split": split_meta}
    return Benchmark(**{s: parts[s] for s in SPLITS}, v_ref=v_ref, meta=out_meta)


def _rng(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([_STREAMS[purpose], seed])


def _seen_unseen(users: list[str], config: SplitConfig) -> tuple[list[str], list[str]]:
    n = len(users)
    if n < 2:
        raise DataError(
            f"only user {users[0]!r} has >= {config.min_pairs_per_user} pairs: need at least 2 "
            "users so that both seen and unseen users exist"
        )
    is_unseen = unseen_user_mask(n, config)
    unseen = [u for u, x in zip(users, is_unseen.tolist()) if x]
    seen = [u for u, x in zip(users, is_unseen.tolist()) if not x]
    return seen, unseen


def unseen_user_mask(n: int, config: SplitConfig) -> np.ndarray:
    """Which of ``n`` kept users (in sorted-id order) are unseen: a seeded fraction, >= 1 each side."""
    n_unseen = min(max(round(config.unseen_user_fraction * n), 1), n - 1)
    mask = np.zeros(n, dtype=bool)
    mask[_rng(config.seed, "users").permutation(n)[:n_unseen]] = True
    return mask


def held_out_prompt_mask(n: int, config: SplitConfig) -> np.ndarray:
    """Which of ``n`` distinct prompts (in sorted-id order) are held out for testing."""
    n_test = min(max(round(config.test_fraction * n), 1), n - 1)
    mask = np.zeros(n, dtype=bool)
    mask[_rng(config.seed, "prompts").permutation(n)[:n_test]] = True
    return mask


def _choose_split(pairs: PreferencePairs, config: SplitConfig) -> tuple[str, str]:
    if pairs.prompt_ids is None:
        if config.split_by == "prompt":
            raise DataError("split_by='prompt' but these pairs have no prompt ids")
        return "pair", "the pairs have no prompt ids"
    n_prompts = len(set(pairs.prompt_ids))
    if config.split_by != "auto":
        if config.split_by == "prompt" and n_prompts < 2:
            raise DataError(
                f"split_by='prompt' needs >= 2 distinct prompts, the source has {n_prompts}"
            )
        return config.split_by, "requested"
    if n_prompts >= config.min_prompts_for_prompt_split:
        return (
            "prompt",
            f"{n_prompts} prompts >= min_prompts_for_prompt_split={config.min_prompts_for_prompt_split}",
        )
    return (
        "pair",
        f"only {n_prompts} prompts < min_prompts_for_prompt_split={config.min_prompts_for_prompt_split}",
    )


def _prompt_test_rows(pairs: PreferencePairs, config: SplitConfig) -> tuple[np.ndarray, list[str]]:
    """Rows whose prompt is in one global, seeded set of test prompts."""
    prompts, row_prompt = np.unique(np.asarray(pairs.prompt_ids), return_inverse=True)
    is_test = held_out_prompt_mask(len(prompts), config)
    return is_test[row_prompt], sorted(prompts[is_test].tolist())


def _pair_test_rows(pairs: PreferencePairs, config: SplitConfig) -> np.ndarray:
    """Per user, a seeded test_fraction of their pairs (at least one of each side if >= 2)."""
    row_user = pairs.user.cpu().numpy()
    counts = np.bincount(row_user, minlength=pairs.num_users)
    n_test = np.clip(np.round(config.test_fraction * counts), 1, np.maximum(counts - 1, 1))
    everything = np.ones(row_user.shape, dtype=bool)
    return _rank_within_user(row_user, everything, config.seed, "pairs") < n_test[row_user]


def _rank_within_user(
    row_user: np.ndarray, mask: np.ndarray, seed: int, purpose: str
) -> np.ndarray:
    """A seeded random rank of each masked row among its user's masked rows (others: huge).

    One random key per row, sorted within user: a per-user shuffle without a
    Python loop over users.
    """
    keys = _rng(seed, purpose).random(row_user.shape[0])
    rows = np.flatnonzero(mask)
    order = rows[np.lexsort((keys[rows], row_user[rows]))]
    starts = np.searchsorted(row_user[order], row_user[order], side="left")
    rank = np.full(row_user.shape, np.iinfo(np.int64).max, dtype=np.int64)
    rank[order] = np.arange(order.size) - starts
    return rank


def _take(pairs: PreferencePairs, users: list[str], rows: np.ndarray) -> PreferencePairs:
    """The masked rows of ``users``, over exactly that user list (some may own no rows)."""
    index = {u: i for i, u in enumerate(pairs.user_ids)}
    remap = np.full(pairs.num_users, -1, dtype=np.int64)
    remap[[index[u] for u in users]] = np.arange(len(users))
    new_user = remap[pairs.user.cpu().numpy()]
    sel = np.flatnonzero(rows & (new_user >= 0))
    sel = sel[np.argsort(new_user[sel], kind="stable")]
    prompts = None if pairs.prompt_ids is None else [pairs.prompt_ids[i] for i in sel.tolist()]
    return PreferencePairs(
        pairs.features[torch.from_numpy(sel).to(pairs.features.device)],
        torch.from_numpy(new_user[sel]).to(pairs.user.device),
        list(users),
        prompts,
    )
