"""Raw text sources on the Hugging Face hub, mapped to text pairs with a user id.

Where the files come from (the hub's parquet conversion, the data files, the
raw files of a script-only source, or a local copy) is ``hub_files``; the
mapping functions here take plain rows (dicts with the hub's columns), so
they work on any copy of the data.

- ``openai/summarize_from_feedback`` (config ``comparisons``): one pair per
  row: user ``worker``, prompt [user: ``info.post``], chosen
  ``summaries[choice].text``, rejected the other summary; prompt id
  ``info.id``; the hub split (train/validation) is kept in ``split`` and the
  row's own ``split`` (train, valid1, valid2) and ``extra.confidence`` (1-9)
  in ``extra``. Rows without a post are the CNN/DailyMail comparisons
  (``info.article``): they are not TL;DR, so they are dropped and counted.
- ``HannahRoseKirk/prism-alignment`` (config ``conversations``): per turn of
  ``conversation_history``, the user's message, the model response with
  ``if_chosen`` and each other response of that turn: **one pair per
  (turn, rejected response)**, with the running chat (earlier turns as user +
  chosen assistant) as the prompt and the conversation id as prompt id.
  Fixes REFERENCE.md §7.2 (HEAD embeds the list of rejected texts as one).
- ``namkoong-lab/PersonalLLM``: no users (they are simulated); rows pass
  through to ``embed.embed_personalllm`` (prompt, response_1..8, scores).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .embed.pipeline import TextPair
from .errors import DataError
from .hub_files import SOURCES, source_rows

HUB = {name: (s.repo, s.splits) for name, s in SOURCES.items()}


def load_hub_rows(source: str, split: str, *, limit: int | None = None,
                  data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows of one split of a hub data set, as plain dicts (``hub_files`` says from where)."""
    return source_rows(source, split, data_dir=data_dir, limit=limit)[0]


def tldr_pairs(rows: Iterable[Mapping[str, Any]], split: str, *,
               min_confidence: int | None = None) -> tuple[list[TextPair], dict[str, int]]:
    """summarize_from_feedback comparisons -> one pair per TL;DR row, keyed by worker; plus counts.

    Dropped and counted: CNN/DailyMail rows (no ``info.post``), rows whose two
    summaries are the same text (no preference), and, with
    ``min_confidence``, rows whose ``extra.confidence`` is below it or absent.
    """
    out = []
    skipped = {"cnndm_rows": 0, "identical_summaries": 0, "below_min_confidence": 0}
    for n, row in enumerate(rows):
        where = f"summarize_from_feedback {split} row {n}"
        info, summaries, choice = row.get("info") or {}, row.get("summaries"), row.get("choice")
        if not isinstance(info, Mapping):
            raise DataError(f"{where}: 'info' is {type(info).__name__}, expected an object")
        if not info.get("post"):
            if info.get("article"):
                skipped["cnndm_rows"] += 1
                continue
            raise DataError(f"{where}: info has neither a post (TL;DR) nor an article (CNN/DM)")
        if not row.get("worker") or not isinstance(summaries, list) or len(summaries) != 2 \
                or choice not in (0, 1):
            raise DataError(f"{where}: expected worker, two summaries and choice 0|1")
        confidence = (row.get("extra") or {}).get("confidence")
        if min_confidence is not None and (confidence is None or confidence < min_confidence):
            skipped["below_min_confidence"] += 1
            continue
        if summaries[0]["text"] == summaries[1]["text"]:
            skipped["identical_summaries"] += 1
            continue
        out.append(TextPair(
            user_id=str(row["worker"]),
            prompt=[{"role": "user", "content": info["post"]}],
            chosen=summaries[choice]["text"],
            rejected=summaries[1 - choice]["text"],
            prompt_id=str(info.get("id")) if info.get("id") is not None else None,
            split=split,
            extra={"source_split": row.get("split"), "confidence": confidence},
        ))
    return out, skipped


def prism_pairs(rows: Iterable[Mapping[str, Any]]) -> tuple[list[TextPair], dict[str, int]]:
    """prism-alignment conversations -> one pair per (turn, rejected); plus counts.

    A turn without a user message, a chosen response or any rejected response
    gives no pair (the reference skips such turns too), nor does a rejected
    response identical to the chosen one; the counts say how many. Several
    responses marked ``if_chosen`` in one turn are an error unless they are
    the same text. A rejected response whose ``score`` equals the chosen
    one's is a tie in the user's rating: the pair is kept (the user still
    picked one) and counted in ``ties_with_chosen``.
    """
    out: list[TextPair] = []
    skipped = {"turns_without_user": 0, "turns_without_chosen": 0, "turns_without_rejected": 0,
               "rejected_same_as_chosen": 0, "ties_with_chosen": 0,
               "turns_with_repeated_chosen": 0}
    for n, row in enumerate(rows):
        history = row.get("conversation_history")
        if not row.get("user_id") or not row.get("conversation_id") or not isinstance(history, list):
            raise DataError(f"prism-alignment row {n}: expected user_id, conversation_id and "
                            "a conversation_history list")
        turns: dict[int, list[Mapping[str, Any]]] = {}
        for utterance in history:
            turns.setdefault(int(utterance.get("turn", 0)), []).append(utterance)
        chat: list[dict[str, str]] = []
        for turn in sorted(turns):
            where = f"prism-alignment conversation {row['conversation_id']}, turn {turn}"
            users = [u for u in turns[turn] if u.get("role") == "user"]
            models = [u for u in turns[turn] if u.get("role") != "user"]
            chosen = [u for u in models if u.get("if_chosen")]
            rejected = [u for u in models if not u.get("if_chosen")]
            if not users:
                skipped["turns_without_user"] += 1
                break  # without the user's message the rest of the chat is ill-defined
            if len(users) > 1:
                raise DataError(f"{where}: {len(users)} user messages (expected one)")
            if not chosen:
                skipped["turns_without_chosen"] += 1
                break
            if len({c["content"] for c in chosen}) > 1:
                raise DataError(f"{where}: {len(chosen)} different responses marked if_chosen "
                                "(expected one)")
            skipped["turns_with_repeated_chosen"] += len(chosen) > 1
            prompt = [*chat, {"role": "user", "content": users[0]["content"]}]
            if not rejected:
                skipped["turns_without_rejected"] += 1
            for other in rejected:
                if other["content"] == chosen[0]["content"]:
                    skipped["rejected_same_as_chosen"] += 1
                    continue
                tie = (other.get("score") is not None
                       and other.get("score") == chosen[0].get("score"))
                skipped["ties_with_chosen"] += tie
                out.append(TextPair(
                    user_id=str(row["user_id"]), prompt=prompt,
                    chosen=chosen[0]["content"], rejected=other["content"],
                    prompt_id=str(row["conversation_id"]),
                    extra={"turn": turn, "tie": int(tie)},
                ))
            chat = [*prompt, {"role": "assistant", "content": chosen[0]["content"]}]
    return out, skipped
