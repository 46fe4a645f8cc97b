"""Hub rows -> text pairs, on small in-memory tables with the hub's columns."""

from __future__ import annotations

import pytest

from lore_datasets.errors import DataError
from lore_datasets.hub import prism_pairs, tldr_pairs


def tldr_rows() -> list[dict]:
    def row(worker, post, a, b, choice, pid):
        return {"info": {"id": pid, "post": post, "title": "t", "subreddit": "s"},
                "summaries": [{"text": a, "policy": "p1"}, {"text": b, "policy": "p2"}],
                "choice": choice, "worker": worker, "batch": "b1", "split": "train"}

    return [
        row("w1", "my post", "sum A", "sum B", 1, "t3_1"),
        row("w2", "my post", "sum A", "sum B", 0, "t3_1"),
        row("w1", "other post", "same", "same", 0, "t3_2"),
        {**row("w3", None, "x", "y", 0, "cnn_1"),
         "info": {"id": "cnn_1", "post": None, "article": "news text"}},
    ]


def test_tldr_rows_become_worker_pairs() -> None:
    pairs, skipped = tldr_pairs(tldr_rows(), "validation")
    assert skipped == {"cnndm_rows": 1, "identical_summaries": 1, "below_min_confidence": 0}
    assert [(p.user_id, p.chosen, p.rejected) for p in pairs] == [
        ("w1", "sum B", "sum A"), ("w2", "sum A", "sum B")]
    assert pairs[0].prompt == [{"role": "user", "content": "my post"}]
    assert {p.prompt_id for p in pairs} == {"t3_1"}  # CNN/DM rows (no post) are not TL;DR
    assert all(p.split == "validation" for p in pairs)
    bad = tldr_rows()[:1]
    bad[0]["choice"] = 2
    with pytest.raises(DataError, match="row 0: expected worker, two summaries"):
        tldr_pairs(bad, "train")


def prism_row() -> dict:
    def u(turn, content, role="user", chosen=None, wid=0):
        out = {"turn": turn, "role": role, "content": content, "within_turn_id": wid}
        if chosen is not None:
            out.update(if_chosen=chosen, model_name=f"m{wid}", score=50)
        return out

    history = [
        u(0, "hi there"),
        u(0, "hello!", "model", True, 0), u(0, "yo", "model", False, 1),
        u(0, "greetings", "model", False, 2), u(0, "hello!", "model", False, 3),
        u(1, "tell me more"),
        u(1, "more text", "model", True, 0), u(1, "less", "model", False, 1),
        u(2, "and?"),
        u(2, "only one", "model", True, 0),
    ]
    return {"conversation_id": "c1", "user_id": "user7", "conversation_type": "unguided",
            "conversation_history": history}


def test_prism_one_pair_per_turn_and_rejected_response() -> None:
    pairs, skipped = prism_pairs([prism_row()])
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("hello!", "yo"), ("hello!", "greetings"), ("more text", "less")]
    assert skipped["rejected_same_as_chosen"] == 1
    assert skipped["turns_without_rejected"] == 1
    assert all(p.user_id == "user7" and p.prompt_id == "c1" for p in pairs)
    assert pairs[0].prompt == [{"role": "user", "content": "hi there"}]
    # later turns see the earlier turn with its chosen answer
    assert pairs[2].prompt == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello!"},
        {"role": "user", "content": "tell me more"},
    ]
    # a rejected response is one text, never the list of them (REFERENCE §7.2)
    assert all(isinstance(p.rejected, str) for p in pairs)


def test_prism_bad_rows() -> None:
    row = prism_row()
    del row["user_id"]
    with pytest.raises(DataError, match="row 0: expected user_id"):
        prism_pairs([row])
    row = prism_row()
    row["conversation_history"].append({"turn": 1, "role": "user", "content": "again"})
    with pytest.raises(DataError, match="turn 1: 2 user messages"):
        prism_pairs([row])
