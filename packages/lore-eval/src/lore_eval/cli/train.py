"""``lore-train``: sweep K x alpha on a data set and write results, plot, checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lore_datasets import DATASETS, SplitConfig, load_dataset
from lore_train import TrainConfig

from ..experiment import run_rank_sweep
from ..report import format_selection, format_table
from ..results import write_results
from ..selection import choice_test_numbers, select_model
from .common import resolve_device, run_cli


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    split = SplitConfig()
    p = argparse.ArgumentParser(
        prog="lore-train",
        description="Fit low-rank personalized reward models for a list of ranks K and "
        "regularization strengths alpha; evaluate the four settings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="llmfao",
                      help=f"a bundled/known data set ({', '.join(DATASETS)}) or a directory "
                      "in the generic layout (comparisons.csv, responses.jsonl, embeddings.npy)")
    data.add_argument("--data-dir", type=Path, help="where the files of tldr/prism/personalllm are")
    data.add_argument("--embeddings", help="embedding matrix (.npy) to use instead of embeddings.npy")
    data.add_argument("--keep-ties", action="store_true", help="keep tied comparisons (not dropped)")
    data.add_argument("--split-by", choices=("auto", "prompt", "pair"), default=split.split_by)
    data.add_argument("--min-pairs", type=int, default=None,
                      help="minimum pairs per user (default: the data set's own)")
    data.add_argument("--unseen-fraction", type=float, default=None,
                      help="fraction of users held out as unseen (default: the data set's own)")
    model = p.add_argument_group("model and training")
    model.add_argument("--K", type=int, nargs="+", default=[0, 1, 2, 3], help="ranks to fit")
    model.add_argument("--alpha", type=float, nargs="+", default=[defaults.alpha],
                       help="cosine regularization strengths toward v_ref")
    model.add_argument("--steps", type=int, default=defaults.steps)
    model.add_argument("--lr", type=float, default=defaults.lr)
    model.add_argument("--lr-w", type=float, default=defaults.lr_w,
                       help="learning rate of the user logits W (default: --lr)")
    model.add_argument("--w-init", choices=("normal", "uniform", "zeros"), default=defaults.w_init)
    model.add_argument("--tau", type=float, default=defaults.tau)
    model.add_argument("--mode", choices=("joint", "alternating"), default=defaults.mode)
    model.add_argument("--reduction", choices=("user_mean", "pair_mean"), default=defaults.reduction)
    model.add_argument("--prune-threshold", type=float, default=defaults.prune_threshold)
    model.add_argument("--fewshot-steps", type=int, default=defaults.fewshot_steps)
    model.add_argument("--fewshot-lr", type=float, default=defaults.fewshot_lr)
    # -- issue 14: held-out pairs choose length, anchor and regularizer --------
    model.add_argument("--early-stopping", action=argparse.BooleanOptionalAction,
                       default=defaults.early_stopping,
                       help="choose the training length (joint and few-shot) on validation loss")
    model.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                       help="share of the seen users' training pairs (or prompts) held out for "
                       "early stopping and --select")
    model.add_argument("--val-split-by", choices=("auto", "prompt", "pair"),
                       default=defaults.val_split_by)
    model.add_argument("--eval-every", type=int, default=defaults.eval_every)
    model.add_argument("--patience", type=int, default=defaults.patience)
    model.add_argument("--anchor", choices=("auto", "v_ref", "population"), default=defaults.anchor,
                       help="cosine target: v_ref, or the population BT head fitted on the same "
                       "pairs (auto: v_ref when the data has one)")
    model.add_argument("--alpha-schedule", choices=("ramp", "constant"),
                       default=defaults.alpha_schedule)
    model.add_argument("--v-l2", type=float, default=defaults.v_l2,
                       help="norm control on the basis: weight of tau^2 mean_j |V_j|^2")
    select = p.add_argument_group("model selection")
    select.add_argument("--select", action=argparse.BooleanOptionalAction, default=True,
                        help="choose (K, alpha, v_l2) on a validation split of the seen users' "
                        "training pairs (never test pairs) and report the choice's test numbers")
    select.add_argument("--select-v-l2", type=float, nargs="+", default=None,
                        help="v_l2 values --select also tries (default: just --v-l2)")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="seeds the split and every initialization")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--out", type=Path, default=None, help="output directory (default runs/<dataset>)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def go() -> int:
        device = resolve_device(args.device)
        split_changes = {"seed": args.seed, "split_by": args.split_by}
        if args.min_pairs is not None:
            split_changes["min_pairs_per_user"] = args.min_pairs
        if args.unseen_fraction is not None:
            split_changes["unseen_user_fraction"] = args.unseen_fraction
        benchmark = load_dataset(args.dataset, data_dir=args.data_dir, embeddings=args.embeddings,
                                 keep_ties=args.keep_ties, split=split_changes)
        config = TrainConfig(
            steps=args.steps, lr=args.lr, lr_w=args.lr_w, w_init=args.w_init, tau=args.tau,
            mode=args.mode, reduction=args.reduction, prune_threshold=args.prune_threshold, fewshot_steps=args.fewshot_steps,
            fewshot_lr=args.fewshot_lr, seed=args.seed, device=device,
            early_stopping=args.early_stopping, val_fraction=args.val_fraction,
            val_split_by=args.val_split_by, eval_every=args.eval_every, patience=args.patience,
            anchor=args.anchor, alpha_schedule=args.alpha_schedule, v_l2=args.v_l2,
        )
        out = args.out or Path("runs") / Path(args.dataset).name
        print(f"lore-train: {args.dataset}: {_describe(benchmark)}", file=sys.stderr)
        results = run_rank_sweep(
            benchmark, args.K, args.alpha, config, out,
            run_config={"cli": vars(args) | {"out": str(out), "data_dir": str(args.data_dir)}},
            progress=not args.no_progress,
        )
        print(format_table(results))
        if args.select:
            print(_select(benchmark, args, config, results, out, progress=not args.no_progress))
        curves = f"{out / 'loss_curves.png'}, " if (out / "loss_curves.png").exists() else ""
        print(f"\nwrote {out / 'results.json'}, {out / 'accuracy_vs_rank.png'}, {curves}"
              f"{out / 'checkpoints'}/")
        return 0

    return run_cli("lore-train", go)


def _select(benchmark, args, config, results, out: Path, *, progress: bool) -> str:
    """Pick (K, alpha, v_l2) on validation, store it in results.json, and say what was chosen."""
    extra = [v for v in (args.select_v_l2 or []) if v != config.v_l2]
    variants = [{}] + [{"v_l2": v} for v in extra]
    selection = select_model(benchmark, args.K, args.alpha, config, variants=variants,
                             progress=progress)
    results["selection"] = choice_test_numbers(selection, benchmark, config, results,
                                               progress=progress)
    write_results(results, out / "results.json")
    return "\n" + format_selection(results["selection"])


def _describe(benchmark) -> str:
    parts = [f"{name}: {benchmark.split(name).num_pairs} pairs" for name in
             ("seen_train", "seen_test", "unseen_fewshot", "unseen_test")]
    return (f"{benchmark.seen_train.num_users} seen + {benchmark.unseen_test.num_users} unseen "
            f"users, d={benchmark.dim}; " + ", ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
