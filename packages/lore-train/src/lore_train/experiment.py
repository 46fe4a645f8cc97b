"""The sweep over K and alpha as an experiment: train, evaluate, checkpoint, write, plot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lore_datasets import Benchmark

from .config import TrainConfig
from .metrics import evaluate
from .model import PersonalRewardModel
from .plots import can_plot, plot_accuracy_vs_rank
from .results import new_results, write_results, write_results_csv
from .sweep import SweepRun, sweep


def checkpoint_name(K: int, alpha: float) -> str:
    return f"K{K}_alpha{alpha:g}"


def run_rank_sweep(
    benchmark: Benchmark,
    Ks: Sequence[int],
    alphas: Sequence[float],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    run_config: dict[str, Any] | None = None,
    progress: bool = True,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Sweep K x alpha and write ``results.json``, ``results.csv``, ``accuracy_vs_rank.png`` and
    ``checkpoints/K{K}_alpha{alpha}/`` into ``out_dir`` (the plot only when
    matplotlib is installed). ``run_config`` adds entries to the results'
    ``config`` (the command stores its data and split settings there).

    results.json is rewritten after every cell, so a long sweep that stops
    early still leaves what it finished.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = new_results(sweep_config(Ks, alphas, config, run_config), benchmark.meta, config.device)
    for run in sweep(benchmark, Ks, alphas, config, progress=progress):
        entry = cell_entry(run)
        if run.model is not None:
            entry.update(evaluate(run.model, benchmark))
            entry["checkpoint"] = save_cell(run.model, benchmark.meta, out_dir, run.K, run.alpha)
        results["runs"].append(entry)
        write_results(results, out_dir / "results.json")
        if on_run is not None:
            on_run(entry)
    write_outputs(results, out_dir)
    return results


def sweep_config(Ks: Sequence[int], alphas: Sequence[float], config: TrainConfig,
                 run_config: dict[str, Any] | None) -> dict[str, Any]:
    """The ``config`` entry of results.json."""
    return {"train": config.to_dict(), "Ks": list(Ks), "alphas": list(alphas), **(run_config or {})}


def cell_entry(run: SweepRun) -> dict[str, Any]:
    """A cell's results.json entry, before its accuracies and checkpoint."""
    entry: dict[str, Any] = {"K": run.K, "alpha": run.alpha}
    if run.skipped:
        entry["skipped"] = run.skipped
        return entry
    assert run.model is not None
    entry["kept_rank"] = run.kept_rank
    entry["train_seconds"] = run.train_seconds
    entry["fewshot_seconds"] = run.fewshot_seconds
    entry["final_loss"] = run.history.loss[-1] if run.history and run.history.loss else None
    return entry


def save_cell(model: PersonalRewardModel, dataset_meta: dict[str, Any], out_dir: Path,
              K: int, alpha: float) -> str:
    """Write a cell's checkpoint under ``out_dir/checkpoints``; its path relative to ``out_dir``."""
    model.meta.update(dataset=dataset_meta.get("source"), embedder=dataset_meta.get("embedder"))
    path = model.save(out_dir / "checkpoints" / checkpoint_name(K, alpha))
    return str(path.relative_to(out_dir))


def write_outputs(results: dict[str, Any], out_dir: Path) -> None:
    """results.json, results.csv and (with matplotlib) accuracy_vs_rank.png."""
    write_results(results, out_dir / "results.json")
    write_results_csv(results, out_dir / "results.csv")
    if can_plot():
        plot_accuracy_vs_rank(results, out_dir / "accuracy_vs_rank.png")
