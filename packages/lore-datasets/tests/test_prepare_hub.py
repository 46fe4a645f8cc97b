"""lore-prepare embed on hub-shaped local files (--data-dir), and the checks before any model load."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from lore_datasets.cli import main
from lore_datasets.errors import DataError

pytest.importorskip("transformers")
pq = pytest.importorskip("pyarrow.parquet")

from .test_hub_files import (  # noqa: E402
    TLDR_SCHEMA,
    pa,
    prism_conversation,
    tldr_row,
)

# a tiny model gains nothing from threads, and spinning ones stall a busy machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_model(tmp_path: Path) -> Path:
    from lore_datasets.embed.tiny import save_tiny_reward_model

    return save_tiny_reward_model(tmp_path / "rm", max_positions=256)


def test_tldr_from_hub_layout_end_to_end(tmp_path: Path, capsys) -> None:
    from lore_datasets.tldr import load_tldr

    data = tmp_path / "hub"
    for split, col in (("train", "train"), ("validation", "valid1")):
        rows = [tldr_row(f"w{w}", f"post {w} {i} {split}", f"good {i}", f"bad {i}", i % 2, col,
                         pid=f"t3_{split}{w}{i}") for w in range(6) for i in range(2 + w % 2)]
        rows.append(tldr_row("w9", None, "x", "y", 0, col, article="cnn story", pid="cnn"))
        (data / "comparisons" / split).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=TLDR_SCHEMA),
                       data / "comparisons" / split / "0000.parquet")
    out = tmp_path / "out"
    assert main(["embed", "--source", "tldr", "--data-dir", str(data), "--model",
                 str(_tiny_model(tmp_path)), "--out", str(out), "--device", "cpu",
                 "--no-progress", "--max-batch-tokens", "256"]) == 0
    captured = capsys.readouterr()
    assert "'cnndm_rows': 1" in captured.err and "tok/s" in captured.err
    sidecar = json.loads((out / "train" / "embeddings.json").read_text())
    assert sidecar["source"]["dropped"]["cnndm_rows"] == 1
    assert sidecar["throughput"]["saved_fraction"] > 0  # chosen and rejected share their post
    assert sidecar["settings"] == {"max_length": 4096, "shared_prompts": True, "legacy": False}
    header = (out / "train" / "comparisons.csv").read_text().splitlines()[0]
    assert header.endswith("split,confidence,source_split")
    bench = load_tldr(out, seen_train_pairs=2, fewshot_pairs=1, drop_smallest=0)
    assert bench.meta["files"] == ["train/", "validation/"] and bench.dim == 16


def test_offline_fails_before_the_model_is_loaded(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    # the model does not exist: reaching it would be another error
    code = main(["embed", "--source", "prism", "--model", str(tmp_path / "no-model"),
                 "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.perf_counter() - start < 10
    assert err.startswith("lore-prepare: error: HannahRoseKirk/prism-alignment: no train files")
    assert len(err.splitlines()) == 1
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    code = main(["embed", "--source", "personalllm", "--model", str(tmp_path / "no-model"),
                 "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2 and "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["embed", "--source", "prism", "--normalize", "zscore", "--data-dir",
                 str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "--normalize and --cost-sign go with --source personalllm" in capsys.readouterr().err


def test_prism_from_hub_jsonl(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    data.mkdir()
    rows = [prism_conversation(f"c{u}-{d}", f"user{u}") for u in range(3) for d in range(2)]
    (data / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["embed", "--source", "prism", "--data-dir", str(data), "--model",
                 str(_tiny_model(tmp_path)), "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    sidecar = json.loads((out / "embeddings.json").read_text())
    assert sidecar["pairs"] == 24 and sidecar["source"]["counts"]["ties_with_chosen"] == 6
    assert np.load(out / "embeddings.npy").shape[1] == 16


def test_personalllm_normalize_and_cost_sign(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from lore_datasets.personalllm import (
        MODELS,
        SCORE_COLUMNS,
        load_personalllm,
        write_score_settings,
    )

    rng = np.random.default_rng(3)
    scale = np.array([100.0 if m == "gemma_2b" else 1.0 for m in MODELS])
    for split, n in (("train", 40), ("test", 10)):
        save_file({"embeddings": torch.randn(8 * n, 4)}, tmp_path / f"{split}.safetensors")
        scores = rng.standard_normal((n, 8, 10)) * scale
        table = {c: scores[:, i, j].tolist() for (i, j), c in
                 zip(((i, j) for i in range(8) for j in range(10)), SCORE_COLUMNS)}
        pq.write_table(pa.table(table), tmp_path / f"{split}.parquet")
    small = {"num_seen": 5, "num_unseen": 3, "seen_train_frac": 0.5, "fewshot_frac": 0.25}
    raw = load_personalllm(tmp_path, **small)
    assert raw.meta["scores"] == {"normalize": "none", "cost_sign": "raw", "cost_model": "beaver_7b"}
    z = load_personalllm(tmp_path, normalize="zscore", **small)
    flipped = load_personalllm(tmp_path, cost_sign="flip", **small)
    assert not torch.equal(raw.seen_test.features, z.seen_test.features)
    assert not torch.equal(raw.seen_test.features, flipped.seen_test.features)
    write_score_settings(tmp_path, normalize="zscore", cost_sign="flip")
    stored = load_personalllm(tmp_path, **small)
    assert stored.meta["scores"]["normalize"] == "zscore"
    assert stored.meta["scores"]["cost_sign"] == "flip"
    with pytest.raises(DataError, match="normalize must be one of none, zscore"):
        load_personalllm(tmp_path, normalize="minmax", **small)


def test_personalllm_from_hub_layout_with_zscore(tmp_path: Path, capsys) -> None:
    from lore_datasets.personalllm import SCORE_COLUMNS, load_personalllm

    rng = np.random.default_rng(1)
    data = tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    for split, n in (("train", 6), ("test", 3)):
        table = {"prompt": [f"post {p} {split}" for p in range(n)], "subset": ["s"] * n,
                 "prompt_id": list(range(n))}
        for i in range(1, 9):
            table[f"response_{i}"] = [f"good {i} {p}" for p in range(n)]
        table.update({c: rng.standard_normal(n).tolist() for c in SCORE_COLUMNS})
        pq.write_table(pa.table(table), data / f"{split}-00000-of-00001.parquet")
    out = tmp_path / "out"
    assert main(["embed", "--source", "personalllm", "--data-dir", str(tmp_path / "hub"),
                 "--model", str(_tiny_model(tmp_path)), "--out", str(out), "--device", "cpu",
                 "--no-progress", "--normalize", "zscore", "--legacy-batching"]) == 0
    assert json.loads((out / "scores.json").read_text()) == {"normalize": "zscore",
                                                             "cost_sign": "raw"}
    record = json.loads((out / "train.embeddings.json").read_text())
    assert record["rows"] == 48 and record["settings"]["legacy"] is True
    bench = load_personalllm(out, num_seen=3, num_unseen=2, seen_train_frac=0.5,
                             fewshot_frac=0.4)
    assert bench.meta["scores"]["normalize"] == "zscore" and bench.dim == 16
