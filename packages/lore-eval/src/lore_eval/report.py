"""A results file (and fewshot.json) as a markdown report (`lore-eval report`).

The terminal tables and the model labels are lore_train's (`lore_train.tables`).
"""

from __future__ import annotations

from typing import Any

from lore_datasets import SPLIT_LABELS, SPLITS
from lore_train.tables import cell as _cell
from lore_train.tables import format_selection, model_label
from lore_train.tables import md_row as _md_row

# -- markdown (lore-eval report) ----------------------------------------------

MD_HEADERS = ("model", "K", "alpha", "kept", *(SPLIT_LABELS[k] for k in SPLITS), "train s")


def format_markdown(results: dict[str, Any], fewshot: dict[str, Any] | None = None) -> str:
    """results.json (and optionally fewshot.json) as a markdown report.

    One table per alpha; each starts with the ref (K = 0) and BT (K = 1)
    rows so every LoRe K is read beside both baselines. A baseline the
    run did not fit (or skipped) says so in its row instead of vanishing.
    """
    data = results.get("dataset", {})
    out = [f"# lore results: {data.get('source', 'unknown data')}", "",
           f"backend {results.get('backend', '?')}, device {results.get('device', '?')}, "
           f"created {results.get('created', '?')}.", "",
           "Cells: mean ± std across users (number of users) of per-user pairwise accuracy. "
           "ref = the reference reward head (K = 0), BT = one shared direction (K = 1), "
           "K=k = LoRe with k basis columns.", ""]
    runs = results["runs"]
    for alpha in sorted({r["alpha"] for r in runs}) or [0.0]:
        cells = [r for r in runs if r["alpha"] == alpha]
        out += [f"## alpha = {alpha:g}", "", _md_row(MD_HEADERS),
                _md_row(["---"] * 3 + ["---:"] + ["---"] * len(SPLITS) + ["---:"])]
        for k in (0, 1):
            found = [r for r in cells if r["K"] == k]
            if not found and k == 0:  # the reference head does not depend on alpha
                found = [r for r in runs if r["K"] == 0]
            out.append(_md_run(found[0]) if found else _md_row(
                [model_label(k), str(k), f"{alpha:g}", "", f"not in this run (add {k} to --K)",
                 *[""] * (len(SPLITS) - 1), ""]))
        out += [_md_run(r) for r in sorted(cells, key=lambda r: r["K"]) if r["K"] >= 2]
        out.append("")
    out += _md_calibration(runs)
    if "selection" in results:
        out += ["## Model selection (no test pairs)", "", format_selection(results["selection"],
                                                                           markdown=True), ""]
    if fewshot is not None:
        out += _md_fewshot(fewshot)
    return "\n".join(out).rstrip() + "\n"


def _md_fewshot(doc: dict[str, Any]) -> list[str]:
    trials = doc.get("config", {}).get("trials")
    out = ["## Few-shot curves (unseen users)", "",
           f"Cells: mean ± std over {trials} trials of the macro accuracy over users. Users with "
           "fewer pool pairs than the shot count are left out of that point and counted under "
           "'short', so a point with fewer users averages another set of users: compare models "
           "at the same number of shots.", ""]
    for curve in doc["curves"]:
        alpha = "-" if curve["alpha"] is None else f"{curve['alpha']:g}"
        how = f"prior {curve.get('prior', 'none')}, {curve.get('strategy', 'random')} pairs"
        out += [f"### {model_label(curve['K'])}, alpha={alpha}, {how} ({curve.get('checkpoint', '')})", "",
                _md_row(("shots", "users", "short", "few-shot pairs", "unseen prompts (users)")),
                _md_row(("---:", "---:", "---:", "---", "---"))]
        for p in curve["points"]:
            out.append(_md_row((str(p["shots"]), str(p["n_users"]), str(p["short_users"]["count"]),
                                _trial_cell(p["fewshot_train"]),
                                f"{_trial_cell(p['unseen_prompts'])} "
                                f"({p['unseen_prompts']['n_users']})")))
        out.append("")
    return out


def _md_calibration(runs: list[dict[str, Any]]) -> list[str]:
    """Log-loss / Brier / ECE per setting at the fitted temperature (runs that have them)."""
    cells = [r for r in runs if r.get("calibration")]
    if not cells:
        return []
    out = ["## Calibration of P(chosen preferred)", "",
           "Cells: log-loss / Brier / ECE over pairs, at the temperature T fitted on the "
           "validation split of seen_train (a model refitted on the rest).", "",
           _md_row(("K", "alpha", "T", *(SPLIT_LABELS[k] for k in SPLITS))),
           _md_row(("---:", "---", "---:", *["---"] * len(SPLITS)))]
    for run in sorted(cells, key=lambda r: (r["alpha"], r["K"])):
        cal = run["calibration"]
        out.append(_md_row((str(run["K"]), f"{run['alpha']:g}", f"{cal['temperature']:.3g}",
                            *(_calibration_cell(cal[key]["calibrated"]) for key in SPLITS))))
    return [*out, ""]


def _calibration_cell(c: dict[str, Any]) -> str:
    if c["log_loss"] is None:
        return "n/a"
    return f"{c['log_loss']:.3f} / {c['brier']:.3f} / {c['ece']:.3f}"


def _md_run(run: dict[str, Any]) -> str:
    name = model_label(run["K"])
    if run.get("skipped"):
        return _md_row([name, str(run["K"]), f"{run['alpha']:g}", "-", f"skipped: {run['skipped']}",
                        *[""] * (len(SPLITS) - 1), ""])
    return _md_row([name, str(run["K"]), f"{run['alpha']:g}", str(run["kept_rank"]),
                    *(_cell(run[key]) for key in SPLITS), f"{run['train_seconds']:.1f}"])


def _trial_cell(summary: dict[str, Any]) -> str:
    return "n/a" if summary["mean"] is None else f"{summary['mean']:.3f} ± {summary['std']:.3f}"
