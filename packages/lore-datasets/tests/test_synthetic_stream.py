"""The streamed synthetic generator: the split_benchmark split, the planted truth, shard-independent draws."""

from __future__ import annotations

import json

import pytest
import torch

from lore_datasets import (
    SPLITS,
    Benchmark,
    DataError,
    PreferencePairs,
    SplitConfig,
    load_benchmark,
    split_benchmark,
)
from lore_datasets.cli import main as prepare_main
from lore_datasets.storage import read_users, user_offsets
from lore_datasets.synthetic_stream import BLOCK_USERS, write_synthetic

SMALL = {"num_users": BLOCK_USERS + 900, "pairs_per_user": 20, "dim": 5, "rank": 2, "num_prompts": 30}


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "s"
    oracle = write_synthetic(out, **SMALL, seed=4, max_shard_bytes=200_000)
    return out, oracle, load_benchmark(out)


def union(bench: Benchmark) -> PreferencePairs:
    """All rows back in one user-sorted set (the source the split was cut from)."""
    parts = [(bench.seen_train, bench.seen_test), (bench.unseen_fewshot, bench.unseen_test)]
    feats, users, prompts = [], [], []
    for a, b in parts:
        for p in (a, b):
            feats.append(p.features)
            users += [p.user_ids[i] for i in p.user.tolist()]
            prompts += p.prompt_ids
    ids = sorted(set(users))
    return PreferencePairs.from_rows(torch.cat(feats), users, prompts, user_ids=ids)


def test_split_is_split_benchmarks(streamed):
    out, _, bench = streamed
    assert len(list(out.glob("benchmark-seen_train-*.safetensors"))) > 3
    again = split_benchmark(union(bench), SplitConfig(seed=4))
    for name in SPLITS:
        a, b = bench.split(name), again.split(name)
        assert a.user_ids == b.user_ids and a.prompt_ids == b.prompt_ids
        assert torch.equal(a.features, b.features) and torch.equal(a.user, b.user)
    assert bench.meta["split"]["test_prompts"] == again.meta["split"]["test_prompts"]
    assert bench.meta["split"]["counts"] == again.meta["split"]["counts"]


def test_planted_truth_and_label_noise(streamed):
    _, oracle, bench = streamed
    margins = torch.cat([oracle.margins(bench.split(s)) for s in SPLITS])
    assert margins.numel() == SMALL["num_users"] * SMALL["pairs_per_user"]
    flipped = float((margins < 0).float().mean())
    assert flipped == pytest.approx(bench.meta["flipped_fraction"], abs=1e-6)
    assert 0.03 < flipped < 0.07  # label_noise 0.05
    seen = user_offsets(streamed[0], "seen_train").diff() + user_offsets(streamed[0], "seen_test").diff()
    assert (seen == SMALL["pairs_per_user"]).all()


def test_draws_do_not_depend_on_shard_size(streamed, tmp_path):
    out = streamed[0]
    write_synthetic(tmp_path / "one", **SMALL, seed=4, max_shard_bytes=10**9)
    assert len(list((tmp_path / "one").glob("benchmark-seen_train-*"))) == 1
    block = read_users(tmp_path / "one", 100, 140, split="seen_test")
    same = read_users(out, 100, 140, split="seen_test")
    assert torch.equal(block.features, same.features) and block.prompt_ids == same.prompt_ids
    write_synthetic(tmp_path / "other", **SMALL, seed=5, max_shard_bytes=10**9)
    assert not torch.equal(read_users(tmp_path / "other", 0, 5).features,
                           read_users(out, 0, 5).features)


def test_pair_split_and_fewshot_cap(tmp_path):
    config = SplitConfig(seed=1, max_fewshot_pairs=3, min_pairs_per_user=8)
    write_synthetic(tmp_path / "s", num_users=50, pairs_per_user=8, dim=4, rank=2, num_prompts=5,
                    split=config, dtype=torch.bfloat16)
    bench = load_benchmark(tmp_path / "s")
    assert bench.meta["split"]["split_by"] == "pair"
    assert (bench.seen_test.pairs_per_user() == 2).all()  # round(0.25 * 8)
    assert (bench.seen_train.pairs_per_user() == 6).all()
    assert (bench.unseen_fewshot.pairs_per_user() == 3).all()
    assert bench.unseen_fewshot.features.dtype == torch.bfloat16
    assert len(bench.unseen_test.user_ids) == round(0.25 * 50)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pairs_per_user": 5, "split": SplitConfig(min_pairs_per_user=6)}, "every user would be excluded"),
        ({"num_users": 1}, "at least 2 users"),
        ({"rank": 9}, "rank must be in"),
        ({"num_prompts": 1, "split": SplitConfig(split_by="prompt")}, "needs >= 2 prompts"),
    ],
)
def test_bad_settings(tmp_path, kwargs, match):
    with pytest.raises(DataError, match=match):
        write_synthetic(tmp_path / "s", **{"num_users": 20, "dim": 4, **kwargs})


def test_cli_synthetic_and_convert(tmp_path, capsys):
    assert prepare_main(["synthetic", "--out", str(tmp_path / "s"), "--users", "300",
                         "--pairs-per-user", "20", "--dim", "6", "--rank", "2",
                         "--max-shard-size", "8KiB"]) == 0
    assert "300 users x 20 pairs" in capsys.readouterr().out
    bench = load_benchmark(tmp_path / "s")
    # re-shard a canonical directory into one file: same data, same stored split
    assert prepare_main(["convert", "--dataset", str(tmp_path / "s"), "--out", str(tmp_path / "c")]) == 0
    again = load_benchmark(tmp_path / "c")
    for name in SPLITS:
        assert torch.equal(again.split(name).features, bench.split(name).features)
    index = json.loads((tmp_path / "c" / "benchmark.json").read_text())
    assert index["splits"]["seen_train"]["shards"][0]["file"] == "benchmark.safetensors"
    assert prepare_main(["convert", "--dataset", "llmfao", "--out", str(tmp_path / "l"),
                         "--max-shard-size", "100KB"]) == 0
    assert len(list((tmp_path / "l").glob("benchmark-seen_train-*"))) > 1
    assert prepare_main(["convert", "--dataset", str(tmp_path / "s"), "--out", str(tmp_path / "s")]) == 2
    assert "the output directory is the input" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare_main(["synthetic", "--out", str(tmp_path / "x"), "--max-shard-size", "lots"])
