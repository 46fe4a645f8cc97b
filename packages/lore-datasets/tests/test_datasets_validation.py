"""The validation split: carved from training pairs, by prompt where possible, seeded."""

from __future__ import annotations

import pytest
import torch

from lore_datasets import DataError, PreferencePairs, make_synthetic, split_validation


@pytest.fixture(scope="module")
def pairs() -> PreferencePairs:
    data, _ = make_synthetic(num_users=10, pairs_per_user=30, dim=4, num_prompts=40, seed=5)
    return data


def row_ids(p: PreferencePairs) -> list[tuple]:
    return sorted(tuple(r) for r in p.features.tolist())


def test_by_prompt_holds_out_whole_prompts_and_partitions_the_rows(pairs):
    split = split_validation(pairs, 0.25, seed=3)
    assert split.split_by == "prompt" and "40 training prompts >= 20" in split.reason
    assert split.train.user_ids == split.val.user_ids == pairs.user_ids
    assert sorted(row_ids(split.train) + row_ids(split.val)) == row_ids(pairs)
    held = set(split.val.prompt_ids)
    assert held == set(split.prompts) and len(held) == 10  # round(0.25 * 40) prompts
    assert not held & set(split.train.prompt_ids)  # no prompt on both sides
    info = split.describe()
    assert info["val_pairs"] == split.val.num_pairs and info["val_prompts"] == 10
    again = split_validation(pairs, 0.25, seed=3)
    assert again.prompts == split.prompts
    assert split_validation(pairs, 0.25, seed=4).prompts != split.prompts


def test_falls_back_to_pairs_when_prompts_are_few_or_missing(pairs):
    few = split_validation(pairs, 0.2, seed=0, min_prompts=41)
    assert few.split_by == "pair" and few.reason == "only 40 training prompts < 41"
    # per user round(0.2 * 30) = 6 pairs; prompts are shared between the sides
    assert few.val.pairs_per_user().tolist() == [6] * 10
    bare = PreferencePairs(pairs.features, pairs.user, pairs.user_ids)
    none = split_validation(bare, 0.2, seed=0)
    assert none.split_by == "pair" and none.reason == "the pairs have no prompt ids"
    assert torch.equal(none.val.features, few.val.features)  # same stream, same rows
    with pytest.raises(DataError, match="val_split_by='prompt' needs >= 2"):
        split_validation(bare, 0.2, split_by="prompt")
    with pytest.raises(DataError, match="val_fraction"):
        split_validation(pairs, 0.0)
    with pytest.raises(DataError, match="val_split_by must be"):
        split_validation(pairs, 0.2, split_by="user")  # type: ignore[arg-type]
