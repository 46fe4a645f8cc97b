"""``lore-train``: sweep K x alpha on a data set; write results, checkpoints and the plot.

    lore-train --dataset llmfao --K 0 1 2 3 --out runs/llmfao
    lore-train --preset reference-regularized --dataset prism --data-dir data/prism --K 0 1 8

Every data, split and training flag is generated from the settings records
(`DataSource`, `SplitConfig`, `TrainConfig`), so their types, choices,
defaults and help are written once, there; results.json stores the resolved
records. Only argument handling and printing live here.
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Any

from lore_datasets import SPLITS, Benchmark, DataSource, SplitConfig
from lore_datasets.runtime import collectives
from lore_datasets.runtime.cli import (
    ArgumentParser,
    console_entry,
    resolve_device,
    run_cli,
    run_cli_to_the_end,
)
from lore_datasets.runtime.outputs import check_run_dir, claim_output
from lore_datasets.runtime.settings import add_arguments, given, to_dict

from . import launch
from .config import PRESETS, TrainConfig
from .experiment import check_resumable, run_sweep, sweep_config
from .model import UnknownUserError
from .plots import can_plot
from .selection import SELECT_LABEL_NOISE, SelectionSettings
from .sweep import check_sweep
from .tables import format_selection, format_table
from .trainer import CHECKPOINT_EVERY

SWEEP_KS = (0, 1, 2, 3)  # the default --K: ref, BT and LoRe at K = 2 and 3
SWEPT = ("K", "alpha")  # TrainConfig fields given as lists, one cell per value
BY_COMMAND = ("seed", "device")  # TrainConfig fields with their own flags below
MAX_DIST_TIMEOUT = 7 * 24 * 3600.0  # a week: longer is a typo (and overflows a timedelta)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="lore-train",
        description="Fit low-rank personalized reward models for a list of K and "
        "regularization strengths alpha; evaluate the four settings.",
    )
    p.add_argument("--preset", choices=tuple(PRESETS), default="reference",
                   help="starting training settings; flags below override them: reference (the "
                   "reference run()), reference-regularized (its PRISM run_regularized()) "
                   "(default: reference)")
    add_arguments(p.add_argument_group("data"), DataSource)
    add_arguments(p.add_argument_group("split (default: the data set's own)"), SplitConfig,
                  exclude=("seed",), default_note="dataset")
    model = p.add_argument_group("model and training")
    model.add_argument("--K", type=int, nargs="+", default=list(SWEEP_KS),
                       help=f"values of K to fit (default: {' '.join(map(str, SWEEP_KS))})")
    model.add_argument("--alpha", type=float, nargs="+", default=argparse.SUPPRESS,
                       help="cosine regularization strengths toward v_ref "
                       "(default: the preset's alpha)")
    add_arguments(model, TrainConfig, exclude=SWEPT + BY_COMMAND,
                  default_note="; presets may change it")
    select = p.add_argument_group("model selection (--val-fraction and --val-split-by "
                                  "above say what is held out)")
    select.add_argument("--select", action=argparse.BooleanOptionalAction, default=True,
                        help="choose (K, alpha, v_l2, label_noise) on a validation split of the "
                        "seen users' "
                        "training pairs (never test pairs) and report the choice's test numbers "
                        "(default: on; one process only)")
    select.add_argument("--select-v-l2", type=float, nargs="+", default=None,
                        help="v_l2 values --select also tries (default: just --v-l2)")
    select.add_argument("--select-folds", type=int, default=1,
                        help="validation splits (seeds --seed, --seed + 1, ...) each candidate "
                        "is scored on, ranked by the mean (default: 1)")
    select.add_argument("--select-label-noise", type=float, nargs="*",
                        default=list(SELECT_LABEL_NOISE),
                        help="label_noise values --select also tries besides --label-noise, "
                        "with every v_l2 value (default: "
                        f"{' '.join(map(str, SELECT_LABEL_NOISE))}; none: just --label-noise)")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                     help=f"seeds the split and every initialization (default: {TrainConfig().seed}"
                     "; the split's own seed otherwise)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--out", type=Path, default=None, help="output directory (default runs/<dataset>)"
                     "; must be new or empty unless --overwrite or --resume")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a non-empty --out: the new run is built beside it and swapped "
                     "in as a whole when it succeeds (a failed run leaves the old one as it was)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run in --out with the same settings: finished "
                     "cells are kept, the cell in progress continues from its last training state")
    run.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY, metavar="STEPS",
                     help="save the training state for --resume every this many steps "
                     f"(default: {CHECKPOINT_EVERY})")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--dist-timeout", type=float, default=collectives.DEFAULT_TIMEOUT,
                     help="under torchrun: seconds a process waits for the others at any step "
                     "before every process fails (plus a 30 s watchdog grace) "
                     f"(default: {collectives.DEFAULT_TIMEOUT:g})")
    return p


def main(argv: list[str] | None = None) -> int:
    """`lore-train` with ``argv``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if collectives.world_size() > 1:  # under torchrun: one process of several
        return run_cli_to_the_end("lore-train", lambda: _train_distributed(args),
                                  expected=(UnknownUserError, collectives.PeerFailure))
    return run_cli("lore-train", lambda: _train(args), expected=(UnknownUserError,))


def entry() -> int:
    """The `lore-train` console script (`lore_datasets.runtime.cli.console_entry`)."""
    return console_entry(main)


def _settings(args: argparse.Namespace) -> tuple[DataSource, dict[str, Any], TrainConfig, Path]:
    """The data source, split changes, training config and output directory the flags give."""
    source = DataSource(**given(args, _names(DataSource)))
    split_changes = given(args, _names(SplitConfig))
    train_changes = given(args, [n for n in _names(TrainConfig) if n not in SWEPT + BY_COMMAND])
    if hasattr(args, "seed"):
        split_changes["seed"] = train_changes["seed"] = args.seed
    config = TrainConfig.preset(args.preset, **train_changes, device=resolve_device(args.device))
    return source, split_changes, config, args.out or Path("runs") / Path(source.dataset).name


def _run_config(args: argparse.Namespace, source: DataSource, benchmark: Benchmark | None,
                split_changes: dict[str, Any], out: Path) -> dict[str, Any]:
    """The run's settings for results.json (without the split before the data is loaded)."""
    run_config = {"preset": args.preset, "data": to_dict(source), "out": str(out)}
    if benchmark is not None:  # the split as resolved (a reference loader changes only the seed)
        run_config["split"] = (benchmark.meta.get("split", {}).get("config")
                               or to_dict(SplitConfig(**split_changes)))
    return run_config


def _train(args: argparse.Namespace) -> int:
    source, split_changes, config, out = _settings(args)
    alphas = getattr(args, "alpha", [config.alpha])
    select = _check_arguments(args, config, alphas)
    with claim_output(out, overwrite=args.overwrite, resume=args.resume) as out:
        return _train_in(args, source, split_changes, config, alphas, out, select)


def _train_in(args: argparse.Namespace, source: DataSource, split_changes: dict[str, Any],
              config: TrainConfig, alphas: list[float], out: Path,
              select: SelectionSettings | None) -> int:
    """`_train` holding the output directory (`claim_output`)."""
    if args.resume:  # what can be compared before the data is loaded
        check_resumable(out, sweep_config(args.K, alphas, config,
                                          _run_config(args, source, None, split_changes, out),
                                          select))
    benchmark = source.load(split=split_changes)
    check_sweep(benchmark, args.K, alphas, config, source=source.dataset)  # before any output
    print(f"lore-train: {source.dataset}: {_describe(benchmark)}", file=sys.stderr)
    results = run_sweep(
        benchmark, args.K, alphas, config, out, select=select,
        run_config=_run_config(args, source, benchmark, split_changes, out),
        progress=not args.no_progress, overwrite=args.overwrite, resume=args.resume,
        checkpoint_every=args.checkpoint_every,
    )
    return _report(results, out)


def _train_distributed(args: argparse.Namespace) -> int:
    """One process of a torchrun launch (lore_train.launch); process 0 reports."""
    # --select is on by default; choosing needs every user's validation pairs in one place
    selecting, args.select = args.select, False
    if args.resume:
        raise ValueError("--resume runs in one process; run it without torchrun")
    source, split_changes, config, out = _settings(args)
    alphas = getattr(args, "alpha", [config.alpha])
    _check_arguments(args, config, alphas)
    out = check_run_dir(out, overwrite=args.overwrite)
    process = collectives.join(config.device, args.dist_timeout, "lore-train")
    try:
        with (claim_output(out, overwrite=args.overwrite) if process.rank == 0
              else nullcontext(out)):  # process 0 writes --out: it holds it for the run
            return _train_process(args, process, source, split_changes, config, alphas, out,
                                  selecting)
    finally:
        collectives.leave()


def _train_process(args: argparse.Namespace, process: collectives.Process, source: DataSource,
                   split_changes: dict[str, Any], config: TrainConfig, alphas: list[float],
                   out: Path, selecting: bool) -> int:
    """One process's share of `_train_distributed`, inside the process group."""
    config = config.with_(device=process.device)
    part = source.load_process_share(process.rank, process.world_size, split=split_changes)
    if process.rank == 0:
        print(f"lore-train: {source.dataset}: process 0 of {process.world_size} "
              f"({process.backend}): {_describe(part)}", file=sys.stderr)
        if selecting:
            print("lore-train: no selection under torchrun (--select runs in one process)",
                  file=sys.stderr)
    results = launch.run_distributed_sweep(
        process, part, args.K, alphas, config, out,
        run_config=_run_config(args, source, part, split_changes, out),
        progress=not args.no_progress,
    )
    if results is None:
        return 0
    return _report(results, out)


def _report(results: dict[str, Any], out: Path) -> int:
    print(format_table(results))
    selection = results.get("selection")
    if selection and "skipped" in selection:  # the sweep's table stands on its own
        print(f"lore-train: no selection: {selection['skipped']}", file=sys.stderr)
    elif selection:
        print("\n" + format_selection(selection))
    names = ("accuracy_vs_rank.png", "loss_curves.png") if can_plot() else ()
    plot = "".join(f"{out / name}, " for name in names if (out / name).exists())
    print(f"\nwrote {out / 'results.json'}, {out / 'results.csv'}, {plot}{out / 'checkpoints'}/")
    if not can_plot():
        print("lore-train: no plot (matplotlib is not installed; `lore-eval report` draws it)",
              file=sys.stderr)
    return 0


def _check_arguments(args: argparse.Namespace, config: TrainConfig,
                     alphas: list[float]) -> SelectionSettings | None:
    """Every value a cell will use, checked before any data is loaded; the selection's
    settings (None with --no-select)."""
    for alpha in alphas:
        for K in args.K:
            try:
                config.with_(K=K, alpha=alpha)
            except ValueError as err:
                raise ValueError(f"--K {K} --alpha {alpha}: {err}") from None
    if not (math.isfinite(args.dist_timeout) and 0 < args.dist_timeout <= MAX_DIST_TIMEOUT):
        raise ValueError(f"--dist-timeout must be a number of seconds in (0, "
                         f"{MAX_DIST_TIMEOUT:g}], got {args.dist_timeout:g}")
    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.select_folds < 1:
        raise ValueError(f"--select-folds must be >= 1, got {args.select_folds}")
    settings = SelectionSettings(v_l2=tuple(args.select_v_l2 or ()),
                                 label_noise=tuple(args.select_label_noise or ()),
                                 folds=args.select_folds)
    for name, values in (("v_l2", settings.v_l2), ("label_noise", settings.label_noise)):
        for value in values:
            try:
                config.with_(**{name: value})
            except ValueError as err:
                raise ValueError(f"--select-{name.replace('_', '-')} {value}: {err}") from None
    return settings if args.select else None


def _names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _describe(benchmark: Benchmark) -> str:
    parts = [f"{name}: {benchmark.split(name).num_pairs} pairs" for name in SPLITS]
    return (f"{benchmark.seen_train.num_users} seen + {benchmark.unseen_test.num_users} unseen "
            f"users, d={benchmark.dim}; " + ", ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
