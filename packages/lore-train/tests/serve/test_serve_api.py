"""The endpoints over real HTTP: rewards equal the in-process PersonalReward's, users
adapt and come back, every bad request is a JSON 4xx naming the field or the limit."""

from __future__ import annotations

import json
import re
import sqlite3
from urllib.parse import quote

import pytest

from lore_datasets.embed.tiny import tiny_text

PROMPT = [{"role": "user", "content": tiny_text(1, 4)}]
RESPONSES = [tiny_text(k, 5) for k in range(2, 6)]


def _user_path(user: str, what: str = "") -> str:
    return f"/v1/users/{quote(user, safe='')}" + (f"/{what}" if what else "")


def _comparisons(k0: int, n: int) -> list[dict]:
    return [{"prompt": tiny_text(k, 4), "chosen": tiny_text(k + 3, 6),
             "rejected": tiny_text(k + 5, 3)} for k in range(k0, k0 + n)]


def test_http_rewards_equal_in_process_rewards(server, fresh_reward):
    c = server.client
    users = ["u1", "u2", "u3", "stranger"]  # stranger: the population's mean user
    prompts = [f"{tiny_text(k, 4)} " for k in range(4)]
    query = [p + r for p, r in zip(prompts, RESPONSES)]
    got = c.post("/get_reward", json={"query": query, "prompts": prompts, "labels": users})
    assert got.status_code == 200, got.text
    body = got.json()
    want = fresh_reward.rewards(prompts, RESPONSES, users)
    assert body["rewards"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert body["scores"] == body["rewards"] and body["extra_logs"] == {}
    assert len(set(round(r, 4) for r in body["rewards"])) == 4  # users and texts matter

    got = c.post("/v1/score", json={"user": "u2", "prompt": PROMPT, "responses": RESPONSES,
                                    "return_std": True})
    assert got.status_code == 200, got.text
    want, want_std = fresh_reward.rewards([PROMPT] * 4, RESPONSES, ["u2"] * 4, return_std=True)
    assert got.json()["rewards"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert got.json()["std"] == pytest.approx(want_std, rel=1e-4, abs=1e-5)
    assert "std" not in c.post("/v1/score", json={"user": "u2", "prompt": "hi",
                                                  "responses": ["a"]}).json()


def test_get_reward_labels_may_carry_the_raw_prompt(server, fresh_reward):
    """A chat-templated prompt string (what OpenRLHF sends) is not rendered again: the label
    {"user", "prompt"} gives the raw prompt, as JSON text or as an object."""
    templated = "<s>user hello world </s> assistant "
    query = [templated + r for r in RESPONSES[:2]]
    labels = [json.dumps({"user": "u1", "prompt": PROMPT}), {"user": "u2", "prompt": "hi"}]
    got = server.client.post("/get_reward", json={"query": query, "prompts": [templated] * 2,
                                                  "labels": labels})
    assert got.status_code == 200, got.text
    want = fresh_reward.rewards([PROMPT, "hi"], RESPONSES[:2], ["u1", "u2"])
    assert got.json()["rewards"] == pytest.approx(want, rel=1e-5, abs=1e-5)
    bad = server.client.post("/get_reward", json={"query": query[:1], "prompts": [templated],
                                                  "labels": [{"user": "u1", "who": 1}]})
    assert bad.status_code == 422 and "labels[0]" in bad.json()["error"]


def test_the_trl_reward_function_of_the_docs(server, fresh_reward):
    """docs/serving.md's TRL reward function, as written there, against this server."""
    import httpx

    client = httpx.Client(base_url=server.url, timeout=60)

    def lore_reward(prompts, completions, user_id, **kwargs):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        body = {"query": texts, "prompts": [""] * len(texts),
                "labels": [{"user": u, "prompt": p} for u, p in zip(user_id, prompts)]}
        answer = client.post("/get_reward", json=body)
        answer.raise_for_status()
        return answer.json()["rewards"]

    prompts = [PROMPT, PROMPT, "plain text prompt"]
    completions = [[{"role": "assistant", "content": RESPONSES[0]}],
                   [{"role": "assistant", "content": RESPONSES[1]}], RESPONSES[2]]
    users = ["u1", "u6", "u1"]
    got = lore_reward(prompts, completions, users, completion_ids=None)
    assert got == pytest.approx(fresh_reward(prompts, completions, user_id=users),
                                rel=1e-5, abs=1e-5)
    client.close()


def test_comparisons_refit_the_user_as_personal_reward_does(server, fresh_reward):
    c = server.client
    answers = _comparisons(0, 3)
    first = c.post(_user_path("ada", "comparisons"), json=answers[0])
    assert first.status_code == 200, first.text
    assert first.json()["n_comparisons"] == 1 and first.json()["added"] == 1
    rest = c.post(_user_path("ada", "comparisons"), json={"comparisons": answers[1:]})
    assert rest.json()["n_comparisons"] == 3 and rest.json()["added"] == 2
    want = fresh_reward.add_user("ada", answers)
    assert rest.json()["weights"] == pytest.approx(want.tolist(), abs=1e-4)
    info = c.get(_user_path("ada")).json()
    assert info["source"] == "adapted" and info["n_comparisons"] == 3
    assert [{k: a[k] for k in ("prompt", "chosen", "rejected")} for a in info["comparisons"]] \
        == answers
    assert info["weights"] == rest.json()["weights"]
    # the user's rewards now use the new weights
    scored = c.post("/v1/score", json={"user": "ada", "prompt": PROMPT,
                                       "responses": RESPONSES}).json()["rewards"]
    assert scored == pytest.approx(fresh_reward.rewards([PROMPT] * 4, RESPONSES, ["ada"] * 4),
                                   rel=1e-4, abs=1e-4)


def test_suggest_matches_personal_reward(server, fresh_reward):
    got = server.client.post(_user_path("u3", "suggest"),
                             json={"prompt": PROMPT, "candidates": RESPONSES, "n": 3})
    assert got.status_code == 200, got.text
    want = fresh_reward.suggest_pairs("u3", PROMPT, RESPONSES, 3)
    assert [tuple(p) for p in got.json()["pairs"]] == want
    assert len(want) == 3 and all(0 <= i < 4 and 0 <= j < 4 and i != j for i, j in want)


def test_users_of_the_model_and_delete(server):
    c = server.client
    info = c.get(_user_path("u4")).json()
    assert info["source"] == "model" and len(info["weights"]) == 3
    conflict = c.post(_user_path("u4", "comparisons"), json=_comparisons(0, 1)[0])
    assert conflict.status_code == 409 and "u4" in conflict.json()["error"]
    assert c.get(_user_path("nobody")).status_code == 404
    assert c.delete(_user_path("nobody")).status_code == 404
    c.post(_user_path("gone", "comparisons"), json=_comparisons(4, 2)[0])
    deleted = c.delete(_user_path("gone"))
    assert deleted.json() == {"user": "gone", "deleted": True, "comparisons_deleted": 1}
    assert c.get(_user_path("gone")).status_code == 404
    assert c.delete(_user_path("u4")).status_code == 200
    assert c.get(_user_path("u4")).status_code == 404
    assert "u4" not in server.reward.user_ids


@pytest.mark.parametrize("user", ["../x", "a/b", "../../etc/passwd", "ünï 用户", "'; DROP TABLE users; --",
                                  " spaced ", "%2F", "x" * 64])
def test_odd_user_ids_are_data(server, user, tmp_path):
    c = server.client
    got = c.post(_user_path(user, "comparisons"), json=_comparisons(7, 1)[0])
    assert got.status_code == 200, got.text
    assert got.json()["user"] == user
    assert c.get(_user_path(user)).json()["user"] == user
    with sqlite3.connect(server.store) as db:
        stored = [r[0] for r in db.execute("SELECT DISTINCT user_id FROM comparisons")]
        assert user in stored
        assert db.execute("SELECT COUNT(*) FROM users").fetchone()[0] >= 1  # still a table
    assert c.delete(_user_path(user)).json()["comparisons_deleted"] == 1
    assert sorted(p.name for p in server.store.parent.iterdir()) == \
        sorted(["users.db", "users.db-wal", "users.db-shm"])  # no file named after a user


@pytest.mark.parametrize("path, body, status, words", [
    ("/get_reward", {"query": ["hello world"], "prompts": ["bye"], "labels": ["u1"]}, 422,
     "query[0] does not start with prompts[0]"),
    ("/get_reward", {"query": ["a"], "prompts": ["a"]}, 422, "labels"),
    ("/get_reward", {"query": ["ab"], "prompts": ["a"], "labels": [7]}, 422, "labels[0]"),
    ("/get_reward", {"query": ["ab", "ac"], "prompts": ["a"], "labels": ["u1"]}, 422,
     "same length"),
    ("/v1/score", {"prompt": "p", "responses": ["a"]}, 422, "'user'"),
    ("/v1/score", {"user": "u1", "prompt": "p", "responses": "a"}, 422, "responses"),
    ("/v1/score", {"user": "u1", "prompt": "p", "responses": []}, 422, "responses"),
    ("/v1/score", {"user": "u1", "prompt": [{"role": "user"}], "responses": ["a"]}, 422,
     "prompt[0]"),
    ("/v1/score", {"user": "u1", "prompt": "p", "responses": ["a"], "return_std": "yes"}, 422,
     "return_std"),
    ("/v1/score", {"user": "", "prompt": "p", "responses": ["a"]}, 422, "user"),
    ("/v1/score", {"user": "u" * 65, "prompt": "p", "responses": ["a"]}, 422, "max_user_chars=64"),
    ("/v1/score", {"user": "u1", "prompt": "p", "responses": ["a"] * 9}, 422, "max_responses=8"),
    ("/v1/score", {"user": "u1", "prompt": "p" * 201, "responses": ["a"]}, 422,
     "max_text_chars=200"),
    ("/v1/users/bo/comparisons", {"prompt": "p", "chosen": "a"}, 422, "'rejected'"),
    ("/v1/users/bo/comparisons", {"prompt": "p", "chosen": "a", "rejected": "a"}, 422, "same text"),
    ("/v1/users/bo/comparisons", {"comparisons": [{"prompt": "p", "chosen": " ", "rejected": "b"}]},
     422, "comparisons[0].chosen is empty"),
    ("/v1/users/bo/comparisons", {"comparisons": []}, 422, "comparisons"),
    ("/v1/users/bo/suggest", {"prompt": "p", "candidates": ["a"]}, 422, "candidates"),
    ("/v1/users/bo/suggest", {"prompt": "p", "candidates": ["a", "b"], "n": 0}, 422, "n must"),
    ("/v1/users/bo/suggest", {"prompt": "p", "candidates": ["a", "b"], "n": 5}, 422,
     "max_suggestions=4"),
])
def test_bad_requests_name_the_field(server, path, body, status, words):
    got = server.client.post(path, json=body)
    assert got.status_code == status, got.text
    assert got.headers["content-type"] == "application/json"
    assert words in got.json()["error"]
    assert server.client.get(_user_path("bo")).status_code == 404  # nothing was stored


def test_body_limits_and_malformed_bodies(server):
    c = server.client
    big = {"user": "u1", "prompt": "p", "responses": ["a" * 150] * 30}
    got = c.post("/v1/score", json=big)
    assert got.status_code == 413 and "max_body_bytes=4096" in got.json()["error"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(10):
            yield b" " * 1000
    got = c.post("/v1/score", content=chunks())
    assert got.status_code == 413 and "max_body_bytes=4096" in got.json()["error"]
    got = c.post("/v1/score", content=b"{not json")
    assert got.status_code == 400 and "not valid JSON" in got.json()["error"]
    got = c.post("/v1/score", content=b"[1, 2]")
    assert got.status_code == 422 and "JSON object" in got.json()["error"]
    got = c.get("/v1/nothing-here")
    assert got.status_code == 404 and "error" in got.json()
    got = c.get("/v1/score")
    assert got.status_code == 405 and "error" in got.json()
    for response in (got, c.post("/v1/score", content=b"\xff\xfe")):
        assert "Traceback" not in response.text


def test_healthz_and_metrics(server):
    c = server.client
    assert c.get("/healthz").json()["status"] == "ok"
    c.post("/v1/score", json={"user": "u1", "prompt": "p", "responses": ["a", "b"]})
    text = c.get("/metrics").text
    assert 'lore_serve_requests_total{method="POST",route="/v1/score",status="200"}' in text
    assert 'lore_serve_request_seconds_bucket{le="0.005",route="/v1/score"}' in text
    assert "lore_serve_batch_conversations_count" in text
    assert "lore_serve_forward_seconds_sum" in text
    users = [line for line in text.splitlines() if line.startswith("lore_serve_users ")]
    assert float(users[0].split()[1]) == len(server.reward.user_ids)
    labels = set(re.findall(r'[{,]([a-z_]+)="', text))
    assert labels <= {"route", "method", "status", "le"}  # a user id is never a label
    assert '"ada"' not in text and "../x" not in text


def test_the_page_is_served_with_the_models_rank(server):
    got = server.client.get("/")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/html")
    assert '"K": 3' in got.text and "/*LORE_CONFIG*/" not in got.text
