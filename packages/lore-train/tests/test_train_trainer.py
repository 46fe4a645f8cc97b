"""The trainer: schedules, reductions, special ranks, pruning, determinism."""

from __future__ import annotations

import pytest
import torch

from lore_datasets import PreferencePairs
from lore_train import (
    FewShotSettings,
    TrainConfig,
    fit,
    fit_few_shot,
    personalize,
    prune_columns,
    row_weights,
)
from lore_train.objective import alpha_at, cosine_penalty


def planted_pairs(num_users=12, per_user=30, dim=8, rank=2, seed=0) -> PreferencePairs:
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(dim, rank, generator=g)
    weights = torch.distributions.Dirichlet(torch.full((rank,), 0.5)).sample((num_users,))
    Z = torch.randn(num_users * per_user, dim, generator=g)
    user = torch.arange(num_users).repeat_interleave(per_user)
    Z = Z * torch.sign((Z @ V * weights[user]).sum(1))[:, None]
    return PreferencePairs(Z, user, [f"u{i}" for i in range(num_users)])


def test_alpha_ramp_matches_reference_cut_points():
    T, a = 100, 8.0
    assert alpha_at(0, T, a) == 0.0 and alpha_at(19, T, a) == 0.0
    assert alpha_at(20, T, a) == 0.0
    assert alpha_at(50, T, a) == pytest.approx(a * 30 / 60)
    assert alpha_at(80, T, a) == a and alpha_at(99, T, a) == a


def test_row_weights_reductions():
    pairs = PreferencePairs(torch.randn(6, 3), torch.tensor([0, 0, 0, 0, 1, 1]), ["a", "b", "c"])
    um = row_weights(pairs, "user_mean")
    assert torch.allclose(um, torch.tensor([0.25] * 4 + [0.5] * 2))
    assert row_weights(pairs, "pair_mean").sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reduction"):
        row_weights(pairs, "median")


def test_fit_is_seeded_and_reduces_the_loss():
    pairs = planted_pairs()
    config = TrainConfig(K=2, steps=200)
    m1, h1 = fit(pairs, config, progress=False)
    m2, _ = fit(pairs, config, progress=False)
    m3, _ = fit(pairs, config.with_(seed=1), progress=False)
    assert torch.equal(m1.V, m2.V) and torch.equal(m1.W, m2.W)
    assert not torch.equal(m1.V, m3.V)
    assert h1.loss[-1] < 0.8 * h1.loss[0]
    assert (m1.margin(pairs) > 0).float().mean() > 0.9


def test_rank_zero_is_the_reference_head():
    pairs = planted_pairs()
    v_ref = torch.randn(pairs.dim, generator=torch.Generator().manual_seed(1))
    model, history = fit(pairs, TrainConfig(K=0), v_ref=v_ref, progress=False)
    assert history.loss == [] and model.K == 0 and model.kept_rank == 1
    # the kernel sums in another order than the matmul: fp32 rounding, not exact
    assert torch.allclose(model.margin(pairs), pairs.features @ v_ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="v_ref"):
        fit(pairs, TrainConfig(K=0), progress=False)


def test_rank_one_is_a_shared_direction_and_unseen_users_need_no_fit():
    pairs = planted_pairs()
    model, _ = fit(pairs, TrainConfig(K=1, steps=30), progress=False)
    assert torch.allclose(model.weights(), torch.ones(pairs.num_users, 1))
    new = PreferencePairs(torch.randn(4, pairs.dim), torch.tensor([0, 0, 1, 1]), ["n0", "n1"])
    both = personalize(model, new, TrainConfig(K=1))
    expected = new.features @ model.V[:, 0]
    assert torch.allclose(both.margin(new), expected, atol=1e-5)
    assert both.seen == [True] * pairs.num_users + [False, False]


def test_alternating_mode_with_alpha_pulls_columns_toward_v_ref():
    pairs = planted_pairs()
    v_ref = torch.randn(pairs.dim, generator=torch.Generator().manual_seed(2))
    base = TrainConfig(K=3, steps=80, mode="alternating", w_init="uniform", reduction="pair_mean")
    free, _ = fit(pairs, base, v_ref=v_ref, progress=False)
    pulled, _ = fit(pairs, base.with_(alpha=100.0), v_ref=v_ref, progress=False)
    assert cosine_penalty(pulled.V, v_ref) < 0.1
    assert cosine_penalty(pulled.V, v_ref) < cosine_penalty(free.V, v_ref)
    # without v_ref the default anchor is the population head; anchor="v_ref" insists
    with pytest.raises(ValueError, match="anchor='v_ref'"):
        fit(pairs, base.with_(alpha=1.0, anchor="v_ref"), progress=False)


def test_pruning_drops_unused_columns_and_renormalizes():
    pairs = planted_pairs()
    model, _ = fit(pairs, TrainConfig(K=3, steps=5), progress=False)
    with torch.no_grad():
        model.W[:, 1] = -30.0  # no user weighs column 1
    pruned = prune_columns(model, 1e-2)
    assert pruned.kept_rank == 2 and pruned.K == 3
    assert pruned.meta["kept_columns"] == [0, 2]
    assert torch.allclose(pruned.weights().sum(1), torch.ones(pairs.num_users))
    assert torch.allclose(pruned.margin(pairs), model.margin(pairs), atol=1e-4)


def test_few_shot_users_without_pairs_get_uniform_weights():
    pairs = PreferencePairs(torch.randn(5, 4), torch.tensor([0, 0, 0, 2, 2]), ["a", "b", "c"])
    W = fit_few_shot(torch.randn(4, 3), pairs, FewShotSettings(steps=10, seed=0))
    assert W.shape == (3, 3)
    assert torch.equal(W[1], torch.zeros(3))
    assert not torch.equal(W[0], torch.zeros(3))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="sideways")
    with pytest.raises(ValueError, match="K"):
        TrainConfig(K=-1)
    preset = TrainConfig.preset("reference-regularized", K=5)
    assert preset.mode == "alternating" and preset.alpha == 1e4 and preset.K == 5
