"""Cold-start measurements behind the defaults: which prior, which posterior.

    python benchmarks/coldstart.py --checkpoint runs/llmfao/checkpoints/K2_alpha0 --dataset llmfao

For the benchmark's unseen users, over --trials seeded draws of n pool pairs
per user (the draws of `lore-eval fewshot`), it prints

1. unseen-prompt accuracy (macro over users, mean ± std over trials) of three
   ways to fit a new user: maximum likelihood (prior none), MAP under the
   Dirichlet fitted to the seen users (prior population), and the posterior
   mean under the empirical mixture of the seen users' weights (particles =
   those weights, reweighted by the user's pairs);
2. calibration of the predicted preference probabilities on unseen test
   pairs (pooled over users and trials): the MAP point at T = 1 and at the
   checkpoint's fitted temperature, the Laplace posterior predictive, and
   the Dirichlet-particle posterior predictive (4096 draws).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import lore_kernels
from lore_datasets import PreferencePairs, load_dataset
from lore_eval.fewshot import draw_shots
from lore_train import PersonalRewardModel, TrainConfig, fit_few_shot
from lore_train.calibration import expected_calibration_error, log_loss
from lore_train.posterior import covariance, laplace_precision, logit_draws, preference_moments
from lore_train.prior import empirical_log_weights, sample_dirichlet


def accuracy(S: torch.Tensor, Qr: torch.Tensor, b: torch.Tensor, row_u: torch.Tensor, T: int,
             U: int) -> str:
    """Unseen-prompt accuracy, macro over users, mean ± std over trials, of weights S [T*U, K]."""
    correct = ((Qr * S.double()[b]).sum(1) > 0).double().reshape(T, -1)
    per_user = torch.zeros(T, U, dtype=torch.float64).index_add_(1, row_u, correct)
    per_user /= torch.bincount(row_u, minlength=U).clamp(min=1)
    per_trial = per_user[:, torch.bincount(row_u, minlength=U) > 0].mean(1)
    return f"{per_trial.mean():.3f} ± {per_trial.std(unbiased=False):.3f}"


def cal(prob: torch.Tensor) -> str:
    return f"{log_loss(prob):.3f}/{expected_calibration_error(prob):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--dataset", default="llmfao")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2, 5, 10, 20])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    model = PersonalRewardModel.load(args.checkpoint)
    bench = load_dataset(args.dataset, split={"seed": args.split_seed})
    pool, test = bench.unseen_fewshot, bench.unseen_test
    K, likelihood = model.kept_rank, model.likelihood
    tau = likelihood.tau
    settings = (model.train_config or TrainConfig()).fewshot().with_(likelihood=likelihood)
    V = model.V.detach()
    P_pool = lore_kernels.project(pool.features, V)
    P_test = lore_kernels.project(test.features, V)
    alpha = model.population_prior()
    seen = model.weights().detach()[torch.tensor(model.seen)]
    particles = sample_dirichlet(alpha, 4096, seed=args.seed)
    T_cal = float(model.meta.get("temperature", 1.0))
    counts = pool.pairs_per_user().numpy()
    print(f"{args.dataset} K={K}: {len(seen)} seen users, Dirichlet alpha = "
          f"{[round(a, 3) for a in alpha.tolist()]}, temperature {T_cal:.3f}")
    print(f"\n{'shots':>5} {'users':>5}  {'none (ML)':<15} {'Dirichlet MAP':<15} {'empirical mix':<15}"
          f"  | log-loss/ECE: {'MAP T=1':<13} {'MAP T_cal':<13} {'Laplace':<13} {'Laplace T_cal':<13} {'particles':<13}")
    for n in args.shots:
        users = np.flatnonzero(counts >= n)
        rows = draw_shots(pool, users, n, args.trials, seed=args.seed)  # [T, U, n]
        T, U = rows.shape[:2]
        flat = rows.reshape(-1)
        owner = torch.arange(T * U).repeat_interleave(n)
        shots = PreferencePairs(P_pool[flat], owner, [str(i) for i in range(T * U)])
        eye = torch.eye(K)
        W_none = fit_few_shot(eye, shots, settings.with_(seed=args.seed + n))
        W_map = fit_few_shot(eye, shots, settings.with_(seed=args.seed + n), prior=alpha)
        mix = empirical_log_weights(P_pool[flat], owner, T * U, seen, likelihood).exp() @ seen.double()
        # test rows of each (trial, user)
        position = torch.full((test.num_users,), -1, dtype=torch.int64)
        position[torch.from_numpy(users)] = torch.arange(U)
        row_u = position[test.user]
        keep = row_u >= 0
        Q, row_u = P_test[keep], row_u[keep]
        b = (torch.arange(T)[:, None] * U + row_u[None]).reshape(-1)  # [T * R] pseudo-user per row
        Qr = Q.repeat(T, 1).double()

        S_map = torch.softmax(W_map, 1)
        margin = (Qr * S_map.double()[b]).sum(1)
        draws = logit_draws(W_map, covariance(laplace_precision(P_pool[flat], owner, W_map, likelihood, alpha)),
                            256, seed=args.seed)
        p_laplace, _ = preference_moments(Qr, draws, b, likelihood)
        p_laplace_cal, _ = preference_moments(Qr, draws, b, likelihood.tempered(T_cal))
        logw = empirical_log_weights(P_pool[flat], owner, T * U, particles, likelihood)
        p_part = (logw.exp()[b] * torch.sigmoid(tau * Qr @ particles.double().T)).sum(1)

        def acc(S: torch.Tensor) -> str:
            return accuracy(S, Qr, b, row_u, T, U)  # noqa: B023 (called right here)

        print(f"{n:>5} {U:>5}  {acc(torch.softmax(W_none, 1)):<15} {acc(S_map):<15} {acc(mix):<15}  | "
              f"{'':14}{cal(torch.sigmoid(tau * margin)):<13} {cal(torch.sigmoid(tau / T_cal * margin)):<13} "
              f"{cal(p_laplace):<13} {cal(p_laplace_cal):<13} {cal(p_part):<13}")


if __name__ == "__main__":
    main()
