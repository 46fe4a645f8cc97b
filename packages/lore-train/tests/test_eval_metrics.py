"""Per-user accuracy, the four settings, results.json, plot and table."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lore_datasets import SPLITS, PreferencePairs, synthetic_benchmark
from lore_train import (
    TrainConfig,
    format_table,
    load_results,
    model_label,
    per_user_accuracy,
    run_sweep,
    summarize,
)


def test_per_user_accuracy_is_strict_and_macro_averaged():
    pairs = PreferencePairs(torch.zeros(7, 2), torch.tensor([0, 0, 0, 0, 2, 2, 2]), ["a", "b", "c"])
    margin = torch.tensor([1.0, 2.0, -1.0, 0.0, 3.0, 3.0, 3.0])  # a zero margin is wrong
    per_user = per_user_accuracy(margin, pairs)
    assert per_user == {"a": 0.5, "c": 1.0}  # b has no rows: absent, not 0
    summary = summarize(per_user)
    assert summary["mean"] == pytest.approx(0.75)
    assert summary["std"] == pytest.approx(0.25)  # ddof 0, never rescaled
    assert summary["n_users"] == 2
    assert summarize({})["mean"] is None


def test_rank_sweep_writes_results_plot_and_checkpoints(tmp_path):
    bench, _ = synthetic_benchmark(seed=1, num_users=16, pairs_per_user=40, dim=8, rank=2)
    config = TrainConfig(steps=40, fewshot_steps=20)
    results = run_sweep(bench, [0, 1, 2], [0.0], config, tmp_path, progress=False)
    on_disk = load_results(tmp_path)
    assert on_disk == json.loads(json.dumps(results))
    assert {"config", "dataset", "versions", "backend", "device", "runs"} <= on_disk.keys()
    assert on_disk["versions"]["lore-train"] == "0.1.0"
    runs = {run["K"]: run for run in on_disk["runs"]}
    assert runs[0]["skipped"].startswith("no reference head")
    for k in (1, 2):
        assert runs[k]["kept_rank"] == k and runs[k]["train_seconds"] > 0
        for key in SPLITS:
            setting = runs[k][key]
            assert set(setting) == {"mean", "std", "n_users", "per_user"}
            assert 0.0 <= setting["mean"] <= 1.0
            assert setting["n_users"] == len(setting["per_user"]) > 0
        assert (tmp_path / runs[k]["checkpoint"] / "model.safetensors").is_file()
    assert (tmp_path / "accuracy_vs_rank.png").stat().st_size > 10_000
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 + 2 * len(SPLITS)  # K=0 skipped: one row with the reason
    assert rows[0]["skipped"].startswith("no reference head")
    first = next(r for r in rows if r["K"] == "2" and r["setting"] == "unseen_test")
    assert float(first["mean"]) == pytest.approx(runs[2]["unseen_test"]["mean"])
    table = format_table(on_disk)
    assert "skipped: no reference head" in table and "seen/unseen prompts" in table


def test_rank_zero_runs_when_the_data_has_a_reference_head(tmp_path):
    bench, oracle = synthetic_benchmark(seed=2, num_users=12, pairs_per_user=30, dim=8, rank=1)
    bench.v_ref = oracle.V[:, 0].clone()  # the planted direction is a perfect head
    results = run_sweep(bench, [0], [0.0], TrainConfig(), tmp_path, progress=False)
    ref = results["runs"][0]
    assert "skipped" not in ref and ref["kept_rank"] == 1
    assert ref["unseen_test"]["mean"] > 0.85  # 1 - label noise, up to sampling


def test_a_format_1_results_file_reads_with_the_split_names(tmp_path):
    cell = {"mean": 0.5, "std": 0.0, "n_users": 1, "per_user": {"u": 0.5}}
    old = {"format": 1, "runs": [{"K": 1, "alpha": 0.0, "seen_train": cell, "unseen_fewshot": cell,
                                  "seen_unseen_prompts": cell, "unseen_unseen_prompts": cell}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    (run,) = load_results(tmp_path)["runs"]
    assert set(SPLITS) <= run.keys() and "seen_unseen_prompts" not in run


def test_models_have_one_label():
    assert [model_label(k) for k in (0, 1, 3)] == ["ref", "BT", "K=3"]
    assert model_label(2, 0.0) == "K=2" and model_label(2, 1e4) == "K=2, alpha=10000"
