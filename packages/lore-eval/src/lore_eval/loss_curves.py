"""Train/validation loss curves of early-stopped fits, one panel per K.

Where the validation curve turns up while the training curve keeps falling,
the extra rank is memorising; the marked best step is where the fit stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt


def plot_loss_curves(results: dict[str, Any], path: str | Path) -> Path | None:
    """Plot every run's ``early_stopping`` curves (one line pair per alpha); None when
    no run was early-stopped (nothing to draw)."""
    runs = [r for r in results["runs"] if r.get("early_stopping")]
    if not runs:
        return None
    ranks = sorted({r["K"] for r in runs})
    fig, axes = plt.subplots(1, len(ranks), figsize=(4.5 * len(ranks), 3.8), squeeze=False)
    for ax, k in zip(axes[0], ranks):
        for i, run in enumerate(r for r in runs if r["K"] == k):
            es = run["early_stopping"]
            color = f"C{i}"
            ax.plot(es["train_steps"], es["train_loss"], color=color, alpha=0.6,
                    label=f"train, alpha={run['alpha']:g}")
            ax.plot(es["val_steps"], es["val_loss"], color=color, linestyle="--",
                    label=f"validation, alpha={run['alpha']:g}")
            ax.axvline(es["best_step"], color=color, linestyle=":", alpha=0.8)
        ax.set_title(f"K={k} (dotted: best step)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (mean over users)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
