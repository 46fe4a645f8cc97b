"""The page at ``/``: a new user answers comparisons and watches their weights move.

Why in the server: eliciting a person's preferences needs nothing but the
endpoints already here (``suggest`` picks the pair, ``comparisons`` refits,
``score`` shows the rewards), so one static file with plain JavaScript, no
build step, turns a running server into an elicitation tool. The questions
(a prompt and candidate responses each) come from ``--questions FILE`` (JSON
lines ``{"prompt": ..., "candidates": [...]}``) or a small built-in set, and
are written into the page with the model's K.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lore_datasets.errors import DataError


@dataclass(frozen=True)
class Question:
    """A prompt and the candidate responses the page may pair up."""

    prompt: str
    candidates: tuple[str, ...]


DEFAULT_QUESTIONS = [
    Question("How do I make a cup of tea?", (
        "Boil water, pour it over a tea bag, wait three minutes, remove the bag.",
        "Heat fresh water to just off the boil. Warm the pot, add one teaspoon of leaf per cup, "
        "pour, steep three to five minutes depending on the tea, then strain. Milk after, if "
        "at all.",
        "Kettle on, bag in, water in, done!",
        "Tea is prepared by infusing the cured leaves of Camellia sinensis in hot water; the "
        "temperature and time depend on the oxidation of the leaf.")),
    Question("Summarise the plot of Romeo and Juliet.", (
        "Two young lovers from feuding families marry in secret; a chain of mistakes ends with "
        "both dead, and their deaths reconcile the families.",
        "Boy meets girl, families hate each other, it ends badly.",
        "In Verona, Romeo Montague falls for Juliet Capulet at a feast. Friar Laurence marries "
        "them hoping to end the feud, but Romeo kills Tybalt and is banished; Juliet fakes her "
        "death, the message fails to reach Romeo, and he poisons himself at her tomb before she "
        "wakes and stabs herself.",
        "A tragedy by Shakespeare (c. 1595) about two star-crossed lovers.")),
    Question("Should I learn Python or JavaScript first?", (
        "Python: its syntax is gentle and it is used everywhere from data to scripting.",
        "It depends on what you want to build: web pages point to JavaScript, data and "
        "automation to Python. Either is a fine first language; the second comes much faster.",
        "JavaScript, because it runs in every browser and you can see results immediately.",
        "Honestly, just pick one and start today. You will be fine!")),
]


def load_questions(path: str | Path) -> list[Question]:
    """Questions from a JSON-lines file (a `DataError` names the file and line at fault)."""
    path = Path(path)
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not JSON ({err})") from None
        prompt, candidates = (row.get("prompt"), row.get("candidates")) \
            if isinstance(row, dict) else (None, None)
        if not isinstance(prompt, str) or not isinstance(candidates, list) \
                or len(candidates) < 2 or not all(isinstance(c, str) for c in candidates):
            raise DataError(f"{path}:{number}: expected {{\"prompt\": text, \"candidates\": "
                            "[two or more texts]}")
        out.append(Question(prompt, tuple(candidates)))
    if not out:
        raise DataError(f"{path}: no questions")
    return out


def render_page(K: int, questions: list[Question] | None, *, auth: bool) -> str:
    """page.html with the model's K, the questions and whether a token is needed."""
    config = {"K": int(K), "auth": bool(auth),
              "questions": [{"prompt": q.prompt, "candidates": list(q.candidates)}
                            for q in (questions or DEFAULT_QUESTIONS)]}
    # Inside <script>: no "</script>" or "<!--" can come out of the JSON.
    blob = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026")
    html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return html.replace("/*LORE_CONFIG*/null", blob)
