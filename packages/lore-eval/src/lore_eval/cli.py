"""``lore-eval``: experiments and reports on what ``lore-train`` wrote.

    lore-eval fewshot --run runs/llmfao              # few-shot curves of every checkpoint
    lore-eval fewshot --checkpoint runs/x/checkpoints/K3_alpha0 --dataset synthetic
    lore-eval report runs/llmfao                     # report.md + plots from results.json
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from lore_datasets import DataError, DataSource, SplitConfig
from lore_datasets.runtime.cli import ArgumentParser, console_entry, resolve_device, run_cli
from lore_datasets.runtime.outputs import atomic_write_text, check_output_dir
from lore_datasets.runtime.settings import add_arguments, given, to_dict
from lore_datasets.sizes import check_sizes
from lore_train import FEWSHOT_PRIORS, PersonalRewardModel, UnknownUserError
from lore_train.plots import plot_accuracy_vs_rank, plot_loss_curves
from lore_train.results import load_results

from .fewshot import (
    DEFAULT_PRIOR,
    DEFAULT_SHOTS,
    DEFAULT_TRIALS,
    SOLVERS,
    STRATEGIES,
    find_checkpoints,
    run_fewshot,
)
from .fewshot_files import curve_label, load_fewshot, plot_accuracy_vs_shots, write_fewshot
from .report import format_markdown

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="lore-eval", description="Experiments and reports on what lore-train "
                       "wrote: few-shot curves of its checkpoints (fewshot), and a markdown report "
                       "with the plots of a run (report).")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser(
        "fewshot",
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
                     help="checkpoint directories (model.safetensors + config.json), with or "
                     "instead of --run")
    src.add_argument("--K", type=int, nargs="+", help="with --run: only these K (default: all)")
    data = f.add_argument_group("data and split (default: the run's, else lore-train's)")
    add_arguments(data, DataSource)
    add_arguments(data, SplitConfig, exclude=("seed",), default_note="dataset")
    data.add_argument("--split-seed", type=int, default=argparse.SUPPRESS,
                      help="seed of the data split (default: the run's, else the data set's own)")
    exp = f.add_argument_group("experiment")
    exp.add_argument("--shots", type=int, nargs="+", default=list(DEFAULT_SHOTS),
                     help="pairs per unseen user at each point of the curve")
    exp.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                     help="seeded draws of those pairs per point (mean and std over them)")
    exp.add_argument("--strategy", nargs="+", choices=STRATEGIES, default=["random"],
                     help="how a user's pairs are chosen: random draws, or active (greatest "
                     "expected information gain under the posterior, batch-aware); one curve each")
    exp.add_argument("--prior", nargs="+", choices=FEWSHOT_PRIORS, default=[DEFAULT_PRIOR],
                     help="few-shot fit: none (maximum likelihood) or population (MAP under a "
                     "Dirichlet fitted to the seen users' weights); one curve each")
    exp.add_argument("--solver", nargs="+", choices=SOLVERS, default=None,
                     help="few-shot fit: newton (the exact MAP) or adam (--steps steps); one curve "
                     "each (default: the checkpoint's fewshot_solver)")
    exp.add_argument("--seed", type=int, default=0, help="seeds the draws and the initializations")
    exp.add_argument("--steps", type=int, help="few-shot steps (default: the checkpoint's)")
    exp.add_argument("--lr", type=float, help="few-shot learning rate (default: the checkpoint's)")
    exp.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    exp.add_argument("--out", type=Path, help="output directory (default: --run, else runs/fewshot)")

    r = sub.add_parser("report", help="results.json as a markdown table; regenerate the plots",
                       description="Render RUN_DIR/results.json (and fewshot.json when present) "
                       "as markdown to stdout and RUN_DIR/report.md, and redraw the plots.")
    r.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a lore-train output directory (with results.json)")
    r.add_argument("--no-plots", action="store_true", help="only the markdown")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"fewshot": _fewshot, "report": _report}[args.command]
    return run_cli("lore-eval", lambda: command(args), expected=(UnknownUserError,))


def entry() -> int:
    """The `lore-eval` console script (`lore_datasets.runtime.cli.console_entry`)."""
    return console_entry(main)


def _fewshot(args: argparse.Namespace) -> int:
    if args.run is None and not args.checkpoint:
        raise ValueError("give --run RUN_DIR or --checkpoint DIR ...")
    if args.K is not None and args.run is None:
        raise ValueError("--K picks checkpoints of --run; with --checkpoint, list the ones you want")
    device = resolve_device(args.device)
    _check_experiment(args)
    out = check_output_dir(args.out or args.run or Path("runs") / "fewshot")
    checkpoints = list(args.checkpoint)
    if args.run is not None:
        checkpoints = find_checkpoints(args.run, args.K) + checkpoints
    K = 1
    for checkpoint in checkpoints:  # a broken checkpoint fails now, not after the data loads
        K = max(K, PersonalRewardModel.load(checkpoint).kept_rank)
    source, split = _data_settings(args)
    benchmark = source.load(split=split)
    pool = benchmark.unseen_fewshot

    def needs(v: Any) -> tuple[int, int]:  # bytes per trial, times the trials; no disk
        per_trial = 8 * (pool.num_pairs * 2 + pool.num_users * v["--shots"] * (3 + 2 * K)
                         + pool.num_users * K * 8)
        return v["--trials"] * per_trial, 0

    check_sizes({"--trials": args.trials, "--shots": max(args.shots)},
                {"--trials": DEFAULT_TRIALS, "--shots": max(DEFAULT_SHOTS)}, needs,
                note=f" (with {pool.num_users} unseen users)")
    print(f"lore-eval fewshot: {len(checkpoints)} checkpoint(s), "
          f"{benchmark.unseen_fewshot.num_users} unseen users, shots {sorted(set(args.shots))}, "
          f"{args.trials} trials", file=sys.stderr)
    doc = run_fewshot(checkpoints, benchmark, args.shots, args.trials, seed=args.seed,
                      steps=args.steps, lr=args.lr, device=device,
                      config={"data": to_dict(source), "split": split},
                      priors=args.prior, strategies=args.strategy, solvers=args.solver or [None])
    paths = write_fewshot(doc, out)
    print(_fewshot_table(doc))
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


def _check_experiment(args: argparse.Namespace) -> None:
    """The experiment's numbers, checked before anything is read."""
    bad = [s for s in args.shots if s < 0]
    if bad:
        raise ValueError(f"--shots must be >= 0, got {bad[0]}")
    if args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")


def _data_settings(args: argparse.Namespace) -> tuple[DataSource, dict[str, Any]]:
    """The data source and split: the run's stored settings (if --run), changed by explicit flags.

    The split is returned as changes to the data set's own split (all of it
    when it comes from a run), so a bare --dataset gets lore-train's default.
    """
    source, split = DataSource(), {}
    if args.run is not None:
        path = args.run / "results.json"
        config = load_results(args.run).get("config", {})
        if "data" not in config:
            raise ValueError(f"{path}: no config.data (written by an older lore-train); "
                             "give --dataset and the split flags")
        source = DataSource.from_dict(config["data"], source=f"{path}: config.data")
        split = to_dict(SplitConfig.from_dict(config["split"], source=f"{path}: config.split"))
    source = replace(source, **given(args, [f.name for f in fields(DataSource)]))
    split.update(given(args, [f.name for f in fields(SplitConfig) if f.name != "seed"]))
    if hasattr(args, "split_seed"):
        split["seed"] = args.split_seed
    return source, split


def _fewshot_table(doc: dict[str, Any]) -> str:
    lines = [f"{'model':<36} {'shots':>5} {'users':>5} {'short':>5}  {'few-shot pairs':<15}  "
             "unseen prompts (mean ± std over trials)"]
    for curve in doc["curves"]:
        name = curve_label(curve)
        for p in curve["points"]:
            train, test = p["fewshot_train"], p["unseen_prompts"]
            cell = lambda s: "n/a" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"  # noqa: E731
            lines.append(f"{name:<36} {p['shots']:>5} {p['n_users']:>5} "
                         f"{p['short_users']['count']:>5}  {cell(train):<15}  {cell(test)}")
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    check_output_dir(args.run_dir, flag="RUN_DIR")
    results = load_results(args.run_dir)
    fewshot_path = args.run_dir / "fewshot.json"
    fewshot = load_fewshot(fewshot_path) if fewshot_path.is_file() else None
    # a malformed file is named now, before anything is written
    _formatted(lambda: format_markdown(results), args.run_dir / "results.json")
    text = _formatted(lambda: format_markdown(results, fewshot), fewshot_path)
    atomic_write_text(args.run_dir / "report.md", text)
    print(text, end="")
    written = [args.run_dir / "report.md"]
    if not args.no_plots:
        results_path = args.run_dir / "results.json"
        written.append(_formatted(lambda: plot_accuracy_vs_rank(
            results, args.run_dir / "accuracy_vs_rank.png"), results_path))
        curves = _formatted(lambda: plot_loss_curves(results, args.run_dir / "loss_curves.png"),
                            results_path)  # None: no curves
        written += [curves] if curves else []
        if fewshot is not None:
            written.append(_formatted(lambda: plot_accuracy_vs_shots(
                fewshot, args.run_dir / "accuracy_vs_shots.png"), fewshot_path))
    print("\nwrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def _formatted(make: Callable[[], T], path: Path) -> T:
    """``make()``; a results or fewshot file missing an entry (or with one of the wrong
    type) is a `DataError` naming ``path`` and the entry, not a KeyError traceback."""
    try:
        return make()
    except KeyError as err:
        raise DataError(f"{path}: malformed: missing entry {err.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, IndexError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: malformed: {type(err).__name__}: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
