"""Tables of a results file: for the terminal and for markdown."""

from __future__ import annotations

from typing import Any

from .metrics import SETTING_LABELS, SETTINGS

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
    # skipped rows span the setting columns, so only their first three cells count
    widths = [max([len(h)] + [len(r[i]) for r in body if i < 3 or not r[3].startswith("skipped")])
              for i, h in enumerate(HEADERS)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    text = [line(HEADERS), line(["-" * w for w in widths])]
    for r in body:
        text.append(line(r[:3]) + "  " + r[3] if r[3].startswith("skipped") else line(r))
    return "\n".join(text)


# -- markdown (lore-eval report) ----------------------------------------------

MODEL_NAMES = {0: "ref", 1: "BT"}
MD_HEADERS = ("model", "K", "alpha", "kept", *(SETTING_LABELS[k] for k in SETTINGS), "train s")


def format_markdown(results: dict[str, Any], fewshot: dict[str, Any] | None = None) -> str:
    """results.json (and optionally fewshot.json) as a markdown report.

    One table per alpha; each starts with the ref (K = 0) and BT (K = 1)
    rows so every LoRe rank is read beside both baselines. A baseline the
    run did not fit (or skipped) says so in its row instead of vanishing.
    """
    data = results.get("dataset", {})
    out = [f"# lore results: {data.get('source', 'unknown data')}", "",
           f"backend {results.get('backend', '?')}, device {results.get('device', '?')}, "
           f"created {results.get('created', '?')}.", "",
           "Cells: mean ± std across users (number of users) of per-user pairwise accuracy. "
           "ref = the reference reward head (K = 0), BT = one shared direction (K = 1), "
           "LoRe = K >= 2.", ""]
    runs = results["runs"]
    for alpha in sorted({r["alpha"] for r in runs}) or [0.0]:
        cells = [r for r in runs if r["alpha"] == alpha]
        out += [f"## alpha = {alpha:g}", "", _md_row(MD_HEADERS),
                _md_row(["---"] * 3 + ["---:"] + ["---"] * len(SETTINGS) + ["---:"])]
        for k in (0, 1):
            found = [r for r in cells if r["K"] == k]
            if not found and k == 0:  # the reference head does not depend on alpha
                found = [r for r in runs if r["K"] == 0]
            out.append(_md_run(found[0]) if found else _md_row(
                [MODEL_NAMES[k], str(k), f"{alpha:g}", "", f"not in this run (add {k} to --K)",
                 *[""] * (len(SETTINGS) - 1), ""]))
        out += [_md_run(r) for r in sorted(cells, key=lambda r: r["K"]) if r["K"] >= 2]
        out.append("")
    if "selection" in results:
        out += ["## Model selection (no test pairs)", "", format_selection(results["selection"],
                                                                           markdown=True), ""]
    if fewshot is not None:
        out += _md_fewshot(fewshot)
    return "\n".join(out).rstrip() + "\n"


def format_selection(selection: dict[str, Any], *, markdown: bool = False) -> str:
    """The candidates' validation accuracy, the choice and its test numbers."""
    chosen = selection["chosen"]
    split = selection.get("validation_split") or {}
    by = f"by {split['split_by']}, {split.get('reason', '')}" if split else "per user"
    lines = [
        f"selected K={chosen['K']}, alpha={chosen['alpha']:g}{_variant(chosen.get('variant'))} "
        f"by validation accuracy {_cell(chosen['validation'])} on "
        f"{selection['validation_pairs']} held-out training pairs of seen users "
        f"({selection['val_fraction']:g} held out {by}; seed {selection['seed']}); "
        f"rule: {selection['rule']}.",
        "",
    ]
    header = ("K", "alpha", "variant", "kept", "best step", "validation", "train s")
    body = [[str(c["K"]), f"{c['alpha']:g}", _variant(c.get("variant")).strip(", ") or "-",
             "-" if c["kept_rank"] is None else str(c["kept_rank"]),
             "-" if c.get("best_step") is None else str(c["best_step"]),
             f"skipped: {c['skipped']}" if c["skipped"] else _cell(c["validation"]),
             f"{c['train_seconds']:.1f}"] for c in selection["candidates"]]
    if markdown:
        lines += [_md_row(header), _md_row(["---:", "---", "---", "---:", "---:", "---", "---:"])]
        lines += [_md_row(r) for r in body]
    else:
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                  for r in [list(header), ["-" * w for w in widths], *body]]
    if "test" in selection:
        lines += ["", f"test numbers of the choice (refit: {selection.get('refit', 'n/a')}):"]
        lines += [f"{'- ' if markdown else '  '}{SETTING_LABELS[k]}: {_cell(v)}"
                  for k, v in selection["test"].items()]
    return "\n".join(lines)


def _variant(variant: dict[str, Any] | None) -> str:
    return "".join(f", {k}={v:g}" if isinstance(v, float) else f", {k}={v}"
                   for k, v in (variant or {}).items())


def _md_fewshot(doc: dict[str, Any]) -> list[str]:
    trials = doc.get("config", {}).get("trials")
    out = ["## Few-shot curves (unseen users)", "",
           f"Cells: mean ± std over {trials} trials of the macro accuracy over users. Users with "
           "fewer pool pairs than the shot count are left out of that point and counted under "
           "'short', so a point with fewer users averages another set of users: compare models "
           "at the same number of shots.", ""]
    for curve in doc["curves"]:
        k = curve["K"]
        name = MODEL_NAMES.get(k, "LoRe")
        alpha = "-" if curve["alpha"] is None else f"{curve['alpha']:g}"
        out += [f"### {name} K={k}, alpha={alpha} ({curve.get('checkpoint', '')})", "",
                _md_row(("shots", "users", "short", "few-shot pairs", "unseen prompts (users)")),
                _md_row(("---:", "---:", "---:", "---", "---"))]
        for p in curve["points"]:
            out.append(_md_row((str(p["shots"]), str(p["n_users"]), str(p["short_users"]["count"]),
                                _trial_cell(p["fewshot_train"]),
                                f"{_trial_cell(p['unseen_prompts'])} "
                                f"({p['unseen_prompts']['n_users']})")))
        out.append("")
    return out


def _md_run(run: dict[str, Any]) -> str:
    name = MODEL_NAMES.get(run["K"], "LoRe")
    if run.get("skipped"):
        return _md_row([name, str(run["K"]), f"{run['alpha']:g}", "-", f"skipped: {run['skipped']}",
                        *[""] * (len(SETTINGS) - 1), ""])
    return _md_row([name, str(run["K"]), f"{run['alpha']:g}", str(run["kept_rank"]),
                    *(_cell(run[key]) for key in SETTINGS), f"{run['train_seconds']:.1f}"])


def _trial_cell(summary: dict[str, Any]) -> str:
    return "n/a" if summary["mean"] is None else f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
