"""Tables of a results file: for the terminal and for markdown."""

from __future__ import annotations

from typing import Any

from .metrics import SETTINGS

HEADERS = ("K", "alpha", "kept", "seen/train", "seen/unseen prompts",
           "unseen/few-shot", "unseen/unseen prompts", "train s")


def _cell(setting: dict[str, Any]) -> str:
    if setting["mean"] is None:
        return "n/a (no users)"
    return f"{setting['mean']:.3f} ± {setting['std']:.3f} ({setting['n_users']})"


def rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for run in results["runs"]:
        k = "ref" if run["K"] == 0 else str(run["K"])
        if run.get("skipped"):
            out.append([k, f"{run['alpha']:g}", "-", f"skipped: {run['skipped']}", "", "", "", ""])
            continue
        out.append([k, f"{run['alpha']:g}", str(run["kept_rank"]),
                    *(_cell(run[key]) for key in SETTINGS), f"{run['train_seconds']:.1f}"])
    return out


def format_table(results: dict[str, Any]) -> str:
    """A fixed-width table: mean ± std across users (number of users)."""
    body = rows(results)
    widths = [max(len(h), *(len(r[i]) for r in body if not r[3].startswith("skipped")))
              if body else len(h) for i, h in enumerate(HEADERS)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    text = [line(HEADERS), line(["-" * w for w in widths])]
    for r in body:
        text.append(line(r[:3]) + "  " + r[3] if r[3].startswith("skipped") else line(r))
    return "\n".join(text)
