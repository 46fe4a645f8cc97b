"""The plots of a sweep: accuracy_vs_rank.png and, for early-stopped fits, loss_curves.png.

matplotlib is optional for lore-train (``pip install lore-train[plots]``, and
lore-eval depends on it): `lore-train` draws these plots when matplotlib is
importable and otherwise says so; `lore-eval report` redraws them from
results.json. The other plots (few-shot curves) belong to lore-eval.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lore_datasets import SPLIT_LABELS
from lore_datasets.runtime.outputs import atomic_write

from .tables import model_label


def can_plot() -> bool:
    """Whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_rank(results: dict[str, Any], path: str | Path) -> Path:
    """Mean accuracy per setting against K (0 is labelled "ref"), one panel per alpha.

    The band is ±1 standard error across users (std / sqrt(n_users)).
    """
    plt = _pyplot()

    runs = [r for r in results["runs"] if not r.get("skipped")]
    alphas = sorted({r["alpha"] for r in runs}) or [0.0]
    fig, axes = plt.subplots(1, len(alphas), figsize=(7 * len(alphas), 4.5), squeeze=False)
    for ax, alpha in zip(axes[0], alphas):
        cells = sorted((r for r in runs if r["alpha"] == alpha), key=lambda r: r["K"])
        Ks = [r["K"] for r in cells]
        for key, label in SPLIT_LABELS.items():
            points = [(r["K"], r[key]) for r in cells if r[key]["mean"] is not None]
            if not points:
                continue
            xs = [k for k, _ in points]
            means = [s["mean"] for _, s in points]
            ses = [s["std"] / max(s["n_users"], 1) ** 0.5 for _, s in points]
            ax.plot(xs, means, marker="o", label=label)
            ax.fill_between(xs, [m - e for m, e in zip(means, ses)],
                            [m + e for m, e in zip(means, ses)], alpha=0.15)
        ax.set_xticks(Ks, [model_label(k) for k in Ks])
        ax.set_xlabel("rank K")
        ax.set_ylabel("pairwise accuracy (macro over users)")
        title = results.get("dataset", {}).get("source", "")
        ax.set_title(f"{title} accuracy vs rank (alpha={alpha:g})".strip())
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # every cell skipped: nothing to label
            ax.legend(fontsize="small")
    return _save(plt, fig, path, dpi=150)


def plot_loss_curves(results: dict[str, Any], path: str | Path) -> Path | None:
    """Training and validation loss of every early-stopped run, one panel per K (one
    line pair per alpha, the best step dotted); None when no run was early-stopped.

    Where the validation curve turns up while the training curve keeps falling,
    the extra columns are memorising; the dotted step is where the fit stopped.
    """
    runs = [r for r in results["runs"] if r.get("early_stopping")]
    if not runs:
        return None
    plt = _pyplot()
    Ks = sorted({r["K"] for r in runs})
    fig, axes = plt.subplots(1, len(Ks), figsize=(4.5 * len(Ks), 3.8), squeeze=False)
    for ax, K in zip(axes[0], Ks):
        for i, run in enumerate(r for r in runs if r["K"] == K):
            es = run["early_stopping"]
            color = f"C{i}"
            ax.plot(es["train_steps"], es["train_loss"], color=color, alpha=0.6,
                    label=f"train, alpha={run['alpha']:g}")
            ax.plot(es["val_steps"], es["val_loss"], color=color, linestyle="--",
                    label=f"validation, alpha={run['alpha']:g}")
            ax.axvline(es["best_step"], color=color, linestyle=":", alpha=0.8)
        ax.set_title(f"{model_label(K)} (dotted: best step)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (mean over users)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    return _save(plt, fig, path, dpi=120)


def _save(plt: Any, fig: Any, path: str | Path, *, dpi: int) -> Path:
    """Lay out, write atomically as PNG, and close the figure whatever happens."""
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
