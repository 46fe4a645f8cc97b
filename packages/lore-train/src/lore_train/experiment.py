"""The sweep over K and alpha as an experiment: train, evaluate, checkpoint, write, plot."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lore_datasets import Benchmark

from .calibration import evaluate_calibration
from .config import TrainConfig
from .metrics import evaluate
from .plots import can_plot, plot_accuracy_vs_rank, plot_loss_curves
from .results import new_results, write_results, write_results_csv
from .sweep import sweep


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
    calibrate: bool = True,
) -> dict[str, Any]:
    """Sweep K x alpha and write ``results.json``, ``results.csv``, ``accuracy_vs_rank.png``,
    ``loss_curves.png`` (early-stopped fits only) and ``checkpoints/K{K}_alpha{alpha}/``
    into ``out_dir`` (the plots only when matplotlib is installed). ``run_config``
    adds entries to the results' ``config`` (the command stores its data and split
    settings there).

    results.json is rewritten after every cell, so a long sweep that stops
    early still leaves what it finished. ``calibrate`` adds each cell's
    ``calibration`` (temperature, log-loss, Brier, ECE; `evaluate_calibration`),
    at the cost of one more fit per cell.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_doc = {"train": config.to_dict(), "Ks": list(Ks), "alphas": list(alphas),
                  **(run_config or {})}
    results = new_results(config_doc, benchmark.meta, config.device)
    for run in sweep(benchmark, Ks, alphas, config, progress=progress):
        entry: dict[str, Any] = {"K": run.K, "alpha": run.alpha}
        if run.skipped:
            entry["skipped"] = run.skipped
        else:
            assert run.model is not None
            entry["kept_rank"] = run.kept_rank
            entry["train_seconds"] = run.train_seconds
            entry["fewshot_seconds"] = run.fewshot_seconds
            entry["final_loss"] = run.history.loss[-1] if run.history and run.history.loss else None
            if run.history and run.history.early_stopping:  # the chosen step and curves
                entry["early_stopping"] = run.history.early_stopping
            for key in ("fewshot_early_stopping", "anchor"):
                if key in run.model.meta:
                    entry[key] = run.model.meta[key]
            entry.update(evaluate(run.model, benchmark))
            if calibrate:
                entry["calibration"] = evaluate_calibration(run.model, benchmark, config,
                                                            progress=progress)
                run.model.meta["temperature"] = entry["calibration"]["temperature"]
            run.model.meta.update(
                dataset=benchmark.meta.get("source"), embedder=benchmark.meta.get("embedder")
            )
            path = run.model.save(out_dir / "checkpoints" / checkpoint_name(run.K, run.alpha))
            entry["checkpoint"] = str(path.relative_to(out_dir))
        results["runs"].append(entry)
        write_results(results, out_dir / "results.json")
        if on_run is not None:
            on_run(entry)
    write_results(results, out_dir / "results.json")
    write_results_csv(results, out_dir / "results.csv")
    curves = out_dir / "loss_curves.png"
    curves.unlink(missing_ok=True)  # never a stale run's curves
    if can_plot():
        plot_accuracy_vs_rank(results, out_dir / "accuracy_vs_rank.png")
        plot_loss_curves(results, curves)
    return results
