"""Hostile data and state files: names that lead out of their directory, bad shard contents.

Every name a lore file holds (a shard in benchmark.json, a checkpoint in
results.json, an entry of a run's checkpoints/) must resolve inside that
file's directory; shard rows must be floating point and finite. Each case is
one line naming the file and the field or row, exit 2 from the commands,
and nothing outside the data directory is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lore_datasets import DataError, synthetic_benchmark
from lore_datasets.paths import contained
from lore_datasets.storage import load_benchmark, read_process_share, save_benchmark
from lore_train.cli import main as train_main

FAST = ["--K", "0", "1", "--steps", "3", "--fewshot-steps", "3", "--no-progress", "--no-select"]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """A small synthetic benchmark saved in shards of ~4 KB, and a foreign shard beside it."""
    root = tmp_path_factory.mktemp("hostile")
    bench, _ = synthetic_benchmark(num_users=12, pairs_per_user=20, dim=8)
    save_benchmark(bench, root / "data", max_shard_bytes=4096)
    other = root / "other"
    other.mkdir()
    save_file({"seen_train.features": torch.ones(500, 8)}, other / "x.safetensors")
    return root


def copy_with(sharded: Path, tmp_path: Path, edit) -> Path:
    """A copy of the data set whose index is changed by ``edit(doc, directory)``."""
    data = tmp_path / "data"
    data.mkdir()
    for f in (sharded / "data").iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    doc = json.loads((data / "benchmark.json").read_text())
    edit(doc, data)
    (data / "benchmark.json").write_text(json.dumps(doc))
    return data


def _set_first_shard(field: str, value):
    def edit(doc, data):
        doc["splits"]["seen_train"]["shards"][0][field] = value(data) if callable(value) else value
    return edit


HOSTILE_INDEX = {
    "dot-dot": (_set_first_shard("file", "../other/x.safetensors"), r"leads out of its directory"),
    "absolute": (_set_first_shard("file", lambda d: str(d.parent / "other" / "x.safetensors")),
                 r"is an absolute path"),
    "not a string": (_set_first_shard("file", 7), r"'file'.*7"),
    "rows as strings": (_set_first_shard("rows", ["0", "5"]), r"shard 0 'rows'"),
    "rows past the end": (_set_first_shard("rows", [0, 10**9]), r"shard 0 'rows'"),
    "integer dtype": (lambda doc, d: doc["splits"]["seen_train"].update(dtype="int64"),
                      r"'dtype': 'int64' is not a floating-point type"),
    "users as bool": (lambda doc, d: doc["splits"]["seen_train"].update(users=True),
                      r"split 'seen_train' needs users"),
}


@pytest.mark.parametrize("case", list(HOSTILE_INDEX))
def test_a_hostile_shard_index_is_one_line(sharded, tmp_path, case, capsys):
    edit, pattern = HOSTILE_INDEX[case]
    data = copy_with(sharded, tmp_path, edit)
    with pytest.raises(DataError, match=r"benchmark\.json: .*" + pattern):
        load_benchmark(data)
    with pytest.raises(DataError, match=pattern):
        read_process_share(data, 0, 2)
    code = train_main(["--dataset", str(data), "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[-1].startswith("lore-train: error: "), err
    assert not (tmp_path / "run").exists()


def test_a_symlinked_shard_that_leads_out_is_refused(sharded, tmp_path):
    outside = tmp_path / "outside.safetensors"
    save_file({"seen_train.features": torch.ones(500, 8)}, outside)

    def edit(doc, data):
        (data / "link.safetensors").symlink_to(outside)
        doc["splits"]["seen_train"]["shards"][0]["file"] = "link.safetensors"

    data = copy_with(sharded, tmp_path, edit)
    with pytest.raises(DataError, match=r"'link.safetensors' leads out of .*symbolic link"):
        load_benchmark(data)


def _shard_with(sharded: Path, tmp_path: Path, make) -> Path:
    """The data set with its first seen_train shard's features replaced by ``make(features)``."""
    from safetensors.torch import load_file

    def edit(doc, data):
        name = doc["splits"]["seen_train"]["shards"][0]["file"]
        tensors = load_file(data / name)
        tensors["seen_train.features"] = make(tensors["seen_train.features"])
        save_file(tensors, data / name)

    return copy_with(sharded, tmp_path, edit)


@pytest.mark.parametrize(("make", "pattern"), [
    (lambda f: f.to(torch.int64), r"seen_train\.features: features must be floating point, got int64"),
    (lambda f: torch.where(torch.arange(f.shape[0])[:, None] == 3, torch.inf, f),
     r"seen_train\.features: row 3 is not finite"),
    (lambda f: torch.where(torch.arange(f.shape[0])[:, None] == 1, torch.nan, f),
     r"seen_train\.features: row 1 is not finite"),
])
def test_shard_features_must_be_float_and_finite(sharded, tmp_path, make, pattern):
    data = _shard_with(sharded, tmp_path, make)
    with pytest.raises(DataError, match=r"benchmark-seen_train-00001\.safetensors: " + pattern):
        load_benchmark(data)


def test_contained_accepts_names_inside(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_text("x")
    (tmp_path / "inner").symlink_to(tmp_path / "a")
    assert contained(tmp_path, "a/b", "f") == tmp_path / "a" / "b"
    assert contained(tmp_path, "inner/b", "f") == tmp_path / "inner" / "b"  # a link that stays in
    for bad in ("", "/etc/passwd", "a/../../x", None, ["a"]):
        with pytest.raises(DataError, match=r"^where: "):
            contained(tmp_path, bad, "where")


def test_resume_refuses_a_checkpoint_entry_outside_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset", "synthetic", "--out", str(out), "--K", "0", "1", "--steps", "3",
            "--fewshot-steps", "3", "--no-progress", "--no-select"]
    assert train_main(args) == 0
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    results["runs"][0]["checkpoint"] = "../../elsewhere"
    (out / "results.json").write_text(json.dumps(results))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert train_main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lore-train: error: ") and "results.json: runs[0] 'checkpoint'" in err[-1]
    assert "leads out of its directory" in err[-1]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_lore_eval_refuses_a_checkpoint_linked_from_outside(tmp_path, capsys):
    from lore_eval.cli import main as eval_main

    out = tmp_path / "run"
    assert train_main(["--dataset", "synthetic", "--out", str(out), *FAST]) == 0
    elsewhere = tmp_path / "elsewhere"
    os.rename(out / "checkpoints" / "K1_alpha0", elsewhere)
    (out / "checkpoints" / "K1_alpha0").symlink_to(elsewhere)
    capsys.readouterr()
    code = eval_main(["fewshot", "--run", str(out), "--dataset", "synthetic", "--trials", "1",
                      "--shots", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "leads out of" in err[-1] and "K1_alpha0" in err[-1], err


# -- embedding shards ---------------------------------------------------------
class _Embedder:
    """Deterministic rows (no model): row i of a call is its conversation's number."""

    name = "counting"

    def __init__(self, stop_after: int | None = None) -> None:
        self.calls, self.stop_after = 0, stop_after

    def embed(self, conversations, progress=False):
        if self.stop_after is not None and self.calls == self.stop_after:
            raise KeyboardInterrupt  # a kill after some shards
        self.calls += 1
        return torch.tensor([[float(c[0]), 1.0, 2.0] for c in conversations])


CONVERSATIONS = [[i] for i in range(10)]


def _interrupted(tmp_path: Path) -> Path:
    """A shard directory with shards 0 and 1 of 4 finished, as a killed run leaves it."""
    from lore_datasets.embed import embed_resumable

    with pytest.raises(KeyboardInterrupt):
        embed_resumable(CONVERSATIONS, _Embedder(stop_after=2), tmp_path / "shards", "fp",
                        tmp_path / "embeddings.npy", shard_size=3, progress=False)
    return tmp_path / "shards"


def _resume(tmp_path: Path):
    from lore_datasets.embed import embed_resumable

    return embed_resumable(CONVERSATIONS, _Embedder(), tmp_path / "shards", "fp",
                           tmp_path / "embeddings.npy", shard_size=3, progress=False)


@pytest.mark.parametrize(("damage", "pattern"), [
    (lambda p: p.write_bytes(b""), r"000001\.npy: not a whole \.npy shard \(EOFError"),
    (lambda p: p.write_bytes(p.read_bytes()[:-7]), r"000001\.npy: not a whole \.npy shard"),
    (lambda p: np.save(p, np.array([[1.0, np.nan, 0.0]] * 3, np.float32)),
     r"000001\.npy: row 0 is not finite"),
    (lambda p: np.save(p, np.zeros((2, 3), np.float32)), r"000001\.npy: holds float32 \(2, 3\)"),
])
def test_a_damaged_embedding_shard_is_one_line_and_never_merged(tmp_path, damage, pattern):
    shards = _interrupted(tmp_path)
    damage(shards / "000001.npy")
    with pytest.raises(DataError, match=pattern) as caught:
        _resume(tmp_path)
    assert "\n" not in str(caught.value) and "delete it and rerun" in str(caught.value)
    assert not (tmp_path / "embeddings.npy").exists()  # nothing merged
    (shards / "000001.npy").unlink()  # what the message says to do
    matrix = _resume(tmp_path)
    assert matrix[:, 0].tolist() == [float(i) for i in range(10)]


def test_a_garbage_embedding_manifest_is_one_line(tmp_path):
    shards = _interrupted(tmp_path)
    for text in ("{not json", '{"fingerprint": "fp", "rows": 10, "shard_size": 3, "done": ["x"]}',
                 "[]"):
        (shards / "manifest.json").write_text(text)
        with pytest.raises(DataError, match=r"manifest\.json: "):
            _resume(tmp_path)


def test_embedding_shards_are_fsynced_before_they_are_renamed(tmp_path, monkeypatch):
    from lore_datasets.runtime import durable

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(durable.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(durable.os, "replace",
                        lambda a, b: (events.append(f"rename {Path(b).name}"), real_replace(a, b)))
    _resume(tmp_path)
    first = events.index("rename 000000.npy")
    assert events[first - 1] == "fsync" and events[first + 1] == "fsync"  # file, then directory
