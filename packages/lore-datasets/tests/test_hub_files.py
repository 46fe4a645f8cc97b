"""The hub sources read from local files laid out exactly as on the hub, and the offline errors.

Layouts (docs/datasets.md): TL;DR as the hub's parquet conversion
(``comparisons/{split}/0000.parquet`` at refs/convert/parquet, columns of the
summarize_from_feedback script) or as the script's raw JSON-lines files;
PRISM as ``conversations.jsonl`` or its conversion; PersonalLLM as
``data/{split}-00000-of-00001.parquet``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from lore_datasets.errors import DataError
from lore_datasets.hub import load_hub_rows, prism_pairs, tldr_pairs
from lore_datasets.hub_files import source_rows

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

INFO = pa.struct([("id", pa.string()), ("post", pa.string()), ("title", pa.string()),
                  ("subreddit", pa.string()), ("site", pa.string()), ("article", pa.string())])
SUMMARY = pa.struct([("text", pa.string()), ("policy", pa.string()), ("note", pa.string())])
TLDR_SCHEMA = pa.schema([("info", INFO), ("summaries", pa.list_(SUMMARY)), ("choice", pa.int32()),
                         ("worker", pa.string()), ("batch", pa.string()), ("split", pa.string()),
                         ("extra", pa.struct([("confidence", pa.int32())]))])


def tldr_row(worker: str, post: str | None, a: str, b: str, choice: int, split: str,
             confidence: int | None = 7, article: str | None = None, pid: str = "t3_x") -> dict:
    return {"info": {"id": pid, "post": post, "title": "t", "subreddit": "s",
                     "site": "dailymail" if article else None, "article": article},
            "summaries": [{"text": a, "policy": "p1", "note": None},
                          {"text": b, "policy": "p2", "note": None}],
            "choice": choice, "worker": worker, "batch": "batch3", "split": split,
            "extra": {"confidence": confidence}}


TRAIN = [tldr_row("w1", "my post", "A", "B", 1, "train", pid="t3_1"),
         tldr_row("w2", "my post", "A", "B", 0, "train", confidence=2, pid="t3_1"),
         tldr_row("w3", None, "x", "y", 0, "train", article="news text", pid="cnn_1"),
         tldr_row("w1", "other", "same", "same", 0, "train", confidence=None, pid="t3_2")]
VALID = [tldr_row("w1", "third", "C", "D", 0, "valid1", pid="t3_3"),
         tldr_row("w2", "fourth", "E", "F", 1, "valid2", confidence=None, pid="t3_4")]


def write_tldr_parquet(root: Path) -> Path:
    for split, rows in (("train", TRAIN), ("validation", VALID)):
        (root / "comparisons" / split).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=TLDR_SCHEMA),
                       root / "comparisons" / split / "0000.parquet")
    return root


def test_tldr_parquet_conversion_layout(tmp_path: Path) -> None:
    root = write_tldr_parquet(tmp_path)
    rows, files = source_rows("tldr", "train", data_dir=root)
    assert files.endswith("comparisons/train/0000.parquet") and len(rows) == 4
    pairs, dropped = tldr_pairs(rows, "train")
    assert dropped == {"cnndm_rows": 1, "identical_summaries": 1, "below_min_confidence": 0}
    assert [(p.user_id, p.chosen, p.rejected) for p in pairs] == [("w1", "B", "A"), ("w2", "A", "B")]
    assert pairs[0].extra == {"source_split": "train", "confidence": 7}
    assert pairs[0].prompt == [{"role": "user", "content": "my post"}] and pairs[0].split == "train"
    kept, dropped = tldr_pairs(rows, "train", min_confidence=5)
    assert [p.user_id for p in kept] == ["w1"] and dropped["below_min_confidence"] == 2
    valid, _ = tldr_pairs(load_hub_rows("tldr", "validation", data_dir=root), "validation")
    assert [p.extra["source_split"] for p in valid] == ["valid1", "valid2"]
    assert len(load_hub_rows("tldr", "train", data_dir=root, limit=2)) == 2


def test_tldr_raw_script_files_are_split_by_their_rows(tmp_path: Path) -> None:
    folder = tmp_path / "comparisons"
    folder.mkdir()
    (folder / "batch3.json").write_text("".join(json.dumps(r) + "\n" for r in TRAIN[:1] + VALID))
    (folder / "batch10.json").write_text(json.dumps(TRAIN[1]) + "\n")
    (folder / "cnndm0.json").write_text(json.dumps(TRAIN[2]) + "\n")
    train = load_hub_rows("tldr", "train", data_dir=tmp_path)
    assert [r["worker"] for r in train] == ["w1", "w2", "w3"]  # the script's file order
    assert [r["split"] for r in load_hub_rows("tldr", "validation", data_dir=tmp_path)] == [
        "valid1", "valid2"]
    (folder / "batch4.json").write_text(json.dumps({**TRAIN[0], "split": "test"}) + "\n")
    with pytest.raises(DataError, match=r"batch4.json, line 1: split 'test'"):
        load_hub_rows("tldr", "train", data_dir=tmp_path)


def test_tldr_missing_layout_names_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no tldr train files \(expected comparisons/train/"):
        load_hub_rows("tldr", "train", data_dir=tmp_path)
    with pytest.raises(DataError, match="no split 'test'"):
        load_hub_rows("tldr", "test", data_dir=tmp_path)


def prism_conversation(cid: str = "c1", user: str = "user7") -> dict:
    """A row of conversations.jsonl with the hub's fields (a subset of the metadata ones)."""
    def u(turn, content, role="user", chosen=None, wid=0, score=None):
        out = {"turn": turn, "role": role, "content": content, "within_turn_id": wid,
               "model_provider": None, "model_name": None, "score": score, "if_chosen": chosen}
        if role == "model":
            out.update(model_provider="openai", model_name=f"m{wid}")
        return out

    return {"conversation_id": cid, "user_id": user, "conversation_type": "unguided",
            "opening_prompt": "hi there", "conversation_turns": 2, "included_in_balanced_subset": True,
            "conversation_history": [
                u(0, "hi there"),
                u(0, "hello!", "model", True, 0, 80), u(0, "yo", "model", False, 1, 80),
                u(0, "greetings", "model", False, 2, 40), u(0, "sup", "model", False, 3, 10),
                u(1, "tell me more"),
                u(1, "more text", "model", True, 0, 90), u(1, "less", "model", False, 1, 20)],
            "performance_attributes": {"values": 80}, "choice_attributes": {"values": 70},
            "open_feedback": "ok", "generated_datetime": "2023-11-22 15:29:05",
            "timing_duration_s": 120.5}


@pytest.mark.parametrize("layout", ["jsonl", "parquet"])
def test_prism_data_file_and_conversion_layouts(tmp_path: Path, layout: str) -> None:
    rows = [prism_conversation("c1", "user7"), prism_conversation("c2", "user8")]
    if layout == "jsonl":
        (tmp_path / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        (tmp_path / "conversations" / "train").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "conversations/train/0000.parquet")
    pairs, counts = prism_pairs(load_hub_rows("prism", "train", data_dir=tmp_path))
    assert len(pairs) == 8 and counts["ties_with_chosen"] == 2
    assert [p.extra["tie"] for p in pairs[:4]] == [1, 0, 0, 0]
    assert pairs[3].prompt[-1] == {"role": "user", "content": "tell me more"}


def test_prism_several_chosen_in_a_turn() -> None:
    row = prism_conversation()
    row["conversation_history"][2]["if_chosen"] = True  # "yo" chosen beside "hello!"
    with pytest.raises(DataError, match=r"conversation c1, turn 0: 2 different responses marked"):
        prism_pairs([row])
    row = prism_conversation()
    row["conversation_history"][2].update(if_chosen=True, content="hello!")  # the same text twice
    pairs, counts = prism_pairs([row])
    assert counts["turns_with_repeated_chosen"] == 1
    assert ("hello!", "yo") not in [(p.chosen, p.rejected) for p in pairs] and len(pairs) == 3


def test_personalllm_data_files_layout(tmp_path: Path) -> None:
    from lore_datasets.personalllm import MODELS, SCORE_COLUMNS

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for split, n in (("train", 5), ("test", 2)):
        table = {"prompt": [f"p{i}" for i in range(n)], "subset": ["s"] * n,
                 "prompt_id": list(range(n))}
        for i in range(1, 9):
            table[f"response_{i}"] = [f"r{i} of {p}" for p in range(n)]
            table[f"response_{i}_model"] = ["m"] * n
        table.update({c: rng.standard_normal(n).tolist() for c in SCORE_COLUMNS})
        pq.write_table(pa.table(table), tmp_path / "data" / f"{split}-00000-of-00001.parquet")
    rows = load_hub_rows("personalllm", "train", data_dir=tmp_path)
    assert len(rows) == 5 and rows[1]["response_3"] == "r3 of 1"
    assert set(SCORE_COLUMNS) <= rows[0].keys() and len(MODELS) == 10


def test_offline_errors_are_one_line_and_fast(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("LORE_CACHE", str(tmp_path / "lore"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in ("tldr", "prism", "personalllm"):
        start = time.perf_counter()
        with pytest.raises(DataError) as err:
            load_hub_rows(source, "train")
        assert time.perf_counter() - start < 10  # seconds, not ~50 s of retries
        assert "\n" not in str(err.value) and "--data-dir" in str(err.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # loopback, nothing listens
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"cannot reach http://127.0.0.1:9 .*HF_HUB_OFFLINE=1"):
        load_hub_rows("prism", "train")
    assert time.perf_counter() - start < 10  # seconds, not ~50 s of retries
