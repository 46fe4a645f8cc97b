"""Synthetic users with planted low-rank preferences, and the oracle that made them.

Generative model (all draws from one numpy Generator seeded by ``seed``):

1. Basis: V = Q * scale, where Q [d, K] has orthonormal columns (QR of a
   Gaussian matrix) and ``scale = logit_std * sqrt(d) / tau``. Orthogonal
   directions make users who lean on different columns genuinely disagree.
2. Users: s_u ~ Dirichlet(dirichlet_alpha * 1_K) for u = 1..N; a small alpha
   puts most users near one column (distinct "types"), a large one near the
   average user.
3. Pairs: each user gets ``pairs_per_user`` rows z ~ N(0, I_d / d) (norm ~ 1,
   like the difference of two unit-norm sentence embeddings) and a prompt id
   drawn uniformly from ``num_prompts`` prompts (so a prompt split works; the
   prompt does not change z).
4. Labels: each row is oriented so its true margin z . V s_u is positive (the
   chosen response is truly better), then, with probability ``label_noise``
   independently per row, flipped (z -> -z).

So the oracle's accuracy on the data is 1 - label_noise in expectation, and
``tau * margin`` has standard deviation ``logit_std * |s_u|`` (between
``logit_std / sqrt(K)`` and ``logit_std``): O(1) logits at the model's tau,
a learnable but not trivially separable signal once noise is added.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .pairs import Benchmark, PreferencePairs
from .splits import SplitConfig, split_benchmark


@dataclass
class Oracle:
    """The planted truth: basis ``V`` [d, K] and simplex ``weights`` [N, K] per user."""

    V: torch.Tensor
    weights: torch.Tensor
    user_ids: list[str]
    tau: float = 0.01

    def margins(self, pairs: PreferencePairs) -> torch.Tensor:
        """True margins z . V s_u of ``pairs``' rows (users matched by id)."""
        index = {u: i for i, u in enumerate(self.user_ids)}
        unknown = [u for u in pairs.user_ids if u not in index]
        if unknown:
            raise DataError(f"users not in the oracle: {unknown[:5]}")
        rows = torch.tensor([index[u] for u in pairs.user_ids], dtype=torch.int64)
        s = self.weights[rows][pairs.user.cpu()]
        return ((pairs.features.float().cpu() @ self.V) * s).sum(dim=1)


def check_generator(num_users: int, pairs_per_user: int, dim: int, rank: int,
                    label_noise: float, num_prompts: int) -> None:
    """Reject generator settings the model in the module docstring cannot draw from."""
    if num_users < 1 or pairs_per_user < 1 or num_prompts < 1:
        raise DataError("num_users, pairs_per_user and num_prompts must be >= 1")
    if not 1 <= rank <= dim:
        raise DataError(f"rank must be in [1, dim={dim}], got {rank}")
    if not 0.0 <= label_noise < 0.5:
        raise DataError(f"label_noise must be in [0, 0.5), got {label_noise}")


def draw_users(rng: np.random.Generator, num_users: int, dim: int, rank: int,
               dirichlet_alpha: float, logit_std: float, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-2: the basis V [d, K] and each user's simplex weights [N, K] (float64)."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    V = q * (logit_std * math.sqrt(dim) / tau)
    return V, rng.dirichlet(np.full(rank, dirichlet_alpha), size=num_users)


def draw_rows(rng: np.random.Generator, row_weights: np.ndarray, V: np.ndarray,
              label_noise: float, num_prompts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 3-4 for rows whose users have ``row_weights`` [M, K]: z [M, d], prompt, flipped."""
    M, dim = row_weights.shape[0], V.shape[0]
    z = rng.standard_normal((M, dim)) / math.sqrt(dim)
    margin = np.einsum("md,dk,mk->m", z, V, row_weights)
    flip = rng.random(M) < label_noise
    sign = np.where(margin >= 0, 1.0, -1.0) * np.where(flip, -1.0, 1.0)
    z *= sign[:, None]
    return z, rng.integers(num_prompts, size=M), flip


def make_synthetic(
    *,
    num_users: int = 60,
    pairs_per_user: int = 80,
    dim: int = 32,
    rank: int = 3,
    label_noise: float = 0.05,
    dirichlet_alpha: float = 0.3,
    num_prompts: int = 200,
    logit_std: float = 3.0,
    tau: float = 0.01,
    seed: int = 0,
) -> tuple[PreferencePairs, Oracle]:
    """Draw users, pairs and labels from the model in the module docstring."""
    check_generator(num_users, pairs_per_user, dim, rank, label_noise, num_prompts)
    rng = np.random.default_rng(seed)
    V, weights = draw_users(rng, num_users, dim, rank, dirichlet_alpha, logit_std, tau)
    user = np.repeat(np.arange(num_users), pairs_per_user)
    z, prompt, _ = draw_rows(rng, weights[user], V, label_noise, num_prompts)

    width = len(str(num_users - 1))
    user_ids = [f"u{i:0{width}d}" for i in range(num_users)]
    pwidth = len(str(num_prompts - 1))
    pairs = PreferencePairs(
        torch.from_numpy(z.astype(np.float32)),
        torch.from_numpy(user),
        user_ids,
        [f"p{p:0{pwidth}d}" for p in prompt.tolist()],
    )
    oracle = Oracle(
        torch.from_numpy(V.astype(np.float32)),
        torch.from_numpy(weights.astype(np.float32)),
        list(user_ids),
        tau,
    )
    return pairs, oracle


def synthetic_benchmark(
    split: SplitConfig | None = None, **kwargs: Any
) -> tuple[Benchmark, Oracle]:
    """``make_synthetic(**kwargs)`` cut by ``split`` (default: SplitConfig with the same seed)."""
    split = split or SplitConfig(seed=kwargs.get("seed", 0))
    pairs, oracle = make_synthetic(**kwargs)
    defaults = {
        name: p.default
        for name, p in inspect.signature(make_synthetic).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    meta = {
        "source": "synthetic",
        "embedder": None,
        "generator": {**defaults, **kwargs},
        "flipped_fraction": float((oracle.margins(pairs) < 0).float().mean()),
        "pairs": pairs.num_pairs,
        "users": pairs.num_users,
        "dim": pairs.dim,
    }
    return split_benchmark(pairs, split, meta=meta), oracle
