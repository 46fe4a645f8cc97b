"""The durable record of users and their answers: SQLite (stdlib), WAL, one
transaction per acknowledged request.

Why the answers and not just the weights: a user's weights are a function of
their answers, so keeping the answers (their text, and the K-vector basis
differences the backbone gave them, so a refit needs no backbone) lets a
restart refit every user exactly, and lets a user see what they told the
server. Every statement binds user ids as parameters: an id is data, never
SQL or a path.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import torch

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    weights BLOB NOT NULL,
    n_comparisons INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    basis_diff BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS comparisons_user ON comparisons(user_id, id);
CREATE TABLE IF NOT EXISTS deleted_model_users (user_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _blob(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()


def _tensor(blob: bytes, K: int) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.float32).reshape(-1, K).clone()


class UserStore:
    """Users' answers and weights in one SQLite file.

    Not thread-safe by itself: lore-serve calls it from one worker thread.
    ``K`` is checked against the file so a store is never reused with a model
    of another rank.
    """

    def __init__(self, path: str | Path, K: int) -> None:
        self.path = Path(path)
        self.K = int(K)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged answer survives power loss
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'K'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta (key, value) VALUES ('K', ?)", (str(self.K),))
        elif int(row[0]) != self.K:
            raise ValueError(f"{self.path}: the store holds users of a K={row[0]} model, "
                             f"this model has K={self.K}")

    def close(self) -> None:
        self._db.close()

    # -- reads ----------------------------------------------------------------
    def user_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT user_id FROM users ORDER BY user_id")]

    def deleted_model_users(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT user_id FROM deleted_model_users")]

    def basis_diffs(self, user: str) -> torch.Tensor:
        """[n, K] basis(chosen) - basis(rejected) of the user's answers, oldest first."""
        rows = self._db.execute(
            "SELECT basis_diff FROM comparisons WHERE user_id = ? ORDER BY id", (user,)).fetchall()
        if not rows:
            return torch.zeros(0, self.K)
        return _tensor(b"".join(r[0] for r in rows), self.K)

    def comparisons(self, user: str) -> list[dict[str, Any]]:
        """The user's answers, oldest first, as the client sent them."""
        rows = self._db.execute(
            "SELECT prompt, chosen, rejected, created_at FROM comparisons WHERE user_id = ? "
            "ORDER BY id", (user,)).fetchall()
        return [{"prompt": json.loads(p), "chosen": c, "rejected": r, "created_at": t}
                for p, c, r, t in rows]

    def count(self, user: str) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM comparisons WHERE user_id = ?",
                               (user,)).fetchone()
        return int(row[0])

    # -- writes: each one transaction ----------------------------------------------
    def add(self, user: str, comparisons: list[dict[str, Any]], diffs: torch.Tensor,
            weights: torch.Tensor) -> int:
        """Append answers (with their basis diffs) and the refitted weights, atomically.

        Returns the user's number of stored answers. Committed (and fsynced)
        when it returns: the caller acknowledges only after this.
        """
        if len(comparisons) != len(diffs):
            raise ValueError(f"{len(comparisons)} comparisons but {len(diffs)} basis diffs")
        now = time.time()
        rows = [(user, json.dumps(c["prompt"], ensure_ascii=False), c["chosen"], c["rejected"],
                 _blob(d), now) for c, d in zip(comparisons, diffs)]
        with self._transaction() as db:
            db.executemany("INSERT INTO comparisons (user_id, prompt, chosen, rejected, "
                           "basis_diff, created_at) VALUES (?, ?, ?, ?, ?, ?)", rows)
            n = int(db.execute("SELECT COUNT(*) FROM comparisons WHERE user_id = ?",
                               (user,)).fetchone()[0])
            db.execute("INSERT INTO users (user_id, weights, n_comparisons, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET "
                       "weights = excluded.weights, n_comparisons = excluded.n_comparisons, "
                       "updated_at = excluded.updated_at", (user, _blob(weights), n, now))
        return n

    def delete(self, user: str, *, from_model: bool) -> int:
        """Forget a user's answers and weights; a user of the model stays deleted on restart.

        Returns how many answers were deleted.
        """
        with self._transaction() as db:
            n = db.execute("DELETE FROM comparisons WHERE user_id = ?", (user,)).rowcount
            db.execute("DELETE FROM users WHERE user_id = ?", (user,))
            if from_model:
                db.execute("INSERT OR IGNORE INTO deleted_model_users (user_id) VALUES (?)",
                           (user,))
        return int(n)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, kind: type | None, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
