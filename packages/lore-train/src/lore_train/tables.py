"""Results as text for the terminal, and the one way models are labelled.

`model_label` names a model everywhere people read one (tables, reports,
plots): "ref" for K = 0 (the reference reward head), "BT" for K = 1 (one
shared Bradley-Terry direction), "K=3" for LoRe, with ", alpha=..." when the
cell was regularized.
"""

from __future__ import annotations

from typing import Any

from lore_datasets import SPLIT_LABELS, SPLITS


def model_label(K: int, alpha: float | None = None) -> str:
    """ "ref", "BT" or "K=<K>", plus ", alpha=<alpha>" for a non-zero alpha."""
    name = {0: "ref", 1: "BT"}.get(K, f"K={K}")
    return name if not alpha else f"{name}, alpha={alpha:g}"


# short column heads of the four settings, in SPLITS order
HEADERS = ("model", "alpha", "kept", "seen/train", "seen/unseen prompts", "unseen/few-shot",
           "unseen/unseen prompts", "train s")


def cell(setting: dict[str, Any]) -> str:
    """mean ± std across users (number of users)."""
    if setting["mean"] is None:
        return "n/a (no users)"
    return f"{setting['mean']:.3f} ± {setting['std']:.3f} ({setting['n_users']})"


def rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for run in results["runs"]:
        name = model_label(run["K"])
        if run.get("skipped"):
            out.append([name, f"{run['alpha']:g}", "-", f"skipped: {run['skipped']}", "", "", "", ""])
            continue
        out.append([name, f"{run['alpha']:g}", str(run["kept_rank"]),
                    *(cell(run[key]) for key in SPLITS), f"{run['train_seconds']:.1f}"])
    return out


def format_table(results: dict[str, Any]) -> str:
    """A fixed-width table: mean ± std across users (number of users)."""
    body = rows(results)
    # skipped rows span the setting columns, so only their first three cells count
    widths = [max([len(h)] + [len(r[i]) for r in body if i < 3 or not r[3].startswith("skipped")])
              for i, h in enumerate(HEADERS)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    text = [line(HEADERS), line(["-" * w for w in widths])]
    for r in body:
        text.append(line(r[:3]) + "  " + r[3] if r[3].startswith("skipped") else line(r))
    return "\n".join(text)


def format_selection(selection: dict[str, Any], *, markdown: bool = False) -> str:
    """The candidates' validation accuracy, the choice and its test numbers (or why
    nothing could be chosen: a ``{"skipped": why}`` selection)."""
    if "skipped" in selection:
        return f"no selection: {selection['skipped']}"
    chosen = selection["chosen"]
    split = selection.get("validation_split") or {}
    by = f"by {split['split_by']}, {split.get('reason', '')}" if split else "per user"
    lines = [
        f"selected K={chosen['K']}, alpha={chosen['alpha']:g}{variant_text(chosen.get('variant'))} "
        f"by validation accuracy {cell(chosen['validation'])} on "
        f"{selection['validation_pairs']} held-out training pairs of seen users "
        f"({selection['val_fraction']:g} held out {by}; seed {selection['seed']}"
        + (f"; mean over {selection['folds']} splits, seeds {selection['seed']} on"
           if selection.get("folds", 1) > 1 else "") + "); "
        f"rule: {selection['rule']}.",
        "",
    ]
    header = ("K", "alpha", "variant", "kept", "best step", "validation", "train s")
    body = [[str(c["K"]), f"{c['alpha']:g}", variant_text(c.get("variant")).strip(", ") or "-",
             "-" if c["kept_rank"] is None else str(c["kept_rank"]),
             "-" if c.get("best_step") is None else str(c["best_step"]),
             f"skipped: {c['skipped']}" if c["skipped"] else cell(c["validation"]),
             f"{c['train_seconds']:.1f}"] for c in selection["candidates"]]
    if markdown:
        lines += [md_row(header), md_row(["---:", "---", "---", "---:", "---:", "---", "---:"])]
        lines += [md_row(r) for r in body]
    else:
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                  for r in [list(header), ["-" * w for w in widths], *body]]
    if "test" in selection:
        lines += ["", f"test numbers of the choice (refit: {selection.get('refit', 'n/a')}):"]
        lines += [f"{'- ' if markdown else '  '}{SPLIT_LABELS[k]}: {cell(v)}"
                  for k, v in selection["test"].items()]
    return "\n".join(lines)


def variant_text(variant: dict[str, Any] | None) -> str:
    """A selection variant (TrainConfig changes) as ", v_l2=0.01, ..."; "" for none."""
    return "".join(f", {k}={v:g}" if isinstance(v, float) else f", {k}={v}"
                   for k, v in (variant or {}).items())


def md_row(cells) -> str:
    """One markdown table row (pipes in cells escaped)."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
