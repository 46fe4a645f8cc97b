"""`lore-eval report`: results.json as markdown with ref and BT beside every K, plus plots."""

from __future__ import annotations

import pytest

from lore_datasets import SPLITS
from lore_eval.cli import main
from lore_eval.fewshot_files import write_fewshot
from lore_eval.report import format_markdown
from lore_train.results import new_results, write_results


def run(K: int, alpha: float, mean: float) -> dict:
    cell = {"mean": mean, "std": 0.1, "n_users": 4, "per_user": {}}
    return {"K": K, "alpha": alpha, "kept_rank": max(K, 1), "train_seconds": 1.5,
            **{key: cell for key in SPLITS}}


def fake_results(runs: list[dict]) -> dict:
    results = new_results({}, {"source": "toy"}, "cpu")
    results["runs"] = runs
    return results


def table_rows(markdown: str, alpha: str) -> list[list[str]]:
    """The data rows of the table under '## alpha = <alpha>'."""
    section = markdown.split(f"## alpha = {alpha}\n", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()[2:]]


def test_every_alpha_table_starts_with_ref_and_bt_beside_the_lore_ranks():
    runs = [{"K": 0, "alpha": 0.0, "skipped": "no reference head (v_ref) in this data"},
            run(1, 0.0, 0.70), run(2, 0.0, 0.80), run(3, 0.0, 0.85),
            run(2, 10.0, 0.81)]
    text = format_markdown(fake_results(runs))
    plain = table_rows(text, "0")
    assert [r[0] for r in plain] == ["ref", "BT", "K=2", "K=3"]
    assert plain[0][4] == "skipped: no reference head (v_ref) in this data"
    assert plain[1][4:8] == ["0.700 ± 0.100 (4)"] * 4
    assert [r[1] for r in plain] == ["0", "1", "2", "3"]
    # alpha = 10 has no K = 0 or 1 of its own: the reference head does not
    # depend on alpha (shown from alpha 0); BT does, and says it is missing.
    regularized = table_rows(text, "10")
    assert [r[0] for r in regularized] == ["ref", "BT", "K=2"]
    assert regularized[0][4].startswith("skipped")
    assert regularized[1][4] == "not in this run (add 1 to --K)"
    assert regularized[2][4] == "0.810 ± 0.100 (4)"


def test_report_includes_the_selection_when_present():
    results = fake_results([run(1, 0.0, 0.7), run(2, 0.0, 0.8)])
    validation = {"mean": 0.75, "std": 0.2, "n_users": 4}
    results["selection"] = {
        "chosen": {"K": 2, "alpha": 0.0, "validation": validation}, "rule": "best",
        "val_fraction": 0.2, "seed": 0, "validation_pairs": 12, "training_pairs": 48,
        "candidates": [{"K": k, "alpha": 0.0, "validation": validation, "kept_rank": k,
                        "train_seconds": 0.1, "skipped": None} for k in (1, 2)],
        "test": {key: {"mean": 0.8, "std": 0.1, "n_users": 4} for key in SPLITS},
    }
    text = format_markdown(results)
    assert "selected K=2, alpha=0 by validation accuracy 0.750 ± 0.200 (4)" in text
    assert "- seen users, unseen prompts: 0.800 ± 0.100 (4)" in text


@pytest.mark.parametrize("with_fewshot", [False, True])
def test_cli_report_writes_report_md_and_redraws_the_plots(tmp_path, capsys, with_fewshot):
    write_results(fake_results([run(1, 0.0, 0.7), run(2, 0.0, 0.8)]), tmp_path / "results.json")
    if with_fewshot:
        point = {"shots": 5, "n_users": 3, "fit_seconds": 0.1,
                 "short_users": {"count": 1, "ids": ["u9"], "rule": "skipped"},
                 "fewshot_train": {"mean": 0.9, "std": 0.05, "per_trial": [0.85, 0.95]},
                 "unseen_prompts": {"mean": 0.7, "std": 0.02, "per_trial": [0.68, 0.72],
                                    "n_users": 3}}
        curve = {"checkpoint": "checkpoints/K2_alpha0", "K": 2, "kept_rank": 2, "alpha": 0.0,
                 "trials": 2, "points": [point, {**point, "shots": 1, "n_users": 4}]}
        write_fewshot({"config": {"trials": 2}, "dataset": {"source": "toy"}, "curves": [curve]},
                      tmp_path)
        (tmp_path / "accuracy_vs_shots.png").unlink()
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "report.md").read_text()
    assert "| BT | 1 | 0 | 1 | 0.700 ± 0.100 (4)" in out
    assert (tmp_path / "accuracy_vs_rank.png").stat().st_size > 10_000
    assert (tmp_path / "accuracy_vs_shots.png").exists() == with_fewshot
    assert ("| 5 | 3 | 1 | 0.900 ± 0.050 | 0.700 ± 0.020 (3) |" in out) == with_fewshot


def test_cli_report_redraws_loss_curves_only_for_early_stopped_runs(tmp_path, capsys):
    write_results(fake_results([run(2, 0.0, 0.8)]), tmp_path / "results.json")
    assert main(["report", str(tmp_path)]) == 0
    assert not (tmp_path / "loss_curves.png").exists()
    curves = {"best_step": 20, "train_steps": [0, 10, 20, 30], "train_loss": [0.7, 0.6, 0.5, 0.4],
              "val_steps": [0, 10, 20, 30], "val_loss": [0.7, 0.65, 0.62, 0.64]}
    write_results(fake_results([{**run(2, 0.0, 0.8), "early_stopping": curves}]),
                  tmp_path / "results.json")
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "loss_curves.png").stat().st_size > 10_000
    assert "loss_curves.png" in capsys.readouterr().err


def test_cli_report_on_a_directory_without_results_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_report_shows_calibration_at_the_fitted_temperature_when_present():
    cell = {"calibrated": {"log_loss": 0.5, "brier": 0.17, "ece": 0.031, "n_pairs": 9},
            "uncalibrated": {"log_loss": 0.6, "brier": 0.2, "ece": 0.09, "n_pairs": 9}}
    calibrated = {**run(2, 0.0, 0.7), "calibration": {"temperature": 1.29,
                                                      **{key: cell for key in SPLITS}}}
    text = format_markdown(fake_results([run(1, 0.0, 0.6), calibrated]))
    assert "## Calibration of P(chosen preferred)" in text
    row = next(line for line in text.splitlines() if line.startswith("| 2 | 0 | 1.29 |"))
    assert row.count("0.500 / 0.170 / 0.031") == len(SPLITS)
    assert "Calibration" not in format_markdown(fake_results([run(1, 0.0, 0.6)]))


def test_fewshot_json_is_written_last(tmp_path, monkeypatch):
    """A failure while writing the csv or the plot leaves the earlier fewshot.json,
    so a fewshot.json that is new always comes with its csv and plot."""
    import lore_eval.fewshot_files as files

    point = {"shots": 1, "n_users": 2, "fit_seconds": 0.1,
             "short_users": {"count": 0, "ids": [], "rule": "skipped"},
             "fewshot_train": {"mean": 0.9, "std": 0.0, "per_trial": [0.9]},
             "unseen_prompts": {"mean": 0.7, "std": 0.0, "per_trial": [0.7], "n_users": 2}}
    doc = {"config": {"trials": 1}, "dataset": {"source": "toy"},
           "curves": [{"K": 2, "kept_rank": 2, "alpha": 0.0, "trials": 1, "points": [point]}]}
    write_fewshot(doc, tmp_path)
    before = (tmp_path / "fewshot.json").read_bytes()

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files, "plot_accuracy_vs_shots", broken_plot)
    changed = {**doc, "config": {"trials": 1, "note": "second run"}}
    with pytest.raises(OSError, match="disk full"):
        write_fewshot(changed, tmp_path)
    assert (tmp_path / "fewshot.json").read_bytes() == before
