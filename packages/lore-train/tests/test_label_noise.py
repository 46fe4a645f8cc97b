"""The label-noise likelihood (TrainConfig.label_noise) in every fit and prediction."""

from __future__ import annotations

import json

import pytest
import torch

from lore_datasets import SplitConfig, synthetic_benchmark
from lore_kernels import Likelihood
from lore_kernels.reference import lowrank_bt_reference
from lore_train import PersonalRewardModel, TrainConfig, fit, personalize
from lore_train.cli import _check_arguments, build_parser, main
from lore_train.posterior import laplace_precision
from lore_train.selection import SELECT_LABEL_NOISE, SelectionSettings, variant_grid
from lore_train.solver import logit_gradient


def test_fewshot_gradient_with_label_noise_is_the_reference_losss_gradient():
    g = torch.Generator().manual_seed(1)
    P = 30 * torch.randn(40, 3, generator=g, dtype=torch.float64)  # logits of either sign, large
    user = torch.randint(0, 6, (40,), generator=g)
    c = torch.rand(40, generator=g, dtype=torch.float64)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    loss = lowrank_bt_reference(P, user, c, torch.eye(3, dtype=torch.float64),
                                torch.softmax(W, dim=1), 0.3, 0.1)[0]
    (expected,) = torch.autograd.grad(loss, W)
    torch.testing.assert_close(logit_gradient(P, user, c, W.detach(), Likelihood(0.3, 0.1)),
                               expected)


def test_fisher_is_the_expected_squared_score():
    logit = torch.linspace(-30, 30, 121, dtype=torch.float64, requires_grad=True)
    for eps in (0.0, 0.1):
        likelihood = Likelihood(1.0, eps)
        p = likelihood.probability(logit)
        (dp,) = torch.autograd.grad(p.sum(), logit)
        # E[(d log P(y)/dx)^2] over y ~ Bernoulli(p): p (p'/p)^2 + (1 - p) (p'/(1 - p))^2
        direct = dp**2 / p + dp**2 / (1 - p)
        torch.testing.assert_close(likelihood.fisher(logit.detach()), direct.detach(),
                                   rtol=1e-9, atol=1e-15)  # 1 - p rounds at |x| ~ 30


def test_config_refuses_label_noise_outside_its_range():
    for bad in (-0.01, 0.5, 0.7):
        with pytest.raises(ValueError, match=r"label_noise must be in \[0, 0.5\)"):
            TrainConfig(label_noise=bad)


def _largest_angle(V: torch.Tensor, truth: torch.Tensor) -> float:
    Q1, _ = torch.linalg.qr(V.double())
    Q2, _ = torch.linalg.qr(truth.double())
    cosines = torch.linalg.svdvals(Q2.T @ Q1).clamp(max=1)
    return float(torch.rad2deg(torch.arccos(cosines.min())))


def test_label_noise_recovers_a_planted_basis_from_flipped_labels_better():
    """Labels flipped at random (10 %) drag the plain Bradley-Terry basis toward the
    flipped pairs; the likelihood that expects flips stays closer to the truth and
    predicts held-out prompts better."""
    bench, oracle = synthetic_benchmark(SplitConfig(seed=0), label_noise=0.1)
    config = TrainConfig(K=3, lr=5.0, lr_w=0.05, w_init="zeros", seed=0)
    angles, accuracy = {}, {}
    for eps in (0.0, 0.1):
        model, _ = fit(bench.seen_train, config.with_(label_noise=eps), progress=False)
        angles[eps] = _largest_angle(model.V.detach(), oracle.V)
        margin = model.margin(bench.seen_test)
        accuracy[eps] = float((margin > 0).float().mean())
    assert angles[0.1] < angles[0.0] - 2.0, angles
    assert accuracy[0.1] > accuracy[0.0], accuracy


def test_a_noisy_model_keeps_its_likelihood_through_save_load_and_predictions(tmp_path):
    bench, _ = synthetic_benchmark(SplitConfig(seed=0))
    config = TrainConfig(K=2, steps=50, fewshot_steps=20, label_noise=0.2)
    model, _ = fit(bench.seen_train, config, progress=False)
    model = personalize(model, bench.unseen_fewshot, config)
    loaded = PersonalRewardModel.load(model.save(tmp_path / "m"))
    assert loaded.likelihood == Likelihood(loaded.tau, 0.2)
    user = bench.unseen_fewshot.user_ids[0]
    chosen = 1e4 * torch.randn(5, bench.seen_train.dim)  # sure predictions either way
    loaded.adapt(user, bench.unseen_fewshot.select_users([user]), replace=True)
    p, _ = loaded.preference_probability(chosen, -chosen, user)
    assert bool(((p >= 0.2 - 1e-6) & (p <= 0.8 + 1e-6)).all()), p
    assert float((p - 0.5).abs().max()) > 0.29  # and they do reach the noise's bounds


def test_label_noise_widens_the_posterior_of_sure_predictions():
    g = torch.Generator().manual_seed(0)
    P = 300 * torch.randn(50, 3, generator=g, dtype=torch.float64)
    user = torch.zeros(50, dtype=torch.int64)
    W = torch.zeros(1, 3, dtype=torch.float64)
    plain = laplace_precision(P, user, W, Likelihood(0.01))
    noisy = laplace_precision(P, user, W, Likelihood(0.01, 0.1))
    assert float(torch.linalg.eigvalsh(plain - noisy).min()) >= -1e-9  # noisy <= plain
    assert float(torch.trace(noisy[0])) < float(torch.trace(plain[0]))


def test_select_tries_label_noise_with_every_v_l2(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset", "synthetic", "--K", "1", "2", "--steps", "30", "--fewshot-steps", "10",
            "--select-label-noise", "0.05", "--select-v-l2", "0.01", "--out", str(out),
            "--no-progress", "--no-early-stopping"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["select"]["variants"] == [
        {}, {"label_noise": 0.05}, {"v_l2": 0.01}, {"v_l2": 0.01, "label_noise": 0.05}]
    tried = {(c["K"], json.dumps(c["variant"], sort_keys=True))
             for c in results["selection"]["candidates"]}
    assert len(tried) == 8


def test_default_selection_tries_the_label_noise_and_none_turns_it_off():
    config = TrainConfig()
    assert variant_grid(config) == [{}] + [{"label_noise": e} for e in SELECT_LABEL_NOISE]
    assert SelectionSettings().variants(config) == variant_grid(config)  # the library = the command
    assert variant_grid(config, label_noise=()) == [{}]
    assert variant_grid(config.with_(label_noise=0.1)) == [{}]
    args = build_parser().parse_args(["--dataset", "synthetic"])
    assert _check_arguments(args, config, [0.0]) == SelectionSettings()
    args = build_parser().parse_args(["--dataset", "synthetic", "--select-label-noise"])
    assert _check_arguments(args, config, [0.0]).variants(config) == [{}]
    args = build_parser().parse_args(["--dataset", "synthetic", "--no-select"])
    assert _check_arguments(args, config, [0.0]) is None
