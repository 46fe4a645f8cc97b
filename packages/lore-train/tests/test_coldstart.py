"""Cold start: the population prior, the Laplace posterior and pair suggestions, on planted users."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from lore_datasets import DataError, PreferencePairs, make_synthetic
from lore_train import FewShotSettings, PersonalRewardModel, fit_few_shot
from lore_train.prior import fit_dirichlet, prior_mean, sample_dirichlet


@pytest.fixture(scope="module")
def planted():
    """Planted basis and population: 40 'seen' users whose weights are the
    true ones, so the prior is the population's and only new users are fitted."""
    pairs, oracle = make_synthetic(num_users=50, pairs_per_user=200, dim=16, rank=3, seed=3,
                                   dirichlet_alpha=0.5, label_noise=0.05)
    seen = oracle.user_ids[:40]
    model = PersonalRewardModel(oracle.V, torch.log(oracle.weights[:40].clamp(min=1e-6)), seen,
                                tau=oracle.tau)
    return pairs, oracle, model


def user_rows(pairs, user: str) -> torch.Tensor:
    return pairs.select_users([user]).features


def test_fit_dirichlet_recovers_a_known_concentration():
    alpha = torch.tensor([0.4, 0.8, 2.0])
    draws = sample_dirichlet(alpha, 20000, seed=1)
    fitted = fit_dirichlet(draws, floor=1e-12)
    torch.testing.assert_close(fitted, alpha, rtol=0.06, atol=0.0)
    torch.testing.assert_close(sample_dirichlet(alpha, 5, seed=2), sample_dirichlet(alpha, 5, seed=2))


def test_identical_users_give_a_strong_but_finite_prior():
    alpha = fit_dirichlet(torch.full((10, 3), 1 / 3))
    assert torch.isfinite(alpha).all() and float(alpha.sum()) <= 100.0 + 1e-3
    torch.testing.assert_close(prior_mean(alpha), torch.full((3,), 1 / 3))


def test_zero_shot_prediction_is_the_prior_means_prediction(planted):
    _, oracle, model = planted
    model = PersonalRewardModel(model.V, model.W, model.user_ids, tau=model.tau)
    alpha = model.population_prior()
    model.adapt("newcomer", None)
    head = oracle.V @ prior_mean(alpha)
    torch.testing.assert_close(model.user_head("newcomer"), head, rtol=1e-5, atol=1e-3)
    responses = torch.randn(7, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.score(responses, "newcomer"), responses @ head, rtol=1e-5, atol=1e-2)
    # the MAP fitter with no rows at all returns the prior mean for every user
    empty = PreferencePairs(torch.zeros(0, 16), torch.zeros(0, dtype=torch.int64), ["a", "b"])
    W = fit_few_shot(oracle.V, empty, prior=alpha)
    torch.testing.assert_close(torch.softmax(W, 1), prior_mean(alpha).expand(2, 3))


def test_map_with_the_prior_beats_maximum_likelihood_at_one_shot(planted):
    """Averaged over 10 new users x 10 single pairs: the prior keeps a user's
    weights near the population instead of at a vertex picked by one pair."""
    pairs, oracle, model = planted
    gen = torch.Generator().manual_seed(5)
    alpha = model.population_prior()
    err_ml, err_map = [], []
    for u in oracle.user_ids[40:]:
        rows = user_rows(pairs, u)
        truth = oracle.weights[oracle.user_ids.index(u)]
        for _ in range(10):
            one = rows[torch.randint(len(rows), (1,), generator=gen)]
            single = PreferencePairs(one, torch.zeros(1, dtype=torch.int64), [u])
            for prior, errs in ((None, err_ml), (alpha, err_map)):
                s = torch.softmax(fit_few_shot(oracle.V, single, FewShotSettings(
                    steps=300, solver="adam"), prior=prior), 1)[0]  # ML: Adam's
                errs.append(float((s - truth).abs().sum()))
    assert sum(err_map) / len(err_map) < 0.8 * sum(err_ml) / len(err_ml), (err_map, err_ml)


def test_posterior_concentrates_on_the_planted_weights_as_shots_grow(planted):
    pairs, oracle, model = planted
    errors, spreads = [], []
    for n in (2, 10, 50, 200):
        err, spread = 0.0, 0.0
        for u in oracle.user_ids[40:46]:
            truth = oracle.weights[oracle.user_ids.index(u)].double()
            m = PersonalRewardModel(model.V, model.W, model.user_ids, tau=model.tau)
            m.adapt(u, user_rows(pairs, u)[:n], prior="population", steps=300)
            draws = m.posterior(u, samples=400, seed=0)[0]  # [samples, K]
            err += float((draws - truth).abs().sum(dim=1).mean())
            spread += float(draws.std(dim=0).sum())
        errors.append(err / 6)
        spreads.append(spread / 6)
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    assert all(b < a for a, b in itertools.pairwise(spreads)), spreads
    assert errors[-1] < 0.25 and errors[-1] < 0.3 * errors[0], errors


def test_reward_std_and_preference_probability_shrink_with_data_and_are_seeded(planted):
    pairs, oracle, model = planted
    u = oracle.user_ids[45]
    a, b = torch.randn(2, 20, 16, generator=torch.Generator().manual_seed(4)) / 4
    stds, widths = [], []
    for n in (3, 150):
        m = PersonalRewardModel(model.V, model.W, model.user_ids, tau=model.tau)
        m.adapt(u, user_rows(pairs, u)[:n], prior="population", steps=300)
        rewards, std = m.score(a, u, return_std=True)
        torch.testing.assert_close(rewards, m.score(a, u))
        assert torch.equal(std, m.score(a, u, return_std=True)[1])  # seeded draws
        p, p_std = m.preference_probability(a, b, u)
        q, _ = m.preference_probability(b, a, u)
        torch.testing.assert_close(p + q, torch.ones_like(p), rtol=0, atol=1e-6)
        assert ((p > 0) & (p < 1)).all() and (p_std >= 0).all()
        stds.append(float(std.mean()))
        widths.append(float(p_std.mean()))
    assert stds[1] < 0.5 * stds[0] and widths[1] < widths[0], (stds, widths)


def test_suggested_pairs_beat_random_pairs_on_planted_users(planted):
    """Onboarding a new user one question at a time (suggest_pairs from their
    200 candidates, answer, adapt) for 5 rounds, against 5 random questions
    (5 draws per user): agreement with the planted user's preferences on
    2000 probe comparisons, averaged over 10 users. Measured: 0.89 vs 0.84
    (paired SE 0.017); the bar is +0.02."""
    pairs, oracle, model = planted
    gen = torch.Generator().manual_seed(6)
    probe = torch.randn(2000, 16, generator=gen) / 4
    active, random = [], []
    for u in oracle.user_ids[40:]:
        rows = user_rows(pairs, u)  # oriented by the user's (noisy) answers
        true_margin = probe @ (oracle.V @ oracle.weights[oracle.user_ids.index(u)])

        def agreement(m: PersonalRewardModel, u: str = u, true_margin: torch.Tensor = true_margin) -> float:
            return float(((probe @ m.user_head(u)) * true_margin > 0).float().mean())

        m = PersonalRewardModel(model.V, model.W, model.user_ids, tau=model.tau)
        asked: list[int] = []
        for _ in range(5):
            left = [i for i in range(len(rows)) if i not in asked]
            flip = torch.where(torch.rand(len(left), 1, generator=gen) < 0.5, -1.0, 1.0)
            pick = m.suggest_pairs(u, rows[left] * flip, 1)  # shown either way round
            asked.append(left[int(pick)])
            m.adapt(u, rows[asked], prior="population", steps=300, replace=True)
        active.append(agreement(m))
        for _ in range(5):
            r = PersonalRewardModel(model.V, model.W, model.user_ids, tau=model.tau)
            r.adapt(u, rows[torch.randperm(len(rows), generator=gen)[:5]], prior="population", steps=300)
            random.append(agreement(r))
    mean_active, mean_random = sum(active) / len(active), sum(random) / len(random)
    assert mean_active >= mean_random + 0.02, (mean_active, mean_random)


def test_suggestions_are_batch_aware_and_seen_users_need_a_posterior(planted):
    pairs, oracle, model = planted
    rows = user_rows(pairs, oracle.user_ids[41])[:30]
    first = model.suggest_pairs("someone-new", rows, 1)
    duplicated = torch.cat([rows, rows[first].expand(5, -1)])  # five copies of the best question
    picks = model.suggest_pairs("someone-new", duplicated, 2).tolist()
    copies = {int(first)} | set(range(30, 35))
    assert len(copies & set(picks)) == 1, picks  # asked once, then something else
    assert model.suggest_pairs("someone-new", rows, 100).numel() == 30
    with pytest.raises(ValueError, match="no posterior for user"):
        model.suggest_pairs(oracle.user_ids[0], rows, 2)
    model.fit_posterior(pairs.select_users(oracle.user_ids[:2]))
    assert model.suggest_pairs(oracle.user_ids[0], rows, 2).numel() == 2


def test_posteriors_survive_save_and_load(planted, tmp_path):
    """An adapted user's uncertainty is part of the saved model: the loaded model
    gives the same probabilities and stds without refitting anything; a stored
    posterior for a user the model does not have is refused."""
    pairs, oracle, model = planted
    model = PersonalRewardModel(model.V.detach(), model.W.detach(), model.user_ids, tau=model.tau)
    user = oracle.user_ids[45]
    model.adapt(user, user_rows(pairs, user)[:10])
    a, b = torch.randn(6, model.dim), torch.randn(6, model.dim)
    p, p_std = model.preference_probability(a, b, user)
    loaded = PersonalRewardModel.load(model.save(tmp_path / "m"))
    q, q_std = loaded.preference_probability(a, b, user)
    torch.testing.assert_close(q, p)
    torch.testing.assert_close(q_std, p_std)
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["posterior_users"] == [user]
    config["posterior_users"] = ["nobody"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(DataError, match="posterior_users names users the model does not have"):
        PersonalRewardModel.load(tmp_path / "m")
