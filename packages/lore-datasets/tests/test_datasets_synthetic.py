"""The synthetic generator: planted structure, oracle accuracy, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from lore_datasets import DataError, SplitConfig, make_synthetic, synthetic_benchmark


def test_oracle_accuracy_matches_label_noise():
    """Rows are oriented by the true margin, then each flipped with probability p.

    So the oracle is right on a Binomial(M, 1 - p) / M fraction of rows: with
    M = 4800 and p = 0.05 its standard deviation is sqrt(p (1 - p) / M) ~ 0.0031;
    0.015 is ~5 sigma, so this fails only if the orientation or flipping is wrong.
    """
    pairs, oracle = make_synthetic(label_noise=0.05, seed=11)
    accuracy = (oracle.margins(pairs) > 0).float().mean().item()
    assert pairs.num_pairs == 60 * 80
    assert abs(accuracy - 0.95) < 0.015
    clean, clean_oracle = make_synthetic(label_noise=0.0, seed=11)
    assert bool((clean_oracle.margins(clean) > 0).all())


def test_planted_structure_shapes_and_scale():
    pairs, oracle = make_synthetic(num_users=30, dim=16, rank=4, seed=2)
    assert tuple(oracle.V.shape) == (16, 4) and tuple(oracle.weights.shape) == (30, 4)
    assert oracle.user_ids == pairs.user_ids and pairs.dim == 16
    assert torch.allclose(oracle.weights.sum(1), torch.ones(30)) and bool(
        (oracle.weights >= 0).all()
    )
    gram = oracle.V.T @ oracle.V
    assert torch.allclose(gram, gram[0, 0] * torch.eye(4), atol=1e-3 * float(gram[0, 0]))
    # Logits tau * margin have std between logit_std / sqrt(K) and logit_std (= 3).
    logits = oracle.tau * oracle.margins(pairs)
    assert 3.0 / math.sqrt(4) * 0.8 < logits.std().item() < 3.0 * 1.2
    assert len(set(pairs.prompt_ids)) > 100


def test_same_seed_same_data_other_seed_other_data():
    a, oa = make_synthetic(seed=4)
    b, ob = make_synthetic(seed=4)
    c, _ = make_synthetic(seed=5)
    assert torch.equal(a.features, b.features) and a.prompt_ids == b.prompt_ids
    assert torch.equal(oa.V, ob.V) and torch.equal(oa.weights, ob.weights)
    assert not torch.equal(a.features, c.features)


def test_synthetic_benchmark_splits_by_prompt():
    bench, oracle = synthetic_benchmark(SplitConfig(seed=1), num_users=20, seed=3)
    meta = bench.meta
    assert meta["source"] == "synthetic" and meta["generator"]["num_users"] == 20
    assert meta["split"]["split_by"] == "prompt" and meta["split"]["seed"] == 1
    assert set(bench.seen_train.user_ids) | set(bench.unseen_test.user_ids) == set(oracle.user_ids)
    assert abs(meta["flipped_fraction"] - 0.05) < 0.03


def test_bad_parameters():
    with pytest.raises(DataError, match="rank"):
        make_synthetic(dim=4, rank=5)
    with pytest.raises(DataError, match="label_noise"):
        make_synthetic(label_noise=0.5)
