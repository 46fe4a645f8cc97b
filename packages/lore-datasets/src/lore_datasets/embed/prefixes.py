"""Rows that share a prompt: the exact token prefix they share, and a length order.

In TL;DR each post is judged with two to four summaries, so most of the
tokens embedded row by row are the same post again. Computing the shared
prefix once and each response on top of it (``reward_model``) saves them.
The prefix is the longest common *token* prefix of the rendered rows of one
prompt group, not the prompt's text: a chat template may tokenize across
the prompt/response boundary, and a row cut from the left (``max_length``)
shares less. At least the last token of every row stays outside the prefix,
since that token's hidden state is the embedding.

Rows with the same prompt key (the conversation without its last message)
form a group; a group of one is a plain row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Group:
    """Rows ``rows`` whose token lists all start with ``prefix``; ``suffixes`` follow it."""

    prefix: list[int]
    rows: list[int]
    suffixes: list[list[int]]

    @property
    def shared(self) -> bool:
        return len(self.rows) > 1 and len(self.prefix) > 0

    @property
    def length(self) -> int:
        """The sort key: the prefix length for a shared group, the row's length otherwise."""
        return len(self.prefix) if self.shared else len(self.prefix) + len(self.suffixes[0])


def common_prefix(token_lists: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, leaving at least one token of the shortest list."""
    if not token_lists:
        return 0
    shortest = min(map(len, token_lists))
    first = token_lists[0]
    n = 0
    while n < shortest - 1 and all(t[n] == first[n] for t in token_lists[1:]):
        n += 1
    return n if len(token_lists) > 1 else 0


def groups(token_lists: Sequence[Sequence[int]], keys: Sequence[str] | None) -> list[Group]:
    """The rows grouped by key (first appearance order), each with its common token prefix.

    Without keys every row is its own group (no sharing).
    """
    by_key: dict[str, list[int]] = {}
    for i in range(len(token_lists)):
        by_key.setdefault(keys[i] if keys is not None else str(i), []).append(i)
    out = []
    for rows in by_key.values():
        if len(rows) == 1:
            out.append(Group([], rows, [list(token_lists[rows[0]])]))
            continue
        n = common_prefix([token_lists[i] for i in rows])
        out.append(Group(list(token_lists[rows[0]][:n]), rows,
                         [list(token_lists[i][n:]) for i in rows]))
    return out


def length_order(token_lists: Sequence[Sequence[int]], keys: Sequence[str] | None) -> list[int]:
    """A global order of the rows: groups by ascending length, a group's rows together.

    With ``keys`` the rows of one prompt stay adjacent (so a shard holds whole
    groups, except at its edges), ordered by suffix length; ties by first row
    index, so the order depends only on the token lists.
    """
    found = groups(token_lists, keys)
    found.sort(key=lambda g: (g.length, g.rows[0]))
    order: list[int] = []
    for g in found:
        order += [r for _, r in sorted(zip(map(len, g.suffixes), g.rows))]
    return order
