"""lore-prepare end to end on a tiny reward model saved to disk, and the loaders on its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lore_datasets.errors import DataError
from lore_datasets.generic import load_generic

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from lore_datasets.cli import main
from lore_datasets.embed import TextPair, embed_pairs

from .test_embed_pipeline import (
    WORDS,
    embedder,
    tiny_model,
    tiny_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _text(k: int, n: int = 3) -> str:
    return " ".join(WORDS[(k * 7 + i * 3) % len(WORDS)] for i in range(n))


def test_embed_command_on_a_saved_model(tmp_path: Path, capsys) -> None:
    model_dir = tmp_path / "rm"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer("left").save_pretrained(model_dir)
    lines = [{"user_id": f"u{k % 2}", "prompt": _text(k), "chosen": "good " + _text(k + 1, 2),
              "rejected": "bad " + _text(k + 2, 2)} for k in range(6)]
    lines.append({"user_id": "u0", "prompt": [{"role": "user", "content": "hello"}],
                  "chosen": "good", "rejected": "bad", "prompt_id": 17})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    argv = ["embed", "--source", "pairs", "--pairs", str(pairs), "--model", str(model_dir),
            "--out", str(out), "--device", "cpu", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    assert f"lore-train --dataset {out}" in capsys.readouterr().out
    loaded, meta = load_generic(out)
    assert meta["pairs"] == 7 and sorted(loaded.user_ids) == ["u0", "u1"]
    assert "17" in loaded.prompt_ids
    sidecar = json.loads((out / "embeddings.json").read_text())
    assert sidecar["model"] == str(model_dir) and sidecar["head_check"]["pairs"] == 7
    # a bad input line is one clear error, exit code 2
    pairs.write_text('{"user_id": "u", "prompt": "x", "chosen": "y"}\n')
    assert main([*argv[:-5], "--out", str(tmp_path / "o2"), "--device", "cpu"]) == 2
    assert "line 1: missing field(s) ['rejected']" in capsys.readouterr().err


def test_tldr_and_prism_loaders_read_the_pipeline_output(tmp_path: Path) -> None:
    from lore_datasets.prism import load_prism
    from lore_datasets.tldr import load_tldr

    emb = embedder("right")
    counts = {"w0": (1, 1), "w1": (1, 1), "w2": (4, 2), "w3": (3, 2), "w4": (5, 1), "w5": (2, 3)}
    for split, col in (("train", 0), ("validation", 1)):
        split_pairs = [
            TextPair(w, [{"role": "user", "content": _text(i + 10 * col)}], "good " + _text(i),
                     "bad " + _text(i + 1), prompt_id=f"{split}-{w}-{i}", split=split)
            for w, n in counts.items() for i in range(n[col])
        ]
        embed_pairs(split_pairs, emb, tmp_path / "tldr" / split, progress=False)
    bench = load_tldr(tmp_path / "tldr", seen_train_pairs=2, fewshot_pairs=1)
    assert bench.meta["files"] == ["train/", "validation/"]
    assert set(bench.seen_train.user_ids) | set(bench.unseen_test.user_ids) == {"w2", "w3", "w4",
                                                                                "w5"}
    assert max(bench.seen_train.pairs_per_user().tolist()) == 2
    assert bench.unseen_fewshot.pairs_per_user().tolist() == [1, 1]
    assert torch.equal(bench.v_ref, emb.v_ref)

    prism = []
    for u in range(5):
        for d in range(6 + u % 2):
            prompt = [{"role": "user", "content": _text(u * 10 + d)}]
            for r in range(1 + d % 2):
                prism.append(TextPair(f"user{u}", prompt, "good " + _text(d),
                                      f"bad {_text(d + r + 1)}", prompt_id=f"c{u}-{d}"))
    embed_pairs(prism, emb, tmp_path / "prism", progress=False)
    bench = load_prism(tmp_path / "prism", seed=1)
    assert bench.meta["form"] == "generic"
    assert len(bench.seen_train.user_ids) == 4 and len(bench.unseen_test.user_ids) == 1
    for name in ("seen_train", "unseen_fewshot"):
        train, test = bench.split(name), bench.split(name.replace("train", "test")
                                                     .replace("fewshot", "test"))
        assert not set(train.prompt_ids) & set(test.prompt_ids)
    with pytest.raises(DataError, match="no PRISM embedding files"):
        load_prism(tmp_path / "tldr")


def test_embed_under_torchrun_splits_shards_resumes_and_merges_as_one_process(tmp_path: Path,
                                                                              capsys) -> None:
    """Two gloo processes deal the shards out; the merge equals the one-process run; a
    shard already on disk (an interrupted run) is kept, not embedded again."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    import numpy as np

    model_dir = tmp_path / "rm"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer("left").save_pretrained(model_dir)
    lines = [{"user_id": f"u{k % 3}", "prompt": _text(k), "chosen": "good " + _text(k + 1, 2),
              "rejected": "bad " + _text(k + 2, 2)} for k in range(12)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    args = ["embed", "--source", "pairs", "--pairs", str(pairs), "--model", str(model_dir),
            "--device", "cpu", "--batch-size", "2", "--shard-size", "3", "--no-progress"]
    one, many = tmp_path / "one", tmp_path / "many"
    assert main([*args, "--out", str(one)]) == 0
    capsys.readouterr()
    want = np.load(one / "embeddings.npy")
    assert want.shape[0] == 24  # 8 shards: both processes get several
    # an interrupted run left shard 7 (rows order[21:24] of the global length order,
    # process 1's; the head check re-embeds its pairs alone); a sentinel shows it is reused
    sidecar = json.loads((one / "embeddings.json").read_text())
    (many / "shards").mkdir(parents=True)
    (many / "shards" / "manifest.json").write_text(json.dumps(
        {"fingerprint": sidecar["fingerprint"], "rows": int(want.shape[0]), "shard_size": 3,
         "done": []}))
    np.save(many / "shards" / "000007.npy", np.full((3, want.shape[1]), 7.0, np.float32))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prepare = shutil.which("lore-prepare", path=str(Path(sys.executable).parent))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
         "127.0.0.1", "--master_port", str(port), prepare, *args, "--out", str(many)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # process 0 reports
    got = np.load(many / "embeddings.npy")
    emb = embedder("left")
    convs = [[*r["prompt"], {"role": "assistant", "content": r["text"]}]
             for r in map(json.loads, (one / "responses.jsonl").read_text().splitlines())]
    order = emb.order(*emb.tokenize(convs))
    last = sorted(order[21:])
    assert (got[last] == 7.0).all()
    rest = sorted(order[:21])
    assert np.array_equal(got[rest], want[rest])
    assert not (many / "shards").exists()
    for name in ("responses.jsonl", "comparisons.csv", "v_ref.safetensors"):
        assert (many / name).read_bytes() == (one / name).read_bytes(), name
