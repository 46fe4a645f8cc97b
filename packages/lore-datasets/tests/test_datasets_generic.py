"""The generic loader: row signs, ties, meta, and one clear error per kind of bad input."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from lore_datasets import DataError, load_generic


def rows_of(pairs, user):
    u = pairs.user_ids.index(user)
    return pairs.features[pairs.user == u]


def test_rows_are_preferred_minus_other(tiny_dir):
    pairs, _ = load_generic(tiny_dir)
    emb = torch.from_numpy(np.load(tiny_dir / "embeddings.npy"))
    # alice: "a" on (r0, r1) -> r0 - r1; "b" on (r2, r3) -> r3 - r2 (file order kept per user)
    assert torch.equal(rows_of(pairs, "alice"), torch.stack([emb[0] - emb[1], emb[3] - emb[2]]))
    # bob: tie dropped; "a" on (r3, r2) -> r3 - r2
    assert torch.equal(rows_of(pairs, "bob"), (emb[3] - emb[2])[None])
    assert pairs.features.dtype == torch.float32
    assert pairs.prompt_ids == ["p0", "p1", "p1"]


def test_ties_dropped_and_counted(tiny_dir):
    pairs, meta = load_generic(tiny_dir)
    assert pairs.user_ids == ["alice", "bob"]  # sorted; carol had only a tie
    assert meta["rows_read"] == 5
    assert meta["labels"] == {"a": 2, "b": 1, "tie": 2}
    assert meta["ties"] == meta["ties_dropped"] == 2
    assert meta["pairs"] == pairs.num_pairs == 3
    assert meta["users"] == 2 and meta["users_only_ties"] == ["carol"]
    assert meta["prompts"] == 2 and meta["dim"] == 3 and meta["embeddings"] == "embeddings.npy"


def test_keep_ties_gives_both_directions(tiny_dir):
    pairs, meta = load_generic(tiny_dir, keep_ties=True)
    emb = torch.from_numpy(np.load(tiny_dir / "embeddings.npy"))
    assert meta["ties_dropped"] == 0 and meta["ties_as_two_rows"]
    assert pairs.num_pairs == 3 + 2 * 2
    carol = rows_of(pairs, "carol")
    assert torch.equal(carol, torch.stack([emb[1] - emb[0], emb[0] - emb[1]]))


def test_gzip_and_other_embeddings(tiny_dir, tmp_path):
    plain, _ = load_generic(tiny_dir)
    with (
        (tiny_dir / "comparisons.csv").open("rb") as src,
        gzip.open(tiny_dir / "comparisons.csv.gz", "wb") as dst,
    ):
        shutil.copyfileobj(src, dst)
    with pytest.raises(DataError, match=r"both comparisons\.csv and comparisons\.csv\.gz"):
        load_generic(tiny_dir)
    (tiny_dir / "comparisons.csv").unlink()
    # A float64 matrix elsewhere, given relative and absolute; math happens in fp32.
    other = np.load(tiny_dir / "embeddings.npy").astype(np.float64) * 2
    np.save(tiny_dir / "double.npy", other)
    np.save(tmp_path / "abs.npy", other)
    for emb in ("double.npy", tmp_path / "abs.npy"):
        packed, meta = load_generic(tiny_dir, embeddings=emb)
        assert meta["comparisons"] == "comparisons.csv.gz"
        assert packed.features.dtype == torch.float32
        assert torch.equal(packed.features, plain.features * 2)


@pytest.mark.parametrize("missing", ["comparisons.csv", "responses.jsonl", "embeddings.npy"])
def test_missing_file(tiny_dir, missing):
    (tiny_dir / missing).unlink()
    with pytest.raises(DataError, match=missing.replace(".", r"\.")):
        load_generic(tiny_dir)


def test_embedding_rows_must_match_responses(make_dataset):
    d = make_dataset(emb=np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(
        DataError, match=r"embeddings\.npy: 5 embedding rows but responses\.jsonl has 4"
    ):
        load_generic(d)


def test_unknown_label_names_line_value_and_user(make_dataset):
    rows = [["alice", "p0", "r0", "r1", "a", ""], ["bob", "p1", "r2", "r3", "left", ""]]
    with pytest.raises(
        DataError, match=r"comparisons\.csv, line 3 \(user 'bob'\): unknown label 'left'"
    ):
        load_generic(make_dataset(comparisons=rows))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_name_the_response(make_dataset, bad):
    emb = np.ones((4, 3), dtype=np.float32)
    emb[2, 1] = bad
    with pytest.raises(DataError, match=r"NaN/Inf in 1 embedding rows: row 2 \('r2'\)"):
        load_generic(make_dataset(emb=emb))


def test_duplicate_response_ids(make_dataset):
    responses = [("r0", "p0"), ("r1", "p0"), ("r2", "p1"), ("r1", "p1")]
    with pytest.raises(DataError, match=r"line 4: duplicate response_id 'r1' \(first on line 2\)"):
        load_generic(make_dataset(responses=responses))


def test_unknown_response_id(make_dataset):
    rows = [["alice", "p0", "r0", "r1", "a", ""], ["dave", "p1", "r2", "r9", "b", ""]]
    with pytest.raises(
        DataError, match=r"line 3 \(user 'dave'\): response_b 'r9' is not in responses"
    ):
        load_generic(make_dataset(comparisons=rows))


def test_missing_column(make_dataset):
    header = ["user_id", "prompt_id", "response_a", "response_b", "verdict", "note"]
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]"):
        load_generic(make_dataset(header=header))


def test_prompt_must_match_the_response(make_dataset):
    rows = [["erin", "p1", "r0", "r1", "a", ""]]
    with pytest.raises(
        DataError, match=r"line 2 \(user 'erin'\): response_a 'r0' answers prompt 'p0'"
    ):
        load_generic(make_dataset(comparisons=rows))


def test_empty_field_and_short_row(make_dataset):
    with pytest.raises(DataError, match=r"line 2 \(user ''\): empty 'user_id'"):
        load_generic(make_dataset("a", comparisons=[["", "p0", "r0", "r1", "a", ""]]))
    with pytest.raises(DataError, match=r"line 2: 4 fields but the header has 6"):
        load_generic(make_dataset("b", comparisons=[["u", "p0", "r0", "r1"]]))


def test_pickled_embeddings_are_refused_not_run(make_dataset):
    d = make_dataset()
    np.save(d / "embeddings.npy", np.array([object()] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"embeddings\.npy: not a readable \.npy matrix"):
        load_generic(d)


def test_all_ties_is_an_error(make_dataset):
    rows = [["alice", "p0", "r0", "r1", "tie", ""]]
    with pytest.raises(DataError, match="every comparison is a tie"):
        load_generic(make_dataset(comparisons=rows))
