"""Synthetic users streamed straight into the canonical on-disk form, in bounded memory.

The same generative model as ``synthetic.make_synthetic`` (planted basis,
Dirichlet users, labels oriented by the true margin then flipped with
``label_noise``), drawn block by block of ``BLOCK_USERS`` users and split as
it is drawn, so a data set of millions of users never sits in memory: only
one block, the shards being filled (``max_shard_bytes`` per split) and the
per-user tables (a few dozen bytes per user) do.

Draws: the basis and all users' weights come from ``default_rng(seed)`` as in
``make_synthetic``; block b's rows from ``default_rng([seed, b + 1])``. So the
data depend on the seed only, not on the shard size, but the rows are not
``make_synthetic``'s rows for the same seed.

The split follows ``SplitConfig`` as ``split_benchmark`` does: the same
users are unseen (the same seeded draw over sorted ids); by prompt, the same
prompts are held out whenever every prompt id occurs (certain at scale);
by pair and for ``max_fewshot_pairs``, each user's rows are ranked with keys
from the block's stream (the same rule, other random keys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .pairs import SPLITS
from .sizes import check_sizes
from .splits import SplitConfig, held_out_prompt_mask, unseen_user_mask
from .storage import BenchmarkWriter, dataset_directory
from .synthetic import Oracle, SyntheticSpec, draw_rows, draw_users

BLOCK_USERS = 4096
DEFAULT_SHARD_BYTES = 64 * 2**20


def write_synthetic(
    out_dir: str | Path,
    spec: SyntheticSpec | None = None,
    *,
    split: SplitConfig | None = None,
    dtype: torch.dtype = torch.float32,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    **changes: Any,
) -> Oracle:
    """Draw and split ``spec``'s synthetic users (the `SyntheticSpec`, or its defaults,
    with ``changes``) into ``out_dir``; returns the planted truth.

    ``load_benchmark(out_dir)`` reads it whole, ``storage.read_users`` by user block.
    """
    spec = SyntheticSpec.given(spec, **changes)
    num_users, pairs_per_user, dim, rank = spec.num_users, spec.pairs_per_user, spec.dim, spec.rank
    label_noise, num_prompts, seed = spec.label_noise, spec.num_prompts, spec.seed
    check_synthetic_sizes({"num_users": num_users, "pairs_per_user": pairs_per_user, "dim": dim,
                           "rank": rank, "num_prompts": num_prompts,
                           "max_shard_bytes": max_shard_bytes},
                          torch.empty((), dtype=dtype).element_size(), out_dir)
    config = split or SplitConfig(seed=seed)
    if pairs_per_user < config.min_pairs_per_user:
        raise DataError(f"pairs_per_user={pairs_per_user} < min_pairs_per_user="
                        f"{config.min_pairs_per_user}: every user would be excluded")
    if num_users < 2:
        raise DataError("need at least 2 users so that both seen and unseen users exist")
    split_by, reason = _split_by(config, num_prompts, pairs_per_user)
    generator = {**spec.to_dict(), "block_users": BLOCK_USERS, "streamed": True}

    V, weights = draw_users(np.random.default_rng(seed), spec)
    is_unseen = unseen_user_mask(num_users, config)
    is_test_prompt = held_out_prompt_mask(num_prompts, config) if split_by == "prompt" else None
    with dataset_directory(out_dir) as work:
        return _write(work, V, weights, is_unseen, is_test_prompt, config, split_by, reason,
                      generator, num_users=num_users, pairs_per_user=pairs_per_user, dim=dim,
                      label_noise=label_noise, num_prompts=num_prompts, seed=seed, tau=spec.tau,
                      dtype=dtype, max_shard_bytes=max_shard_bytes)


def _write(out_dir: Path, V: np.ndarray, weights: np.ndarray, is_unseen: np.ndarray,
           is_test_prompt: np.ndarray | None, config: SplitConfig, split_by: str, reason: str,
           generator: dict, *, num_users: int, pairs_per_user: int, dim: int, label_noise: float,
           num_prompts: int, seed: int, tau: float, dtype: torch.dtype,
           max_shard_bytes: int) -> Oracle:
    """`write_synthetic`'s rows, block by block, into ``out_dir``."""
    width, pwidth = len(str(num_users - 1)), len(str(num_prompts - 1))
    prompt_names = np.asarray([f"p{p:0{pwidth}d}" for p in range(num_prompts)])
    writer = BenchmarkWriter(out_dir, dim=dim, dtype=dtype, max_shard_bytes=max_shard_bytes)
    flipped = 0
    with_pairs = dict.fromkeys(SPLITS, 0)
    for start in range(0, num_users, BLOCK_USERS):
        stop = min(start + BLOCK_USERS, num_users)
        rng = np.random.default_rng([seed, start // BLOCK_USERS + 1])
        local = np.repeat(np.arange(stop - start), pairs_per_user)
        z, prompt, flip = draw_rows(rng, weights[start + local], V, label_noise, num_prompts)
        flipped += int(flip.sum())
        if is_test_prompt is not None:
            test = is_test_prompt[prompt]
        else:
            n_test = min(max(round(config.test_fraction * pairs_per_user), 1),
                         max(pairs_per_user - 1, 1))
            test = _rank_in_user(rng, local, np.ones(local.size, bool), pairs_per_user) < n_test
        unseen_row = is_unseen[start + local]
        fewshot = ~test & unseen_row
        if config.max_fewshot_pairs is not None:
            fewshot &= _rank_in_user(rng, local, fewshot, pairs_per_user) < config.max_fewshot_pairs
        features = torch.from_numpy(z.astype(np.float32))
        ids = np.asarray([f"u{i:0{width}d}" for i in range(start, stop)])
        block_unseen = is_unseen[start:stop]
        rows = {"seen_train": ~unseen_row & ~test, "seen_test": ~unseen_row & test,
                "unseen_fewshot": fewshot, "unseen_test": unseen_row & test}
        for name, mask in rows.items():
            users = block_unseen if name.startswith("unseen") else ~block_unseen
            counts = np.bincount(local[mask], minlength=stop - start)[users]
            with_pairs[name] += int((counts > 0).sum())
            writer.add(name, features[torch.from_numpy(mask)], counts, ids[users].tolist(),
                       prompt_names[prompt[mask]].tolist())

    counts = {name: {"pairs": writer.splits[name].rows + writer.splits[name].pending_rows,
                     "users": writer.splits[name].users,
                     "users_with_pairs": with_pairs[name]} for name in SPLITS}
    empty = [name for name, c in counts.items() if c["pairs"] == 0]
    if empty:
        raise DataError(f"split {empty[0]!r} is empty (split by {split_by}); raise num_users or "
                        "pairs_per_user, or change the fractions")
    meta = {
        "source": "synthetic", "embedder": None, "generator": generator,
        "flipped_fraction": flipped / (num_users * pairs_per_user),
        "pairs": num_users * pairs_per_user, "users": num_users, "dim": dim,
        "split": {"split_by": split_by, "reason": reason, "seed": config.seed,
                  "config": asdict(config), "counts": counts, "users_in": num_users,
                  "excluded_users": {"count": 0, "pairs": 0, "ids": []},
                  "test_prompts": None if is_test_prompt is None
                  else prompt_names[is_test_prompt].tolist()},
    }
    writer.close(meta)
    user_ids = [f"u{i:0{width}d}" for i in range(num_users)]
    return Oracle(torch.from_numpy(V.astype(np.float32)), torch.from_numpy(weights.astype(np.float32)),
                  user_ids, tau)


def footprint(num_users: int, pairs_per_user: int, dim: int, rank: int, num_prompts: int,
              itemsize: int, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> tuple[int, int]:
    """(bytes of memory, bytes on disk) `write_synthetic` needs, roughly and from above.

    Memory: every user's weights and masks and id (the per-user tables), the
    basis, one block's rows in float64 with their copies, and a filling shard
    per split; disk: every row (features and a prompt index) and the per-user
    tables.
    """
    block_rows = min(BLOCK_USERS, num_users) * pairs_per_user
    per_user = rank * 8 + 64
    memory = num_users * per_user + dim * rank * 8 + num_prompts * 16 + block_rows * (dim * 28 + 64)
    disk = num_users * pairs_per_user * (dim * itemsize + 4) + num_users * 32
    memory += len(SPLITS) * min(max_shard_bytes, disk)
    return memory, disk


SIZE_FIELDS = ("num_users", "pairs_per_user", "dim", "rank", "num_prompts", "max_shard_bytes")


def check_synthetic_sizes(sizes: Mapping[str, int], itemsize: int, out: str | Path, *,
                          names: Mapping[str, str] | None = None,
                          defaults: Mapping[str, int] | None = None) -> None:
    """Refuse `SIZE_FIELDS` ``sizes`` whose `footprint` exceeds the machine's memory or the
    free disk under ``out``, before anything is drawn, naming only the field(s) at fault:
    as ``names[field]`` (a CLI's flags, say ``--users``) or ``field=value``, measured
    against ``defaults`` (`SyntheticSpec`'s and `DEFAULT_SHARD_BYTES` unless given)."""
    names = names or {f: f for f in SIZE_FIELDS}
    spec = SyntheticSpec()
    defaults = defaults or {**{f: getattr(spec, f) for f in SIZE_FIELDS[:-1]},
                            "max_shard_bytes": DEFAULT_SHARD_BYTES}

    def needs(v: Mapping[str, float]) -> tuple[int, int]:
        return footprint(*(int(v[names[f]]) for f in SIZE_FIELDS[:-1]), itemsize,
                         int(v[names["max_shard_bytes"]]))

    check_sizes({names[f]: sizes[f] for f in SIZE_FIELDS},
                {names[f]: defaults[f] for f in SIZE_FIELDS}, needs, out=out)


def _split_by(config: SplitConfig, num_prompts: int, pairs_per_user: int) -> tuple[str, str]:
    if config.split_by == "prompt" or (
            config.split_by == "auto" and num_prompts >= config.min_prompts_for_prompt_split):
        if num_prompts < 2:
            raise DataError(f"split_by='prompt' needs >= 2 prompts, got num_prompts={num_prompts}")
        return "prompt", ("requested" if config.split_by == "prompt" else
                          f"{num_prompts} prompts >= min_prompts_for_prompt_split="
                          f"{config.min_prompts_for_prompt_split}")
    return "pair", ("requested" if config.split_by == "pair" else
                    f"only {num_prompts} prompts < min_prompts_for_prompt_split="
                    f"{config.min_prompts_for_prompt_split}")


def _rank_in_user(rng: np.random.Generator, local: np.ndarray, mask: np.ndarray,
                  pairs_per_user: int) -> np.ndarray:
    """A random rank of each masked row among its user's masked rows (others: huge).

    Users own ``pairs_per_user`` consecutive rows, so a random key per row
    plus one lexsort ranks within every user at once.
    """
    keys = np.where(mask, rng.random(local.size), math.inf)
    order = np.lexsort((keys, local))
    rank = np.empty(local.size, dtype=np.int64)
    rank[order] = np.arange(local.size) % pairs_per_user
    return np.where(mask, rank, np.iinfo(np.int64).max)
