"""benchmarks/bench_adapt.py once, untimed, at small sizes (the CI run): every case
runs end to end, measures both paths and agrees with the old one.

    python benchmarks/bench_adapt.py            # the real sizes, with ratios and targets
"""

from __future__ import annotations

import json


def test_bench_adapt_runs_and_the_new_paths_agree_with_the_old(bench_adapt, tmp_path):
    out = tmp_path / "adapt.json"
    result = bench_adapt.main(["--quick", "--repeat", "2", "--d", "64", "--json", str(out)])
    rows = {row["case"].split()[0]: row for row in result["results"]}
    assert result["threads"] == 1 and json.loads(out.read_text())["results"]
    for row in result["results"]:
        assert row["speedup"] > 0 and row["target_ms"] > 0
    # the Newton MAP and 500 Adam steps land on the same weights for one user
    assert rows["adapt"]["weights_l1_newton_vs_adam500"] < 1e-3
    # the delta-method std is the draws' to within their spread
    assert 0.5 < rows["score+std"]["median_std_ratio_delta_over_draws"] < 1.5
    assert rows["few-shot"]["users"] == 200
