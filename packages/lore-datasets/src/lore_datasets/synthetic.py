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

`SyntheticSpec` holds these settings and their defaults, once: `make_synthetic`
(in memory) and `synthetic_stream.write_synthetic` (streamed to disk) both
take one, or its fields as keyword changes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
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


@dataclass(frozen=True)
class SyntheticSpec:
    """The generator's settings (the module doc says what each does); ``rank`` is the
    planted number of basis columns K."""

    num_users: int = 60
    pairs_per_user: int = 80
    dim: int = 32
    rank: int = 3
    label_noise: float = 0.05
    dirichlet_alpha: float = 0.3
    num_prompts: int = 200
    logit_std: float = 3.0
    tau: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject settings the model in the module docstring cannot draw from."""
        if self.num_users < 1 or self.pairs_per_user < 1 or self.num_prompts < 1:
            raise DataError("num_users, pairs_per_user and num_prompts must be >= 1")
        if not 1 <= self.rank <= self.dim:
            raise DataError(f"rank must be in [1, dim={self.dim}], got {self.rank}")
        if not 0.0 <= self.label_noise < 0.5:
            raise DataError(f"label_noise must be in [0, 0.5), got {self.label_noise}")

    @classmethod
    def given(cls, spec: SyntheticSpec | None = None, **changes: Any) -> SyntheticSpec:
        """``spec`` (default: the defaults) with ``changes``; an unknown name is a `DataError`."""
        try:
            return replace(spec or cls(), **changes)
        except TypeError as err:
            raise DataError(f"synthetic generator: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_users(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-2: the basis V [d, K] and each user's simplex weights [N, K] (float64)."""
    q, _ = np.linalg.qr(rng.standard_normal((spec.dim, spec.rank)))
    V = q * (spec.logit_std * math.sqrt(spec.dim) / spec.tau)
    return V, rng.dirichlet(np.full(spec.rank, spec.dirichlet_alpha), size=spec.num_users)


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


def make_synthetic(spec: SyntheticSpec | None = None, **changes: Any
                   ) -> tuple[PreferencePairs, Oracle]:
    """Draw users, pairs and labels from the model in the module docstring
    (``spec``, or its defaults, with ``changes``: ``make_synthetic(num_users=24)``)."""
    spec = SyntheticSpec.given(spec, **changes)
    num_users, num_prompts, tau = spec.num_users, spec.num_prompts, spec.tau
    rng = np.random.default_rng(spec.seed)
    V, weights = draw_users(rng, spec)
    user = np.repeat(np.arange(num_users), spec.pairs_per_user)
    z, prompt, _ = draw_rows(rng, weights[user], V, spec.label_noise, num_prompts)

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
    split: SplitConfig | None = None, spec: SyntheticSpec | None = None, **changes: Any
) -> tuple[Benchmark, Oracle]:
    """`make_synthetic` cut by ``split`` (default: SplitConfig with the generator's seed)."""
    spec = SyntheticSpec.given(spec, **changes)
    split = split or SplitConfig(seed=spec.seed)
    pairs, oracle = make_synthetic(spec)
    meta = {
        "source": "synthetic",
        "embedder": None,
        "generator": spec.to_dict(),
        "flipped_fraction": float((oracle.margins(pairs) < 0).float().mean()),
        "pairs": pairs.num_pairs,
        "users": pairs.num_users,
        "dim": pairs.dim,
    }
    return split_benchmark(pairs, split, meta=meta), oracle
