"""Empirical Bayes for the population prior's strength (lore_train.prior_scale)."""

from __future__ import annotations

import numpy as np
import torch

from lore_datasets import PreferencePairs
from lore_train import PersonalRewardModel, TrainConfig
from lore_train.prior_scale import choose_for_new_users, choose_prior_scale

TAU = 0.01


def population(alpha: list[float], users: int = 60, pairs: int = 40, d: int = 12, seed: int = 0):
    """Users whose true weights are Dirichlet(alpha) draws, their Bradley-Terry pairs, and a
    model holding V and those weights (as a perfect joint fit would)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    K = len(alpha)
    V = 40 * torch.randn(d, K, generator=gen)
    S = torch.from_numpy(rng.dirichlet(alpha, size=users)).to(torch.float32).clamp(min=1e-6)
    Z = torch.randn(users * pairs, d, generator=gen)
    user = torch.arange(users).repeat_interleave(pairs)
    margin = ((Z @ V) * S[user]).sum(1)
    flip = torch.rand(len(Z), generator=gen) > torch.sigmoid(TAU * margin)
    Z[flip] = -Z[flip]  # rows oriented chosen - rejected
    ids = [f"u{i}" for i in range(users)]
    model = PersonalRewardModel(V, S.log(), ids, tau=TAU,
                                train_config=TrainConfig(K=K, fewshot_prior_scale=0.0))
    return model, PreferencePairs(Z, user, ids)


def test_a_correct_prior_keeps_its_strength_and_the_choice_is_seeded():
    model, pairs = population([2.0, 2.0, 2.0])
    choice = choose_prior_scale(model, pairs, shots=(1, 5, 20), trials=1)
    assert set(choice["scores"]) == {f"1/{c:g}" for c in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16)}
    assert 0.5 <= choice["scale"] <= 2.0 and choice["mean_weight"] == 1.0, choice
    assert choose_prior_scale(model, pairs, shots=(1, 5, 20), trials=1) == choice
    # the held-out likelihood falls off on both sides of the choice
    scores = choice["scores"]
    assert scores["1/0.125"] < scores[f"1/{choice['scale']:g}"] > scores["1/16"]


def test_a_prior_fitted_too_strong_is_weakened():
    """The model's seen weights are shrunk toward the mean (an over-regularized joint fit):
    the Dirichlet fitted to them is too concentrated, and the data say so."""
    model, pairs = population([0.5, 0.5, 0.5], seed=1)
    with torch.no_grad():
        S = torch.softmax(model.W, 1)
        model.W.copy_((0.2 * S + 0.8 / 3).log())
    choice = choose_prior_scale(model, pairs, shots=(1, 5, 20), trials=1)
    assert choice["scale"] <= 0.25, choice


def test_personalize_stores_the_chosen_scale_and_the_prior_uses_it():
    from lore_train import personalize

    model, pairs = population([2.0, 2.0, 2.0], users=60, pairs=20)
    new = PreferencePairs(pairs.features[:30], torch.zeros(30, dtype=torch.int64), ["new"])
    out = personalize(model, new, model.train_config, seen_pairs=pairs)
    c = out.meta["prior_scale"]
    assert out.prior_scale == c and out.meta["prior_scale_choice"]["scale"] == c
    assert out.meta["prior_scale_choice"]["source"] == "seen users' training pairs"  # one new user
    torch.testing.assert_close(out.population_prior(), c * out.population_prior(scaled=False))
    fixed = TrainConfig(K=3, fewshot_prior_scale=3.0)  # a fixed c: nothing chosen, c used
    other = PersonalRewardModel(model.V, model.W, model.user_ids, tau=TAU, train_config=fixed)
    out = personalize(other, new, fixed, seen_pairs=pairs)
    assert "prior_scale" not in out.meta and out.prior_scale == 3.0
    torch.testing.assert_close(out.population_prior(), 3.0 * out.population_prior(scaled=False))


def test_new_users_pairs_are_used_when_there_are_enough():
    model, pairs = population([2.0, 2.0, 2.0], users=60, pairs=20)
    seen = pairs.select_users(pairs.user_ids[:40])
    new = pairs.select_users(pairs.user_ids[40:])
    choice = choose_for_new_users(model, new, seen)
    assert choice["source"] == "new users' pairs" and choice["users"] == 20
    assert choice["scale"] == choose_prior_scale(model, new)["scale"]


def test_a_population_mean_that_misleads_is_moved_toward_uniform():
    """Seen users all at one vertex but new users spread evenly: the fitted prior's mean
    is the wrong centre, and the likelihood prefers a mean nearer uniform weights."""
    model, pairs = population([3.0, 3.0, 3.0], seed=2)
    with torch.no_grad():
        model.W.copy_(torch.tensor([0.9, 0.05, 0.05]).log().expand_as(model.W))
        model.W.add_(0.3 * torch.randn(model.W.shape, generator=torch.Generator().manual_seed(0)))
    choice = choose_prior_scale(model, pairs, shots=(1, 5), trials=1, scales=(1.0, 4.0),
                                mean_weights=(1.0, 0.0))
    assert choice["mean_weight"] == 0.0, choice
    from lore_train.prior_scale import adjust

    alpha = torch.tensor([2.0, 1.0, 1.0])
    torch.testing.assert_close(adjust(alpha, 2.0, 0.0), torch.full((3,), 8.0 / 3))
    torch.testing.assert_close(adjust(alpha, 2.0), 2 * alpha)
