"""Bearer tokens and their scopes over real HTTP: no token, a wrong one, or a token scoped
to other users gets nothing, changes nothing and learns nothing about another user."""

from __future__ import annotations

import pytest

from lore_datasets.errors import DataError
from lore_train.serve import TokenTable

ALL = "all-users-token-0123456789"
ALICE = "alice-and-bob-token-0123456789"
COMPARISON = {"prompt": "hello", "chosen": "the cat sat", "rejected": "a dog"}


@pytest.fixture(scope="module")
def guarded(export_dir, tmp_path_factory, start_server):
    root = tmp_path_factory.mktemp("auth")
    token_file = root / "tokens.txt"
    token_file.write_text(f"# who may do what\n{ALL} *\n\n{ALICE} alice, bob\n")
    with start_server(export_dir, root / "users.db",
                        tokens=TokenTable.load(token_file)) as running:
        seed = running.client.post("/v1/users/carol/comparisons", json=COMPARISON,
                                   headers=_bearer(ALL))
        assert seed.status_code == 200, seed.text
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


REQUESTS = [
    ("GET", "/metrics", None),
    ("POST", "/get_reward", {"query": ["hi a"], "prompts": ["hi"], "labels": ["carol"]}),
    ("POST", "/v1/score", {"user": "carol", "prompt": "hi", "responses": ["a"]}),
    ("POST", "/v1/users/carol/comparisons", COMPARISON),
    ("POST", "/v1/users/carol/suggest", {"prompt": "hi", "candidates": ["a", "b"]}),
    ("GET", "/v1/users/carol", None),
    ("DELETE", "/v1/users/carol", None),
]


@pytest.mark.parametrize("method, path, body", REQUESTS)
@pytest.mark.parametrize("headers", [{}, _bearer("not-a-token-at-all-0123"), {"Authorization": ALL}],
                         ids=["none", "wrong", "not-bearer"])
def test_every_endpoint_but_healthz_needs_a_token(guarded, method, path, body, headers):
    got = guarded.client.request(method, path, json=body, headers=headers)
    assert got.status_code == 401, got.text
    assert "Bearer" in got.json()["error"] and got.headers["www-authenticate"] == "Bearer"


def test_healthz_and_the_page_are_public(guarded):
    assert guarded.client.get("/healthz").status_code == 200
    page = guarded.client.get("/")
    assert page.status_code == 200 and '"auth": true' in page.text
    assert ALL not in page.text and ALICE not in page.text


@pytest.mark.parametrize("method, path, body", REQUESTS[1:])
def test_a_scoped_token_cannot_touch_another_user(guarded, method, path, body):
    before = guarded.client.get("/v1/users/carol", headers=_bearer(ALL)).json()
    got = guarded.client.request(method, path, json=body, headers=_bearer(ALICE))
    assert got.status_code == 403, got.text
    assert "carol" in got.json()["error"]
    assert "weights" not in got.text and "rewards" not in got.text
    after = guarded.client.get("/v1/users/carol", headers=_bearer(ALL)).json()
    assert after == before  # nothing changed


def test_a_mixed_batch_of_labels_is_refused_whole(guarded):
    body = {"query": ["hi a", "hi b"], "prompts": ["hi", "hi"], "labels": ["alice", "carol"]}
    got = guarded.client.post("/get_reward", json=body, headers=_bearer(ALICE))
    assert got.status_code == 403 and "carol" in got.json()["error"]


def test_a_scoped_token_works_for_its_users(guarded):
    c, h = guarded.client, _bearer(ALICE)
    assert c.post("/v1/users/alice/comparisons", json=COMPARISON, headers=h).status_code == 200
    assert c.get("/v1/users/alice", headers=h).json()["n_comparisons"] == 1
    body = {"query": ["hi a", "hi b"], "prompts": ["hi", "hi"], "labels": ["alice", "bob"]}
    assert len(c.post("/get_reward", json=body, headers=h).json()["rewards"]) == 2
    assert c.post("/v1/score", json={"user": "bob", "prompt": "hi", "responses": ["a"]},
                  headers=h).status_code == 200
    assert c.delete("/v1/users/alice", headers=h).status_code == 200
    assert c.get("/metrics", headers=h).status_code == 200


@pytest.mark.parametrize("text, words", [
    ("short *\n", "at least 16"),
    ("just-one-field-0123456789\n", "expected 'TOKEN"),
    ("tok-0123456789abcdef a,,b\n", "empty user name"),
    ("tok-0123456789abcdef *\ntok-0123456789abcdef a\n", "listed twice"),
    ("# only a comment\n", "no tokens"),
])
def test_bad_token_files_name_the_line(tmp_path, text, words):
    path = tmp_path / "tokens.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=words) as err:
        TokenTable.load(path)
    assert str(path) in str(err.value)
