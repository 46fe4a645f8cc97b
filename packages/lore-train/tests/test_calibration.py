"""Calibration: log-loss, Brier, ECE, and a temperature fitted on held-out seen pairs."""

from __future__ import annotations

import pytest
import torch

from lore_datasets import synthetic_benchmark
from lore_kernels import Likelihood
from lore_train import TrainConfig, fit, personalize
from lore_train.calibration import (
    evaluate_calibration,
    expected_calibration_error,
    fit_temperature,
    probabilities,
    scores,
)


@pytest.fixture(scope="module")
def planted():
    return synthetic_benchmark(seed=0, dim=16, rank=3, num_users=40, pairs_per_user=80)


def test_temperature_is_recovered_and_ece_tells_calibrated_from_overconfident():
    gen = torch.Generator().manual_seed(0)
    tau, T0 = 0.01, 2.5
    margin = torch.randn(20000, generator=gen, dtype=torch.float64) * 300
    first_wins = torch.rand(20000, generator=gen, dtype=torch.float64) < torch.sigmoid(tau * margin / T0)
    oriented = torch.where(first_wins, margin, -margin)  # rows are chosen-minus-rejected
    likelihood = Likelihood(tau)
    assert fit_temperature(oriented, likelihood) == pytest.approx(T0, rel=0.05)
    calibrated = probabilities(oriented, likelihood.tempered(T0))
    overconfident = probabilities(oriented, likelihood.tempered(T0 / 4))
    assert expected_calibration_error(calibrated) < 0.02
    assert expected_calibration_error(overconfident) > 0.1
    assert scores(calibrated)["log_loss"] < scores(overconfident)["log_loss"]
    # two bins by hand: confidences 0.6 (right) and 0.9 (wrong, p = 0.1) -> (|1 - 0.6| + |0 - 0.9|) / 2
    assert expected_calibration_error(torch.tensor([0.6, 0.1], dtype=torch.float64)) == pytest.approx(0.65)
    assert scores(torch.empty(0))["ece"] is None


def test_evaluate_calibration_fits_t_on_held_out_seen_pairs(planted):
    bench, _ = planted
    config = TrainConfig(K=3, steps=60, fewshot_steps=40)
    model, _ = fit(bench.seen_train, config, progress=False)
    model = personalize(model, bench.unseen_fewshot, config)
    out = evaluate_calibration(model, bench, config)
    assert 1e-3 <= out["temperature"] <= 1e3 and out["val_pairs"] > 0
    for key in ("seen_train", "unseen_test"):
        cal, raw = out[key]["calibrated"], out[key]["uncalibrated"]
        assert 0 <= cal["ece"] <= 0.5 and cal["n_pairs"] == raw["n_pairs"] > 0
