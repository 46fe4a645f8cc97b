"""Training configuration: one dataclass, defaults from the reference scripts.

The defaults reproduce the reference `run()` entry point (joint Adam, lr 0.5,
1000 steps, per-user-mean loss, tau = 1/100; few-shot 500 steps at lr 0.1), except that new users are fitted MAP under the
population prior (``fewshot_prior="none"`` is the reference's maximum likelihood).
`TrainConfig.regularized()` is the reference `run_regularized()` preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Mode = Literal["joint", "alternating"]
Reduction = Literal["user_mean", "pair_mean"]
WInit = Literal["normal", "uniform", "zeros"]
FewshotPrior = Literal["none", "population"]


@dataclass(frozen=True)
class TrainConfig:
    """How to fit the shared basis V and the seen users' logits W.

    rank: K. 0 is the reference head (nothing trained), 1 the shared
        Bradley-Terry direction, >= 2 LoRe.
    alpha: weight of the cosine pull of V's columns toward v_ref, ramped
        linearly from 0 (before 20% of steps) to alpha (after 80%).
    lr_w: learning rate of the logits W (None: ``lr``, as in the reference).
        The reference's shared lr 0.5 drives the softmax to one-hot long
        before V has grown to the scale tau needs, which can lock users into
        the wrong column; a smaller ``lr_w`` with a larger ``lr`` (and
        ``w_init="zeros"``) fits planted data much better (see the README).
    fewshot_prior: "population" fits a new user's logits MAP under a
        Dirichlet fitted to the seen users' weights (0 pairs: the population
        mean); "none" is the reference's maximum likelihood from N(0, 1).
    prune_threshold: drop columns whose largest user weight is below it
        (the kept weights are renormalized); None keeps every column.
    """

    rank: int = 2
    alpha: float = 0.0
    steps: int = 1000
    lr: float = 0.5
    lr_w: float | None = None
    tau: float = 0.01
    mode: Mode = "joint"
    reduction: Reduction = "user_mean"
    w_init: WInit = "normal"
    prune_threshold: float | None = None
    fewshot_steps: int = 500
    fewshot_lr: float = 0.1
    fewshot_prior: FewshotPrior = "population"
    seed: int = 0
    device: str = "cpu"
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0, got {self.rank}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.steps < 0 or self.fewshot_steps < 0:
            raise ValueError("steps and fewshot_steps must be >= 0")
        if self.lr <= 0 or self.fewshot_lr <= 0:
            raise ValueError("learning rates must be > 0")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.mode not in ("joint", "alternating"):
            raise ValueError(f"mode must be 'joint' or 'alternating', got {self.mode!r}")
        if self.reduction not in ("user_mean", "pair_mean"):
            raise ValueError(f"reduction must be 'user_mean' or 'pair_mean', got {self.reduction!r}")
        if self.w_init not in ("normal", "uniform", "zeros"):
            raise ValueError(f"w_init must be 'normal', 'uniform' or 'zeros', got {self.w_init!r}")
        if self.fewshot_prior not in ("none", "population"):
            raise ValueError(f"fewshot_prior must be 'none' or 'population', got {self.fewshot_prior!r}")
        if self.lr_w is not None and self.lr_w <= 0:
            raise ValueError(f"lr_w must be > 0, got {self.lr_w}")

    @classmethod
    def regularized(cls, **overrides: Any) -> TrainConfig:
        """The reference `run_regularized` preset (PRISM at HEAD): alternating
        W/V Adam steps, U[0,1) logits, global-mean loss, cosine pull toward
        v_ref with alpha 1e4, 20000 steps, column pruning at 1e-2, few-shot lr 0.5."""
        preset = dict(
            mode="alternating",
            w_init="uniform",
            reduction="pair_mean",
            alpha=1e4,
            steps=20000,
            prune_threshold=1e-2,
            fewshot_lr=0.5,
        )
        return cls(**{**preset, **overrides})

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
