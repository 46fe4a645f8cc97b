"""`PersonalReward` beyond the contract: users (add, remove, unknown), std, suggestions,
batching and bad inputs, on a tiny export built offline by the real paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from lore_train import PersonalReward, PersonalRewardModel, UnknownUserError
from lore_train.conversations import token_batches
from lore_train.prior import prior_mean
from lore_train.tiny_export import build_tiny_export

# a tiny model gains nothing from threads, and spinning ones stall a busy machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_export(tmp_path_factory.mktemp("pr"))


@pytest.fixture(scope="module")
def embedded(tiny):
    """(conversations, phi) of every embedded response, grouped by prompt."""
    records = [json.loads(line) for line in (tiny.data / "responses.jsonl").read_text().splitlines()]
    phi = torch.from_numpy(np.load(tiny.data / "embeddings.npy"))
    return records, phi


@pytest.fixture
def pr(tiny) -> PersonalReward:
    return PersonalReward.from_pretrained(tiny.out)


def same_prompt(records, k: int = 4) -> list[int]:
    """Indices of k responses to the prompt with the most of them."""
    by_prompt: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_prompt.setdefault(r["prompt_id"], []).append(i)
    return max(by_prompt.values(), key=len)[:k]


def test_unknown_user_is_the_population_mean_or_an_error(tiny, pr) -> None:
    model = PersonalRewardModel.load(tiny.checkpoint)
    torch.testing.assert_close(pr.user_weights("stranger"), prior_mean(model.population_prior()))
    basis = torch.randn(5, pr.K)
    torch.testing.assert_close(pr.rewards_from_basis(basis, ["stranger"] * 5),
                               basis @ pr.user_weights("stranger"))
    strict = PersonalReward.from_pretrained(tiny.out, unknown_user="error")
    with pytest.raises(UnknownUserError, match="stranger"):
        strict.rewards(["hello"], ["good"], ["stranger"])
    with pytest.raises(ValueError, match="unknown_user"):
        PersonalReward.from_pretrained(tiny.out, unknown_user="maybe")


def test_rewards_mix_users_in_one_batch(pr) -> None:
    users = pr.user_ids[:3]
    prompts, completions = ["the cat"] * 3, ["a dog sat", "hello world", "good"]
    basis = pr.basis_rewards(prompts, completions)
    mixed = pr.rewards(prompts, completions, users)
    for i, u in enumerate(users):
        assert mixed[i] == pytest.approx(float(basis[i] @ pr.user_weights(u)), rel=1e-5)


def test_add_user_from_text_is_the_map_adapt_of_the_embeddings(tiny, pr, embedded) -> None:
    """Comparisons as text give the weights `PersonalRewardModel.adapt` gives from phi."""
    records, phi = embedded
    idx = same_prompt(records)
    comparisons, rows = [], []
    for a, b in [(idx[0], idx[1]), (idx[2], idx[1]), (idx[0], idx[3]), (idx[2], idx[3])]:
        comparisons.append({"prompt": records[a]["prompt"], "chosen": records[a]["text"],
                            "rejected": records[b]["text"]})
        rows.append(phi[a] - phi[b])
    weights = pr.add_user("newbie", comparisons)
    model = PersonalRewardModel.load(tiny.checkpoint)
    model.adapt("newbie", torch.stack(rows), prior="population")
    want = model.weights()[model.user_index(["newbie"])][0].detach()
    torch.testing.assert_close(weights, want, atol=1e-4, rtol=1e-4)
    assert "newbie" in pr.user_ids
    # basis diffs computed elsewhere (a server batching the backbone) give the same fit
    basis = pr.basis_rewards([c["prompt"] for c in comparisons] * 2,
                             [c["chosen"] for c in comparisons] + [c["rejected"] for c in comparisons])
    again = pr.add_user("newbie", basis_diffs=basis[:4] - basis[4:])
    torch.testing.assert_close(again, weights)
    # 3-tuples are comparisons too
    tuples = [(c["prompt"], c["chosen"], c["rejected"]) for c in comparisons]
    torch.testing.assert_close(pr.add_user("tupled", tuples), weights)
    # the posterior narrows the reward's std compared with the prior alone
    basis = pr.basis_rewards([records[i]["prompt"] for i in idx], [records[i]["text"] for i in idx])
    _, std_new = pr.rewards_from_basis(basis, ["newbie"] * len(idx), return_std=True)
    _, std_prior = pr.rewards_from_basis(basis, ["nobody"] * len(idx), return_std=True)
    assert bool((std_new < std_prior).all()) and bool((std_new > 0).all())


def test_delta_method_std_matches_posterior_draws_when_the_posterior_is_narrow(pr) -> None:
    """A narrow posterior keeps the softmax near linear: the delta method's std equals the
    std of seeded draws (what `PersonalRewardModel.score` reports)."""
    from lore_train import posterior

    gen = torch.Generator().manual_seed(0)
    pr._logits["sharp"] = torch.tensor([0.5, -0.2, -1.0], dtype=torch.float64)
    A = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    pr._precision["sharp"] = 400 * (A @ A.T + torch.eye(3, dtype=torch.float64))
    basis = 50 * torch.randn(6, pr.K, generator=gen)
    _, std = pr.rewards_from_basis(basis, ["sharp"] * 6, return_std=True)
    draws = posterior.logit_draws(pr._logits["sharp"][None],
                                  posterior.covariance(pr._precision["sharp"][None]), 20000)
    _, want = posterior.reward_moments(basis, draws, torch.zeros(6, dtype=torch.int64))
    torch.testing.assert_close(std, want.float(), rtol=0.05, atol=1e-4)


def test_std_of_many_users_at_once_is_posterior_delta_std_per_user(pr) -> None:
    from lore_train import posterior

    users = [*pr.user_ids[:4], "stranger"] * 3
    basis = 30 * torch.randn(len(users), pr.K, generator=torch.Generator().manual_seed(2))
    rewards, std = pr.rewards_from_basis(basis, users, return_std=True)
    for b, user in enumerate(users):
        cov = posterior.covariance(pr._user_precision(user)[None])[0]
        value, want = posterior.delta_std(basis[b:b + 1], pr._user_logits(user), cov)
        assert float(rewards[b]) == pytest.approx(float(value[0]), rel=1e-5, abs=1e-5)
        assert float(std[b]) == pytest.approx(float(want[0]), rel=1e-5, abs=1e-6)


def test_add_user_with_no_comparisons_is_the_prior_and_users_can_be_removed(pr) -> None:
    weights = pr.add_user("cold")
    torch.testing.assert_close(weights, prior_mean(pr.alpha))
    with pytest.raises(ValueError, match="replace=True"):
        pr.add_user("cold", replace=False)
    pr.remove_user("cold")
    assert "cold" not in pr.user_ids
    with pytest.raises(UnknownUserError, match="cold"):
        pr.remove_user("cold")


def test_suggest_pairs_agrees_with_the_embedding_model(tiny, pr, embedded) -> None:
    records, phi = embedded
    idx = same_prompt(records, 5)
    user = next(u for u in pr.user_ids if u in pr._precision)  # the adapted user
    prompt = records[idx[0]]["prompt"]
    picks = pr.suggest_pairs(user, prompt, [records[i]["text"] for i in idx], 3)
    assert len(picks) == 3 and len(set(picks)) == 3
    assert all(0 <= i < j < len(idx) for i, j in picks)
    model = PersonalRewardModel.load(tiny.checkpoint)
    first, second = torch.triu_indices(len(idx), len(idx), offset=1)
    chosen = model.suggest_pairs(user, (phi[idx][first], phi[idx][second]), 3)
    assert picks == [(int(first[c]), int(second[c])) for c in chosen]
    assert len(pr.suggest_pairs_from_basis("stranger", torch.randn(3, pr.K), 10)) == 3  # all pairs


def test_token_batches_cover_every_row_within_the_budget() -> None:
    lengths = [5, 1, 9, 3, 3, 12, 7, 2]
    batches = token_batches(lengths, 20)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 20
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)  # similar lengths together: little padding
    assert token_batches([50, 60], 10) == [[0], [1]]  # a long row still gets its batch


def test_batching_does_not_change_rewards(tiny) -> None:
    prompts = ["the cat sat", "hello", "a dog is not a cat on the mat", "post"]
    completions = ["good", "very long summary is not short", "bad", "hello world"]
    users = ["u0", "u1", "u2", "u0"]
    small = PersonalReward.from_pretrained(tiny.out, max_batch_tokens=1)
    large = PersonalReward.from_pretrained(tiny.out, max_batch_tokens=10_000)
    assert small.rewards(prompts, completions, users) == pytest.approx(
        large.rewards(prompts, completions, users), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("bad", [3, None, ("u0",), b"u0"])
def test_a_user_id_that_is_not_a_string_is_a_value_error(pr, bad) -> None:
    for call in (lambda: pr.rewards(["hi"], ["good"], [bad]),
                 lambda: pr(["hi"], ["good"], user_id=[bad]),
                 lambda: pr.user_weights(bad),
                 lambda: pr.add_user(bad),
                 lambda: pr.rewards_from_basis(torch.zeros(1, pr.K), [bad])):
        with pytest.raises(ValueError, match="not a string"):
            call()


@pytest.mark.parametrize("comparison, match", [
    ({"prompt": "hi", "chosen": "", "rejected": "bad"}, "comparison 1: chosen is empty"),
    ({"prompt": "hi", "chosen": "good", "rejected": "  "}, "comparison 1: rejected is empty"),
    ({"prompt": "hi", "chosen": "good", "rejected": "good"}, "comparison 1: chosen and rejected"),
    ({"prompt": "hi", "chosen": "good"}, "comparison 1: missing"),
    ("hi good bad", "comparison 1: expected"),
])
def test_bad_comparisons_are_one_line_errors_and_change_nothing(pr, comparison, match) -> None:
    ok = {"prompt": "hi", "chosen": "good", "rejected": "bad"}
    with pytest.raises(ValueError, match=match) as info:
        pr.add_user("newbie", [ok, comparison])
    assert "\n" not in str(info.value) and "'newbie'" in str(info.value)
    assert "newbie" not in pr.user_ids


def test_bad_calls(pr) -> None:
    with pytest.raises(ValueError, match="user_id"):
        pr(["hi"], ["good"])  # TRL data set without a user_id column
    with pytest.raises(ValueError, match="one prompt per completion"):
        pr.basis_rewards(["a", "b"], ["good"])
    with pytest.raises(ValueError, match="prompt 0"):
        pr.basis_rewards([{"role": "user"}], ["good"])
    with pytest.raises(ValueError, match=r"basis_diffs must be \[n, 3\]"):
        pr.add_user("x", basis_diffs=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        pr.add_user("x", basis_diffs=torch.full((1, 3), float("nan")))
    with pytest.raises(ValueError, match="one per row"):
        pr.rewards_from_basis(torch.zeros(2, 3), ["u0"])


def test_the_recipes_max_length_is_applied_like_the_embedder_did(tmp_path) -> None:
    """Conversations cut from the left to max_length when embedded are cut the same way."""
    tiny = build_tiny_export(tmp_path, max_length=9)
    records = [json.loads(x) for x in (tiny.data / "responses.jsonl").read_text().splitlines()]
    phi = torch.from_numpy(np.load(tiny.data / "embeddings.npy"))
    pr = PersonalReward.from_pretrained(tiny.out)
    assert pr.recipe["max_length"] == 9
    assert max(len(pr.encoder.render([*r["prompt"], {"role": "assistant", "content": r["text"]}]))
               for r in records) == 9  # the cut is active
    model = PersonalRewardModel.load(tiny.checkpoint)
    user = model.user_ids[0]
    got = torch.tensor(pr.rewards([r["prompt"] for r in records], [r["text"] for r in records],
                                  [user] * len(records)))
    want = model.score(phi, user)
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_k0_export_is_the_backbones_own_reward(tmp_path) -> None:
    """K = 0 (the reference head) exports the backbone unchanged: one output, v_ref."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tiny = build_tiny_export(tmp_path, K=0)
    pr = PersonalReward.from_pretrained(tiny.out)
    assert pr.K == 1
    original = AutoModelForSequenceClassification.from_pretrained(tiny.backbone).eval()
    tok = AutoTokenizer.from_pretrained(tiny.backbone)
    conv = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "good"}]
    ids = tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False,
              return_tensors="pt")
    with torch.no_grad():
        want = float(original(**ids).logits[0, 0])
    for user in (pr.user_ids[0], "stranger"):
        assert pr.rewards(["the cat"], ["good"], [user])[0] == pytest.approx(want, rel=1e-5)
