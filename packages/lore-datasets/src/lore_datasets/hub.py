"""Raw text sources on the Hugging Face hub, mapped to text pairs with a user id.

For users with network access; the ``datasets`` library is imported only by
``load_hub_rows`` (extra ``hub``). The mapping functions take plain rows
(dicts with the hub's columns), so they work on any copy of the data.

- ``openai/summarize_from_feedback`` (config ``comparisons``): one pair per
  row: user ``worker``, prompt [user: ``info.post``], chosen
  ``summaries[choice].text``, rejected the other summary; prompt id
  ``info.id``; the hub split (train/validation) is kept in ``split``.
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
from typing import Any

from .embed.pipeline import TextPair
from .errors import DataError

HUB = {
    "tldr": ("openai/summarize_from_feedback", "comparisons", ("train", "validation")),
    "prism": ("HannahRoseKirk/prism-alignment", "conversations", ("train",)),
    "personalllm": ("namkoong-lab/PersonalLLM", None, ("train", "test")),
}


def load_hub_rows(source: str, split: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of one split of a hub data set, as plain dicts (needs ``datasets`` and network)."""
    if source not in HUB:
        raise DataError(f"unknown hub source {source!r}; expected one of {', '.join(HUB)}")
    repo, config, splits = HUB[source]
    if split not in splits:
        raise DataError(f"{repo}: no split {split!r}; expected one of {', '.join(splits)}")
    try:
        import datasets
    except ImportError:
        raise DataError("reading the hub needs the datasets library: "
                        "pip install 'lore-datasets[hub]'") from None
    data = datasets.load_dataset(repo, config, split=split)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return [dict(row) for row in data]


def tldr_pairs(rows: Iterable[Mapping[str, Any]], split: str) -> tuple[list[TextPair], dict[str, int]]:
    """summarize_from_feedback comparisons -> one pair per row, keyed by worker; plus skip counts.

    A row whose two summaries are the same text states no preference; it is
    skipped and counted.
    """
    out = []
    skipped = {"identical_summaries": 0}
    for n, row in enumerate(rows):
        where = f"summarize_from_feedback {split} row {n}"
        info, summaries, choice = row.get("info") or {}, row.get("summaries"), row.get("choice")
        post = info.get("post") or info.get("article")
        if not row.get("worker") or not isinstance(summaries, list) or len(summaries) != 2 \
                or choice not in (0, 1) or not post:
            raise DataError(f"{where}: expected worker, info.post (or info.article), two "
                            "summaries and choice 0|1")
        if summaries[0]["text"] == summaries[1]["text"]:
            skipped["identical_summaries"] += 1
            continue
        out.append(TextPair(
            user_id=str(row["worker"]),
            prompt=[{"role": "user", "content": post}],
            chosen=summaries[choice]["text"],
            rejected=summaries[1 - choice]["text"],
            prompt_id=str(info.get("id")) if info.get("id") is not None else None,
            split=split,
        ))
    return out, skipped


def prism_pairs(rows: Iterable[Mapping[str, Any]]) -> tuple[list[TextPair], dict[str, int]]:
    """prism-alignment conversations -> one pair per (turn, rejected); plus skip counts.

    A turn without a user message, a chosen response or any rejected response
    gives no pair (the reference skips such turns too), nor does a rejected
    response identical to the chosen one; the counts say how many.
    """
    out: list[TextPair] = []
    skipped = {"turns_without_user": 0, "turns_without_chosen": 0, "turns_without_rejected": 0,
               "rejected_same_as_chosen": 0}
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
            users = [u for u in turns[turn] if u.get("role") == "user"]
            models = [u for u in turns[turn] if u.get("role") != "user"]
            chosen = [u for u in models if u.get("if_chosen")]
            rejected = [u for u in models if not u.get("if_chosen")]
            if not users:
                skipped["turns_without_user"] += 1
                break  # without the user's message the rest of the chat is ill-defined
            if len(users) > 1:
                raise DataError(f"prism-alignment conversation {row['conversation_id']}, turn "
                                f"{turn}: {len(users)} user messages (expected one)")
            if not chosen:
                skipped["turns_without_chosen"] += 1
                break
            prompt = [*chat, {"role": "user", "content": users[0]["content"]}]
            if not rejected:
                skipped["turns_without_rejected"] += 1
            for other in rejected:
                if other["content"] == chosen[0]["content"]:
                    skipped["rejected_same_as_chosen"] += 1
                    continue
                out.append(TextPair(
                    user_id=str(row["user_id"]), prompt=prompt,
                    chosen=chosen[0]["content"], rejected=other["content"],
                    prompt_id=str(row["conversation_id"]),
                    extra={"turn": turn},
                ))
            chat = [*prompt, {"role": "assistant", "content": chosen[0]["content"]}]
    return out, skipped
