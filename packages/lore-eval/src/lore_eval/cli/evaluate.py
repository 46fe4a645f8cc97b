"""``lore-eval``: experiments and reports on what ``lore-train`` wrote.

    lore-eval fewshot --run runs/llmfao              # few-shot curves of every checkpoint
    lore-eval fewshot --checkpoint runs/x/checkpoints/K3_alpha0 --dataset synthetic
    lore-eval report runs/llmfao                     # report.md + plots from results.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lore_datasets import DATASETS, load_dataset

from ..fewshot import DEFAULT_SHOTS, PRIORS, STRATEGIES, find_checkpoints, run_fewshot
from ..fewshot_files import curve_label, load_fewshot, plot_accuracy_vs_shots, write_fewshot
from ..plots import plot_accuracy_vs_rank
from ..report import format_markdown
from ..results import load_results
from .common import resolve_device, run_cli

# Data options of lore-train that fix the benchmark (and so the unseen users).
DATA_OPTIONS = ("dataset", "data_dir", "embeddings", "keep_ties", "split_by", "min_pairs",
                "unseen_fraction")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lore-eval", description=__doc__.split("\n\n")[0].strip("`: "))
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser(
        "fewshot", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="accuracy of unseen users against the number of pairs they gave (V frozen)",
        description="For each checkpoint, draw --shots pairs per unseen user from the few-shot "
        "pool over --trials seeded draws, fit only their weights, and report mean and std over "
        "trials of few-shot-train and unseen-prompt accuracy. Users with fewer pool pairs than "
        "a shot count are left out of that point and listed in fewshot.json.",
    )
    src = f.add_argument_group("checkpoints")
    src.add_argument("--run", type=Path, help="a lore-train output directory: its checkpoints, and "
                     "its data options as defaults (so the split matches training)")
    src.add_argument("--checkpoint", type=Path, nargs="+", default=[],
                     help="checkpoint directories (model.safetensors + config.json)")
    src.add_argument("--K", type=int, nargs="+", help="with --run: only these ranks")
    data = f.add_argument_group("data (default: the run's, else lore-train's defaults)")
    data.add_argument("--dataset", help=f"{', '.join(DATASETS)} or a directory (default llmfao)")
    data.add_argument("--data-dir", type=Path)
    data.add_argument("--embeddings")
    data.add_argument("--keep-ties", action="store_true", default=None)
    data.add_argument("--split-by", choices=("auto", "prompt", "pair"))
    data.add_argument("--min-pairs", type=int)
    data.add_argument("--unseen-fraction", type=float)
    data.add_argument("--split-seed", type=int, help="seed of the data split (default: the run's "
                      "--seed, else 0)")
    exp = f.add_argument_group("experiment")
    exp.add_argument("--shots", type=int, nargs="+", default=list(DEFAULT_SHOTS))
    exp.add_argument("--trials", type=int, default=20)
    exp.add_argument("--strategy", nargs="+", choices=STRATEGIES, default=["random"],
                     help="how a user's pairs are chosen: random draws, or active (greatest "
                     "expected information gain under the posterior, batch-aware); one curve each")
    exp.add_argument("--prior", nargs="+", choices=PRIORS, default=["population"],
                     help="few-shot fit: none (maximum likelihood) or population (MAP under a "
                     "Dirichlet fitted to the seen users' weights); one curve each")
    exp.add_argument("--seed", type=int, default=0, help="seeds the draws and the initializations")
    exp.add_argument("--steps", type=int, help="few-shot steps (default: the checkpoint's)")
    exp.add_argument("--lr", type=float, help="few-shot learning rate (default: the checkpoint's)")
    exp.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    exp.add_argument("--out", type=Path, help="output directory (default: --run, else runs/fewshot)")

    r = sub.add_parser("report", help="results.json as a markdown table; regenerate the plots",
                       description="Render RUN_DIR/results.json (and fewshot.json when present) "
                       "as markdown to stdout and RUN_DIR/report.md, and redraw the plots.")
    r.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    r.add_argument("--no-plots", action="store_true", help="only the markdown")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"fewshot": _fewshot, "report": _report}[args.command]
    return run_cli("lore-eval", lambda: command(args))


def _fewshot(args: argparse.Namespace) -> int:
    if args.run is None and not args.checkpoint:
        raise ValueError("give --run RUN_DIR or --checkpoint DIR ...")
    if args.K is not None and args.run is None:
        raise ValueError("--K picks checkpoints of --run; with --checkpoint, list the ones you want")
    device = resolve_device(args.device)
    checkpoints = list(args.checkpoint)
    if args.run is not None:
        checkpoints = find_checkpoints(args.run, args.K) + checkpoints
    options = _data_options(args)
    split = {"seed": options.pop("split_seed"), "split_by": options.pop("split_by")}
    for key, name in (("min_pairs", "min_pairs_per_user"), ("unseen_fraction", "unseen_user_fraction")):
        value = options.pop(key)
        if value is not None:
            split[name] = value
    benchmark = load_dataset(options.pop("dataset"), split=split, **options)
    print(f"lore-eval fewshot: {len(checkpoints)} checkpoint(s), "
          f"{benchmark.unseen_fewshot.num_users} unseen users, shots {sorted(set(args.shots))}, "
          f"{args.trials} trials", file=sys.stderr)
    doc = run_fewshot(checkpoints, benchmark, args.shots, args.trials, seed=args.seed,
                      steps=args.steps, lr=args.lr, device=device,
                      config={"data": {**options, "split": split}},
                      priors=args.prior, strategies=args.strategy)
    out = args.out or args.run or Path("runs") / "fewshot"
    paths = write_fewshot(doc, out)
    print(_fewshot_table(doc))
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    """Explicit flags, else the run's lore-train options, else lore-train's defaults."""
    run_cli_args: dict[str, Any] = {}
    if args.run is not None:
        run_cli_args = load_results(args.run).get("config", {}).get("cli", {})
    defaults = {"dataset": "llmfao", "data_dir": None, "embeddings": None, "keep_ties": False,
                "split_by": "auto", "min_pairs": None, "unseen_fraction": None}
    options = {}
    for name in DATA_OPTIONS:
        value = getattr(args, name)
        if value is None:
            value = run_cli_args.get(name, defaults[name])
        options[name] = None if value == "None" else value  # lore-train writes str(None)
    seed = args.split_seed if args.split_seed is not None else run_cli_args.get("seed", 0)
    return {**options, "split_seed": seed}


def _fewshot_table(doc: dict[str, Any]) -> str:
    lines = [f"{'model':<22} {'shots':>5} {'users':>5} {'short':>5}  {'few-shot pairs':<15}  "
             "unseen prompts (mean ± std over trials)"]
    for curve in doc["curves"]:
        name = curve_label(curve, short=True)
        for p in curve["points"]:
            train, test = p["fewshot_train"], p["unseen_prompts"]
            cell = lambda s: "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"  # noqa: E731
            lines.append(f"{name:<22} {p['shots']:>5} {p['n_users']:>5} "
                         f"{p['short_users']['count']:>5}  {cell(train):<15}  {cell(test)}")
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    results = load_results(args.run_dir)
    fewshot_path = args.run_dir / "fewshot.json"
    fewshot = load_fewshot(fewshot_path) if fewshot_path.is_file() else None
    text = format_markdown(results, fewshot)
    (args.run_dir / "report.md").write_text(text)
    print(text, end="")
    written = [args.run_dir / "report.md"]
    if not args.no_plots:
        written.append(plot_accuracy_vs_rank(results, args.run_dir / "accuracy_vs_rank.png"))
        if fewshot is not None:
            written.append(plot_accuracy_vs_shots(fewshot, args.run_dir / "accuracy_vs_shots.png"))
    print("\nwrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
