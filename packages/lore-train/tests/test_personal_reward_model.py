"""PersonalRewardModel as a user would use it: score, margin, adapt, export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lore_datasets import PreferencePairs, synthetic_benchmark
from lore_train import PersonalRewardModel, UnknownUserError


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation (no ties in continuous rewards)."""
    ra, rb = (x.argsort().argsort().double() for x in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


@pytest.fixture
def model() -> PersonalRewardModel:
    gen = torch.Generator().manual_seed(0)
    return PersonalRewardModel(torch.randn(12, 3, generator=gen), torch.randn(4, 3, generator=gen),
                               ["a", "b", "c", "d"], meta={"embedder": "org/some-reward-model"})


@pytest.fixture
def planted():
    """A model whose basis is the planted one, so adapt() alone is under test."""
    bench, oracle = synthetic_benchmark(seed=0, dim=16, rank=3, num_users=40, pairs_per_user=80)
    seen = bench.seen_train.user_ids
    model = PersonalRewardModel(oracle.V, torch.zeros(len(seen), 3), seen, tau=oracle.tau)
    return bench, oracle, model


def test_score_differences_are_margins_and_margin_user_overrides_row_users(model):
    gen = torch.Generator().manual_seed(1)
    chosen, rejected = torch.randn(6, 12, generator=gen), torch.randn(6, 12, generator=gen)
    pairs = PreferencePairs(chosen - rejected, torch.tensor([0, 0, 1, 1, 3, 3]), ["a", "b", "c", "d"])
    by_row = model.margin(pairs)
    for m, u in zip(range(6), ["a", "a", "b", "b", "d", "d"]):
        diff = model.score(chosen[m], u) - model.score(rejected[m], u)
        torch.testing.assert_close(diff[0], by_row[m], rtol=1e-5, atol=1e-4)
    as_c = model.margin(pairs, user="c")
    torch.testing.assert_close(as_c, (chosen - rejected) @ model.user_head("c"), rtol=1e-5, atol=1e-4)
    assert not torch.allclose(as_c, by_row)


def test_user_head_is_V_times_softmax_of_the_users_logits(model):
    expected = model.V.detach() @ torch.softmax(model.W.detach()[2], dim=0)
    torch.testing.assert_close(model.user_head("c"), expected)


def test_unknown_user_is_a_clear_error_everywhere(model, tmp_path):
    pairs = PreferencePairs(torch.randn(2, 12), torch.tensor([0, 0]), ["zed"])
    calls = [lambda: model.user_head("zed"), lambda: model.score(torch.randn(3, 12), "zed"),
             lambda: model.margin(pairs), lambda: model.margin(pairs, user="zed"),
             lambda: model.export_reward_head("zed", tmp_path / "head")]
    for call in calls:
        with pytest.raises(UnknownUserError, match="zed"):
            call()
    assert not (tmp_path / "head").exists()


def test_adapt_adds_a_user_that_is_saved_with_the_model(model, tmp_path):
    rows = torch.randn(20, 12, generator=torch.Generator().manual_seed(2))
    model.adapt("new", rows, steps=50)
    assert model.user_ids[-1] == "new" and model.seen[-1] is False
    assert model.W.shape == (5, 3) and model.W.requires_grad
    loaded = PersonalRewardModel.load(model.save(tmp_path / "ckpt"))
    assert loaded.user_ids == model.user_ids and loaded.seen == model.seen
    torch.testing.assert_close(loaded.user_head("new"), model.user_head("new"))


def test_adapt_takes_pairs_or_raw_rows_alike(model):
    rows = torch.randn(15, 12, generator=torch.Generator().manual_seed(3))
    other = torch.randn(5, 12)
    pairs = PreferencePairs(torch.cat([other, rows]), torch.tensor([0] * 5 + [1] * 15), ["x", "u"])
    from_pairs = model.adapt("u", pairs, steps=40, seed=7).user_head("u")
    from_rows = model.adapt("u", rows, steps=40, seed=7, replace=True).user_head("u")
    torch.testing.assert_close(from_pairs, from_rows)


def test_adapt_refuses_to_overwrite_silently_and_names_bad_input(model):
    with pytest.raises(ValueError, match="'a' is trained jointly"):
        model.adapt("a", torch.randn(4, 12))
    model.adapt("a", torch.randn(4, 12), steps=5, replace=True)
    assert model.seen[0] is False
    with pytest.raises(ValueError, match=r"user 'n'.*\[n, 12\]"):
        model.adapt("n", torch.randn(4, 7))
    # no pairs is not an error: the new user is the population's mean user
    model.adapt("n0", torch.randn(0, 12))
    torch.testing.assert_close(model.weights()[-1], model.population_prior() / model.population_prior().sum())
    with pytest.raises(ValueError, match="NaN"):
        model.adapt("n", torch.full((3, 12), float("nan")))
    two_users = PreferencePairs(torch.randn(4, 12), torch.tensor([0, 0, 1, 1]), ["p", "q"])
    with pytest.raises(ValueError, match="2 users and not 'n'"):
        model.adapt("n", two_users)
    assert "n" not in model.user_ids


def test_adapt_recovers_a_planted_users_ranking_of_responses(planted):
    """Each unseen user gives ~60 pairs (5% flipped labels); adapt() fits their 3 weights.

    Threshold: for Gaussian responses the Spearman correlation of two linear
    rewards is about (6/pi) asin(cos/2) of the angle between their heads, so
    0.9 allows a ~25 degree error in the user's direction. Ignoring the user
    (uniform weights) measured 0.55-0.92 here, so adapt must also beat it
    clearly on average: the ranking comes from the user's pairs, not from V.
    """
    bench, oracle, model = planted
    index = {u: i for i, u in enumerate(oracle.user_ids)}
    responses = torch.randn(400, 16, generator=torch.Generator().manual_seed(1)) / 4
    ours, uniform = [], []
    for user in bench.unseen_fewshot.user_ids:
        model.adapt(user, bench.unseen_fewshot)
        truth = responses @ (oracle.V @ oracle.weights[index[user]])
        ours.append(spearman(model.score(responses, user), truth))
        uniform.append(spearman(responses @ oracle.V.mean(dim=1), truth))
    assert min(ours) >= 0.9, ours
    assert sum(ours) / len(ours) >= sum(uniform) / len(uniform) + 0.15, (ours, uniform)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exported_head_reproduces_the_models_margins(model, tmp_path, dtype):
    gen = torch.Generator().manual_seed(4)
    pairs = PreferencePairs(torch.randn(30, 12, generator=gen), torch.zeros(30, dtype=torch.int64), ["b"])
    out = model.export_reward_head("b", tmp_path / "head", dtype=dtype)
    weight = load_file(out / "reward_head.safetensors")["score.weight"]
    assert weight.shape == (1, 12) and weight.dtype == dtype
    # What a Hugging Face score head does: a bias-free Linear(d, 1) over hidden states.
    score = torch.nn.Linear(12, 1, bias=False)
    score.load_state_dict({"weight": weight.float()})
    with torch.no_grad():
        exported = score(pairs.features).squeeze(1)
    expected = model.margin(pairs)
    # fp32: rounding only; bf16: each weight carries a relative error <= 2^-8,
    # so the margin is off by at most 2^-8 * sum_i |z_i w_i|.
    bound = 1e-5 if dtype == torch.float32 else 2.0**-8
    slack = bound * (pairs.features.abs() @ model.user_head("b").abs()) + 1e-5
    assert bool(((exported - expected).abs() <= slack).all())
    config = json.loads((out / "reward_head.json").read_text())
    assert config["user"] == "b" and config["backbone"] == "org/some-reward-model"
    assert config["K"] == 3 and config["tensor"]["shape"] == [1, 12]
    assert "score.weight" in config["usage"]
