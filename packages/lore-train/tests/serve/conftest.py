"""Fixtures of the lore-serve tests: one tiny export per session, real servers on loopback.

Every server here is a real uvicorn on 127.0.0.1 (a free port) answering a
real HTTP client; the model behind it is a real `PersonalReward` loaded from
an export that `build_tiny_export` makes by the real training and export
paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("transformers")
httpx = pytest.importorskip("httpx")

from lore_train import PersonalReward  # noqa: E402
from lore_train.serve import ServeLimits, ServerThread, TokenTable, create_app  # noqa: E402
from lore_train.tiny_export import build_tiny_export  # noqa: E402


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny personalized reward model export (K = 3, 7 users)."""
    return build_tiny_export(tmp_path_factory.mktemp("tiny-export")).out


@dataclass
class Running:
    """A server under test: its URL, app, model and a client for it."""

    url: str
    app: Any
    reward: PersonalReward
    store: Path
    client: httpx.Client


@contextlib.contextmanager
def running_server(export_dir: Path, store: Path, *, limits: ServeLimits | None = None,
                   tokens: TokenTable | None = None, **kwargs: Any) -> Iterator[Running]:
    """Start a server on the export; always stop it."""
    reward = PersonalReward.from_pretrained(export_dir)
    app = create_app(reward, store=store, limits=limits, tokens=tokens, **kwargs)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield Running(url, app, reward, store, client)


@pytest.fixture(scope="module")
def server(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server per test module, small limits so tests can reach them."""
    limits = ServeLimits(max_body_bytes=4096, max_responses=8, max_text_chars=200,
                         max_user_chars=64, max_suggestions=4)
    store = tmp_path_factory.mktemp("store") / "users.db"
    with running_server(export_dir, store, limits=limits) as running:
        yield running


@pytest.fixture(scope="session")
def start_server():
    """`running_server` as a fixture (test modules do not import the conftest)."""
    return running_server


@pytest.fixture
def fresh_reward(export_dir: Path) -> PersonalReward:
    """The same export loaded in this process, untouched by any server."""
    return PersonalReward.from_pretrained(export_dir)
