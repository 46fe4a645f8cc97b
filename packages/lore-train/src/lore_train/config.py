"""Training configuration: one dataclass, defaults from the reference scripts.

The defaults reproduce the reference `run()` entry point (joint Adam, lr 0.5,
1000 steps, per-user-mean loss, tau = 1/100; few-shot 500 steps at lr 0.1).
`TrainConfig.regularized()` is the reference `run_regularized()` preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Mode = Literal["joint", "alternating"]
Reduction = Literal["user_mean", "pair_mean"]
WInit = Literal["normal", "uniform", "zeros"]
Anchor = Literal["auto", "v_ref", "population"]
AlphaSchedule = Literal["ramp", "constant"]
ValSplitBy = Literal["auto", "prompt", "pair"]


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
    prune_threshold: drop columns whose largest user weight is below it
        (the kept weights are renormalized); None keeps every column.

    The fields below (issue 14) make accuracy hold on pairs the fit did not see:

    early_stopping: choose the training length on held-out pairs. The joint
        fit carves a validation split from its training pairs (whole prompts
        where there are enough, see ``val_split_by``), trains on the rest,
        keeps the step with the lowest validation loss, then refits on all
        pairs for that many steps. Few-shot fits pick a best step per user on
        a by-pair split of that user's few-shot pairs the same way.
    val_fraction: share of training pairs (or prompts) held out for that.
    val_split_by: "auto" holds out whole prompts when the training pairs
        cover >= 20 distinct prompts, else pairs within each user.
    eval_every: steps between validation losses (the curve's resolution).
    patience: stop after this many steps without a better validation loss;
        0 never stops early (the best step of the full run is still kept).
    anchor: what the cosine penalty pulls V's columns toward. "v_ref" is
        the reward model's head; "population" is the population
        Bradley-Terry head (K = 1, alpha = 0) fitted on the same training
        pairs, so alpha works on data without a reward-model head; "auto"
        uses v_ref when there is one, else the population head.
    alpha_schedule: "ramp" is the reference's 20%-80% linear ramp;
        "constant" applies alpha from step 0 (with early stopping a fit may
        end before the ramp starts).
    v_l2: weight of tau^2 * mean_j |V[:, j]|^2, a norm control on the basis
        (tau * V is what scales the logits).
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
    seed: int = 0
    device: str = "cpu"
    log_every: int = 10
    early_stopping: bool = False
    val_fraction: float = 0.2
    val_split_by: ValSplitBy = "auto"
    eval_every: int = 10
    patience: int = 200
    anchor: Anchor = "auto"
    alpha_schedule: AlphaSchedule = "ramp"
    v_l2: float = 0.0

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
        if self.lr_w is not None and self.lr_w <= 0:
            raise ValueError(f"lr_w must be > 0, got {self.lr_w}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be strictly between 0 and 1, got {self.val_fraction}")
        if self.val_split_by not in ("auto", "prompt", "pair"):
            raise ValueError(f"val_split_by must be 'auto', 'prompt' or 'pair', got {self.val_split_by!r}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.anchor not in ("auto", "v_ref", "population"):
            raise ValueError(f"anchor must be 'auto', 'v_ref' or 'population', got {self.anchor!r}")
        if self.alpha_schedule not in ("ramp", "constant"):
            raise ValueError(f"alpha_schedule must be 'ramp' or 'constant', got {self.alpha_schedule!r}")
        if self.v_l2 < 0:
            raise ValueError(f"v_l2 must be >= 0, got {self.v_l2}")

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
