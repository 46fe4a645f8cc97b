"""Reproduce docs/accuracy.md: K = 1, reference-default LoRe and the selected config.

For each data set (planted synthetic users, LLMFAO, UKPConvArg1) and split
seed 0, 1, 2 it fits

- K = 1 with the reference defaults (1000 Adam steps at lr 0.5),
- LoRe K = 3 with the reference defaults (alpha = 0, no early stopping,
  maximum-likelihood few-shot fits as in the reference),
- the configuration `select_model` picks on a validation split of the seen
  users' training pairs (never test pairs) from the grid K in {1, 2, 3, 4},
  alpha in {0, 1} toward the population head, variants {reference
  optimizer, lr 5 / lr_w 0.05 / zero logits with label_noise 0, 0.05, 0.1,
  0.2}, all early-stopped (joint and few-shot; a 3000-step budget) with
  lore's default few-shot prior (the population Dirichlet), each scored by
  its mean validation accuracy over three seeded validation splits, then
  refitted on the full seen_train,
- the same choice with label_noise set to 0 (what the likelihood buys on
  test pairs, given the rest of the choice),

and scores the four settings. For planted users it also scores two
ceilings on unseen users / unseen prompts: the oracle (planted basis, each
user's true weights) and the Bayes-optimal few-shot prediction (planted
basis, true Dirichlet prior and flip rate, each user's few-shot pairs), the
best any method can do from those pairs even knowing the basis. Each (data set, seed) is written to
``benchmarks/results/accuracy/<dataset>-seed<s>.json`` as it finishes, the
summary (mean ± std over seeds) to ``benchmarks/results/accuracy.md``.

    .venv/bin/python benchmarks/accuracy.py --planted-scaling   # everything (~20 min, 1 thread)
    .venv/bin/python benchmarks/accuracy.py --datasets llmfao --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lore_datasets import SPLITS, Benchmark, SplitConfig, load_dataset, synthetic_benchmark
from lore_datasets.synthetic import Oracle, SyntheticSpec
from lore_eval import annotator_consistency
from lore_train import (
    TrainConfig,
    evaluate,
    fit,
    per_user_accuracy,
    personalize,
    select_model,
    summarize,
)

OUT = Path(__file__).parent / "results"
RANKS = (1, 2, 3, 4)
ALPHAS = (0.0, 1.0)
# the reference optimizer; the faster-converging optimizer settings the README
# describes for planted data, with the label-noise likelihood at three rates
FAST = {"lr": 5.0, "lr_w": 0.05, "w_init": "zeros"}
VARIANTS = ({}, FAST, *({**FAST, "label_noise": e} for e in (0.05, 0.1, 0.2)))
FOLDS = 3  # validation splits each candidate is scored on (repeated holdout, mean)
# a grid for data sets too large for the machine's time (none by default)
SMALL = ((1, 2, 3), (0.0,), VARIANTS)
LABELS = {"bt": "K = 1 (reference defaults)", "lore_ref": "LoRe K = 3 (reference defaults)",
          "selected": "selected (validation only)",
          "selected_no_noise": "selected, label_noise set to 0"}
BAYES_DRAWS = 200_000  # prior draws of the Bayes-optimal few-shot prediction


def load(name: str, seed: int) -> tuple[Benchmark, dict[str, float] | None]:
    """The benchmark, and for planted users the two ceilings on unseen_test
    (oracle and Bayes-optimal few-shot; see the module doc)."""
    if name != "synthetic":
        return load_dataset(name, split={"seed": seed}), None
    bench, oracle = synthetic_benchmark(SplitConfig(seed=seed))  # load_dataset's data
    test = bench.unseen_test
    return bench, {"oracle": summarize(per_user_accuracy(oracle.margins(test), test))["mean"],
                   "bayes_fewshot": bayes_fewshot_accuracy(bench, oracle)}


def bayes_fewshot_accuracy(bench: Benchmark, oracle: Oracle) -> float:
    """Macro accuracy on unseen_test of the Bayes-optimal prediction from each unseen
    user's few-shot pairs, knowing the planted basis, Dirichlet prior and flip rate.

    The posterior over a user's weights is the prior's draws reweighted by the
    likelihood of their few-shot labels (each label agrees with the sign of
    the true margin with probability 1 - flip rate); a test pair is predicted
    by the posterior majority of the draws' signs.
    """
    gen = SyntheticSpec()  # the generator behind `synthetic_benchmark`, its defaults
    draws = torch.from_numpy(np.random.default_rng(0).dirichlet(
        np.full(oracle.V.shape[1], gen.dirichlet_alpha), size=BAYES_DRAWS)).float()
    flip = gen.label_noise
    fewshot, test = bench.unseen_fewshot, bench.unseen_test
    predictions = torch.empty(test.num_pairs)
    for u in range(fewshot.num_users):
        log_w = torch.zeros(BAYES_DRAWS)
        for chunk in (fewshot.features[fewshot.user == u] @ oracle.V).split(64):
            agree = (chunk @ draws.T > 0).float()
            log_w += (agree * math.log(1 - flip) + (1 - agree) * math.log(flip)).sum(0)
        weight = torch.softmax(log_w, 0)
        rows = torch.nonzero(test.user == u).squeeze(1)
        for part in rows.split(64):
            vote = ((test.features[part] @ oracle.V) @ draws.T > 0).float() @ weight
            predictions[part] = vote - 0.5  # > 0: the first response is predicted preferred
    return summarize(per_user_accuracy(predictions, test))["mean"]


SCALING_PAIRS = (80, 320, 1280)  # pairs per planted user (80 is the bundled generator's)


def planted_scaling(seeds: list[int]) -> dict[str, Any]:
    """The gap to the oracle as planted users get more pairs each.

    One fixed configuration (the planted rank K = 3, the generator's flip rate
    as label_noise, the fast optimizer, early stopping with a 3000-step
    budget) on 60 users with 80, 320 and 1280 pairs each: if the gap to the
    oracle closes with data, it is estimation error of the sample, not a
    limit of the method.
    """
    config = TrainConfig(K=3, steps=3000, early_stopping=True, label_noise=0.05, **FAST)
    rows = []
    for pairs_per_user in SCALING_PAIRS:
        for seed in seeds:
            bench, oracle = synthetic_benchmark(SplitConfig(seed=seed), pairs_per_user=pairs_per_user)
            test = bench.unseen_test
            row = fit_eval(bench, config.with_(seed=seed))
            row.update(pairs_per_user=pairs_per_user, seed=seed,
                       oracle=summarize(per_user_accuracy(oracle.margins(test), test))["mean"],
                       bayes_fewshot=bayes_fewshot_accuracy(bench, oracle))
            rows.append(row)
            print(f"planted, {pairs_per_user} pairs/user, seed {seed}: unseen_test "
                  f"{row['scores']['unseen_test']:.3f}, oracle {row['oracle']:.3f}", flush=True)
    return {"config": config.to_dict(), "rows": rows}


def scaling_table(doc: dict[str, Any]) -> str:
    out = ["### Planted users with more pairs each (K = 3, label_noise 0.05, early-stopped; "
           "mean over seeds)", "",
           "| pairs per user | seen/unseen prompts | unseen/unseen prompts | Bayes-optimal few-shot "
           "| oracle | gap to the oracle |", "|---|---|---|---|---|---|"]
    for n in dict.fromkeys(r["pairs_per_user"] for r in doc["rows"]):
        rows = [r for r in doc["rows"] if r["pairs_per_user"] == n]
        unseen = mean_of(rows, lambda r: r["scores"]["unseen_test"])
        oracle = mean_of(rows, lambda r: r["oracle"])
        out.append(f"| {n} | {mean_of(rows, lambda r: r['scores']['seen_test']):.3f} | "
                   f"{unseen:.3f} | {mean_of(rows, lambda r: r['bayes_fewshot']):.3f} | "
                   f"{oracle:.3f} | {100 * (oracle - unseen):.1f} pt |")
    return "\n".join(out)


def mean_of(items: list[dict[str, Any]], value: Any) -> float:
    """The mean of ``value(item)`` over ``items`` (one number per seed, say)."""
    return float(np.mean([value(item) for item in items]))


def scores(model, bench: Benchmark) -> dict[str, float]:
    return {k: v["mean"] for k, v in evaluate(model, bench).items()}


def fit_eval(bench: Benchmark, config: TrainConfig) -> dict[str, Any]:
    start = time.perf_counter()
    model, history = fit(bench.seen_train, config, progress=False)
    model = personalize(model, bench.unseen_fewshot, config)
    out: dict[str, Any] = {"scores": scores(model, bench), "seconds": time.perf_counter() - start}
    if history.early_stopping:
        out["best_step"] = history.early_stopping["best_step"]
    if "fewshot_early_stopping" in model.meta:
        out["fewshot_best_step_median"] = model.meta["fewshot_early_stopping"]["best_step_median"]
    return out


def run_one(name: str, seed: int, small: bool = False) -> dict[str, Any]:
    bench, ceilings = load(name, seed)
    ref = TrainConfig(seed=seed, fewshot_prior="none", fewshot_solver="adam")  # the reference: ML few-shot by Adam
    doc: dict[str, Any] = {"dataset": name, "seed": seed, "ceilings_unseen_test": ceilings,
                           "split": bench.meta["split"]["split_by"], "rows": {}}
    if ceilings is None:  # real users: is there a personal signal that carries to new prompts?
        doc["consistency"] = annotator_consistency(bench.seen_train, bench.seen_test)
    doc["rows"]["bt"] = fit_eval(bench, ref.with_(K=1))
    doc["rows"]["lore_ref"] = fit_eval(bench, ref.with_(K=3))
    # early stopping chooses the length, so the budget only has to be long enough
    base = TrainConfig(seed=seed, steps=3000, early_stopping=True, alpha_schedule="constant")
    start = time.perf_counter()
    grid = SMALL if small else (RANKS, ALPHAS, VARIANTS)
    selection = select_model(bench, *grid[:2], base, variants=grid[2], folds=FOLDS)
    c = selection.chosen
    doc["selection"] = {"K": c.K, "alpha": c.alpha, "variant": c.variant,
                        "validation": c.validation["mean"],
                        "validation_split": selection.validation_split,
                        "folds": selection.folds,
                        "seconds": time.perf_counter() - start,
                        "candidates": [{"K": x.K, "alpha": x.alpha, "variant": x.variant,
                                        "best_step": x.best_step, "skipped": x.skipped,
                                        "validation": x.validation and x.validation["mean"]}
                                       for x in selection.candidates]}
    chosen = base.with_(K=c.K, alpha=c.alpha, **c.variant)
    doc["rows"]["selected"] = fit_eval(bench, chosen)
    doc["rows"]["selected_no_noise"] = (doc["rows"]["selected"] if chosen.label_noise == 0
                                        else fit_eval(bench, chosen.with_(label_noise=0.0)))
    return doc


def summary(docs: list[dict[str, Any]]) -> str:
    out = []
    for name in dict.fromkeys(d["dataset"] for d in docs):
        runs = [d for d in docs if d["dataset"] == name]
        seeds = ", ".join(str(d["seed"]) for d in runs)
        out += [f"### {name} (split by {runs[0]['split']}; seeds {seeds})", "",
                "| model | seen/train | seen/unseen prompts | unseen/few-shot | "
                "unseen/unseen prompts |", "|---|---|---|---|---|"]
        for key, label in LABELS.items():
            cells = []
            for setting in SPLITS:
                v = np.array([d["rows"][key]["scores"][setting] for d in runs])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        gain = {s: np.array([d["rows"]["selected"]["scores"][s] - d["rows"]["bt"]["scores"][s]
                             for d in runs]) for s in ("seen_test", "unseen_test")}
        out.append("| selected − K = 1 | | {:+.1f} ± {:.1f} pt | | {:+.1f} ± {:.1f} pt |".format(
            100 * gain["seen_test"].mean(), 100 * gain["seen_test"].std(),
            100 * gain["unseen_test"].mean(), 100 * gain["unseen_test"].std()))
        if runs[0]["ceilings_unseen_test"] is not None:
            for key, label in (("bayes_fewshot", "Bayes-optimal few-shot (planted V, true prior)"),
                               ("oracle", "oracle (planted V, true weights)")):
                o = np.array([d["ceilings_unseen_test"][key] for d in runs])
                out.append(f"| {label} | | | | {o.mean():.3f} ± {o.std():.3f} |")
        out += ["", "Choices: " + "; ".join(
            f"seed {d['seed']}: K={d['selection']['K']}, alpha={d['selection']['alpha']:g}"
            + "".join(f", {k}={v}" for k, v in d["selection"]["variant"].items())
            + f" (best step {d['rows']['selected'].get('best_step')}, "
            f"val {d['selection']['validation']:.3f})" for d in runs), ""]
    return "\n".join(out)


def consistency(docs: list[dict[str, Any]]) -> str:
    """Co-annotator agreement on seen users' training vs test pairs (mean over seeds)."""
    out = ["### Is there a personal signal? Co-annotator agreement, training vs test pairs "
           "(`lore_eval.annotator_consistency`, mean over seeds)", "",
           "| data set | co-annotator pairs agreeing | flip rate if all noise | users | "
           "per-user agreement sd on test (sampling alone) | corr(train, test) across users |",
           "|---|---|---|---|---|---|"]
    for ds in dict.fromkeys(d["dataset"] for d in docs if "consistency" in d):
        c = [d["consistency"] for d in docs if d["dataset"] == ds]
        if any("correlation" not in x for x in c):
            continue
        out.append(f"| {ds} | {mean_of(c, lambda x: x['pair_agreement']['first']):.3f} | "
                   f"{mean_of(c, lambda x: x['flip_rate_if_noise']):.3f} | "
                   f"{mean_of(c, lambda x: x['users']):.0f} | "
                   f"{mean_of(c, lambda x: x['agreement_second']['std']):.3f} "
                   f"({mean_of(c, lambda x: x['sampling_std_second']):.3f}) | "
                   f"{mean_of(c, lambda x: x['correlation']):+.2f} |")
    return "\n".join(out)


def factors(docs: list[dict[str, Any]]) -> str:
    """Validation accuracy (seen users' held-out training pairs, no test pairs) of the
    best candidate at each level of each factor, mean over seeds: what each knob buys."""
    out = ["### What each knob buys on validation (best candidate at each level, mean over seeds)",
           "", "| data set | factor | level: validation accuracy |", "|---|---|---|"]

    def name(v: dict[str, Any]) -> str:
        return "reference optimizer" if not v else ", ".join(f"{k}={x}" for k, x in v.items())

    for ds in dict.fromkeys(d["dataset"] for d in docs):
        runs = [d for d in docs if d["dataset"] == ds]
        for factor, key in (("K", lambda c: c["K"]), ("alpha", lambda c: c["alpha"]),
                            ("variant", lambda c: name(c["variant"]))):
            levels = list(dict.fromkeys(key(c) for c in runs[0]["selection"]["candidates"]))
            cells = []
            for level in levels:
                best = [max(c["validation"] for c in d["selection"]["candidates"]
                            if key(c) == level and c["validation"] is not None) for d in runs]
                cells.append(f"{level}: {np.mean(best):.3f}")
            out.append(f"| {ds} | {factor} | " + "; ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["synthetic", "llmfao", "ukpconvarg1"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--summarize", action="store_true",
                   help="only rebuild accuracy.md from the per-seed files already written")
    p.add_argument("--small-grid", nargs="*", default=[],
                   help="data sets that get the small grid (K 1-3, alpha 0)")
    p.add_argument("--planted-scaling", action="store_true",
                   help="also (re)measure the planted users' gap to the oracle at 80/320/1280 "
                   "pairs per user")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folder = OUT / "accuracy"
    folder.mkdir(parents=True, exist_ok=True)
    scaling_file = OUT / "accuracy-planted-scaling.json"
    if args.planted_scaling:
        scaling_file.write_text(json.dumps(planted_scaling(args.seeds), indent=1))
    for name in [] if args.summarize else args.datasets:
        for seed in args.seeds:
            start = time.perf_counter()
            doc = run_one(name, seed, small=name in args.small_grid)
            doc["grid"] = "small" if name in args.small_grid else "full"
            doc["seconds"] = time.perf_counter() - start
            (folder / f"{name}-seed{seed}.json").write_text(json.dumps(doc, indent=1))
            print(f"{name} seed {seed}: {doc['seconds']:.0f}s, chose "
                  f"K={doc['selection']['K']} alpha={doc['selection']['alpha']:g} "
                  f"{doc['selection']['variant']}", flush=True)
    docs = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    order = {n: i for i, n in enumerate(["synthetic", "llmfao", "ukpconvarg1"])}
    docs.sort(key=lambda d: (order.get(d["dataset"], 9), d["seed"]))
    text = summary(docs) + "\n" + factors(docs) + "\n\n" + consistency(docs) + "\n"
    if scaling_file.exists():
        text += "\n" + scaling_table(json.loads(scaling_file.read_text())) + "\n"
    (OUT / "accuracy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
