"""The limits a lore-serve process enforces, in one record (flags map onto its fields).

Why one record: every limit is checked where a request is parsed and named in
the error the client gets (``max_responses=64``), and the batcher and the
model loader read the batching ones; keeping them together keeps the flag
names, the error texts and the docs the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServeLimits:
    """Request limits (413/422 when exceeded) and the dynamic-batching limits."""

    max_body_bytes: int = 1 << 20  # a request body larger than this is a 413
    max_responses: int = 64  # responses / candidates / queries / comparisons in one request
    max_text_chars: int = 16384  # one prompt, response or chat message
    max_user_chars: int = 256  # one user id
    max_suggestions: int = 32  # "n" of /suggest
    max_batch_tokens: int = 8192  # one backbone forward: conversations up to this many tokens
    max_wait_ms: float = 2.0  # how long a forward waits for more conversations to batch

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value >= (0 if f.name == "max_wait_ms" else 1):
                raise ValueError(f"{f.name} must be >= {0 if f.name == 'max_wait_ms' else 1}, "
                                 f"got {value}")
