"""Data sets by name: bundled LLMFAO / UKPConvArg1, synthetic, directories, placeholders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lore_datasets
from lore_datasets import DATASETS, SPLITS, DataError, SplitConfig, load_dataset

BUNDLED = Path(lore_datasets.__file__).parent / "data"


def test_llmfao_is_bundled_and_matches_its_source_facts():
    bench = load_dataset("llmfao")
    meta = bench.meta
    # SOURCE.md: 8,931 judgments from 124 workers; a 2,911 / b 2,549 / tie 3,471.
    assert meta["rows_read"] == 8931 and meta["ties_dropped"] == 3471
    assert meta["labels"] == {"a": 2911, "b": 2549, "tie": 3471}
    assert meta["pairs"] == 8931 - 3471 and meta["users"] == 124 and meta["prompts"] == 13
    assert meta["source"] == "llmfao" and meta["license"] == "CC BY 4.0"
    assert "all-MiniLM-L6-v2" in meta["embedder"] and bench.dim == 384 and bench.v_ref is None
    # 13 prompts: split by pair. Kept + excluded pairs account for every non-tie pair.
    split = meta["split"]
    assert split["split_by"] == "pair"
    kept = sum(split["counts"][s]["pairs"] for s in SPLITS)
    assert kept + split["excluded_users"]["pairs"] == meta["pairs"]
    users = len(bench.seen_train.user_ids) + len(bench.unseen_test.user_ids)
    assert users + split["excluded_users"]["count"] == 124


def test_ukpconvarg1_is_bundled_and_split_by_prompt():
    bench = load_dataset("ukpconvarg1")
    meta = bench.meta
    # SOURCE.md: 84,445 judgments, 3,815 workers; tie 19,105; 32 topic/stance prompts.
    assert meta["rows_read"] == 84445 and meta["ties_dropped"] == 19105
    assert meta["users"] + len(meta["users_only_ties"]) == 3815
    assert meta["split"]["split_by"] == "prompt" and len(meta["split"]["test_prompts"]) == 8
    assert not set(bench.seen_train.prompt_ids) & set(bench.seen_test.prompt_ids)


def test_bundle_ships_attribution_and_licence():
    for name in ("llmfao", "ukpconvarg1"):
        files = {p.name for p in (BUNDLED / name).iterdir()}
        assert {"ATTRIBUTION.md", "SOURCE.md", "embeddings.npy", "responses.jsonl"} <= files
    assert "Creative Commons" in (BUNDLED / "llmfao" / "LICENSE.CC-BY").read_text()


def test_split_overrides_and_full_config():
    base = load_dataset("llmfao")
    changed = load_dataset("llmfao", split={"seed": 1})
    assert changed.meta["split"]["seed"] == 1
    assert changed.meta["split"]["config"]["min_pairs_per_user"] == 20
    assert changed.unseen_test.user_ids != base.unseen_test.user_ids
    full = load_dataset("llmfao", split=SplitConfig(min_pairs_per_user=50))
    assert (
        full.meta["split"]["excluded_users"]["count"]
        > base.meta["split"]["excluded_users"]["count"]
    )
    with pytest.raises(DataError, match="bad split option"):
        load_dataset("llmfao", split={"seeed": 1})


def test_synthetic_by_name():
    bench = load_dataset("synthetic")
    assert bench.meta["source"] == "synthetic" and bench.meta["split"]["split_by"] == "prompt"
    with pytest.raises(DataError, match="do not apply"):
        load_dataset("synthetic", embeddings="x.npy")


@pytest.mark.parametrize("name", ["tldr", "prism", "personalllm"])
def test_reference_sources_need_their_directory_in_one_line(name, tmp_path):
    assert name in DATASETS
    with pytest.raises(DataError, match=f"^{name}: needs the directory of its files") as err:
        load_dataset(name)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=f"^{name}: the reference split is fixed"):
        load_dataset(name, data_dir=tmp_path, split={"seed": 1, "min_pairs_per_user": 3})


def test_unknown_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(
        DataError,
        match=r"unknown data set '.*nope': expected one of llmfao, ukpconvarg1, synthetic",
    ):
        load_dataset(str(tmp_path / "nope"))


def test_directory_in_generic_layout(make_dataset):
    rng = np.random.default_rng(0)
    responses = [(f"r{i}", f"p{i % 5}") for i in range(30)]
    rows = [
        [f"u{u}", f"p{i % 5}", f"r{i % 30}", f"r{(i + 5) % 30}", "ab"[i % 2], ""]
        for u in range(4)
        for i in range(u, u + 25)
    ]
    d = make_dataset(
        comparisons=rows, responses=responses, emb=rng.standard_normal((30, 6)).astype(np.float32)
    )
    (d / "embeddings.json").write_text(json.dumps({"model": "my-encoder"}))
    bench = load_dataset(d)
    assert bench.meta["source"] == str(d) and bench.meta["embedder"] == "my-encoder"
    assert bench.meta["split"]["split_by"] == "pair" and bench.dim == 6
    assert len(bench.unseen_test.user_ids) == 1 and len(bench.seen_train.user_ids) == 3
