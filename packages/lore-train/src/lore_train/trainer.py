"""Fitting: the joint basis (V with seen users' W) and the few-shot personalizer.

Every step is one call of the fused op over the packed rows: no Python loop
over users, no per-step host/device copies. Gradients reach W through the
softmax by autograd; the op itself returns dV and dS.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import lore_kernels
from lore_datasets import PreferencePairs

from .config import TrainConfig
from .model import PersonalRewardModel


@dataclass
class FitHistory:
    """Loss curve (every ``log_every`` steps) and wall time of one fit."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    early_stopping: dict | None = None  # best step, validation curve (config.early_stopping)


def row_weights(pairs: PreferencePairs, reduction: str) -> torch.Tensor:
    """c_m of the loss sum_m c_m softplus(-tau margin_m).

    ``user_mean`` (c = 1/n_u) sums each user's mean loss, the paper's
    objective; ``pair_mean`` (c = 1/M) weighs users by their number of pairs.
    """
    if pairs.num_pairs == 0:
        raise ValueError("no pairs to train on")
    if reduction == "pair_mean":
        return torch.full((pairs.num_pairs,), 1.0 / pairs.num_pairs, dtype=torch.float32)
    if reduction == "user_mean":
        counts = pairs.pairs_per_user().to(torch.float32)
        return 1.0 / counts[pairs.user.cpu()]
    raise ValueError(f"unknown reduction {reduction!r}")


def alpha_at(step: int, steps: int, alpha: float) -> float:
    """The regularization ramp: 0 before int(0.2T), alpha from int(0.8T), linear between."""
    start, end = int(0.2 * steps), int(0.8 * steps)
    if step < start:
        return 0.0
    if step >= end or end == start:
        return alpha
    return alpha * (step - start) / (end - start)


def cosine_penalty(V: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    """mean_j (1 - cos(V[:, j], v_ref))."""
    return (1.0 - F.cosine_similarity(V, v_ref[:, None].to(V), dim=0)).mean()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _progress(total: int, desc: str, progress: bool):
    return tqdm(total=total, desc=desc, disable=not progress or None, leave=False, dynamic_ncols=True)


def fit(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    v_ref: torch.Tensor | None = None,
    validation: PreferencePairs | None = None,
    progress: bool = True,
) -> tuple[PersonalRewardModel, FitHistory]:
    """Fit V and the logits W of ``pairs``' users; return the model and its loss curve.

    rank 0 returns the reference head (needs ``v_ref``) without training.
    With ``config.early_stopping`` see `lore_train.stopping.fit_early_stopped`
    (``validation``: held-out pairs of the same users; None carves them).
    """
    device = torch.device(config.device)
    N, K = pairs.num_users, config.rank
    history = FitHistory()
    if K == 0:
        if v_ref is None:
            raise ValueError("rank 0 is the reference reward head and needs v_ref; this data has none")
        model = PersonalRewardModel(
            v_ref[:, None], torch.zeros(N, 1), pairs.user_ids, tau=config.tau, rank=0, v_ref=v_ref
        )
        return model.to(device), history
    if config.early_stopping:  # issue 14: best step on held-out pairs
        from .stopping import fit_early_stopped

        return fit_early_stopped(pairs, config, v_ref=v_ref, validation=validation,
                                 progress=progress)
    model, history = fit_steps(pairs, config, v_ref=v_ref, progress=progress)
    return finish(model, config), history


def fit_steps(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    v_ref: torch.Tensor | None = None,
    validation: PreferencePairs | None = None,
    monitor: Callable[[int, torch.Tensor, torch.Tensor], bool] | None = None,
    progress: bool = True,
) -> tuple[PersonalRewardModel, FitHistory]:
    """One plain fit of rank >= 1 (no pruning): init, resolve the cosine anchor, optimize.

    ``monitor(step, V, W)`` runs after every step; True stops the fit there.
    """
    from .anchor import cosine_anchor  # issue 14: population head when there is no v_ref

    anchor, anchor_name = cosine_anchor(pairs, config, v_ref, validation=validation)
    V0, W0 = initial_params(pairs, config)
    model = PersonalRewardModel(V0, W0, pairs.user_ids, tau=config.tau, rank=config.rank,
                                v_ref=v_ref)
    model = model.to(torch.device(config.device))
    if anchor_name is not None:
        model.meta["anchor"] = anchor_name
    c = row_weights(pairs, config.reduction)
    history = optimize(model.V, model.W, pairs, c, anchor, config, progress=progress,
                       monitor=monitor)
    return model, history


def initial_params(
    pairs: PreferencePairs, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """V0 [d, K] and W0 [N, K] drawn from ``config.seed`` (on CPU).

    Distributed ranks draw the same full W0 and keep their block of rows, so
    every rank starts where the single-process fit starts.
    """
    gen = _generator(config.seed)
    V0 = torch.randn(pairs.dim, config.rank, generator=gen)
    N, K = pairs.num_users, config.rank
    W0 = {
        "normal": lambda: torch.randn(N, K, generator=gen),
        "uniform": lambda: torch.rand(N, K, generator=gen),
        "zeros": lambda: torch.zeros(N, K),
    }[config.w_init]()
    W0[pairs.pairs_per_user() == 0] = 0.0  # no data: uniform weights, not a random draw
    return V0, W0


def optimize(
    V: torch.Tensor,
    W: torch.Tensor,
    pairs: PreferencePairs,
    c: torch.Tensor,
    v_ref: torch.Tensor | None,
    config: TrainConfig,
    *,
    progress: bool,
    all_reduce: Callable[[torch.Tensor], None] | None = None,
    penalize: bool = True,
    monitor: Callable[[int, torch.Tensor, torch.Tensor], bool] | None = None,
) -> FitHistory:
    """Adam on the leaf tensors V and W (on one device) in place; the loss curve.

    ``pairs`` and the row weights ``c`` may be one shard of the users (W its
    rows): ``all_reduce`` then sums V's gradient and the logged loss over the
    shards before they are used, and ``penalize`` says whether this shard adds
    the cosine penalty (exactly one must). ``v_ref`` is the cosine anchor.
    ``monitor(step, V, W)``, called after every step, stops the loop by
    returning True (the alpha ramp still follows ``config.steps``).
    """
    if config.alpha > 0 and v_ref is None:
        raise ValueError("alpha > 0 pulls V toward v_ref, but this data has no v_ref")
    device, K = V.device, V.shape[1]
    Z = pairs.features.to(device)
    user = pairs.user.to(device)
    c = c.to(device)
    ref = None if v_ref is None else v_ref.to(device, torch.float32)
    sync = all_reduce or (lambda t: None)

    def nll(V: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        return lore_kernels.lowrank_bt_loss(Z, user, c, V, S, config.tau)[0]

    def penalty(step: int) -> torch.Tensor | float:
        if not penalize:
            return 0.0
        a = config.alpha if config.alpha_schedule == "constant" else alpha_at(
            step, config.steps, config.alpha)
        total = a * cosine_penalty(V, ref) if a > 0 else 0.0
        if config.v_l2 > 0:  # norm control on the basis (issue 14)
            total = total + config.v_l2 * (config.tau * V).square().sum(dim=0).mean()
        return total

    def weights() -> torch.Tensor:
        return torch.softmax(W, dim=1)

    history = FitHistory()
    lr_w = config.lr if config.lr_w is None else config.lr_w
    start = time.perf_counter()
    if config.mode == "joint":
        opt = torch.optim.Adam([{"params": [V]}, {"params": [W], "lr": lr_w}], lr=config.lr)
    else:
        opt_w = torch.optim.Adam([W], lr=lr_w)
        opt_v = torch.optim.Adam([V], lr=config.lr)
    with _progress(config.steps, f"fit K={K}", progress) as bar:
        for step in range(config.steps):
            if config.mode == "joint":
                opt.zero_grad(set_to_none=True)
                loss = nll(V, weights()) + penalty(step)
                loss.backward()
                sync(V.grad)
                opt.step()
            else:  # W step on the NLL, then V step with the fresh W and the penalty
                opt_w.zero_grad(set_to_none=True)
                nll(V.detach(), weights()).backward()
                opt_w.step()
                opt_v.zero_grad(set_to_none=True)
                loss = nll(V, weights().detach()) + penalty(step)
                loss.backward()
                sync(V.grad)
                opt_v.step()
            if step % config.log_every == 0 or step == config.steps - 1:
                total = loss.detach().clone()
                sync(total)
                value = float(total)
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss became {value} at step {step} (K={K}); lower --lr")
                history.steps.append(step)
                history.loss.append(value)
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            bar.update()
            if monitor is not None and monitor(step, V, W):
                if history.steps[-1:] != [step]:
                    history.steps.append(step)
                    history.loss.append(float(loss.detach()))
                break
    history.seconds = time.perf_counter() - start
    return history


def finish(model: PersonalRewardModel, config: TrainConfig) -> PersonalRewardModel:
    """Prune (if configured) and record the config: the last step of every fit."""
    if config.prune_threshold is not None:
        model = prune_columns(model, config.prune_threshold)
    model.meta["train_config"] = config.to_dict()
    return model


def prune_columns(model: PersonalRewardModel, threshold: float) -> PersonalRewardModel:
    """Drop basis columns no user weighs at ``threshold`` or more.

    Slicing the logits renormalizes the kept weights exactly:
    softmax(W[:, kept]) = P[:, kept] / P[:, kept].sum(1). At least the
    column with the largest weight is always kept.
    """
    with torch.no_grad():
        top = model.weights().max(dim=0).values
        kept = torch.nonzero(top >= threshold).squeeze(1)
        if kept.numel() == 0:
            kept = top.argmax().reshape(1)
    pruned = PersonalRewardModel(
        model.V[:, kept],
        model.W[:, kept],
        model.user_ids,
        tau=model.tau,
        rank=model.rank,
        v_ref=model.v_ref,
        seen=model.seen,
        meta={**model.meta, "kept_columns": kept.tolist()},
    )
    return pruned


def fit_few_shot(
    V: torch.Tensor,
    pairs: PreferencePairs,
    *,
    steps: int = 500,
    lr: float = 0.1,
    tau: float = 0.01,
    reduction: str = "user_mean",
    seed: int = 0,
    progress: bool = False,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Fit logits [N, K] for ``pairs``' users on a frozen basis V.

    P = Z V is computed once; every step after that is O(M K). Users are
    independent problems, so one Adam over all rows equals separate fits.
    Logits start at N(0, 1) like the reference; a user with no pairs keeps
    zero logits (uniform weights) rather than a random draw. K <= 1 needs no
    fitting (softmax of one logit is 1). ``on_step(t, W)`` sees the logits
    after update t (1-based), e.g. to track a best step per user.
    """
    N, K = pairs.num_users, V.shape[1]
    device = V.device
    counts = pairs.pairs_per_user().to(device)
    if K <= 1 or pairs.num_pairs == 0:
        return torch.zeros(N, K, device=device)
    W = torch.randn(N, K, generator=_generator(seed)).to(device)
    W[counts == 0] = 0.0
    with torch.no_grad():
        P = lore_kernels.project(pairs.features.to(device), V.detach())
    user = pairs.user.to(device)
    c = row_weights(pairs, reduction).to(device)
    # The problem is tiny (M x K), so autograd and torch.optim overhead would
    # dominate: the gradient is written out and Adam (torch's defaults:
    # betas 0.9/0.999, eps 1e-8, no weight decay) is applied in place.
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m1, m2 = torch.zeros_like(W), torch.zeros_like(W)
    dS, update = torch.empty_like(W), torch.empty_like(W)
    with _progress(steps, f"few-shot K={K}", progress) as bar:
        for t in range(1, steps + 1):
            S = torch.softmax(W, dim=1)
            margin = (P * S[user]).sum(dim=1)
            g = torch.sigmoid(-tau * margin)
            g.mul_(c).mul_(-tau)
            dS.zero_().index_add_(0, user, P * g[:, None])
            grad = S * (dS - (dS * S).sum(dim=1, keepdim=True))  # softmax Jacobian
            m1.lerp_(grad, 1 - beta1)
            m2.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            torch.div(m2, 1 - beta2**t, out=update).sqrt_().add_(eps)
            W.addcdiv_(m1, update, value=-lr / (1 - beta1**t))
            if on_step is not None:
                on_step(t, W)
            bar.update()
    return W


def personalize(
    model: PersonalRewardModel,
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    progress: bool = False,
) -> PersonalRewardModel:
    """``model`` plus ``pairs``' users, fitted few-shot on the frozen basis
    (with ``config.early_stopping``, each user stops at their best step)."""
    if config.early_stopping:  # issue 14
        from .stopping import personalize_early_stopped

        return personalize_early_stopped(model, pairs, config, progress=progress)
    W = fit_few_shot(
        model.V.detach(),
        pairs,
        steps=config.fewshot_steps,
        lr=config.fewshot_lr,
        tau=config.tau,
        reduction=config.reduction,
        seed=config.seed + 1,
        progress=progress,
    )
    return model.with_users(pairs.user_ids, W)
