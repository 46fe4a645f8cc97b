"""The sweep over K and alpha as an experiment: train, evaluate, checkpoint, select, write, plot."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lore_datasets import Benchmark, DataError
from lore_datasets.paths import contained
from lore_datasets.runtime.outputs import output_directory

from .calibration import evaluate_calibration
from .config import TrainConfig
from .heldout import HeldoutFits
from .metrics import evaluate
from .model import PersonalRewardModel
from .plots import can_plot, plot_accuracy_vs_rank, plot_loss_curves
from .results import (
    data_fingerprint,
    load_results,
    new_results,
    write_results,
    write_results_csv,
)
from .selection import SelectionSettings, sweep_selection
from .sweep import SweepRun, check_sweep, sweep
from .train_state import remove_state
from .trainer import CHECKPOINT_EVERY

STATE_DIR = "train_state"  # per-cell training states of a run in progress


def checkpoint_name(K: int, alpha: float) -> str:
    return f"K{K}_alpha{alpha:g}"


def run_sweep(
    benchmark: Benchmark,
    Ks: Sequence[int],
    alphas: Sequence[float],
    config: TrainConfig,
    out_dir: str | Path,
    *,
    select: SelectionSettings | None = None,
    run_config: dict[str, Any] | None = None,
    progress: bool = True,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    calibrate: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> dict[str, Any]:
    """Sweep K x alpha and write ``results.json``, ``results.csv``, ``accuracy_vs_rank.png``,
    ``loss_curves.png`` (early-stopped fits only) and ``checkpoints/K{K}_alpha{alpha}/``
    into ``out_dir`` (the plots only when matplotlib is installed). ``run_config``
    adds entries to the results' ``config`` (the command stores its data and split
    settings there).

    Nothing is trained when a K exceeds the data's dimension or every cell
    would be skipped (an error). A non-empty ``out_dir`` is refused unless
    ``overwrite`` (the new run is built beside it and replaces it as a whole
    on success) or ``resume``: cells already in its results.json are kept,
    and the cell in progress continues from its training state (saved every
    ``checkpoint_every`` steps under ``train_state/``), so the results equal
    those of a run that never stopped. Every file is written atomically and
    results.json after every cell, so a stopped run keeps what it finished. ``calibrate`` adds each
    cell's ``calibration`` (temperature, log-loss, Brier, ECE;
    `evaluate_calibration`), at the cost of one more fit per cell. ``select``
    chooses a cell on validation pairs once every cell is done and stores the
    choice as results.json's ``selection`` (`lore_train.selection`;
    ``SelectionSettings()`` is what `lore-train` does unless ``--no-select``).
    """
    check_sweep(benchmark, Ks, alphas, config, source=str(benchmark.meta.get("source") or "the data"))
    if select is not None:
        select.variants(config)  # a bad variant fails before anything is trained
    config_doc = sweep_config(Ks, alphas, config, run_config, select)
    with output_directory(out_dir, overwrite=overwrite, resume=resume) as work:
        fingerprint = data_fingerprint(benchmark)
        previous = check_resumable(work, config_doc, fingerprint) if resume else None
        done = _finished_cells(work, previous) if previous is not None else {}
        results = new_results(config_doc, benchmark.meta, config.device)
        results["data_fingerprint"] = fingerprint
        fits = HeldoutFits()  # the calibration's held-out fits serve the selection too
        if previous is None:  # marks the directory as a run from the start (--resume looks for it)
            write_results(results, work / "results.json")
        for alpha in alphas:
            for K in Ks:
                entry = done.get((K, float(alpha)))
                if entry is None:
                    entry = _run_cell(benchmark, K, alpha, config, work, progress=progress,
                                      resume=resume, checkpoint_every=checkpoint_every,
                                      calibrate=calibrate, fits=fits)
                results["runs"].append(entry)
                write_results(results, work / "results.json")
                if on_run is not None:
                    on_run(entry)
        shutil.rmtree(work / STATE_DIR, ignore_errors=True)
        if select is not None:
            results["selection"] = sweep_selection(benchmark, Ks, alphas, config, select, results,
                                                   progress=progress, fits=fits)
        write_outputs(results, work)
    return results


def _run_cell(benchmark: Benchmark, K: int, alpha: float, config: TrainConfig, out_dir: Path,
              *, progress: bool, resume: bool, checkpoint_every: int,
              calibrate: bool, fits: HeldoutFits) -> dict[str, Any]:
    """Train, evaluate and checkpoint one (K, alpha); its results entry."""
    state_dir = out_dir / STATE_DIR / checkpoint_name(K, alpha)
    # an early-stopped fit refits from the start: it keeps no state to resume from
    fit_options = {} if config.early_stopping else {
        "checkpoint_dir": state_dir, "resume": resume, "checkpoint_every": checkpoint_every}
    run = next(sweep(benchmark, [K], [alpha], config, progress=progress, fit_options=fit_options))
    entry = cell_entry(run)
    if run.model is None:
        return entry
    entry.update(evaluate(run.model, benchmark))
    if calibrate:
        entry["calibration"] = evaluate_calibration(run.model, benchmark, config,
                                                    progress=progress, fits=fits)
        run.model.meta["temperature"] = entry["calibration"]["temperature"]
    for part in (benchmark.seen_train, benchmark.unseen_fewshot):  # score(..., return_std=True)
        if part.num_users:
            run.model.fit_posterior(part)
    entry["checkpoint"] = save_cell(run.model, benchmark.meta, out_dir, run.K, run.alpha)
    remove_state(state_dir)
    return entry


def sweep_config(Ks: Sequence[int], alphas: Sequence[float], config: TrainConfig,
                 run_config: dict[str, Any] | None,
                 select: SelectionSettings | None = None) -> dict[str, Any]:
    """The ``config`` entry of results.json (``select``: how the cell is chosen, or null)."""
    return {"train": config.to_dict(), "Ks": list(Ks), "alphas": list(alphas),
            "select": None if select is None else select.record(config), **(run_config or {})}


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
    if run.history and run.history.early_stopping:  # the chosen step and curves
        entry["early_stopping"] = run.history.early_stopping
    for key in ("fewshot_early_stopping", "anchor", "prior_scale", "prior_mean_weight",
                "prior_scale_choice"):
        if key in run.model.meta:
            entry[key] = run.model.meta[key]
    return entry


def save_cell(model: PersonalRewardModel, dataset_meta: dict[str, Any], out_dir: Path,
              K: int, alpha: float) -> str:
    """Write a cell's checkpoint under ``out_dir/checkpoints``; its path relative to ``out_dir``."""
    model.meta.update(dataset=dataset_meta.get("source"), embedder=dataset_meta.get("embedder"))
    if dataset_meta.get("embedder_recipe") is not None:  # for `lore-export hf`
        model.meta["embedder_recipe"] = dataset_meta["embedder_recipe"]
    path = model.save(out_dir / "checkpoints" / checkpoint_name(K, alpha))
    return str(path.relative_to(out_dir))


def write_outputs(results: dict[str, Any], out_dir: Path) -> None:
    """results.json, results.csv and (with matplotlib) accuracy_vs_rank.png and, for
    early-stopped fits, loss_curves.png."""
    write_results(results, out_dir / "results.json")
    write_results_csv(results, out_dir / "results.csv")
    curves = out_dir / "loss_curves.png"
    curves.unlink(missing_ok=True)  # never a stale run's curves
    if can_plot():
        plot_accuracy_vs_rank(results, out_dir / "accuracy_vs_rank.png")
        plot_loss_curves(results, curves)


def check_resumable(out_dir: str | Path, config_doc: dict[str, Any],
                    fingerprint: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The results of the earlier run in ``out_dir`` if it ran the same sweep (None: no run yet).

    ``config_doc`` may hold only some of the results' ``config`` entries (a
    command checks what it knows before loading the data); the first setting
    that differs is named in the error. With ``fingerprint`` (`data_fingerprint`
    of the data this run loaded), the earlier run must have stored the same:
    no cell or training state of other data is ever reused.
    """
    out_dir = Path(out_dir)
    path = out_dir / "results.json"
    if not path.is_file():
        if out_dir.is_dir() and any(out_dir.iterdir()):
            raise DataError(f"{out_dir}: cannot resume: no results.json (not a lore-train run?)")
        return None
    previous = load_results(path)
    config_doc = json.loads(json.dumps(config_doc, default=str))  # as the file stores it
    config_doc.pop("out", None)  # the same directory may be named another way (relative path)
    difference = _first_difference(previous.get("config", {}), config_doc, "config")
    if difference is not None:
        where, old, new = difference
        raise DataError(f"{path}: cannot resume: the earlier run had {where} = {old!r}, "
                        f"this one {new!r} (resume with the same settings, or use --overwrite)")
    if fingerprint is not None:
        stored = previous.get("data_fingerprint")
        if not isinstance(stored, dict):
            raise DataError(f"{path}: cannot resume: it records no data_fingerprint (an older "
                            "or damaged results file); start again with --overwrite")
        for split, mine in fingerprint.items():
            if stored.get(split) != mine:
                raise DataError(f"{path}: cannot resume: the data differ from the earlier run's "
                                f"({split}); resume on the same data, or use --overwrite")
    return previous


def _first_difference(stored: Any, wanted: Any, where: str) -> tuple[str, Any, Any] | None:
    """The first (dotted key, stored, wanted) where ``wanted``'s entries differ from ``stored``."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key, value in wanted.items():
            found = _first_difference(stored.get(key), value, f"{where}.{key}")
            if found is not None:
                return found
        return None
    return None if stored == wanted else (where, stored, wanted)


def _finished_cells(out_dir: Path, previous: dict[str, Any]) -> dict[tuple[int, float], dict[str, Any]]:
    """The cells the earlier run ``previous`` (checked by `check_resumable`) finished."""
    finished = {}
    path = out_dir / "results.json"
    runs = previous.get("runs", [])
    if not isinstance(runs, list):
        raise DataError(f"{path}: 'runs' is not a list")
    for i, entry in enumerate(runs):
        where = f"{path}: runs[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("K"), int) or not isinstance(
                entry.get("alpha"), (int, float)):
            raise DataError(f"{where}: not a cell with an integer 'K' and a number 'alpha'")
        checkpoint = entry.get("checkpoint")
        if checkpoint is not None:
            checkpoint = contained(out_dir, checkpoint, f"{where} 'checkpoint'")
        if entry.get("skipped") or (checkpoint and (checkpoint / "config.json").is_file()):
            finished[(entry["K"], float(entry["alpha"]))] = entry
    return finished
