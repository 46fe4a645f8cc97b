"""Few-shot results on disk: ``fewshot.json``, ``fewshot.csv`` and ``accuracy_vs_shots.png``.

``fewshot.json`` holds the header of a results file (dataset meta, versions,
backend, device), the experiment's ``config`` and one ``curves`` entry per
checkpoint (see `lore_eval.fewshot.fewshot_curve`). The CSV has one row per
(checkpoint, shot count), for spreadsheets.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from lore_datasets.runtime.outputs import atomic_write
from lore_train.results import load_document, write_results
from lore_train.tables import model_label

CSV_COLUMNS = ("checkpoint", "K", "kept_rank", "alpha", "prior", "strategy", "solver", "shots", "trials",
               "n_users",
               "n_short_users", "fewshot_train_mean", "fewshot_train_std",
               "unseen_prompts_mean", "unseen_prompts_std", "unseen_prompts_users", "fit_seconds")


def write_fewshot(doc: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write fewshot.csv, accuracy_vs_shots.png and fewshot.json into ``out_dir``.

    Each file is written atomically, and fewshot.json (what `load_fewshot`
    and the report read) last: when it is new, so are the other two.
    """
    out_dir = Path(out_dir)
    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for curve in doc["curves"]:
                for p in curve["points"]:
                    writer.writerow([
                        curve.get("checkpoint", ""), curve["K"], curve["kept_rank"], curve["alpha"],
                        curve.get("prior", "none"), curve.get("strategy", "random"),
                        curve.get("solver", "adam"), p["shots"], curve["trials"], p["n_users"], p["short_users"]["count"],
                        p["fewshot_train"]["mean"], p["fewshot_train"]["std"],
                        p["unseen_prompts"]["mean"], p["unseen_prompts"]["std"],
                        p["unseen_prompts"]["n_users"], round(p["fit_seconds"], 4),
                    ])

    paths = [atomic_write(out_dir / "fewshot.csv", write_csv)]
    paths.append(plot_accuracy_vs_shots(doc, out_dir / "accuracy_vs_shots.png"))
    paths.append(write_results(doc, out_dir / "fewshot.json"))
    return paths


def load_fewshot(path: str | Path) -> dict[str, Any]:
    return load_document(path, "fewshot.json", "curves", "few-shot",
                         " (run `lore-eval fewshot` first)")


def curve_label(curve: dict[str, Any]) -> str:
    """The model's label plus how new users were fitted: "K=3, population prior, active"."""
    name = model_label(curve["K"], curve.get("alpha"))
    if curve.get("prior", "none") != "none":
        name += ", population prior"
    if curve.get("strategy", "random") != "random":
        name += f", {curve['strategy']}"
    if curve.get("solver", "adam") == "adam":  # files from before the Newton solver: Adam
        name += ", adam"
    return name


def _shot_ticks(doc: dict[str, Any]) -> tuple[list[int], list[str]]:
    """Shot counts, labelled with the number of users where some were too short.

    Such a point averages fewer (other) users, so a dip there may be the user
    set changing, not the shots; the label keeps that visible.
    """
    users = {p["shots"]: p["n_users"] for c in doc["curves"] for p in c["points"]}
    everyone = max(users.values(), default=0)
    shots = sorted(users)
    return shots, [str(s) if users[s] == everyone else f"{s}\n({users[s]} users)" for s in shots]


def plot_accuracy_vs_shots(doc: dict[str, Any], path: str | Path) -> Path:
    """Unseen-prompt and few-shot-train accuracy against shots, one line per checkpoint.

    The band is ±1 std over trials (the spread of a single trial's macro
    accuracy, the number a user of one draw would see). Shot counts that
    some users could not fill say how many users they average.
    """
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharex=True)
    panels = (("unseen_prompts", "unseen users, unseen prompts"),
              ("fewshot_train", "unseen users, their few-shot pairs"))
    for ax, (key, title) in zip(axes, panels):
        for curve in doc["curves"]:
            pts = [p for p in curve["points"] if p[key]["mean"] is not None]
            if not pts:
                continue
            xs = [p["shots"] for p in pts]
            means = [p[key]["mean"] for p in pts]
            stds = [p[key]["std"] for p in pts]
            line, = ax.plot(xs, means, marker="o", label=curve_label(curve))
            ax.fill_between(xs, [m - s for m, s in zip(means, stds)],
                            [m + s for m, s in zip(means, stds)], color=line.get_color(), alpha=0.15)
        ax.set_xscale("symlog", linthresh=1)  # 0 shots (the prior alone) stays on the axis
        ax.set_xticks(*_shot_ticks(doc))
        ax.minorticks_off()
        ax.set_xlabel("pairs per unseen user (shots)")
        ax.set_ylabel("pairwise accuracy (macro over users)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    source = doc.get("dataset", {}).get("source", "")
    trials = doc.get("config", {}).get("trials")
    fig.suptitle(f"{source} few-shot accuracy ({trials} trials, band ±1 std over trials)".strip())
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=150, format="png"))
    finally:
        plt.close(fig)
