"""Few-shot priors and solvers: none, population (c = 1) and the default (c by empirical
Bayes), each fitted by Newton (the exact MAP) and by 500 Adam steps.

    python benchmarks/fewshot_priors.py --run runs/llmfao --dataset llmfao --K 2 3 \
        --shots 0 1 2 5 10 20 50 --trials 10 [--json out.json]

For each checkpoint of a `lore-train` run it chooses the prior's scale c as
`personalize` does (`lore_train.prior_scale.choose_for_new_users`), then draws the
`lore-eval fewshot` curves (unseen users on unseen prompts, mean over
trials) for every (prior, solver), and the median L1 distance between the
weights of 500 Adam steps and the Newton MAP (the converged one) per shot
count. Prints a markdown table per checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lore_kernels
from lore_datasets import load_dataset
from lore_eval.fewshot import _fit_trials, draw_shots, fewshot_curve, find_checkpoints
from lore_train import PersonalRewardModel
from lore_train.prior_scale import choose_for_new_users


def weight_gap(model: PersonalRewardModel, bench, shots: list[int], trials: int, seed: int,
               prior: torch.Tensor | None) -> dict[int, float]:
    """Median L1 distance between Adam-500 and Newton weights, per shot count."""
    pool = bench.unseen_fewshot
    P = lore_kernels.project(pool.features, model.V.detach())
    counts = pool.pairs_per_user().numpy()
    cfg = model.train_config
    out = {}
    for n in shots:
        users = np.flatnonzero(counts >= n)
        if n == 0 or users.size == 0:
            continue
        rows = draw_shots(pool, users, n, trials, seed=seed)
        settings = cfg.fewshot().with_(likelihood=model.likelihood, seed=seed + n)
        adam = _fit_trials(P, rows, settings.with_(solver="adam"), prior=prior)
        newton = _fit_trials(P, rows, settings.with_(solver="newton"), prior=prior)
        out[n] = float((adam - newton).abs().sum(-1).median())
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--K", type=int, nargs="+")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2, 5, 10, 20, 50])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    bench = load_dataset(args.dataset, split={"seed": args.split_seed})
    doc: dict[str, Any] = {"dataset": args.dataset, "trials": args.trials, "checkpoints": []}
    for path in find_checkpoints(args.run, args.K):
        model = PersonalRewardModel.load(path)
        # meta["prior_scale"] below decides the prior (a config's fixed c > 0 would override it)
        model.train_config = model.train_config.with_(fewshot_prior_scale=0.0)
        start = time.perf_counter()
        choice = choose_for_new_users(model, bench.unseen_fewshot, bench.seen_train, seed=0)
        choose_seconds = time.perf_counter() - start
        curves: dict[str, dict[int, float | None]] = {}
        seconds: dict[str, float] = {}
        default = f"default c={choice['scale']:g} lam={choice['mean_weight']:g}"
        for name, prior, scale, lam in (("none", "none", 1.0, 1.0),
                                        ("population c=1", "population", 1.0, 1.0),
                                        (default, "population", choice["scale"],
                                         choice["mean_weight"])):
            model.meta.update(prior_scale=scale, prior_mean_weight=lam)
            for solver in ("newton", "adam"):
                curve = fewshot_curve(model, bench, args.shots, args.trials, seed=args.seed,
                                      prior=prior, solver=solver)
                key = f"{name}, {solver}"
                curves[key] = {pt["shots"]: pt["unseen_prompts"]["mean"] for pt in curve["points"]}
                seconds[key] = sum(pt["fit_seconds"] for pt in curve["points"])
        model.meta.update(prior_scale=choice["scale"], prior_mean_weight=choice["mean_weight"])
        gap = weight_gap(model, bench, args.shots, args.trials, args.seed, model.population_prior())
        users = {pt["shots"]: pt["n_users"] for pt in curve["points"]}
        entry = {"checkpoint": str(path), "K": model.K, "prior_scale": choice,
                 "choose_seconds": choose_seconds, "curves": curves, "fit_seconds": seconds,
                 "users": users, "weights_l1_adam500_vs_newton": gap}
        doc["checkpoints"].append(entry)
        print(table(entry, args.dataset))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def table(entry: dict[str, Any], dataset: str) -> str:
    shots = sorted(next(iter(entry["curves"].values())))
    head = f"| {dataset} K={entry['K']} | " + " | ".join(
        f"{n} ({entry['users'][n]})" for n in shots) + " |"
    lines = [head, "|---" * (len(shots) + 1) + "|"]
    for name, curve in entry["curves"].items():
        cells = ["n/a" if curve[n] is None else f"{curve[n]:.3f}" for n in shots]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gap = entry["weights_l1_adam500_vs_newton"]
    lines.append("| L1(Adam-500 - Newton), default prior | " + " | ".join(
        f"{gap[n]:.1e}" if n in gap else "" for n in shots) + " |")
    scores = ", ".join(f"{c}: {s:.4f}" for c, s in entry["prior_scale"]["scores"].items())
    lines.append(f"\nchosen c = {entry['prior_scale']['scale']:g}, mean weight "
                 f"{entry['prior_scale']['mean_weight']:g} in {entry['choose_seconds']:.1f} s "
                 f"(held-out log-likelihood per pair, mean_weight/c: {scores})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
