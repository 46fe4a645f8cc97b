"""Fitting the joint basis: V with the seen users' logits W.

Every step is one call of the fused op over the packed rows: no Python loop
over users, no per-step host/device copies. Gradients reach W through the
softmax by autograd; the op itself returns dV and dS.

`fit` is also where the joint fit's early stopping is orchestrated (on the
records of `lore_train.stopping`) and where the population head that the
cosine penalty may pull toward is fitted (`lore_train.anchor` says when).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import lore_kernels
from lore_datasets import PreferencePairs

from ._util import progress_bar, seeded_generator
from .adam import Adam
from .anchor import anchor_kind, population_config
from .config import TrainConfig
from .model import PersonalRewardModel
from .objective import alpha_at, basis_norm_penalty, cosine_penalty, row_weights
from .stopping import BestStep, mean_loss_scale, mean_user_weights
from .train_state import TrainState, fingerprint, load_state, save_state

CHECKPOINT_EVERY = 100  # steps between training-state saves when a checkpoint_dir is given


@dataclass
class FitHistory:
    """Loss curve (every ``log_every`` steps) and wall time of one fit."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    early_stopping: dict | None = None  # best step, validation curve (config.early_stopping)


def fit(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    v_ref: torch.Tensor | None = None,
    validation: PreferencePairs | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> tuple[PersonalRewardModel, FitHistory]:
    """Fit V and the logits W of ``pairs``' users; return the model and its loss curve.

    K = 0 returns the reference head (needs ``v_ref``) without training. With
    ``config.early_stopping`` the length is chosen on held-out pairs
    (`fit_early_stopped`; ``validation``: held-out pairs over the same users,
    None carves them from ``pairs``).

    With ``checkpoint_dir``, the training state (V, W, Adam moments, step,
    random state; see `lore_train.train_state`) is saved there every
    ``checkpoint_every`` steps and after the last one; with ``resume`` a
    state found there is continued, giving the same result, bit for bit, as
    a fit that never stopped. ``on_step(steps_done)`` is called after every
    step (after the state is saved): progress reports, or stopping a fit.
    """
    device = torch.device(config.device)
    N, K = pairs.num_users, config.K
    config.check_dim(pairs.dim)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs the checkpoint_dir to resume from")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    history = FitHistory()
    if K == 0:
        if v_ref is None:
            raise ValueError("K = 0 is the reference reward head and needs v_ref; this data has none")
        model = PersonalRewardModel(
            v_ref[:, None], torch.zeros(N, 1), pairs.user_ids, tau=config.tau, K=0, v_ref=v_ref
        )
        return model.to(device), history
    if config.early_stopping:
        if checkpoint_dir is not None:
            raise ValueError("early stopping refits from the start; it keeps no training state "
                             "to resume (drop checkpoint_dir, or early_stopping)")
        return fit_early_stopped(pairs, config, v_ref=v_ref, validation=validation,
                                 progress=progress)
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = Checkpointing(Path(checkpoint_dir), checkpoint_every, config, fingerprint(pairs))
    start = checkpoint.load() if checkpoint is not None and resume else None
    model, history = fit_steps(pairs, config, v_ref=v_ref, progress=progress,
                               checkpoint=checkpoint, start=start, on_step=on_step)
    return finish(model, config), history


def fit_steps(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    v_ref: torch.Tensor | None = None,
    validation: PreferencePairs | None = None,
    monitor: Callable[[int, torch.Tensor, torch.Tensor], bool] | None = None,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
    start: TrainState | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[PersonalRewardModel, FitHistory]:
    """One plain fit with K >= 1 (no pruning): init, resolve the cosine anchor, optimize.

    ``monitor(step, V, W)`` runs after every step; True stops the fit there.
    ``validation`` only reaches the population anchor's own early stopping.
    ``checkpoint``/``start``/``on_step``: see `fit` and `optimize`.
    """
    anchor_name = anchor_kind(config, has_v_ref=v_ref is not None)
    anchor = v_ref
    if anchor_name == "population":
        anchor = population_head(pairs, config, validation=validation).to(torch.device(config.device))
    V0, W0 = initial_params(pairs, config)
    model = PersonalRewardModel(V0, W0, pairs.user_ids, tau=config.tau, K=config.K, v_ref=v_ref)
    model = model.to(torch.device(config.device))
    if anchor_name is not None:
        model.meta["anchor"] = anchor_name
    c = row_weights(pairs, config.reduction)
    history = optimize(model.V, model.W, pairs, c, anchor, config, progress=progress,
                       monitor=monitor, checkpoint=checkpoint, start=start, on_step=on_step)
    return model, history


def fit_early_stopped(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    v_ref: torch.Tensor | None = None,
    validation: PreferencePairs | None = None,
    progress: bool = True,
) -> tuple[PersonalRewardModel, FitHistory]:
    """The joint fit with its length chosen on validation loss (see the module doc)."""
    refit = validation is None
    if refit:
        split = config.validation_split(pairs)
        train, val, described = split.train, split.val, split.describe()
    else:
        train, val = pairs, validation
        described = {"split_by": "given", "train_pairs": train.num_pairs,
                     "val_pairs": val.num_pairs}
    if val.num_pairs == 0:
        raise ValueError("early stopping needs validation pairs, but no user has two or more "
                         "training pairs to hold one out")
    if val.user_ids != train.user_ids:
        raise ValueError("the validation pairs must be over the training pairs' user list")
    device = torch.device(config.device)
    Z, user = val.features.to(device), val.user.to(device)
    c = mean_user_weights(val, config.reduction).to(device)
    tracker = BestStep(config.patience)

    def monitor(step: int, V: torch.Tensor, W: torch.Tensor) -> bool:
        if step % config.eval_every and step != config.steps - 1:
            return False
        with torch.no_grad():
            loss = lore_kernels.lowrank_bt_loss(Z, user, c, V, torch.softmax(W, 1),
                                                 config.likelihood)[0]
        return tracker.update(step, float(loss), V, W)

    model, first = fit_steps(train, config, v_ref=v_ref, validation=val, monitor=monitor,
                             progress=progress)
    if tracker.best_step < 0:
        raise FloatingPointError("the validation loss was never finite; lower --lr")
    scale = mean_loss_scale(train, config.reduction)
    curve: dict[str, Any] = {
        "best_step": tracker.best_step,
        "best_val_loss": tracker.best_loss,
        "steps_run": first.steps[-1] + 1 if first.steps else 0,
        "refit": refit,
        "validation": described,
        "val_steps": tracker.steps,
        "val_loss": tracker.losses,
        "train_steps": first.steps,
        "train_loss": [v * scale for v in first.loss],  # objective as a mean, like val_loss
    }
    if refit:  # all pairs, same start, exactly best_step + 1 updates
        model, history = fit_steps(pairs, config, v_ref=v_ref,
                                   monitor=lambda step, V, W: step >= tracker.best_step,
                                   progress=progress)
        history.seconds += first.seconds
    else:
        with torch.no_grad():
            model.V.copy_(tracker.state[0])
            model.W.copy_(tracker.state[1])
        history = first
    history.early_stopping = curve
    return finish(model, config), history


def population_head(
    pairs: PreferencePairs,
    config: TrainConfig,
    *,
    validation: PreferencePairs | None = None,
) -> torch.Tensor:
    """The population Bradley-Terry direction [d]: `fit` at K = 1 on ``pairs`` with
    ``config``'s optimizer settings, no penalty and no pruning (early-stopped on
    ``validation`` when ``config.early_stopping``; `lore_train.anchor`)."""
    model, _ = fit(pairs, population_config(config), validation=validation, progress=False)
    return model.V.detach()[:, 0]


@dataclass
class Checkpointing:
    """Where and how often `optimize` saves its training state."""

    directory: Path
    every: int
    config: TrainConfig
    data: dict

    def load(self) -> TrainState | None:
        return load_state(self.directory, self.config, self.data)

    def save(self, state: TrainState) -> None:
        save_state(self.directory, state, self.config, self.data)


def initial_params(
    pairs: PreferencePairs, config: TrainConfig, *, first_user: int = 0,
    total_users: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V0 [d, K] and W0 [N, K] drawn from ``config.seed`` (on CPU).

    When ``pairs`` is one process's block of users (users ``first_user`` to
    ``first_user + N`` of ``total_users``), the full W0 is drawn and this
    block's rows kept, so every process starts where the single-process fit
    starts (the draw costs 4 * total_users * K bytes, not the data's size).
    """
    gen = seeded_generator(config.seed)
    V0 = torch.randn(pairs.dim, config.K, generator=gen)
    N, K = pairs.num_users, config.K
    total = N if total_users is None else total_users
    W0 = {
        "normal": lambda: torch.randn(total, K, generator=gen),
        "uniform": lambda: torch.rand(total, K, generator=gen),
        "zeros": lambda: torch.zeros(total, K),
    }[config.w_init]()[first_user:first_user + N].clone()
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
    checkpoint: Checkpointing | None = None,
    start: TrainState | None = None,
    on_step: Callable[[int], None] | None = None,
    monitor: Callable[[int, torch.Tensor, torch.Tensor], bool] | None = None,
) -> FitHistory:
    """Adam on the leaf tensors V and W (on one device) in place; the loss curve.

    ``pairs`` and the row weights ``c`` may be one shard of the users (W its
    rows): ``all_reduce`` then sums V's gradient and the logged loss over the
    shards before they are used, and ``penalize`` says whether this shard adds
    the penalties on V (exactly one must). ``v_ref`` is the cosine anchor
    (`fit_steps` resolves it). ``start`` continues from a saved
    training state; ``checkpoint`` saves one periodically (see `fit`).
    ``monitor(step, V, W)``, called after every step, stops the loop by
    returning True (the alpha ramp still follows ``config.steps``).
    """
    if penalize and config.alpha > 0 and v_ref is None:
        raise ValueError("alpha > 0 pulls V toward an anchor, but none was given (no v_ref)")
    device, K = V.device, V.shape[1]
    Z = pairs.features.to(device)
    user = pairs.user.to(device)
    c = c.to(device)
    ref = None if v_ref is None else v_ref.to(device, torch.float32)
    sync = all_reduce or (lambda t: None)
    likelihood = config.likelihood

    def nll(V: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        return lore_kernels.lowrank_bt_loss(Z, user, c, V, S, likelihood)[0]

    def penalty(step: int) -> torch.Tensor | float:
        if not penalize:
            return 0.0
        a = alpha_at(step, config.steps, config.alpha, config.alpha_schedule)
        total = a * cosine_penalty(V, ref) if a > 0 else 0.0
        if config.v_l2 > 0:
            total = total + config.v_l2 * basis_norm_penalty(V, config.tau)
        return total

    def weights() -> torch.Tensor:
        return torch.softmax(W, dim=1)

    history = FitHistory()
    lr_w = config.lr if config.lr_w is None else config.lr_w
    started = time.perf_counter()
    if config.mode == "joint":
        opt = Adam([{"params": [V]}, {"params": [W], "lr": lr_w}], lr=config.lr)
        optimizers = [opt]
    else:
        opt_w = Adam([W], lr=lr_w)
        opt_v = Adam([V], lr=config.lr)
        optimizers = [opt_w, opt_v]
    first = 0
    if start is not None:
        first = _restore(start, V, W, optimizers, history)
    with progress_bar(config.steps, f"fit K={K}", progress) as bar:
        bar.update(first)
        for step in range(first, config.steps):
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
            done = step + 1
            if checkpoint is not None and (done % checkpoint.every == 0 or done == config.steps):
                checkpoint.save(TrainState(done, V, W, [o.state_dict() for o in optimizers],
                                           list(history.steps), list(history.loss),
                                           torch.get_rng_state()))
            if on_step is not None:
                on_step(done)
            if monitor is not None and monitor(step, V, W):
                if history.steps[-1:] != [step]:
                    history.steps.append(step)
                    history.loss.append(float(loss.detach()))
                break
    history.seconds = time.perf_counter() - started
    return history


def _restore(state: TrainState, V: torch.Tensor, W: torch.Tensor,
             optimizers: list[torch.optim.Optimizer], history: FitHistory) -> int:
    """Put a saved training state into the tensors and optimizers; the steps already done."""
    state.check_fits(V, W, optimizers)  # a partial state would silently restart Adam
    with torch.no_grad():
        V.copy_(state.V)
        W.copy_(state.W)
    for opt, saved in zip(optimizers, state.optimizers):
        opt.load_state_dict(saved)
    history.steps[:] = state.history_steps
    history.loss[:] = state.history_loss
    torch.set_rng_state(state.rng)
    return state.done


def finish(model: PersonalRewardModel, config: TrainConfig, *,
           all_reduce_max: Callable[[torch.Tensor], None] | None = None) -> PersonalRewardModel:
    """Prune (if configured) and record the config: the last step of every fit."""
    if config.prune_threshold is not None:
        model = prune_columns(model, config.prune_threshold, all_reduce_max=all_reduce_max)
    model.train_config = config
    return model


def prune_columns(model: PersonalRewardModel, threshold: float, *,
                  all_reduce_max: Callable[[torch.Tensor], None] | None = None
                  ) -> PersonalRewardModel:
    """Drop basis columns no user weighs at ``threshold`` or more.

    Slicing the logits renormalizes the kept weights exactly:
    softmax(W[:, kept]) = P[:, kept] / P[:, kept].sum(1). At least the
    column with the largest weight is always kept. When ``model`` holds one
    process's block of users, ``all_reduce_max`` takes each column's largest
    weight over every process, so all of them keep the same columns.
    """
    with torch.no_grad():
        W = model.weights()
        top = W.max(dim=0).values if W.shape[0] else W.new_zeros(W.shape[1])
        if all_reduce_max is not None:
            all_reduce_max(top)
        kept = torch.nonzero(top >= threshold).squeeze(1)
        if kept.numel() == 0:
            kept = top.argmax().reshape(1)
    pruned = PersonalRewardModel(
        model.V[:, kept],
        model.W[:, kept],
        model.user_ids,
        tau=model.tau,
        K=model.K,
        v_ref=model.v_ref,
        seen=model.seen,
        meta={**model.meta, "kept_columns": kept.tolist()},
        train_config=model.train_config,
    )
    return pruned
