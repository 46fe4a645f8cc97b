"""Request bodies in, checked values out: every bad field is one `RequestError`.

Why its own module: the routes stay a list of calls, and every rule a client
can break (a type, a count, a length, a query that does not start with its
prompt) has one place and one message that names the field and the limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .limits import ServeLimits

Prompt = str | list[dict[str, str]]


class RequestError(Exception):
    """A client error: ``status`` (4xx) and a one-line message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (400 when it is not JSON, 422 when not an object)."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"body is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise RequestError(422, "body must be a JSON object")
    return value


def _text(value: Any, field: str, limits: ServeLimits) -> str:
    if not isinstance(value, str):
        raise RequestError(422, f"{field} must be a string")
    if len(value) > limits.max_text_chars:
        raise RequestError(422, f"{field} is {len(value)} characters, over "
                                f"max_text_chars={limits.max_text_chars}")
    return value


def user_id(value: Any, field: str, limits: ServeLimits) -> str:
    """A user id: any non-empty string up to ``max_user_chars`` (data, never a path)."""
    if not isinstance(value, str) or not value:
        raise RequestError(422, f"{field} must be a non-empty user id string")
    if len(value) > limits.max_user_chars:
        raise RequestError(422, f"{field} is {len(value)} characters, over "
                                f"max_user_chars={limits.max_user_chars}")
    return value


def prompt(value: Any, field: str, limits: ServeLimits) -> Prompt:
    """A prompt: text, or chat messages ``[{"role", "content"}, ...]``."""
    if isinstance(value, str):
        return _text(value, field, limits)
    if not isinstance(value, list) or not value:
        raise RequestError(422, f"{field} must be a string or a non-empty list of messages")
    _count(value, field, limits)
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise RequestError(422, f"{field}[{i}] must be an object with exactly "
                                    "'role' and 'content'")
        messages.append({"role": _text(m["role"], f"{field}[{i}].role", limits),
                         "content": _text(m["content"], f"{field}[{i}].content", limits)})
    return messages


def _count(value: list, field: str, limits: ServeLimits) -> None:
    if len(value) > limits.max_responses:
        raise RequestError(422, f"{field} has {len(value)} items, over "
                                f"max_responses={limits.max_responses}")


def text_list(body: dict, field: str, limits: ServeLimits, *, min_items: int = 1) -> list[str]:
    """``body[field]``: a list of ``min_items`` to ``max_responses`` strings."""
    value = body.get(field)
    if not isinstance(value, list):
        raise RequestError(422, f"{field} must be a list of strings")
    if len(value) < min_items:
        raise RequestError(422, f"{field} needs at least {min_items} items, got {len(value)}")
    _count(value, field, limits)
    return [_text(v, f"{field}[{i}]", limits) for i, v in enumerate(value)]


def required(body: dict, key: str, field: str | None = None) -> Any:
    """``body[key]``, or a 422 naming ``field`` (its full path in the request; ``key``)."""
    if key not in body:
        raise RequestError(422, f"missing field {(field or key)!r}")
    return body[key]


@dataclass(frozen=True)
class Comparison:
    """One answered comparison: which of two responses to a prompt the user preferred."""

    prompt: Prompt
    chosen: str
    rejected: str

    def as_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def comparisons(body: dict, limits: ServeLimits) -> list[Comparison]:
    """One comparison (the body itself) or many (``{"comparisons": [...]}``)."""
    items = body.get("comparisons", [body] if "comparisons" not in body else None)
    if not isinstance(items, list) or not items:
        raise RequestError(422, "comparisons must be a non-empty list of "
                                "{prompt, chosen, rejected} objects")
    _count(items, "comparisons", limits)
    out = []
    for i, item in enumerate(items):
        where = f"comparisons[{i}]." if "comparisons" in body else ""
        if not isinstance(item, dict):
            raise RequestError(422, f"{where[:-1] or 'body'} must be an object")
        fields = {k: required(item, k, where + k) for k in ("prompt", "chosen", "rejected")}
        c = Comparison(prompt(fields["prompt"], where + "prompt", limits),
                       _text(fields["chosen"], where + "chosen", limits),
                       _text(fields["rejected"], where + "rejected", limits))
        for k in ("chosen", "rejected"):
            if not getattr(c, k).strip():
                raise RequestError(422, f"{where}{k} is empty")
        if c.chosen == c.rejected:
            raise RequestError(422, f"{where}chosen and {where}rejected are the same text")
        out.append(c)
    return out


def flag(body: dict, field: str, default: bool = False) -> bool:
    """An optional boolean field."""
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"{field} must be true or false")
    return value


def count(body: dict, field: str, default: int, limit: int, limit_name: str) -> int:
    """An optional positive integer field, at most ``limit``."""
    value = body.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError(422, f"{field} must be a positive integer")
    if value > limit:
        raise RequestError(422, f"{field}={value} is over {limit_name}={limit}")
    return value


def reward_label(value: Any, field: str, limits: ServeLimits) -> tuple[str, Prompt | None]:
    """A /get_reward label: a user id, or ``{"user": id, "prompt": raw prompt}`` (an object
    or its JSON text) when the query's prompt is already chat-templated text and the
    reward model must render the raw prompt itself."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and "user" in parsed:
            value = parsed
    if isinstance(value, dict):
        unknown = set(value) - {"user", "prompt"}
        if unknown:
            raise RequestError(422, f"{field} has unknown keys {sorted(unknown)} "
                                    "(expected 'user' and optionally 'prompt')")
        raw = prompt(value["prompt"], f"{field}.prompt", limits) if "prompt" in value else None
        return user_id(required(value, "user", f"{field}.user"), f"{field}.user", limits), raw
    return user_id(value, field, limits), None


def reward_queries(body: dict, limits: ServeLimits) -> tuple[list[Prompt], list[str], list[str]]:
    """OpenRLHF's ``{"query", "prompts", "labels"}`` -> (prompts, responses, users).

    The response of a query is what follows its prompt; a query that does not
    start with its prompt is a 422 naming it. The prompt the reward model
    sees is the label's raw prompt when it carries one, else ``prompts[i]``.
    """
    queries = text_list(body, "query", limits)
    prompts = text_list(body, "prompts", limits)
    labels = required(body, "labels")
    if not isinstance(labels, list):
        raise RequestError(422, "labels must be a list of user ids (one per query)")
    if not (len(queries) == len(prompts) == len(labels)):
        raise RequestError(422, f"query, prompts and labels must have the same length, got "
                                f"{len(queries)}, {len(prompts)} and {len(labels)}")
    parsed = [reward_label(u, f"labels[{i}]", limits) for i, u in enumerate(labels)]
    responses = []
    for i, (q, p) in enumerate(zip(queries, prompts)):
        if not q.startswith(p):
            raise RequestError(422, f"query[{i}] does not start with prompts[{i}]")
        responses.append(q[len(p):])
    rendered = [raw if raw is not None else p for (_, raw), p in zip(parsed, prompts)]
    return rendered, responses, [user for user, _ in parsed]
