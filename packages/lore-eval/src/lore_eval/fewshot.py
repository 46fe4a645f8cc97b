"""The few-shot curve: how well a frozen basis V serves a new user given n pairs.

For each shot count n and each of T trials, every unseen user gets n pairs
drawn without replacement from their ``unseen_fewshot`` pool; only their K
weights are fitted (V frozen) and they are scored on those n pairs and on
their ``unseen_test`` pairs. A trial's score is the macro mean over users;
the curve reports the mean and std (ddof 0) of that score over trials.

Users whose pool holds fewer than n pairs are *skipped at that n* and listed
(count and ids) in the point's ``short_users``: topping them up with all
their pairs would put fewer-shot users into the n-shot average and flatten
the curve. ``n_users`` says how many users each point averages.

Speed: V is projected once (P = Z V for the pool and the test rows), and all
T trials of one shot count are one few-shot fit: trial t of user u is a
pseudo-user of a packed `PreferencePairs` whose features are rows of P, fitted
on the identity basis. Users are independent problems (one Adam over all
rows equals separate fits), so this is exact, not an approximation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lore_kernels
from lore_datasets import Benchmark, PreferencePairs
from lore_datasets.paths import contained
from lore_train import (
    FEWSHOT_PRIORS,
    FEWSHOT_SOLVERS,
    FewShotSettings,
    PersonalRewardModel,
    TrainConfig,
    fit_few_shot,
)
from lore_train.checkpoint import read_checkpoint_config
from lore_train.elicitation import greedy_information_gain
from lore_train.posterior import covariance, laplace_precision
from lore_train.results import device_description, versions

DEFAULT_SHOTS = (1, 2, 5, 10, 20, 50)
DEFAULT_TRIALS = 20  # seeded draws of each user's pairs per point of the curve
DEFAULT_PRIOR = TrainConfig.fewshot_prior  # lore-train's: population
SOLVERS = FEWSHOT_SOLVERS
STRATEGIES = ("random", "active")
SHORT_USERS_RULE = "skipped at this shot count (fewer pool pairs than shots)"


def fewshot_curve(
    model: PersonalRewardModel,
    benchmark: Benchmark,
    shots: Sequence[int] = DEFAULT_SHOTS,
    trials: int = DEFAULT_TRIALS,
    *,
    seed: int = 0,
    steps: int | None = None,
    lr: float | None = None,
    prior: str = DEFAULT_PRIOR,
    strategy: str = "random",
    solver: str | None = None,
) -> dict[str, Any]:
    """Few-shot accuracy of ``model``'s basis for the benchmark's unseen users.

    The fits use the few-shot settings the model was trained with
    (`TrainConfig.fewshot()`, the model's likelihood), ``steps``/``lr`` when given. Draws and initializations are seeded by (``seed``, shot count).
    ``prior``: "none" (maximum likelihood) or "population" (MAP under the
    seen users' Dirichlet; 0 shots is then the population's mean user).
    ``strategy``: "random" draws each shot count's pairs afresh; "active"
    grows one sequence per (trial, user), each round asking the pool pairs of
    greatest expected information gain (`lore_train.elicitation`) and
    refitting. ``solver``: "newton" (the exact MAP, one batched solve per
    shot count) or "adam" (``steps`` steps at ``lr``); default the model's
    `TrainConfig.fewshot_solver`. Returns a JSON-ready dict with one entry
    per shot count in ``points``.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    bad = [s for s in shots if int(s) < 0]
    if bad:
        raise ValueError(f"shot counts must be >= 0, got {bad}")
    if prior not in FEWSHOT_PRIORS:
        raise ValueError(f"prior must be one of {FEWSHOT_PRIORS}, got {prior!r}")
    if solver is not None and solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    pool, test = benchmark.unseen_fewshot, benchmark.unseen_test
    _check_compatible(model, benchmark)
    trained = (model.train_config or TrainConfig()).fewshot()
    settings = trained.with_(steps=trained.steps if steps is None else steps,
                             lr=trained.lr if lr is None else lr, prior=prior,
                             likelihood=model.likelihood, seed=seed,
                             solver=trained.solver if solver is None else solver)

    V = model.V.detach()
    device = V.device
    P_pool = lore_kernels.project(pool.features.to(device), V)
    P_test = lore_kernels.project(test.features.to(device), V)
    counts = pool.pairs_per_user().numpy()
    test_counts = test.pairs_per_user().numpy()
    alpha = model.population_prior() if prior == "population" else None
    shot_list = sorted({int(s) for s in shots})
    active = (_active_sequences(P_pool, pool, shot_list, trials, settings, prior=alpha)
              if strategy == "active" else None)

    points = []
    for n in shot_list:
        eligible = np.flatnonzero(counts >= n)
        short = [pool.user_ids[i] for i in np.flatnonzero(counts < n)]
        point: dict[str, Any] = {
            "shots": n,
            "n_users": int(eligible.size),
            "short_users": {"count": len(short), "ids": short, "rule": SHORT_USERS_RULE},
        }
        if eligible.size == 0:
            empty = {"mean": None, "std": None, "per_trial": []}
            point.update(fewshot_train=empty, unseen_prompts={**empty, "n_users": 0}, fit_seconds=0.0)
            points.append(point)
            continue
        start = time.perf_counter()
        if active is None:
            rows = draw_shots(pool, eligible, n, trials, seed=seed)  # [T, n_users, n]
            S = _fit_trials(P_pool, rows, settings.with_(seed=seed + n), prior=alpha)  # [T, n_users, K]
        else:
            rows = active["rows"][:, eligible, :n]
            S = active["weights"][n][:, eligible]
        point["fit_seconds"] = time.perf_counter() - start
        if n == 0:
            point["fewshot_train"] = _over_trials(None)
        else:
            train_acc = _shot_accuracy(P_pool, rows, S)  # [T, n_users]
            point["fewshot_train"] = _over_trials(train_acc.mean(dim=1))
        has_test = torch.from_numpy(test_counts[eligible] > 0)
        test_acc = _test_accuracy(P_test, test, eligible, S)
        point["unseen_prompts"] = {
            **_over_trials(test_acc[:, has_test].mean(dim=1) if has_test.any() else None),
            "n_users": int(has_test.sum()),
        }
        points.append(point)

    return {
        "K": model.K,
        "kept_rank": model.kept_rank,
        "alpha": None if model.train_config is None else model.train_config.alpha,
        "prior": prior,
        "prior_concentration": None if alpha is None else alpha.tolist(),
        "prior_scale": None if alpha is None else model.prior_scale,
        "solver": settings.solver,
        "strategy": strategy,
        "trials": trials,
        "seed": seed,
        "fewshot_steps": settings.steps,
        "fewshot_lr": settings.lr,
        "pool": {
            "users": pool.num_users,
            "pairs_per_user": _spread(counts),
            "users_without_test_pairs": [u for u, c in zip(test.user_ids, test_counts) if c == 0],
        },
        "points": points,
    }


def run_fewshot(
    checkpoints: Sequence[str | Path],
    benchmark: Benchmark,
    shots: Sequence[int] = DEFAULT_SHOTS,
    trials: int = DEFAULT_TRIALS,
    *,
    seed: int = 0,
    steps: int | None = None,
    lr: float | None = None,
    device: str = "cpu",
    config: dict[str, Any] | None = None,
    priors: Sequence[str] = (DEFAULT_PRIOR,),
    strategies: Sequence[str] = ("random",),
    solvers: Sequence[str | None] = (None,),
) -> dict[str, Any]:
    """`fewshot_curve` for each checkpoint directory and each (prior, strategy, solver)
    (solver None: the checkpoint's); the document fewshot.json stores."""
    doc = {
        "format": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"shots": sorted({int(s) for s in shots}), "trials": trials, "seed": seed,
                   "steps": steps, "lr": lr, "priors": list(priors), "strategies": list(strategies),
                   "solvers": list(solvers),
                   "short_users": SHORT_USERS_RULE, **(config or {})},
        "dataset": benchmark.meta,
        "versions": versions(),
        "backend": lore_kernels.backend(device),
        "device": device_description(device),
        "curves": [],
    }
    for path in checkpoints:
        model = PersonalRewardModel.load(path, device=device)
        for prior in priors:
            for strategy in strategies:
                for solver in solvers:
                    try:
                        curve = fewshot_curve(model, benchmark, shots, trials, seed=seed,
                                              steps=steps, lr=lr, prior=prior, strategy=strategy,
                                              solver=solver)
                    except ValueError as err:
                        raise ValueError(f"{path}: {err}") from None
                    doc["curves"].append({"checkpoint": str(path), **curve})
    return doc


def find_checkpoints(run_dir: str | Path, Ks: Sequence[int] | None = None) -> list[Path]:
    """The checkpoint directories of a lore-train run, ordered by (alpha, K)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no checkpoints here (is {run_dir} a lore-train --out?)")
    found = []
    for directory in root.iterdir():
        directory = contained(run_dir, f"checkpoints/{directory.name}", f"{root}")
        if not (directory / "config.json").is_file():
            continue
        config = read_checkpoint_config(directory)
        train = config.get("train_config")  # None for a model built by hand: no alpha
        alpha = 0.0 if train is None else TrainConfig.from_dict(
            train, source=f"{directory / 'config.json'}: train_config").alpha
        if Ks is None or config["K"] in Ks:
            found.append(((alpha, config["K"]), directory))
    if not found:
        which = "" if Ks is None else f" with K in {list(Ks)}"
        raise FileNotFoundError(f"{root}: no checkpoint{which}")
    return [directory for _, directory in sorted(found)]


def draw_shots(
    pool: PreferencePairs, users: np.ndarray, shots: int, trials: int, *, seed: int
) -> torch.Tensor:
    """Row indices [trials, len(users), shots]: per trial, ``shots`` distinct rows of each user.

    One random key per (trial, row), sorted within user: a per-user shuffle
    for every trial at once. Seeded by (seed, shots), independent of the
    other shot counts.
    """
    row_user = pool.user.cpu().numpy()
    offsets = pool.offsets.numpy()
    rng = np.random.default_rng([seed, shots])
    keys = rng.random((trials, row_user.size))
    within = offsets[users][:, None] + np.arange(shots)  # positions in the user-sorted order
    drawn = np.empty((trials, len(users), shots), dtype=np.int64)
    for t in range(trials):
        order = np.lexsort((keys[t], row_user))
        drawn[t] = order[within]
    return torch.from_numpy(drawn)


def _fit_trials(
    P: torch.Tensor, rows: torch.Tensor, settings: FewShotSettings, *,
    prior: torch.Tensor | None = None, logits: bool = False,
) -> torch.Tensor:
    """Simplex weights [T, U, K] (or their logits): each (trial, user) fitted on its
    rows of P (``rows`` [T, U, n]; -1 marks no row)."""
    T, U, n = rows.shape
    K = P.shape[1]
    flat = rows.reshape(-1)
    pseudo = torch.arange(T * U).repeat_interleave(n)
    keep = flat >= 0
    pairs = PreferencePairs(P[flat[keep].to(P.device)], pseudo[keep].to(P.device),
                            [str(i) for i in range(T * U)])
    identity = torch.eye(K, device=P.device)  # project(P, I) = P: the pool is already projected
    W = fit_few_shot(identity, pairs, settings, prior=prior)
    return (W if logits else torch.softmax(W, dim=1)).reshape(T, U, K)


def _active_sequences(
    P: torch.Tensor, pool: PreferencePairs, shots: Sequence[int], trials: int,
    settings: FewShotSettings, *, prior: torch.Tensor | None,
) -> dict[str, Any]:
    """Actively chosen rows [T, U, max shots] of every pool user, and the weights
    [T, U, K] fitted after each shot count (one round per shot count: the
    round asks the difference, batch-aware, from the posterior of the rounds
    before; round n's fit is seeded ``settings.seed + n``). Users with too few
    pool pairs get -1 past their pool."""
    seed, likelihood = settings.seed, settings.likelihood
    T, U, K = trials, pool.num_users, P.shape[1]
    offsets = pool.offsets.tolist()
    counts = pool.pairs_per_user()
    C = int(counts.max())
    cand = torch.full((U, C), -1, dtype=torch.int64)
    for u in range(U):
        cand[u, : counts[u]] = torch.arange(offsets[u], offsets[u] + int(counts[u]))
    Q = P[cand.clamp(min=0).to(P.device)].expand(T, U, C, K).reshape(T * U, C, K)
    free = (cand >= 0).expand(T, U, C).reshape(T * U, C).to(P.device)
    rows = torch.full((T * U, max(shots, default=0)), -1, dtype=torch.int64)
    W = _fit_trials(P, rows[:, :0].reshape(T, U, 0), settings, prior=prior,
                    logits=True).reshape(T * U, K)
    weights, done = {}, 0
    for n in shots:
        if n > done:
            picked_rows = rows[:, :done]
            owner = torch.arange(T * U).repeat_interleave(done)
            flat = picked_rows.reshape(-1)
            keep = flat >= 0
            H = laplace_precision(P[flat[keep].to(P.device)], owner[keep].to(P.device), W,
                                  likelihood, prior)
            picks, _ = greedy_information_gain(Q, W, covariance(H), likelihood, n - done,
                                               available=free)
            picks = picks.cpu()
            ok = picks >= 0
            b = torch.arange(T * U)[:, None].expand_as(picks)
            free[b[ok], picks[ok]] = False
            rows[:, done:n] = torch.where(ok, cand.repeat(T, 1)[b, picks.clamp(min=0)],
                                          torch.full_like(picks, -1))
            done = n
            W = _fit_trials(P, rows[:, :n].reshape(T, U, n), settings.with_(seed=seed + n),
                            prior=prior, logits=True).reshape(T * U, K)
        weights[n] = torch.softmax(W, dim=1).reshape(T, U, K)
    return {"rows": rows.reshape(T, U, -1), "weights": weights}


def _shot_accuracy(P: torch.Tensor, rows: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Accuracy [T, U] of each fitted (trial, user) on its own drawn rows."""
    margin = torch.einsum("tunk,tuk->tun", P[rows.to(P.device)], S)
    return (margin > 0).to(torch.float64).mean(dim=2).cpu()


def _test_accuracy(
    P_test: torch.Tensor, test: PreferencePairs, users: np.ndarray, S: torch.Tensor
) -> torch.Tensor:
    """Accuracy [T, U] of each (trial, user) on the user's test rows (NaN without rows)."""
    T, U, _ = S.shape
    position = torch.full((test.num_users,), -1, dtype=torch.int64)
    position[torch.from_numpy(users)] = torch.arange(U)
    row_pos = position[test.user.cpu()]
    keep = row_pos >= 0
    row_pos = row_pos[keep]
    P = P_test[keep.to(P_test.device)]
    counts = torch.bincount(row_pos, minlength=U).to(torch.float64)
    acc = torch.empty(T, U, dtype=torch.float64)
    for t in range(T):  # T is small; this keeps memory at one [M_test] margin
        correct = ((P * S[t][row_pos.to(S.device)]).sum(dim=1) > 0).to(torch.float64).cpu()
        acc[t] = torch.zeros(U, dtype=torch.float64).index_add_(0, row_pos, correct) / counts
    return acc


def _over_trials(per_trial: torch.Tensor | None) -> dict[str, Any]:
    if per_trial is None:
        return {"mean": None, "std": None, "per_trial": []}
    values = per_trial.numpy()
    return {"mean": float(values.mean()), "std": float(values.std(ddof=0)),
            "per_trial": [float(v) for v in values]}


def _spread(counts: np.ndarray) -> dict[str, float]:
    return {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())}


def _check_compatible(model: PersonalRewardModel, benchmark: Benchmark) -> None:
    """Refuse a checkpoint that trained on this benchmark's unseen users or has another dim."""
    if model.dim != benchmark.dim:
        raise ValueError(f"the checkpoint has dim {model.dim}, the data set {benchmark.dim}")
    trained = {u for u, seen in zip(model.user_ids, model.seen) if seen}
    leaked = sorted(trained & set(benchmark.unseen_fewshot.user_ids))
    if leaked:
        raise ValueError(
            f"the checkpoint's basis was trained on {len(leaked)} of this benchmark's unseen "
            f"users ({leaked[:5]}): a different data set or split seed than its training run"
        )
