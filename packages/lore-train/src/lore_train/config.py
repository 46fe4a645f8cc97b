"""Training configuration: one dataclass, the defaults of the reference scripts.

`TrainConfig`'s fields are the single source of each training setting: the
`lore-train` flags are generated from them (type, choices, default, help),
results files and checkpoints store ``to_dict()``, and ``from_dict`` reads
that back. The defaults reproduce the reference `run()` entry point (joint
Adam, lr 0.5, 1000 steps, per-user-mean loss, tau = 1/100; few-shot 500 steps
at lr 0.1), except that new users are fitted MAP under the population prior
(``fewshot_prior="none"`` is the reference's maximum likelihood) by Newton's
method (``fewshot_solver="adam"`` is the reference's Adam); `PRESETS`
names the reference's other setting, the PRISM `run_regularized()`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

import torch

from lore_datasets import PreferencePairs, ValidationSplit, split_validation
from lore_datasets.runtime.settings import from_dict
from lore_datasets.validation import ValSplitBy
from lore_kernels import Likelihood

Mode = Literal["joint", "alternating"]
Reduction = Literal["user_mean", "pair_mean"]
WInit = Literal["normal", "uniform", "zeros"]
Anchor = Literal["auto", "v_ref", "population"]
AlphaSchedule = Literal["ramp", "constant"]
FewshotPrior = Literal["none", "population"]
FewshotSolver = Literal["adam", "newton"]
# The few-shot priors, listed once: "population" is MAP under a Dirichlet fitted to
# the seen users' weights, "none" the reference's maximum likelihood.
FEWSHOT_PRIORS: tuple[str, ...] = get_args(FewshotPrior)
FEWSHOT_SOLVERS: tuple[str, ...] = get_args(FewshotSolver)


@dataclass(frozen=True)
class TrainConfig:
    """How to fit the shared basis V and the seen users' logits W.

    K: the number of basis columns. 0 is the reference head (nothing
        trained), 1 the shared Bradley-Terry direction, >= 2 LoRe.
    alpha: weight of the cosine pull of V's columns toward v_ref, ramped
        linearly from 0 (before 20% of steps) to alpha (after 80%).
    lr_w: learning rate of the logits W (None: ``lr``, as in the reference).
        The reference's shared lr 0.5 drives the softmax to one-hot long
        before V has grown to the scale tau needs, which can lock users into
        the wrong column; a smaller ``lr_w`` with a larger ``lr`` (and
        ``w_init="zeros"``) fits planted data much better (see the README).
    prune_threshold: drop columns whose largest user weight is below it
        (the kept weights are renormalized); None keeps every column.

    The fields from ``early_stopping`` on make accuracy hold on pairs the fit
    did not see (docs/accuracy.md measures what each buys):

    early_stopping: choose the training length on held-out pairs. The joint
        fit carves a validation split from its training pairs (whole prompts
        where there are enough, see ``val_split_by``), trains on the rest,
        keeps the step with the lowest validation loss, then refits on all
        pairs for that many steps. Few-shot fits pick a best step per user on
        a by-pair split of that user's few-shot pairs the same way.
    val_fraction: share of training pairs (or prompts) held out for early
        stopping and for model selection.
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
    label_noise: the share eps of labels taken to be flipped whatever the
        margin. The likelihood becomes eps + (1 - 2 eps) sigmoid(tau margin),
        so a pair the model is sure is mislabelled costs at most -log eps
        instead of pulling V ever harder; 0 is plain Bradley-Terry (the
        reference). Used by the joint and few-shot fits, early stopping,
        posteriors and the probabilities the model reports.
    """

    K: int = field(default=2, metadata={"help": "number of basis columns (0: reference head, "
                                        "1: Bradley-Terry, >= 2: LoRe)"})
    alpha: float = field(default=0.0, metadata={
        "help": "cosine regularization strength toward v_ref"})
    steps: int = field(default=1000, metadata={"help": "Adam steps of the joint fit"})
    lr: float = field(default=0.5, metadata={"help": "learning rate of the basis V"})
    lr_w: float | None = field(default=None, metadata={
        "help": "learning rate of the user logits W (None: --lr)"})
    tau: float = field(default=0.01, metadata={"help": "temperature: the BT logit is tau * margin"})
    mode: Mode = field(default="joint", metadata={
        "help": "joint Adam on V and W, or alternating W and V steps"})
    reduction: Reduction = field(default="user_mean", metadata={
        "help": "loss as the sum of per-user means, or the mean over all pairs"})
    w_init: WInit = field(default="normal", metadata={"help": "initial user logits"})
    prune_threshold: float | None = field(default=None, metadata={
        "help": "drop columns no user weighs at this or more (None: keep all)"})
    fewshot_steps: int = field(default=500, metadata={
        "help": "Adam steps fitting a new user's weights on the frozen basis"})
    fewshot_lr: float = field(default=0.1, metadata={"help": "learning rate of those steps"})
    fewshot_prior: FewshotPrior = field(default="population", metadata={
        "help": "new users' weights: MAP under a Dirichlet fitted to the seen users' "
        "(population) or maximum likelihood as in the reference (none)"})
    fewshot_solver: FewshotSolver = field(default="newton", metadata={
        "help": "new users' weights: the exact MAP by a damped Newton method (newton) or "
        "--fewshot-steps Adam steps as in the reference (adam; the only one with --early-stopping)"})
    fewshot_prior_scale: float = field(default=1.0, metadata={
        "help": "scale c on the population prior's concentration; 0: chosen by empirical Bayes "
        "on the new users' held-out pairs (lore_train.prior_scale)"})
    seed: int = field(default=0, metadata={"help": "seeds every initialization"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:N"})
    log_every: int = field(default=10, metadata={"help": "record the loss every this many steps"})
    early_stopping: bool = field(default=False, metadata={
        "help": "choose the training length (joint and per few-shot user) on validation loss"})
    val_fraction: float = field(default=0.2, metadata={
        "help": "share of the training pairs (or prompts) held out for early stopping and "
        "model selection"})
    val_split_by: ValSplitBy = field(default="auto", metadata={
        "help": "hold out whole prompts or pairs within each user (auto: prompts when the "
        "training pairs cover >= 20)"})
    eval_every: int = field(default=10, metadata={
        "help": "steps between validation losses when early stopping"})
    patience: int = field(default=200, metadata={
        "help": "stop after this many steps without a better validation loss (0: never)"})
    anchor: Anchor = field(default="auto", metadata={
        "help": "what alpha pulls V's columns toward: v_ref, or the population BT head fitted "
        "on the same pairs (auto: v_ref when the data has one)"})
    alpha_schedule: AlphaSchedule = field(default="ramp", metadata={
        "help": "alpha ramped from 0 at 20% to alpha at 80% of the steps (the reference), or constant"})
    v_l2: float = field(default=0.0, metadata={
        "help": "norm control on the basis: weight of tau^2 mean_j |V_j|^2"})
    label_noise: float = field(default=0.0, metadata={
        "help": "share of labels taken as flipped at random: likelihood eps + (1 - 2 eps) "
        "sigmoid(tau margin) (0: plain Bradley-Terry)"})

    def __post_init__(self) -> None:
        for f in fields(self):  # NaN passes every comparison below, so refuse it first
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
        if self.K < 0:
            raise ValueError(f"K must be >= 0, got {self.K}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        # 0 steps would report the random initialization as a trained model
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1 (nothing would be trained), got {self.steps}")
        if self.fewshot_steps < 1:
            raise ValueError(f"fewshot_steps must be >= 1 (new users would keep their initial "
                             f"weights), got {self.fewshot_steps}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.fewshot_lr <= 0:
            raise ValueError(f"fewshot_lr must be > 0, got {self.fewshot_lr}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        for name, kind in (("mode", Mode), ("reduction", Reduction), ("w_init", WInit),
                           ("val_split_by", ValSplitBy), ("anchor", Anchor),
                           ("alpha_schedule", AlphaSchedule), ("fewshot_prior", FewshotPrior),
                           ("fewshot_solver", FewshotSolver)):
            allowed = get_args(kind)  # the choices are the Literal's, written once
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, "
                                 f"got {getattr(self, name)!r}")
        if self.fewshot_prior_scale < 0:
            raise ValueError(f"fewshot_prior_scale must be >= 0 (0: chosen by empirical Bayes), "
                             f"got {self.fewshot_prior_scale}")
        if self.lr_w is not None and self.lr_w <= 0:
            raise ValueError(f"lr_w must be > 0, got {self.lr_w}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be strictly between 0 and 1, got {self.val_fraction}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.v_l2 < 0:
            raise ValueError(f"v_l2 must be >= 0, got {self.v_l2}")
        if not 0.0 <= self.label_noise < 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5) (at 0.5 a label says nothing), "
                             f"got {self.label_noise}")
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise ValueError(f"device {self.device!r} is not a device name (cpu, cuda, cuda:N)") from None
        if self.prune_threshold is not None and not 0 <= self.prune_threshold < 1:
            raise ValueError(f"prune_threshold must be in [0, 1) (a softmax weight), "
                             f"got {self.prune_threshold}")

    def check_dim(self, dim: int, *, source: str = "the data") -> None:
        """K > d would give more basis columns than the embedding has directions."""
        if dim < self.K:
            raise ValueError(f"K={self.K} exceeds the embedding dimension d={dim} of {source}: "
                             f"a basis of K columns in R^d has at most d independent ones")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """The named preset (see `PRESETS`) with ``overrides`` on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "train config") -> TrainConfig:
        """A stored config (``to_dict()``); an unknown key is an error naming ``source``."""
        return from_dict(cls, data, source=source)

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validation_split(self, pairs: PreferencePairs, *, fold: int = 0) -> ValidationSplit:
        """The validation pairs held out of ``pairs`` for early stopping, model selection
        and the calibration temperature: ``val_fraction`` of them (whole prompts or pairs
        within users, per ``val_split_by``), seeded ``seed + fold`` (selection's folds)."""
        return split_validation(pairs, self.val_fraction, seed=self.seed + fold,
                                split_by=self.val_split_by)

    @property
    def likelihood(self) -> Likelihood:
        """The label model of every fit under this config (``tau``, ``label_noise``)."""
        return Likelihood(self.tau, self.label_noise)

    def fewshot(self) -> FewShotSettings:
        """How new users are fitted on the frozen basis: the few-shot steps, lr, prior,
        reduction and likelihood, seeded ``seed + 1`` (not the joint fit's draws)."""
        return FewShotSettings(steps=self.fewshot_steps, lr=self.fewshot_lr,
                               prior=self.fewshot_prior, reduction=self.reduction,
                               likelihood=self.likelihood, seed=self.seed + 1,
                               solver=self.fewshot_solver)


@dataclass(frozen=True)
class FewShotSettings:
    """One few-shot fit's settings: a new user's K logits on a frozen basis.

    ``solver``: "newton" solves for the exact MAP (``steps``, ``lr`` and
    ``seed`` do not apply), "adam" runs ``steps`` Adam steps at ``lr`` (the
    reference's fit, and the one early stopping watches).

    `TrainConfig.fewshot()` hands them out (`personalize`, `adapt` and
    `lore-eval fewshot` all start there); the defaults are TrainConfig's.
    ``prior`` says which prior the caller resolves into the Dirichlet
    concentration `fit_few_shot` takes ("population": the one fitted to the
    seen users' weights; "none": maximum likelihood).
    """

    steps: int = TrainConfig.fewshot_steps
    lr: float = TrainConfig.fewshot_lr
    prior: FewshotPrior = TrainConfig.fewshot_prior
    reduction: Reduction = TrainConfig.reduction
    likelihood: Likelihood = field(default_factory=Likelihood)
    seed: int = 0
    solver: FewshotSolver = TrainConfig.fewshot_solver

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"few-shot steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"few-shot lr must be > 0, got {self.lr}")
        if self.prior not in FEWSHOT_PRIORS:
            raise ValueError(f"prior must be one of {', '.join(map(repr, FEWSHOT_PRIORS))}, "
                             f"got {self.prior!r}")
        if self.solver not in get_args(FewshotSolver):
            raise ValueError(f"solver must be one of {get_args(FewshotSolver)}, got {self.solver!r}")
        if self.reduction not in get_args(Reduction):
            raise ValueError(f"reduction must be one of {get_args(Reduction)}, got {self.reduction!r}")

    def with_(self, **changes: Any) -> FewShotSettings:
        return replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    # The reference `run()`: the dataclass defaults (add fewshot_prior="none" and
    # fewshot_solver="adam" for its 500-step maximum-likelihood Adam few-shot fit). It
    # is lore-train's default preset, so it takes the default Newton solver.
    "reference": {},
    # The reference `run_regularized()` (PRISM at HEAD): alternating W/V Adam
    # steps, U[0,1) logits, global-mean loss, cosine pull toward v_ref with
    # alpha 1e4, 20000 steps, column pruning at 1e-2, few-shot lr 0.5.
    "reference-regularized": dict(
        mode="alternating",
        w_init="uniform",
        reduction="pair_mean",
        alpha=1e4,
        steps=20000,
        prune_threshold=1e-2,
        fewshot_lr=0.5,
        fewshot_solver="adam",
    ),
}
