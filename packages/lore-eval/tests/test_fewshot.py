"""Few-shot curves: more shots help on planted data, short users are reported, trials batch."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from lore_datasets import Benchmark, synthetic_benchmark
from lore_eval.cli import main
from lore_eval.fewshot import draw_shots, fewshot_curve
from lore_train import PersonalRewardModel
from lore_train.results import new_results, write_results

SHOTS = (1, 2, 5, 10, 20, 50)


def planted_model(bench: Benchmark, oracle, columns: int | None = None) -> PersonalRewardModel:
    """The planted basis as a 'checkpoint' for the seen users: the curve is then
    about fitting the few-shot weights, not about estimating V."""
    V = oracle.V if columns is None else oracle.V[:, :columns]
    seen = bench.seen_train.user_ids
    return PersonalRewardModel(V, torch.zeros(len(seen), V.shape[1]), seen, tau=oracle.tau)


@pytest.fixture(scope="module")
def planted():
    # 10 unseen users with 53-61 pool pairs each (>= 50, so no point loses users).
    return synthetic_benchmark(seed=0, dim=16, rank=3, num_users=40, pairs_per_user=80)


def test_more_shots_are_no_worse_beyond_noise_on_planted_users(planted):
    bench, oracle = planted
    trials = 20
    curve = fewshot_curve(planted_model(bench, oracle), bench, SHOTS, trials, seed=0, steps=200,
                          prior="none")  # maximum likelihood: the shots alone
    points = curve["points"]
    assert [p["shots"] for p in points] == list(SHOTS)
    assert all(p["n_users"] == 10 and p["short_users"]["count"] == 0 for p in points)
    test = [p["unseen_prompts"] for p in points]
    # Each point is the mean of `trials` independent trial scores (own draws
    # and inits), so its standard error is std / sqrt(trials) and two points
    # differ by noise with SE sqrt(se_a^2 + se_b^2). A curve that is
    # non-decreasing in expectation falls more than 3 such SEs below the
    # previous point with probability ~0.1% per step.
    se = [t["std"] / math.sqrt(trials) for t in test]
    for i in range(1, len(test)):
        allowed = 3 * math.hypot(se[i - 1], se[i])
        assert test[i]["mean"] >= test[i - 1]["mean"] - allowed, (i, test)
    # ... and the shots matter: 50 pairs beat 1 pair by far more than noise.
    assert test[-1]["mean"] >= test[0]["mean"] + 3 * math.hypot(se[0], se[-1]) + 0.05
    assert len(test[0]["per_trial"]) == trials


def test_users_with_too_few_pool_pairs_are_skipped_and_listed(planted):
    bench, oracle = planted
    pool = bench.unseen_fewshot
    offsets = pool.offsets.tolist()
    keep = [r for u in range(pool.num_users) for r in range(offsets[u], offsets[u + 1])
            if not (u == 0 and r >= offsets[u] + 3) and not (u == 1 and r >= offsets[u] + 8)]
    trimmed = Benchmark(bench.seen_train, bench.seen_test, pool.select_rows(keep),
                        bench.unseen_test, meta=bench.meta)
    curve = fewshot_curve(planted_model(bench, oracle), trimmed, (3, 5, 10), 4, steps=20)
    by_shots = {p["shots"]: p for p in curve["points"]}
    u0, u1 = pool.user_ids[:2]
    assert by_shots[3]["short_users"] == {"count": 0, "ids": [], "rule": by_shots[3]["short_users"]["rule"]}
    assert by_shots[5]["short_users"]["ids"] == [u0] and by_shots[5]["n_users"] == 9
    assert by_shots[10]["short_users"]["ids"] == [u0, u1] and by_shots[10]["n_users"] == 8
    assert by_shots[10]["unseen_prompts"]["n_users"] == 8
    assert "skipped" in by_shots[10]["short_users"]["rule"]


def test_draws_are_distinct_rows_of_the_right_user_and_seeded(planted):
    bench, _ = planted
    pool = bench.unseen_fewshot
    users = torch.arange(pool.num_users).numpy()
    rows = draw_shots(pool, users, 7, 5, seed=3)
    assert rows.shape == (5, pool.num_users, 7)
    assert bool((pool.user[rows] == torch.arange(pool.num_users)[None, :, None]).all())
    assert all(len(set(r.tolist())) == 7 for r in rows.reshape(-1, 7))
    assert torch.equal(rows, draw_shots(pool, users, 7, 5, seed=3))
    assert not torch.equal(rows, draw_shots(pool, users, 7, 5, seed=4))
    assert not torch.equal(rows[0], rows[1])  # trials differ


def test_rank_one_fits_nothing_so_unseen_prompt_accuracy_is_fixed(planted):
    bench, oracle = planted
    model = planted_model(bench, oracle, columns=1)
    curve = fewshot_curve(model, bench, (2, 10), 6, steps=50)
    test = bench.unseen_test
    margin = test.features @ oracle.V[:, 0]
    right = torch.zeros(test.num_users).index_add_(0, test.user, (margin > 0).float())
    expected = float((right / test.pairs_per_user()).mean())
    for p in curve["points"]:
        assert p["unseen_prompts"]["std"] < 1e-9
        assert p["unseen_prompts"]["mean"] == pytest.approx(expected, abs=1e-6)


def test_a_checkpoint_trained_on_the_unseen_users_is_refused(planted):
    bench, oracle = planted
    leaky = PersonalRewardModel(oracle.V, torch.zeros(2, 3), bench.unseen_fewshot.user_ids[:2])
    with pytest.raises(ValueError, match="trained on 2 of this benchmark's unseen users"):
        fewshot_curve(leaky, bench, (1,), 2)


def test_cli_fewshot_on_a_run_dir_writes_json_csv_and_plot(tmp_path, capsys):
    # The default synthetic data set is what `--dataset synthetic` loads.
    bench, oracle = synthetic_benchmark()
    run = tmp_path / "run"
    planted_model(bench, oracle).save(run / "checkpoints" / "K3_alpha0")
    results = new_results({"data": {"dataset": "synthetic"}, "split": bench.meta["split"]["config"]},
                          bench.meta, "cpu")
    write_results(results, run / "results.json")

    code = main(["fewshot", "--run", str(run), "--shots", "2", "8", "--trials", "3",
                 "--steps", "30", "--device", "cpu"])
    assert code == 0
    doc = json.loads((run / "fewshot.json").read_text())
    assert doc["config"]["trials"] == 3 and doc["dataset"]["source"] == "synthetic"
    (curve,) = doc["curves"]
    assert curve["K"] == 3 and [p["shots"] for p in curve["points"]] == [2, 8]
    with (run / "fewshot.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["shots"] for r in rows] == ["2", "8"] and rows[0]["K"] == "3"
    assert (run / "accuracy_vs_shots.png").stat().st_size > 10_000
    assert "unseen prompts" in capsys.readouterr().out


def test_cli_fewshot_without_checkpoints_is_a_one_line_error(capsys):
    assert main(["fewshot", "--dataset", "synthetic"]) == 2
    assert "--run RUN_DIR or --checkpoint" in capsys.readouterr().err


def test_newton_and_adam_curves_agree_under_the_population_prior(planted):
    """The Newton MAP is what enough Adam steps converge to: same accuracy, each
    curve says which solver made it."""
    bench, oracle = planted
    model = planted_model(bench, oracle)
    with torch.no_grad():  # seen users spread over the columns, so the prior is informative
        model.W.copy_(2 * torch.randn(model.W.shape, generator=torch.Generator().manual_seed(0)))
    curves = {solver: fewshot_curve(model, bench, (2, 10), 2, seed=0, steps=500, lr=0.1,
                                    prior="population", solver=solver)
              for solver in ("newton", "adam")}
    for solver, curve in curves.items():
        assert curve["solver"] == solver and curve["prior_scale"] == 1.0
    for a, b in zip(curves["newton"]["points"], curves["adam"]["points"], strict=True):
        assert a["unseen_prompts"]["mean"] == pytest.approx(b["unseen_prompts"]["mean"], abs=0.02)
    with pytest.raises(ValueError, match="solver"):
        fewshot_curve(model, bench, (2,), 1, solver="lbfgs")
