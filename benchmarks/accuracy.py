"""Reproduce docs/accuracy.md: K = 1, reference-default LoRe and the selected config.

For each data set (planted synthetic users, LLMFAO, UKPConvArg1) and split
seed 0, 1, 2 it fits

- K = 1 with the reference defaults (1000 Adam steps at lr 0.5),
- LoRe K = 3 with the reference defaults (alpha = 0, no early stopping),
- the configuration `select_model` picks on a validation split of the seen
  users' training pairs (never test pairs) from a small grid: K in
  {1, 2, 3, 4}, alpha in {0, 1, 10} toward the population head,
  variants {reference optimizer, v_l2 = 0.01, lr 5 / lr_w 0.05 / zero
  logits}, all early-stopped (joint and few-shot), then refits it
  on the full seen_train (UKPConvArg1, ten times larger, gets the small grid
  K in {1, 2, 3}, alpha in {0, 1}, no v_l2 variant),

and scores the four settings. Each (data set, seed) is written to
``benchmarks/results/accuracy/<dataset>-seed<s>.json`` as it finishes, the
summary (mean ± std over seeds) to ``benchmarks/results/accuracy.md``.

    .venv/bin/python benchmarks/accuracy.py                 # everything (~20 min, 1 thread)
    .venv/bin/python benchmarks/accuracy.py --datasets llmfao --seeds 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lore_datasets import Benchmark, SplitConfig, load_dataset, synthetic_benchmark
from lore_train import (
    SETTINGS,
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
ALPHAS = (0.0, 1.0, 10.0)
# the reference optimizer; with a basis norm control; the faster-converging
# optimizer settings the README describes for planted data
VARIANTS = ({}, {"v_l2": 0.01}, {"lr": 5.0, "lr_w": 0.05, "w_init": "zeros"})
# UKPConvArg1 is ten times larger: on a shared 2-core machine it gets this grid
SMALL = ((1, 2, 3), (0.0, 1.0), (VARIANTS[0], VARIANTS[2]))
# The per-seed files in results/accuracy/ were written before two settings took
# their split's name; `upgrade` reads them with the current names.
OLD_NAMES = {"seen_unseen_prompts": "seen_test", "unseen_unseen_prompts": "unseen_test"}
LABELS = {"bt": "K = 1 (reference defaults)", "lore_ref": "LoRe K = 3 (reference defaults)",
          "selected": "selected (validation only)"}


def load(name: str, seed: int) -> tuple[Benchmark, float | None]:
    """The benchmark, and for planted users the oracle's macro accuracy on unseen_test."""
    if name != "synthetic":
        return load_dataset(name, split={"seed": seed}), None
    bench, oracle = synthetic_benchmark(SplitConfig(seed=seed))  # load_dataset's data
    test = bench.unseen_test
    return bench, summarize(per_user_accuracy(oracle.margins(test), test))["mean"]


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
    bench, oracle = load(name, seed)
    ref = TrainConfig(seed=seed, fewshot_prior="none")  # as measured: maximum-likelihood few-shot
    doc: dict[str, Any] = {"dataset": name, "seed": seed, "oracle_unseen_test": oracle,
                           "split": bench.meta["split"]["split_by"], "rows": {}}
    doc["rows"]["bt"] = fit_eval(bench, ref.with_(K=1))
    doc["rows"]["lore_ref"] = fit_eval(bench, ref.with_(K=3))
    base = ref.with_(early_stopping=True, alpha_schedule="constant")
    start = time.perf_counter()
    grid = SMALL if small else (RANKS, ALPHAS, VARIANTS)
    selection = select_model(bench, *grid[:2], base, variants=grid[2])
    c = selection.chosen
    doc["selection"] = {"K": c.K, "alpha": c.alpha, "variant": c.variant,
                        "validation": c.validation["mean"],
                        "validation_split": selection.validation_split,
                        "seconds": time.perf_counter() - start,
                        "candidates": [{"K": x.K, "alpha": x.alpha, "variant": x.variant,
                                        "best_step": x.best_step, "skipped": x.skipped,
                                        "validation": x.validation and x.validation["mean"]}
                                       for x in selection.candidates]}
    doc["rows"]["selected"] = fit_eval(bench, base.with_(K=c.K, alpha=c.alpha, **c.variant))
    return doc


def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """A per-seed file with the current setting names (older files used `OLD_NAMES`)."""
    for row in doc["rows"].values():
        row["scores"] = {OLD_NAMES.get(k, k): v for k, v in row["scores"].items()}
    if "oracle_unseen_unseen_prompts" in doc:
        doc["oracle_unseen_test"] = doc.pop("oracle_unseen_unseen_prompts")
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
            for setting in SETTINGS:
                v = np.array([d["rows"][key]["scores"][setting] for d in runs])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        gain = {s: np.array([d["rows"]["selected"]["scores"][s] - d["rows"]["bt"]["scores"][s]
                             for d in runs]) for s in ("seen_test", "unseen_test")}
        out.append("| selected − K = 1 | | {:+.1f} ± {:.1f} pt | | {:+.1f} ± {:.1f} pt |".format(
            100 * gain["seen_test"].mean(), 100 * gain["seen_test"].std(),
            100 * gain["unseen_test"].mean(), 100 * gain["unseen_test"].std()))
        if runs[0]["oracle_unseen_test"] is not None:
            o = np.array([d["oracle_unseen_test"] for d in runs])
            out.append(f"| oracle (planted V, true weights) | | | | {o.mean():.3f} ± {o.std():.3f} |")
        out += ["", "Choices: " + "; ".join(
            f"seed {d['seed']}: K={d['selection']['K']}, alpha={d['selection']['alpha']:g}"
            + "".join(f", {k}={v}" for k, v in d["selection"]["variant"].items())
            + f" (best step {d['rows']['selected'].get('best_step')}, "
            f"val {d['selection']['validation']:.3f})" for d in runs), ""]
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
    p.add_argument("--small-grid", nargs="*", default=["ukpconvarg1"],
                   help="data sets that get the small grid (K 1-3, alpha 0/1, no v_l2 variant)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folder = OUT / "accuracy"
    folder.mkdir(parents=True, exist_ok=True)
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
    docs = [upgrade(json.loads(f.read_text())) for f in sorted(folder.glob("*.json"))]
    order = {n: i for i, n in enumerate(["synthetic", "llmfao", "ukpconvarg1"])}
    docs.sort(key=lambda d: (order.get(d["dataset"], 9), d["seed"]))
    text = summary(docs) + "\n" + factors(docs) + "\n"
    (OUT / "accuracy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
