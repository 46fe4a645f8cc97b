"""lore-train with early stopping records the chosen steps and curves, and plots them."""

from __future__ import annotations

import json

from lore_train.cli import main as train_main


def test_results_json_records_best_steps_and_curves(tmp_path):
    out = tmp_path / "run"
    code = train_main(["--dataset", "synthetic", "--K", "2", "--steps", "60", "--lr", "5",
                       "--lr-w", "0.05", "--w-init", "zeros", "--early-stopping",
                       "--eval-every", "5", "--fewshot-steps", "40", "--alpha", "0", "1",
                       "--alpha-schedule", "constant", "--select-v-l2", "0.01",
                       "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["train"]["early_stopping"] is True
    for run in results["runs"]:
        es = run["early_stopping"]
        assert 0 <= es["best_step"] < 60 and es["refit"]
        assert es["validation"]["split_by"] == "prompt"  # synthetic has 200 prompts
        assert len(es["val_steps"]) == len(es["val_loss"]) >= 2
        assert es["best_val_loss"] == min(es["val_loss"])
        if run["alpha"] > 0:
            assert run["anchor"] == "population"  # no v_ref in synthetic data
    lore = next(r for r in results["runs"] if r["K"] == 2)
    assert 1 <= lore["fewshot_early_stopping"]["best_step_median"] <= 40
    assert (out / "loss_curves.png").stat().st_size > 0
    selection = results["selection"]
    # alpha x v_l2 (0 and 0.01) x label_noise (0 and the default extra 0.1)
    assert len(selection["candidates"]) == 2 * 2 * 2
    assert selection["validation_split"]["split_by"] == "prompt"
    assert set(selection["test"]) == {"seen_train", "seen_test", "unseen_fewshot",
                                      "unseen_test"}
