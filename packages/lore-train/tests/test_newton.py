"""The Newton few-shot solver: the exact MAP, batched, agreeing with Adam and autograd."""

from __future__ import annotations

import pytest
import torch

from lore_datasets import PreferencePairs
from lore_kernels import Likelihood
from lore_train import FewShotSettings, PersonalRewardModel, TrainConfig, fit_few_shot
from lore_train.newton import newton_map
from lore_train.posterior import laplace_precision

ALPHA = torch.tensor([0.5, 1.0, 2.0, 0.3])
TAU = 0.01


def rows(M: int = 60, N: int = 3, K: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    P = 100 * torch.randn(M, K, generator=gen, dtype=torch.float64)
    return P, torch.sort(torch.randint(0, N, (M,), generator=gen)).values


def objective(W: torch.Tensor, P: torch.Tensor, user: torch.Tensor, prior, eps: float,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """f(W) summed over users, written with autograd-friendly ops (the reference's row terms)."""
    S = torch.softmax(W, 1)
    margin = (P * S[user]).sum(1)
    N = W.shape[0]
    c = torch.ones(len(P), dtype=P.dtype) if weight is None else weight.to(P.dtype)
    mean_c = torch.zeros(N, dtype=P.dtype).index_add_(0, user, c) / torch.bincount(
        user, minlength=N).clamp(min=1)
    nll = Likelihood(TAU, eps).terms(margin, c / mean_c[user])[0].sum()
    if prior is None:
        return nll + 0.5 * W.square().sum()
    return nll - (torch.log_softmax(W, 1) * prior.to(W)).sum()


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("with_prior", [True, False])
def test_the_map_is_stationary_in_fp64(eps, with_prior):
    P, user = rows()
    prior = ALPHA if with_prior else None
    weight = torch.rand(len(P), generator=torch.Generator().manual_seed(1)) + 0.5
    result = newton_map(P, user, 3, Likelihood(TAU, eps), prior=prior, weight=weight, tol=1e-9)
    assert bool(result.converged.all()) and result.iterations <= 15, result
    W = result.W.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(W, P, user, prior, eps, weight), W)
    assert grad.abs().max() < 1e-8, grad
    torch.testing.assert_close(result.grad_norm, grad.norm(dim=1), atol=1e-9, rtol=0)
    # a small move in any direction (off the softmax shift) raises f: a minimum, not a saddle
    f0 = objective(result.W, P, user, prior, eps, weight)
    for k in range(4):
        bump = torch.zeros_like(result.W)
        bump[:, k] = 1e-3
        assert objective(result.W + bump, P, user, prior, eps, weight) > f0 - 1e-12


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_agrees_with_the_converged_adam_path(eps):
    P, user = rows()
    pairs = PreferencePairs(P.float(), user, ["a", "b", "c"])
    adam = fit_few_shot(torch.eye(4), pairs, FewShotSettings(
        steps=1500, lr=0.02, likelihood=Likelihood(TAU, eps), solver="adam"), prior=ALPHA)
    newton = newton_map(P.float(), user, 3, Likelihood(TAU, eps), prior=ALPHA)
    torch.testing.assert_close(torch.softmax(newton.W, 1).float(), torch.softmax(adam, 1),
                               atol=1e-4, rtol=0)
    # and fit_few_shot's default solver is this one
    torch.testing.assert_close(fit_few_shot(torch.eye(4), pairs, FewShotSettings(likelihood=Likelihood(TAU, eps)),
                                            prior=ALPHA),
                               newton.W.float(), atol=1e-6, rtol=0)


def test_precision_is_the_laplace_posteriors():
    P, user = rows()
    for prior in (ALPHA, None):
        result = newton_map(P, user, 3, Likelihood(TAU, 0.1), prior=prior)
        expected = laplace_precision(P, user, result.W, Likelihood(TAU, 0.1), prior)
        torch.testing.assert_close(result.precision, expected)


def test_batched_equals_one_by_one_and_row_order_does_not_matter():
    P, user = rows(M=90, N=5)
    together = newton_map(P, user, 5, Likelihood(TAU), prior=ALPHA, tol=1e-10)
    perm = torch.randperm(len(P), generator=torch.Generator().manual_seed(3))
    shuffled = newton_map(P[perm], user[perm], 5, Likelihood(TAU), prior=ALPHA, tol=1e-10)
    torch.testing.assert_close(shuffled.W, together.W, atol=1e-9, rtol=0)
    for u in range(5):
        mine = user == u
        alone = newton_map(P[mine], torch.zeros(int(mine.sum()), dtype=torch.int64), 1, Likelihood(TAU),
                           prior=ALPHA, tol=1e-10)
        torch.testing.assert_close(alone.W[0], together.W[u], atol=1e-9, rtol=0)
        torch.testing.assert_close(alone.precision[0], together.precision[u])


def test_users_without_rows_get_the_prior_mean():
    P, user = rows(N=3)
    user = torch.where(user == 1, torch.full_like(user, 0), user)  # user 1 has no rows
    with_prior = newton_map(P, user, 4, Likelihood(TAU), prior=ALPHA)  # user 3: none either
    for u in (1, 3):
        torch.testing.assert_close(torch.softmax(with_prior.W[u], 0), ALPHA.double() / ALPHA.sum())
    flat = newton_map(P, user, 4, Likelihood(TAU), prior=None)
    assert torch.equal(flat.W[1], torch.zeros(4, dtype=torch.float64))
    empty = newton_map(P[:0], user[:0], 2, Likelihood(TAU), prior=ALPHA)
    assert empty.iterations == 0 and bool(empty.converged.all())


def test_k_one_is_trivial():
    P, user = rows(K=1)
    result = newton_map(P, user, 3, Likelihood(TAU), prior=torch.ones(1))
    assert torch.equal(result.W, torch.zeros(3, 1, dtype=torch.float64)) and result.iterations == 0


def test_bad_inputs_are_one_line_errors():
    P, user = rows()
    with pytest.raises(ValueError, match="prior has shape"):
        newton_map(P, user, 3, Likelihood(TAU), prior=torch.ones(3))
    with pytest.raises(ValueError, match="row owners"):
        newton_map(P, user, 2, Likelihood(TAU))
    with pytest.raises(ValueError, match="label_noise"):
        newton_map(P, user, 3, Likelihood(TAU, 0.5))


def test_a_strong_label_noise_fit_falls_back_to_the_fisher_step():
    """Far from the MAP the label-noise objective is not convex; the solve still converges."""
    P, user = rows(M=40, N=2)
    start = torch.tensor([[8.0, -8.0, 0.0, 0.0], [-8.0, 0.0, 8.0, 0.0]], dtype=torch.float64)
    result = newton_map(P, user, 2, Likelihood(TAU, 0.3), prior=ALPHA, init=start, tol=1e-9)
    ref = newton_map(P, user, 2, Likelihood(TAU, 0.3), prior=ALPHA, tol=1e-9)
    assert bool(result.converged.all())
    torch.testing.assert_close(torch.softmax(result.W, 1), torch.softmax(ref.W, 1), atol=1e-6,
                               rtol=0)


def small_model(K: int = 3, d: int = 16) -> PersonalRewardModel:
    gen = torch.Generator().manual_seed(7)
    V = 30 * torch.randn(d, K, generator=gen)
    W = 2 * torch.randn(20, K, generator=gen)
    return PersonalRewardModel(V, W, [f"s{i}" for i in range(20)], tau=TAU,
                               train_config=TrainConfig(K=K, label_noise=0.05))


def test_adapt_solves_by_newton_by_default_and_stores_its_precision():
    model = small_model()
    diffs = torch.randn(25, 16, generator=torch.Generator().manual_seed(2))
    model.adapt("new", diffs)
    P = diffs @ model.V.detach()
    expected = newton_map(P, torch.zeros(25, dtype=torch.int64), 1, Likelihood(TAU, 0.05),
                          prior=model.population_prior())
    torch.testing.assert_close(model.W.detach()[-1], expected.W[0].float())
    torch.testing.assert_close(model._posteriors["new"], expected.precision[0])
    model.adapt("new", diffs, replace=True, solver="adam", steps=1000, lr=0.05)
    torch.testing.assert_close(model.weights()[-1].double(), torch.softmax(expected.W[0], 0),
                               atol=1e-4, rtol=0)


def test_delta_method_std_matches_posterior_draws_when_the_posterior_is_narrow():
    model = small_model()
    gen = torch.Generator().manual_seed(3)
    model.adapt("new", torch.randn(200, 16, generator=gen))
    a, b = torch.randn(2, 50, 16, generator=gen)
    rewards, std = model.score(a, "new", return_std=True)
    _, std_draws = model.score(a, "new", return_std=True, method="draws")
    torch.testing.assert_close(rewards, model.score(a, "new"))
    assert (std > 0).all()
    torch.testing.assert_close(std, std_draws, rtol=0.15, atol=1e-3 * float(std.max()))
    p, p_std = model.preference_probability(a, b, "new")
    p_draws, p_std_draws = model.preference_probability(a, b, "new", method="draws")
    torch.testing.assert_close(p, p_draws, atol=0.03, rtol=0)  # at the MAP vs averaged
    torch.testing.assert_close(p_std, p_std_draws, rtol=0.2, atol=2e-3)
    with pytest.raises(ValueError, match="method"):
        model.score(a, "new", return_std=True, method="exact")


def test_config_solver_field_and_presets():
    assert TrainConfig().fewshot_solver == "newton"
    assert TrainConfig.preset("reference-regularized").fewshot_solver == "adam"
    assert TrainConfig.from_dict(TrainConfig(fewshot_solver="adam").to_dict()).fewshot_solver == "adam"
    with pytest.raises(ValueError, match="fewshot_solver"):
        TrainConfig(fewshot_solver="lbfgs")
    with pytest.raises(ValueError, match="fewshot_prior_scale"):
        TrainConfig(fewshot_prior_scale=-1.0)
    assert TrainConfig().fewshot_prior_scale == 1.0  # 0 would choose it by empirical Bayes
