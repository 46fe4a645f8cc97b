"""What a reward function receives, as conversations: prompts, completions, comparisons.

TRL hands a reward function plain-text prompts or chat messages, and
completions as text or as a list with one assistant message; a comparison
is a {"prompt", "chosen", "rejected"} dict or a 3-tuple. Everything becomes
[prompt messages..., assistant: completion], the shape the embedder renders
(`lore_datasets.embed.RewardModelEmbedder.render`). Also: grouping rendered
sequences into batches by a token budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lore_datasets.embed.batching import pack

Message = dict[str, str]


def token_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped by similar length so that rows x longest <= max_tokens (at least one
    row per batch): sorting by length keeps padding small."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return pack(order, lambda rows: len(rows) * lengths[rows[-1]], max_tokens)


def conversation(prompt: Any, completion: Any, index: int = 0) -> list[Message]:
    """[prompt messages..., assistant: completion]: a plain-text prompt is one user turn,
    a list is chat messages; a completion is text or a list of assistant messages."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, (list, tuple)) and prompt and all(_is_message(m) for m in prompt):
        messages = [dict(m) for m in prompt]
    else:
        raise ValueError(f"prompt {index}: expected text or a non-empty list of "
                         "{role, content} messages")
    if isinstance(completion, str):
        return [*messages, {"role": "assistant", "content": completion}]
    if isinstance(completion, (list, tuple)) and completion and all(_is_message(m)
                                                                    for m in completion):
        return [*messages, *(dict(m) for m in completion)]
    raise ValueError(f"completion {index}: expected text or a list of {{role, content}} messages")


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(
        m.get("content"), str)


def comparison_texts(user: str, comparisons: Sequence[Any]) -> tuple[list, list, list]:
    """(prompts, chosen, rejected) of ``user``'s comparisons; an empty text, identical
    texts or a malformed item is a ValueError naming the user and the comparison."""
    prompts, chosen, rejected = [], [], []
    for i, item in enumerate(comparisons):
        if isinstance(item, dict):
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in item]
            if missing:
                raise ValueError(f"user {user!r}, comparison {i}: missing {missing}")
            p, a, b = item["prompt"], item["chosen"], item["rejected"]
        elif isinstance(item, (tuple, list)) and len(item) == 3:
            p, a, b = item
        else:
            raise ValueError(f"user {user!r}, comparison {i}: expected a dict with prompt, "
                             "chosen, rejected or a 3-tuple")
        for name, text in (("chosen", a), ("rejected", b)):
            if not _text_of(text).strip():
                raise ValueError(f"user {user!r}, comparison {i}: {name} is empty")
        if _text_of(a) == _text_of(b):
            raise ValueError(f"user {user!r}, comparison {i}: chosen and rejected are the "
                             "same text")
        prompts.append(p)
        chosen.append(a)
        rejected.append(b)
    return prompts, chosen, rejected


def _text_of(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)):
        return "\n".join(str(m.get("content", "")) for m in x if isinstance(m, dict))
    raise ValueError(f"expected text or a list of messages, got {type(x).__name__}")
