"""Splits: deterministic in the seed, disjoint, complete, and honest about what they drop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lore_datasets import (
    SPLITS,
    Benchmark,
    DataError,
    PreferencePairs,
    SplitConfig,
    load_benchmark,
    make_synthetic,
    save_benchmark,
    split_benchmark,
)


@pytest.fixture(scope="module")
def pairs() -> PreferencePairs:
    data, _ = make_synthetic(num_users=24, pairs_per_user=40, dim=8, num_prompts=60, seed=3)
    return data


def assert_same(a: Benchmark, b: Benchmark) -> None:
    for name in SPLITS:
        x, y = a.split(name), b.split(name)
        assert x.user_ids == y.user_ids and x.prompt_ids == y.prompt_ids
        assert torch.equal(x.features, y.features) and torch.equal(x.user, y.user)
    assert a.meta == b.meta


def row_set(p: PreferencePairs) -> set[tuple]:
    return {(p.user_ids[u], *f) for u, f in zip(p.user.tolist(), p.features.tolist())}


@pytest.mark.parametrize("split_by", ["prompt", "pair"])
def test_same_seed_same_split_other_seed_other_split(pairs, split_by):
    config = SplitConfig(seed=5, split_by=split_by)
    first, again = split_benchmark(pairs, config), split_benchmark(pairs, config)
    assert_same(first, again)
    other = split_benchmark(pairs, dataclasses.replace(config, seed=6))
    assert other.unseen_test.user_ids != first.unseen_test.user_ids
    assert row_set(other.seen_test) != row_set(first.seen_test)


@pytest.mark.parametrize("split_by", ["prompt", "pair"])
def test_disjoint_and_complete(pairs, split_by):
    bench = split_benchmark(pairs, SplitConfig(seed=1, split_by=split_by))
    seen, unseen = set(bench.seen_train.user_ids), set(bench.unseen_test.user_ids)
    assert not seen & unseen and seen | unseen == set(pairs.user_ids)
    assert len(unseen) == round(0.25 * pairs.num_users)
    assert bench.seen_test.user_ids == bench.seen_train.user_ids
    assert bench.unseen_fewshot.user_ids == bench.unseen_test.user_ids
    # Every row lands in exactly one split (no cap on few-shot pools here).
    parts = [row_set(bench.split(s)) for s in SPLITS]
    assert sum(len(p) for p in parts) == pairs.num_pairs == len(set.union(*parts))
    meta = bench.meta["split"]
    assert meta["split_by"] == split_by and meta["seed"] == 1
    assert {s: meta["counts"][s]["pairs"] for s in SPLITS} == {
        s: bench.split(s).num_pairs for s in SPLITS
    }


def test_prompt_split_holds_out_prompts(pairs):
    bench = split_benchmark(pairs, SplitConfig(seed=2))
    meta = bench.meta["split"]
    assert meta["split_by"] == "prompt" and "60 prompts" in meta["reason"]
    test_prompts = set(meta["test_prompts"])
    assert len(test_prompts) == 15
    for train, test in (("seen_train", "seen_test"), ("unseen_fewshot", "unseen_test")):
        train_p, test_p = set(bench.split(train).prompt_ids), set(bench.split(test).prompt_ids)
        assert not train_p & test_p
        assert test_p <= test_prompts and not train_p & test_prompts


def test_pair_split_fraction_per_user(pairs):
    bench = split_benchmark(pairs, SplitConfig(split_by="pair", test_fraction=0.3))
    assert (bench.seen_test.pairs_per_user() == round(0.3 * 40)).all()
    assert (bench.unseen_fewshot.pairs_per_user() == 40 - 12).all()


def test_auto_uses_pairs_when_prompts_are_few(pairs):
    bench = split_benchmark(pairs, SplitConfig(min_prompts_for_prompt_split=61))
    assert bench.meta["split"]["split_by"] == "pair"
    assert "only 60 prompts" in bench.meta["split"]["reason"]


def test_fewshot_cap_is_seeded(pairs):
    config = SplitConfig(split_by="pair", max_fewshot_pairs=5, seed=4)
    a, b = split_benchmark(pairs, config), split_benchmark(pairs, config)
    assert (a.unseen_fewshot.pairs_per_user() == 5).all()
    assert_same(a, b)
    c = split_benchmark(pairs, dataclasses.replace(config, max_fewshot_pairs=6))
    assert c.unseen_test.user_ids == a.unseen_test.user_ids  # the cap does not reshuffle users
    assert row_set(a.unseen_fewshot) != row_set(
        split_benchmark(pairs, dataclasses.replace(config, seed=9)).unseen_fewshot
    )


def small_users_pairs() -> PreferencePairs:
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(8) for _ in range(30)] + ["tiny"] * 3
    feats = torch.from_numpy(rng.standard_normal((len(users), 4)).astype(np.float32))
    prompts = [f"p{i % 7}" for i in range(len(users))]
    return PreferencePairs.from_rows(feats, users, prompts)


def test_users_below_minimum_are_excluded_and_listed():
    bench = split_benchmark(small_users_pairs(), SplitConfig(min_pairs_per_user=10))
    excluded = bench.meta["split"]["excluded_users"]
    assert excluded["ids"] == ["tiny"] and excluded["count"] == 1 and excluded["pairs"] == 3
    assert all("tiny" not in bench.split(s).user_ids for s in SPLITS)


def test_user_with_zero_pairs_is_named():
    base = small_users_pairs()
    ghost = PreferencePairs.from_rows(
        base.features,
        [base.user_ids[u] for u in base.user.tolist()],
        base.prompt_ids,
        user_ids=[*base.user_ids, "ghost"],
    )
    with pytest.raises(DataError, match="user 'ghost' has no pairs"):
        split_benchmark(ghost)


def test_no_user_left_or_one_side_empty():
    with pytest.raises(DataError, match="no user has >= 100 pairs"):
        split_benchmark(small_users_pairs(), SplitConfig(min_pairs_per_user=100))
    one = small_users_pairs().select_users(["u0", "tiny"])
    with pytest.raises(DataError, match="only user 'u0' has >= 20 pairs"):
        split_benchmark(one)


def test_seen_user_without_training_pairs_does_not_crash():
    """A seen user whose every pair is on a test prompt keeps its slot with zero rows."""
    rng = np.random.default_rng(1)
    users = [f"u{i}" for i in range(8) for _ in range(40)]
    prompts = [f"p{i % 40:02d}" for i in range(len(users))]
    users += ["solo"] * 25
    prompts += ["p00"] * 25
    feats = torch.from_numpy(rng.standard_normal((len(users), 4)).astype(np.float32))
    pairs = PreferencePairs.from_rows(feats, users, prompts)
    for seed in range(200):
        bench = split_benchmark(pairs, SplitConfig(seed=seed, split_by="prompt"))
        if "p00" in bench.meta["split"]["test_prompts"] and "solo" in bench.seen_train.user_ids:
            break
    else:
        pytest.fail("no seed puts p00 in the test prompts with 'solo' seen")
    solo = bench.seen_train.user_ids.index("solo")
    assert int(bench.seen_train.pairs_per_user()[solo]) == 0
    assert int(bench.seen_test.pairs_per_user()[solo]) == 25
    assert (
        bench.meta["split"]["counts"]["seen_train"]["users_with_pairs"]
        == len(bench.seen_train.user_ids) - 1
    )


def test_benchmark_and_pairs_round_trip(pairs, tmp_path):
    bench = split_benchmark(
        pairs, SplitConfig(seed=7), v_ref=torch.arange(8.0), meta={"source": "t"}
    )
    save_benchmark(bench, tmp_path / "bench")
    back = load_benchmark(tmp_path / "bench")
    assert_same(bench, back)
    assert torch.equal(back.v_ref, bench.v_ref) and back.meta["source"] == "t"
    bench.seen_test.save(tmp_path / "pairs")
    again = PreferencePairs.load(tmp_path / "pairs")
    assert torch.equal(again.features, bench.seen_test.features)
    assert (
        again.user_ids == bench.seen_test.user_ids
        and again.prompt_ids == bench.seen_test.prompt_ids
    )


def test_bad_config_is_rejected():
    with pytest.raises(DataError, match="split_by"):
        SplitConfig(split_by="user")
    with pytest.raises(DataError, match="test_fraction"):
        SplitConfig(test_fraction=1.0)
