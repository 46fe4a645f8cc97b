"""The reference loaders through load_dataset; v_ref and canonical directories; convert."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lore_datasets import DataError, SplitConfig, load_dataset
from lore_datasets.cli import main as prepare_main
from lore_datasets.convert import convert
from lore_datasets.tldr import load_tldr


def _tldr(directory: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        data = {f"w{i}": [{"text": f"{split} {i} {k}",
                           "embeddings": {"winning": [torch.randn(4, generator=gen)],
                                          "losing": [torch.randn(4, generator=gen)]}}
                          for k in range(3 + i)] for i in range(8)}
        with (directory / f"tldr_embeddings_{split}.pkl").open("wb") as f:
            pickle.dump(data, f)
    return directory


def test_seed_comes_from_the_split_config(tmp_path: Path) -> None:
    _tldr(tmp_path)
    direct = load_tldr(tmp_path, seed=3)
    for split in ({"seed": 3, "split_by": "auto"}, SplitConfig(seed=3)):
        bench = load_dataset("tldr", data_dir=tmp_path, split=split)
        assert bench.seen_train.user_ids == direct.seen_train.user_ids
        assert bench.seen_train.prompt_ids == direct.seen_train.prompt_ids
    with pytest.raises(DataError, match=r"tldr: data directory .* not found"):
        load_dataset("tldr", data_dir=tmp_path / "nope")
    with pytest.raises(DataError, match="embeddings and keep_ties do not apply"):
        load_dataset("tldr", data_dir=tmp_path, keep_ties=True)


def test_generic_directory_picks_up_v_ref(make_dataset) -> None:
    rows = [[f"u{u}", f"p{i % 4}", f"r{i % 8}", f"r{(i + 4) % 8}", "ab"[i % 2], ""]
            for u in range(4) for i in range(12)]
    responses = [(f"r{i}", f"p{i % 4}") for i in range(8)]
    emb = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    directory = make_dataset("g", comparisons=rows, responses=responses, emb=emb)
    split = {"min_pairs_per_user": 5, "split_by": "pair"}
    assert load_dataset(str(directory), split=split).v_ref is None
    save_file({"v_ref": torch.tensor([1.0, 2.0, 3.0])}, directory / "v_ref.safetensors")
    assert load_dataset(str(directory), split=split).v_ref.tolist() == [1.0, 2.0, 3.0]
    save_file({"v_ref": torch.ones(5)}, directory / "v_ref.safetensors")
    with pytest.raises(DataError, match=r"v_ref\.safetensors: 'v_ref' has shape \(5,\)"):
        load_dataset(str(directory), split=split)


def test_convert_writes_a_canonical_directory_that_loads_back(tmp_path: Path, capsys) -> None:
    _tldr(tmp_path)
    save_file({"v_ref": torch.arange(4.0)}, tmp_path / "v_ref.safetensors")
    out = tmp_path / "canonical"
    bench = convert("tldr", tmp_path, out, seed=2)
    back = load_dataset(str(out))
    assert back.meta["source"] == "tldr" and back.meta["seed"] == 2
    for name in ("seen_train", "unseen_test"):
        assert torch.equal(back.split(name).features, bench.split(name).features)
        assert back.split(name).user_ids == bench.split(name).user_ids
    assert torch.equal(back.v_ref, torch.arange(4.0))
    assert json.loads((out / "benchmark.json").read_text())["meta"]["converted_from"]
    assert prepare_main(["convert", "--dataset", "tldr", "--data-dir", str(tmp_path),
                         "--out", str(tmp_path / "c2")]) == 0
    assert "seen_train" in capsys.readouterr().out
    assert prepare_main(["convert", "--dataset", "prism", "--data-dir", str(tmp_path),
                         "--out", str(tmp_path / "c3")]) == 2
    assert "no PRISM embedding files" in capsys.readouterr().err
