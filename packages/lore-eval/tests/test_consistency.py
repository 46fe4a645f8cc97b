"""annotator_consistency: co-annotated pairs found up to sign, noise vs a personal signal."""

from __future__ import annotations

import pytest
import torch

from lore_datasets import PreferencePairs
from lore_eval import annotator_consistency
from lore_eval.consistency import co_annotations


def shared_pairs(flip: torch.Tensor, num_pairs: int, seed: int) -> PreferencePairs:
    """Every user labels the same ``num_pairs`` pairs, user u flipping each label
    with probability flip[u] (rows oriented chosen minus rejected)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(num_pairs, 6, generator=g)
    N = len(flip)
    flipped = torch.rand(N, num_pairs, generator=g) < flip[:, None]
    sign = torch.where(flipped, -1.0, 1.0)
    Z = (sign[:, :, None] * base[None]).reshape(N * num_pairs, 6)
    user = torch.arange(N).repeat_interleave(num_pairs)
    return PreferencePairs(Z, user, [f"u{i}" for i in range(N)])


def test_rows_equal_up_to_sign_are_one_pair():
    Z = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [1.0, 2.0], [0.0, -3.0], [3.0, 1.0]])
    pairs = PreferencePairs(Z, torch.tensor([0, 1, 2, 2, 3]), ["a", "b", "c", "d"])
    groups = co_annotations(pairs)
    assert sorted(map(sorted, groups)) == [[(0, 1), (1, -1), (2, 1)]]


def test_independent_noise_gives_no_correlation_and_the_flip_rate():
    flip = torch.full((200,), 0.2)
    out = annotator_consistency(shared_pairs(flip, 60, seed=0), shared_pairs(flip, 60, seed=1))
    assert out["users"] == 200
    assert out["flip_rate_if_noise"] == pytest.approx(0.2, abs=0.02)
    assert abs(out["correlation"]) < 0.25
    assert out["agreement_second"]["std"] == pytest.approx(out["sampling_std_second"], rel=0.25)


def test_users_who_depart_from_the_crowd_consistently_are_found():
    flip = torch.tensor([0.05, 0.4]).repeat(50)  # half the users disagree often, on any prompt
    out = annotator_consistency(shared_pairs(flip, 60, seed=0), shared_pairs(flip, 60, seed=1))
    assert out["correlation"] > 0.7
    assert out["agreement_second"]["std"] > 1.5 * out["sampling_std_second"]


def test_sets_over_different_users_are_refused():
    a = shared_pairs(torch.full((3,), 0.1), 5, seed=0)
    b = PreferencePairs(a.features, a.user, ["x", "y", "z"])
    with pytest.raises(ValueError, match="share one user list"):
        annotator_consistency(a, b)
