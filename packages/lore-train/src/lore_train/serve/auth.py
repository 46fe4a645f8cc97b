"""Bearer tokens and the users each one may touch.

A token file has one entry a line, ``TOKEN user1,user2`` (that token reads,
scores, adapts and deletes only those users) or ``TOKEN *`` (every user);
blank lines and ``#`` comments are skipped. Why scopes: one server holds many
people's preferences, and the client that scores for user A (an RLHF job, a
person's browser) must not read or rewrite user B's weights.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lore_datasets.errors import DataError


@dataclass(frozen=True)
class Scope:
    """What one token may touch: every user, or the listed ones."""

    users: frozenset[str] | None  # None: every user

    def allows(self, user: str) -> bool:
        return self.users is None or user in self.users

    def first_denied(self, users: Iterable[str]) -> str | None:
        """The first of ``users`` this scope does not allow (None when all are allowed)."""
        return next((u for u in users if not self.allows(u)), None)


EVERYONE = Scope(None)


class TokenTable:
    """The tokens of a token file; ``None`` tokens (no file) means no authentication."""

    def __init__(self, scopes: dict[str, Scope]) -> None:
        self._scopes = scopes

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        """Parse a token file (a `DataError` names the file and line of a bad entry)."""
        path = Path(path)
        scopes: dict[str, Scope] = {}
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise DataError(f"{path}:{number}: expected 'TOKEN user1,user2' or 'TOKEN *'")
            token, users = parts
            if len(token) < 16:
                raise DataError(f"{path}:{number}: a token must be at least 16 characters")
            if token in scopes:
                raise DataError(f"{path}:{number}: the same token is listed twice")
            names = [u.strip() for u in users.split(",")]
            if users.strip() == "*":
                scopes[token] = EVERYONE
            elif all(names):
                scopes[token] = Scope(frozenset(names))
            else:
                raise DataError(f"{path}:{number}: an empty user name in {users!r}")
        if not scopes:
            raise DataError(f"{path}: no tokens (an empty token file would lock every client out)")
        return cls(scopes)

    def scope(self, authorization: str | None) -> Scope | None:
        """The scope of an ``Authorization: Bearer TOKEN`` header; None when it is not valid."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        given = authorization[len("Bearer "):].strip().encode()
        found = None
        for token, scope in self._scopes.items():  # compare all: no early exit to time
            if hmac.compare_digest(given, token.encode()):
                found = scope
        return found
