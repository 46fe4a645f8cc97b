"""The canonical on-disk form: whole loads, sharded files, and reads of one block of users."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lore_datasets import (
    SPLITS,
    Benchmark,
    DataError,
    PreferencePairs,
    load_benchmark,
    load_dataset,
    save_benchmark,
)
from lore_datasets.storage import (
    BenchmarkWriter,
    read_benchmark_users,
    read_process_share,
    read_users,
    user_offsets,
)
from lore_datasets.synthetic import synthetic_benchmark


@pytest.fixture(scope="module")
def bench() -> Benchmark:
    b, _ = synthetic_benchmark(num_users=40, pairs_per_user=30, dim=6, rank=2, num_prompts=50, seed=3)
    b.v_ref = torch.linspace(-1, 1, 6)
    return b


def assert_same_pairs(a: PreferencePairs, b: PreferencePairs) -> None:
    assert torch.equal(a.features, b.features) and a.features.dtype == b.features.dtype
    assert torch.equal(a.user, b.user)
    assert a.user_ids == b.user_ids and a.prompt_ids == b.prompt_ids


def assert_same(a: Benchmark, b: Benchmark) -> None:
    for s in SPLITS:
        assert_same_pairs(a.split(s), b.split(s))
    assert torch.equal(a.v_ref, b.v_ref) and a.meta == b.meta


def block(pairs: PreferencePairs, u0: int, u1: int) -> PreferencePairs:
    return pairs.select_users(pairs.user_ids[u0:u1])


@pytest.mark.parametrize("max_shard_bytes", [None, 1_000, 1])
def test_round_trip_whole_and_sharded(bench, tmp_path, max_shard_bytes):
    save_benchmark(bench, tmp_path / "b", max_shard_bytes=max_shard_bytes)
    assert_same(bench, load_benchmark(tmp_path / "b"))
    assert_same(bench, load_dataset(str(tmp_path / "b")))
    index = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    shards = index["splits"]["seen_train"]["shards"]
    assert index["format"] == 2
    assert shards[0]["rows"][0] == 0 and shards[-1]["rows"][1] == bench.seen_train.num_pairs
    assert all(x["rows"][1] == y["rows"][0] for x, y in itertools.pairwise(shards))
    if max_shard_bytes is None:
        assert [s["file"] for s in shards] == ["benchmark.safetensors"]
    else:
        row_bytes = 6 * 4 + 4
        assert len(shards) == -(-bench.seen_train.num_pairs // max(1, max_shard_bytes // row_bytes))


@pytest.mark.parametrize("max_shard_bytes", [None, 700])
def test_read_users_is_the_block(bench, tmp_path, max_shard_bytes):
    save_benchmark(bench, tmp_path / "b", max_shard_bytes=max_shard_bytes)
    for split in SPLITS:
        whole = bench.split(split)
        assert torch.equal(user_offsets(tmp_path / "b", split), whole.offsets)
        n = whole.num_users
        for u0, u1 in [(0, n), (0, 1), (3, 8), (n - 1, n), (5, 5), (n, n)]:
            got = read_users(tmp_path / "b", u0, u1, split=split)
            assert_same_pairs(got, block(whole, u0, u1))
    lean = read_users(tmp_path / "b", 2, 9, with_prompts=False)
    assert lean.prompt_ids is None
    assert torch.equal(lean.features, block(bench.seen_train, 2, 9).features)


def test_read_benchmark_users(bench, tmp_path):
    save_benchmark(bench, tmp_path / "b", max_shard_bytes=500)
    part = read_benchmark_users(tmp_path / "b", (4, 20), (1, 6))
    for split in SPLITS:
        u0, u1 = (4, 20) if split.startswith("seen") else (1, 6)
        assert_same_pairs(part.split(split), block(bench.split(split), u0, u1))
    assert torch.equal(part.v_ref, bench.v_ref)
    assert part.meta["users_block"] == {"seen": [4, 20], "unseen": [1, 6]}


@pytest.mark.parametrize("world", [1, 3, 50])
def test_read_rank_shares_cover_every_row_once(bench, tmp_path, world):
    save_benchmark(bench, tmp_path / "b", max_shard_bytes=600)
    shares = [read_process_share(tmp_path / "b", r, world) for r in range(world)]
    for split in SPLITS:
        whole = bench.split(split)
        got = [s.split(split) for s in shares]
        assert [u for p in got for u in p.user_ids] == whole.user_ids
        assert torch.equal(torch.cat([p.features for p in got]), whole.features)
        assert all(p.prompt_ids is None for p in got)
    heaviest = int(bench.seen_train.pairs_per_user().max())
    train = [s.seen_train.num_pairs for s in shares]
    assert max(train) - min(train) <= 2 * heaviest
    assert shares[-1].meta["users_block"]["rank"] == world - 1
    with pytest.raises(DataError, match=r"rank must be in \[0, world_size=3\)"):
        read_process_share(tmp_path / "b", 3, 3)


@pytest.mark.parametrize("world", [1, 3])
def test_a_source_loaded_whole_gives_the_same_shares(bench, tmp_path, world):
    """`DataSource.load_process_share`: the row-range read of a saved directory, and the cut of
    a Benchmark in memory (every other source), give each rank the same share."""
    from lore_datasets import DataSource
    from lore_datasets.sharding import process_share
    from lore_datasets.storage import row_range_readable

    save_benchmark(bench, tmp_path / "b", max_shard_bytes=600)
    assert row_range_readable(tmp_path / "b") and not row_range_readable(tmp_path)
    for r in range(world):
        read = DataSource(str(tmp_path / "b")).load_process_share(r, world)
        cut = process_share(bench, r, world)
        for split in SPLITS:
            a, b = read.split(split), cut.split(split)
            assert torch.equal(a.features, b.features) and torch.equal(a.user, b.user)
            assert a.user_ids == b.user_ids
        assert read.meta["users_block"] == cut.meta["users_block"]
    other = Benchmark(*(bench.split(s) for s in SPLITS[:3]),
                      bench.unseen_test.select_rows(torch.arange(1, bench.unseen_test.num_pairs)))
    assert (process_share(other, 0, world).meta["users_block"]["digest"]
            != process_share(bench, 0, world).meta["users_block"]["digest"])


def test_bf16_rows_stay_bf16(bench, tmp_path):
    small = Benchmark(*(bench.split(s).to(dtype=torch.bfloat16) for s in SPLITS), meta={"x": 1})
    save_benchmark(small, tmp_path / "b", max_shard_bytes=300)
    back = load_benchmark(tmp_path / "b")
    assert back.seen_train.features.dtype == torch.bfloat16 and back.v_ref is None
    assert_same_pairs(back.seen_test, small.seen_test)


def test_resave_replaces_old_shards(bench, tmp_path):
    save_benchmark(bench, tmp_path / "b", max_shard_bytes=200)
    many = sorted(p.name for p in (tmp_path / "b").glob("benchmark-*.safetensors"))
    save_benchmark(bench, tmp_path / "b")
    assert len(many) > 4 and not list((tmp_path / "b").glob("benchmark-*.safetensors"))
    assert_same(bench, load_benchmark(tmp_path / "b"))


def test_format_1_still_loads_whole(bench, tmp_path):
    d = tmp_path / "v1"
    d.mkdir()
    tensors, ids = {}, {}
    for name in SPLITS:
        tensors.update(bench.split(name).tensors(prefix=f"{name}."))
        ids[name] = bench.split(name).ids()
    tensors["v_ref"] = bench.v_ref
    save_file(tensors, d / "benchmark.safetensors")
    (d / "benchmark.json").write_text(json.dumps({"format": 1, "meta": bench.meta, "splits": ids}))
    assert_same(bench, load_benchmark(d))
    with pytest.raises(DataError, match=r"format 1 has no row-range reads; load it and save it"):
        user_offsets(d)


def test_writer_streams_blocks(tmp_path):
    """Blocks added one by one read back as one split; a split may stay empty."""
    writer = BenchmarkWriter(tmp_path / "w", dim=2, max_shard_bytes=3 * 12)
    feats = torch.arange(20.0).reshape(10, 2)
    writer.add("seen_train", feats[:4], [1, 3], ["a", "b"], ["p", "q", "q", "p"])
    writer.add("seen_train", feats[4:], [0, 6], ["c", "d"], ["r"] * 6)
    writer.close({"note": "streamed"})
    got = read_users(tmp_path / "w", 1, 4)
    assert got.user_ids == ["b", "c", "d"] and got.user.tolist() == [0] * 3 + [2] * 6
    assert torch.equal(got.features, feats[1:])
    assert got.prompt_ids == ["q", "q", "p"] + ["r"] * 6
    assert user_offsets(tmp_path / "w", "unseen_test").tolist() == [0]
    assert read_users(tmp_path / "w", 0, 0, split="unseen_test").num_pairs == 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (((3, 2), [2], ["a"]), r"features must be \[M, 2\]"),
        (((3, 2), [2], ["a", "b"]), r"counts must give each of the 2 users"),
        (((3, 2), [3], ["a"], ["p"]), r"1 prompt ids for 3 rows"),
        (((3, 2), [3], ["a"]), r"features must be floating point"),
    ],
)
def test_writer_rejects_inconsistent_blocks(tmp_path, args, match):
    writer = BenchmarkWriter(tmp_path / "w", dim=2)
    shape, *rest = args
    feats = torch.zeros(shape[0], 3 if "M, 2" in match else 2)
    if "floating" in match:
        feats = feats.long()
    with pytest.raises(DataError, match=match):
        writer.add("seen_train", feats, *rest)


def test_broken_directories_name_the_file(bench, tmp_path):
    d = tmp_path / "b"
    save_benchmark(bench, d, max_shard_bytes=400)
    with pytest.raises(DataError, match=r"users 3:99 out of range for seen_train's 30 users"):
        read_users(d, 3, 99)
    shard = d / "benchmark-seen_train-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"benchmark-seen_train-00002\.safetensors: not a readable"):
        load_benchmark(d)
    shard.unlink()
    with pytest.raises(DataError, match=r"benchmark-seen_train-00002\.safetensors: file not found"):
        read_users(d, 0, 30)
    assert read_users(d, 29, 30).num_users == 1  # rows outside the lost shard still read
    index = json.loads((d / "benchmark.json").read_text())
    index["splits"]["seen_train"]["dtype"] = "complex_float99"
    (d / "benchmark.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"benchmark\.json: split 'seen_train' needs users, pairs"):
        user_offsets(d)
    (d / "benchmark.json").write_text("{")
    with pytest.raises(DataError, match=r"benchmark\.json, line 1: invalid JSON"):
        load_benchmark(d)
    (d / "benchmark.json").unlink()
    with pytest.raises(DataError, match=r"benchmark\.json: file not found"):
        load_benchmark(d)
    with pytest.raises(DataError, match=r"benchmark directory not found"):
        load_benchmark(tmp_path / "nowhere")


def test_save_into_a_file_is_refused(bench, tmp_path: Path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match=r"f: exists and is not a directory"):
        save_benchmark(bench, tmp_path / "f")
