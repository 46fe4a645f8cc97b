"""Instant adaptation: Newton few-shot fits and delta-method stds against the Adam/draws path.

    python benchmarks/bench_adapt.py [--json out.json] [--quick]

One run, 1 thread, every old path measured in the same run (ratios are what
to read on a busy machine). Times are medians over --repeat calls.

1. ``adapt``: one new user from 20 chosen-minus-rejected rows (d = 384) at
   K = 3 and K = 25: the Newton MAP (default) vs 500 Adam steps.
2. ``score(..., return_std=True)`` of 1000 responses: the delta method
   (default) vs 512 posterior draws.
3. The few-shot evaluation of 10k users x 20 pairs at K = 8 (rows already
   projected, as `lore-eval fewshot` fits them): one batched Newton solve vs
   500 Adam steps over all users.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lore_datasets import PreferencePairs
from lore_train import FewShotSettings, PersonalRewardModel, TrainConfig, fit_few_shot

TARGETS_MS = {"adapt": 5.0, "score_std": 2.0, "fewshot_eval": 1000.0}


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``fn`` in ms (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def make_model(K: int, d: int, users: int = 200, seed: int = 0) -> PersonalRewardModel:
    """A model with ``users`` seen users (a population prior to fit) on a random basis."""
    gen = torch.Generator().manual_seed(seed)
    V = 30.0 * torch.randn(d, K, generator=gen) / d**0.5 * 4
    W = 1.5 * torch.randn(users, K, generator=gen)
    return PersonalRewardModel(V, W, [f"seen{i}" for i in range(users)], tau=0.01,
                               train_config=TrainConfig(K=K))


def bench_adapt(K: int, d: int, pairs: int, repeat: int) -> dict[str, Any]:
    model = make_model(K, d)
    diffs = torch.randn(pairs, d, generator=torch.Generator().manual_seed(1))
    model.adapt("new", diffs)  # the population prior is fitted (and cached) here
    newton = timed(lambda: model.adapt("new", diffs, replace=True), repeat)
    adam = timed(lambda: model.adapt("new", diffs, replace=True, solver="adam"), max(1, repeat // 10))
    model.adapt("new", diffs, replace=True, solver="adam")
    s_adam = model.weights().detach()[-1].clone()
    model.adapt("new", diffs, replace=True)
    return {"case": f"adapt K={K}", "K": K, "d": d, "pairs": pairs, "newton_ms": newton,
            "adam_ms": adam, "speedup": adam / newton, "target_ms": TARGETS_MS["adapt"],
            "weights_l1_newton_vs_adam500": float((model.weights().detach()[-1] - s_adam).abs().sum())}


def bench_score(K: int, d: int, responses: int, repeat: int) -> dict[str, Any]:
    model = make_model(K, d)
    model.adapt("new", torch.randn(20, d, generator=torch.Generator().manual_seed(1)))
    phi = torch.randn(responses, d, generator=torch.Generator().manual_seed(2))
    delta = timed(lambda: model.score(phi, "new", return_std=True), repeat)
    draws = timed(lambda: model.score(phi, "new", return_std=True, method="draws"),
                  max(1, repeat // 5))
    _, std_delta = model.score(phi, "new", return_std=True)
    _, std_draws = model.score(phi, "new", return_std=True, method="draws")
    ratio = (std_delta / std_draws.clamp(min=1e-12)).median()
    return {"case": f"score+std {responses} responses K={K}", "K": K, "responses": responses,
            "delta_ms": delta, "draws_ms": draws, "speedup": draws / delta,
            "target_ms": TARGETS_MS["score_std"], "median_std_ratio_delta_over_draws": float(ratio)}


def bench_fewshot(K: int, users: int, pairs: int, repeat: int, adam_steps: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(3)
    P = 100.0 * torch.randn(users * pairs, K, generator=gen)
    data = PreferencePairs(P, torch.arange(users).repeat_interleave(pairs),
                           [str(i) for i in range(users)])
    S = torch.softmax(1.5 * torch.randn(200, K, generator=gen), 1)
    from lore_train.prior import fit_dirichlet  # the population prior of 200 seen users

    alpha = fit_dirichlet(S)
    eye = torch.eye(K)
    newton_settings = FewShotSettings(solver="newton")
    newton = timed(lambda: fit_few_shot(eye, data, newton_settings, prior=alpha), repeat)
    start = time.perf_counter()
    W_adam = fit_few_shot(eye, data, FewShotSettings(solver="adam", steps=adam_steps), prior=alpha)
    adam = 1e3 * (time.perf_counter() - start)
    W = fit_few_shot(eye, data, newton_settings, prior=alpha)
    gap = (torch.softmax(W, 1) - torch.softmax(W_adam, 1)).abs().sum(1)
    return {"case": f"few-shot eval {users} users x {pairs} pairs K={K}", "K": K, "users": users,
            "pairs": pairs, "newton_ms": newton, "adam_ms": adam, "adam_steps": adam_steps,
            "speedup": adam / newton, "target_ms": TARGETS_MS["fewshot_eval"],
            "weights_l1_newton_vs_adam_median": float(gap.median())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--users", type=int, default=10_000, help="few-shot evaluation users")
    p.add_argument("--adam-steps", type=int, default=500)
    p.add_argument("--quick", action="store_true", help="small sizes (the CI run)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    users, adam_steps = (200, 20) if args.quick else (args.users, args.adam_steps)
    rows = [bench_adapt(3, args.d, 20, args.repeat), bench_adapt(25, args.d, 20, args.repeat),
            bench_score(3, args.d, 1000, args.repeat),
            bench_fewshot(8, users, 20, max(1, args.repeat // 10), adam_steps)]
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "results": rows}
    for row in rows:
        new = row.get("newton_ms", row.get("delta_ms"))
        old = row.get("adam_ms", row.get("draws_ms"))
        verdict = "ok" if new <= row["target_ms"] else "OVER TARGET"
        print(f"{row['case']:<44} new {new:9.2f} ms  old {old:10.2f} ms  x{row['speedup']:7.1f}  "
              f"(target <= {row['target_ms']:g} ms: {verdict})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
