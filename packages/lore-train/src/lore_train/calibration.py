"""Are the predicted preference probabilities honest? Log-loss, Brier, ECE, temperature.

A row of `PreferencePairs` is chosen-minus-rejected, so its label is always
"first preferred" and the model's probability of that is
p = sigmoid(tau * margin / T) (with the model's label noise eps,
eps + (1 - 2 eps) sigmoid(tau * margin / T)). All three scores are pooled over pairs
(micro), and do not depend on which way round a pair is shown:

- log-loss: mean -log p;
- Brier: mean (1 - p)^2;
- ECE: the predicted winner's confidence max(p, 1 - p) in ``ECE_BINS``
  equal bins over [0.5, 1]; sum over bins of (share of pairs) x |accuracy -
  mean confidence|.

The temperature T is fitted by maximum likelihood on held-out pairs (the
config's validation split of seen_train, `TrainConfig.validation_split`, for
a model fitted on the rest): the
reference's fixed tau = 1/100 sets the training logit scale, not a
calibration.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lore_datasets import SPLITS, Benchmark
from lore_kernels import Likelihood

from .config import TrainConfig
from .heldout import HeldoutFits
from .model import PersonalRewardModel

ECE_BINS = 10
TEMPERATURE_RANGE = (1e-3, 1e3)


def probabilities(margin: torch.Tensor, likelihood: Likelihood) -> torch.Tensor:
    """P(first preferred) of each margin under ``likelihood`` (at temperature T:
    ``likelihood.tempered(T)``; see the module doc), float64."""
    return likelihood.probability(margin.detach().to(torch.float64).cpu())


def log_loss(prob: torch.Tensor) -> float:
    return float(-torch.log(prob.clamp(min=1e-300)).mean())


def brier(prob: torch.Tensor) -> float:
    return float(((1 - prob) ** 2).mean())


def expected_calibration_error(prob: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Top-label ECE of binary predictions whose true label is 1 (see the module doc)."""
    confidence = torch.maximum(prob, 1 - prob)
    correct = (prob > 0.5).to(torch.float64)
    which = ((confidence - 0.5) * 2 * bins).floor().clamp(max=bins - 1).to(torch.int64)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, confidence)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct)
    return float((conf_sum - acc_sum).abs().sum() / max(prob.numel(), 1))


def scores(prob: torch.Tensor) -> dict[str, Any]:
    """{log_loss, brier, ece, n_pairs} of probabilities of the chosen response (None if empty)."""
    if prob.numel() == 0:
        return {"log_loss": None, "brier": None, "ece": None, "n_pairs": 0}
    return {"log_loss": log_loss(prob), "brier": brier(prob),
            "ece": expected_calibration_error(prob), "n_pairs": int(prob.numel())}


def fit_temperature(margin: torch.Tensor, likelihood: Likelihood) -> float:
    """The T minimizing the log-loss of `probabilities` on these (held-out) rows.

    The loss is convex in 1/T (quasi-convex with label noise), so its
    derivative is bisected in log(1/T) over ``TEMPERATURE_RANGE``; separable
    rows (the optimum at T -> 0) give the range's lower end.
    """
    x = likelihood.tau * margin.detach().to(torch.float64).cpu()
    if x.numel() == 0:
        raise ValueError("no held-out pairs to fit a temperature on")
    one = torch.ones(1, dtype=torch.float64)

    def slope(beta: float) -> float:  # d/d(beta) of mean softplus(-beta x)
        _, g = Likelihood(beta, likelihood.label_noise).terms(x, one)  # d loss / d x, at logit beta x
        return float((g / beta * x).mean())

    lo, hi = math.log(1 / TEMPERATURE_RANGE[1]), math.log(1 / TEMPERATURE_RANGE[0])
    if slope(math.exp(hi)) < 0:
        return TEMPERATURE_RANGE[0]
    if slope(math.exp(lo)) > 0:
        return TEMPERATURE_RANGE[1]
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if slope(math.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
    return 1.0 / math.exp(0.5 * (lo + hi))


def evaluate_calibration(
    model: PersonalRewardModel,
    benchmark: Benchmark,
    config: TrainConfig,
    *,
    progress: bool = False,
    fits: HeldoutFits | None = None,
) -> dict[str, Any]:
    """The temperature and the four settings' calibration scores of ``model``.

    T is fitted on the validation split of seen_train (the one early stopping
    and selection use: `TrainConfig.validation_split` of ``model``'s config,
    else ``config``) of a model fitted, with that config, on the rest (shared
    with the selection's candidate through ``fits``, as `run_sweep` does):
    ``model`` itself saw every seen_train pair, so its own
    margins there would make T too confident. Scores are given at T
    (``calibrated``) and at T = 1 (``uncalibrated``).
    """
    train_config = model.train_config or config
    split = train_config.validation_split(benchmark.seen_train)
    val = split.val
    if val.num_pairs == 0:
        raise ValueError("no seen user has two or more training pairs: no validation pairs for T")
    # the selection's candidate for this cell is often this very fit (lore_train.heldout)
    fits = HeldoutFits() if fits is None else fits
    held_out, _ = fits.fit(benchmark.seen_train, split, train_config, v_ref=benchmark.v_ref,
                               pass_validation=False, progress=progress)
    likelihood = model.likelihood
    T = fit_temperature(held_out.margin(val), likelihood)
    out: dict[str, Any] = {"temperature": T, "fitted_on": "validation split of seen_train "
                           "(model refitted on the rest)", "val_fraction": train_config.val_fraction,
                           "val_pairs": val.num_pairs, "ece_bins": ECE_BINS}
    for key in SPLITS:
        margin = model.margin(benchmark.split(key))
        out[key] = {"calibrated": scores(probabilities(margin, likelihood.tempered(T))),
                    "uncalibrated": scores(probabilities(margin, likelihood))}
    return out
