"""TL;DR loader on tiny pickles written in the reference layout."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lore_datasets.errors import DataError
from lore_datasets.reference_files import text_id
from lore_datasets.safe_pickle import UnsafePickleError
from lore_datasets.tldr import load_tldr

DIM = 6
# worker -> (train entries, val entries); w_small* are the two smallest per file.
COUNTS = {
    "w_small1": (1, 1), "w_small2": (2, 2), "w3": (200, 3), "w4": (60, 4), "w5": (7, 5),
    "w6": (8, 6), "w7": (9, 7), "w8": (10, 8), "w9": (11, 9), "w_train_only": (30, 0),
}


def _entry(worker: str, split: str, i: int, gen: torch.Generator) -> dict:
    win, lose = torch.randn(2, DIM, generator=gen).to(torch.bfloat16)
    return {
        "text": f"post {worker} {split} {i}",
        "winning_summary": "good",
        "losing_summary": "bad",
        "embeddings": {"winning": [win], "losing": [lose]},
    }


def write_tldr(directory: Path, counts=COUNTS) -> dict[str, dict[str, list[dict]]]:
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    data: dict[str, dict[str, list[dict]]] = {"train": {}, "val": {}}
    for worker, (n_train, n_val) in counts.items():
        for split, n in (("train", n_train), ("val", n_val)):
            if n:
                data[split][worker] = [_entry(worker, split, i, gen) for i in range(n)]
    for split in data:  # the reference orders workers by ascending count
        data[split] = dict(sorted(data[split].items(), key=lambda kv: len(kv[1])))
        with (directory / f"tldr_embeddings_{split}.pkl").open("wb") as f:
            pickle.dump(data[split], f)
    return data


def _expected_rows(entries: list[dict]) -> dict[str, torch.Tensor]:
    return {
        text_id(e["text"]): e["embeddings"]["winning"][0].float() - e["embeddings"]["losing"][0].float()
        for e in entries
    }


def test_split_follows_the_reference_rules(tmp_path: Path) -> None:
    data = write_tldr(tmp_path)
    bench = load_tldr(tmp_path, seed=0)
    seen, unseen = bench.seen_train.user_ids, bench.unseen_test.user_ids
    assert set(seen) | set(unseen) == {"w3", "w4", "w5", "w6", "w7", "w8", "w9"}
    assert not set(seen) & set(unseen)
    assert len(seen) == 3 and len(unseen) == 4  # int(7 / 2) seen
    assert bench.meta["dropped_smallest"] == {"train": ["w_small1", "w_small2"],
                                              "val": ["w_small1", "w_small2"]}
    caps = {"seen_train": 150, "unseen_fewshot": 50}
    for name, source in (("seen_train", "train"), ("seen_test", "val"),
                         ("unseen_fewshot", "train"), ("unseen_test", "val")):
        part = bench.split(name)
        counts = part.pairs_per_user().tolist()
        for user, n in zip(part.user_ids, counts):
            available = len(data[source][user])
            assert n == min(available, caps.get(name, available)), (name, user)
        expected = {}
        for user in part.user_ids:
            expected.update(_expected_rows(data[source][user]))
        for row, prompt in enumerate(part.prompt_ids):
            torch.testing.assert_close(part.features[row], expected[prompt], rtol=0, atol=0)
    assert bench.v_ref is None
    assert bench.meta["counts"]["seen_test"] == bench.seen_test.num_pairs


def test_subtraction_is_fp32_not_bf16(tmp_path: Path) -> None:
    one = torch.ones(DIM, dtype=torch.bfloat16) + 2**-7
    small = torch.full((DIM,), 2**-9, dtype=torch.bfloat16)
    entry = {"text": "t", "embeddings": {"winning": [one], "losing": [small]}}
    counts = {f"w{i}": 3 for i in range(6)}
    tmp_path.mkdir(exist_ok=True)
    for split in ("train", "val"):
        with (tmp_path / f"tldr_embeddings_{split}.pkl").open("wb") as f:
            pickle.dump({w: [entry] * n for w, n in counts.items()}, f)
    bench = load_tldr(tmp_path)
    exact = one.float() - small.float()
    assert not torch.equal(exact, (one - small).float())  # bf16 would round here
    torch.testing.assert_close(bench.seen_train.features[0], exact, rtol=0, atol=0)


def test_seeded_and_independent_of_hash_seed(tmp_path: Path) -> None:
    write_tldr(tmp_path)
    a, b = load_tldr(tmp_path, seed=3), load_tldr(tmp_path, seed=3)
    assert a.seen_train.user_ids == b.seen_train.user_ids
    assert torch.equal(a.seen_train.features, b.seen_train.features)
    other = load_tldr(tmp_path, seed=4)
    assert (other.seen_train.user_ids, other.seen_train.prompt_ids) != (
        a.seen_train.user_ids, a.seen_train.prompt_ids)
    code = (
        "import sys; from lore_datasets.tldr import load_tldr; "
        f"b = load_tldr({str(tmp_path)!r}, seed=3); "
        "print(','.join(b.seen_train.user_ids)); print(','.join(b.seen_train.prompt_ids))"
    )
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                capture_output=True, text=True).stdout)
    assert outs == {",".join(a.seen_train.user_ids) + "\n" + ",".join(a.seen_train.prompt_ids) + "\n"}


def test_v_ref_is_read_and_checked(tmp_path: Path) -> None:
    write_tldr(tmp_path)
    v = torch.arange(DIM, dtype=torch.float32)
    save_file({"v_ref": v}, tmp_path / "v_ref.safetensors")
    assert torch.equal(load_tldr(tmp_path).v_ref, v)
    save_file({"v_ref": torch.zeros(DIM + 1)}, tmp_path / "v_ref.safetensors")
    with pytest.raises(DataError, match=r"v_ref.safetensors.*\[6\] vector"):
        load_tldr(tmp_path)


def test_missing_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"tldr_embeddings_train\.pkl: file not found"):
        load_tldr(tmp_path)
    write_tldr(tmp_path)
    (tmp_path / "tldr_embeddings_val.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"tldr_embeddings_val\.pkl: not a readable pickle"):
        load_tldr(tmp_path)
    bad = {f"w{i}": [{"text": "x", "embeddings": {"winning": [torch.zeros(DIM)]}}] for i in range(6)}
    for split in ("train", "val"):
        with (tmp_path / f"tldr_embeddings_{split}.pkl").open("wb") as f:
            pickle.dump(bad, f)
    with pytest.raises(DataError, match=r"worker 'w\d', entry 0: expected 'embeddings'"):
        load_tldr(tmp_path)


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_runs_nothing(tmp_path: Path) -> None:
    write_tldr(tmp_path)
    marker = tmp_path / "pwned"
    with (tmp_path / "tldr_embeddings_train.pkl").open("wb") as f:
        pickle.dump({"w1": [{"text": _Marker(marker)}]}, f)
    with pytest.raises(UnsafePickleError, match=r"refused to load global .*system.*nothing"):
        load_tldr(tmp_path)
    assert not marker.exists()
