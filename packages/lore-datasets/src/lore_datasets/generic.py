"""The generic on-disk layout: comparisons + responses + an embedding matrix.

A directory holds

- ``comparisons.csv`` (or ``comparisons.csv.gz``): one judgment per line,
  columns ``user_id,prompt_id,response_a,response_b,label`` with label
  ``a`` | ``b`` | ``tie`` (extra columns are ignored);
- ``responses.jsonl``: one object per line with ``response_id`` (and
  optionally ``prompt_id``, checked against the comparisons when present);
- ``embeddings.npy`` (or another ``.npy`` file): a float matrix whose row i
  embeds the response on line i of ``responses.jsonl``.

Text files are UTF-8, with or without a byte-order mark, with LF or CRLF line
ends (``textio.py``); a column named twice in the header is an error.

Each judgment becomes one row z = emb(preferred) - emb(other). The parsing is a
plain Python pass (it has to look at every line to report bad ones); the math
is one gather and one subtraction over all rows.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .pairs import PreferencePairs
from .textio import csv_rows, json_lines

COLUMNS = ("user_id", "prompt_id", "response_a", "response_b", "label")
LABELS = ("a", "b", "tie")


def load_generic(
    directory: str | Path,
    *,
    embeddings: str | Path | None = None,
    keep_ties: bool = False,
) -> tuple[PreferencePairs, dict[str, Any]]:
    """Read a dataset directory in the generic layout.

    ``embeddings`` picks the matrix (relative to ``directory`` or absolute;
    default ``embeddings.npy``). Ties carry no preference, so they are dropped
    by default and counted in the returned meta; with ``keep_ties`` each tie
    becomes two rows, a - b and b - a (half a win each way, the usual
    Bradley-Terry reading of a tie), which pulls its margin toward zero.
    Users are ordered by sorted id.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: dataset directory not found")
    comparisons_path = _comparisons_file(directory)
    responses_path = _existing(directory / "responses.jsonl", "responses")
    emb_path = _existing(
        _resolve(directory, embeddings if embeddings is not None else "embeddings.npy"),
        "embedding matrix",
    )

    response_ids, response_prompts = _read_responses(responses_path)
    matrix = _read_embeddings(emb_path, response_ids, responses_path)
    index = {rid: i for i, rid in enumerate(response_ids)}
    table = _read_comparisons(comparisons_path, index, response_prompts)

    label = table["label"]
    is_tie = label == 2
    pref = ~is_tie
    a, b = table["a"], table["b"]
    chosen = np.where(label == 0, a, b)[pref]
    other = np.where(label == 0, b, a)[pref]
    rows = np.flatnonzero(pref)
    if keep_ties:
        ties = np.flatnonzero(is_tie)
        chosen = np.concatenate([chosen, a[ties], b[ties]])
        other = np.concatenate([other, b[ties], a[ties]])
        rows = np.concatenate([rows, ties, ties])

    if rows.size == 0:
        raise DataError(f"{comparisons_path}: every comparison is a tie; no preference rows left")

    # Pack by sorted user id here (numpy's stable sort is much faster than
    # torch's on CPU), then gather each row once in that order.
    user_ids, user = np.unique(table["users"][rows], return_inverse=True)
    order = np.argsort(user, kind="stable")
    features = matrix[chosen[order]]
    np.subtract(features, matrix[other[order]], out=features)
    row_prompts = table["prompts"][rows[order]]
    pairs = PreferencePairs(
        torch.from_numpy(features),
        torch.from_numpy(user[order].astype(np.int64)),
        user_ids.tolist(),
        row_prompts.tolist(),
    )

    counts = Counter(label.tolist())
    only_ties = sorted(set(table["users"].tolist()) - set(pairs.user_ids))
    meta = {
        "source_path": str(directory.resolve()),
        "comparisons": comparisons_path.name,
        "embeddings": _display(emb_path, directory),
        "dim": int(matrix.shape[1]),
        "responses": len(response_ids),
        "rows_read": int(label.shape[0]),
        "labels": {name: counts.get(code, 0) for code, name in enumerate(LABELS)},
        "ties": int(is_tie.sum()),
        "ties_dropped": 0 if keep_ties else int(is_tie.sum()),
        "ties_as_two_rows": bool(keep_ties),
        "pairs": pairs.num_pairs,
        "users": pairs.num_users,
        "users_only_ties": only_ties,
        "prompts": len(np.unique(row_prompts)),
    }
    return pairs, meta


# -- files -------------------------------------------------------------------
def _comparisons_file(directory: Path) -> Path:
    plain, packed = directory / "comparisons.csv", directory / "comparisons.csv.gz"
    if plain.is_file() and packed.is_file():
        raise DataError(f"{directory}: both comparisons.csv and comparisons.csv.gz exist; keep one")
    if plain.is_file():
        return plain
    if packed.is_file():
        return packed
    raise DataError(f"{plain}: comparisons file not found (nor {packed.name})")


def _resolve(directory: Path, path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else directory / path


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    return path


def _display(path: Path, directory: Path) -> str:
    try:
        return str(path.relative_to(directory))
    except ValueError:
        return str(path)


# -- responses ---------------------------------------------------------------
def _read_responses(path: Path) -> tuple[list[str], list[str | None]]:
    """Response ids in file order (= embedding row order) and their prompts."""
    ids: list[str] = []
    prompts: list[str | None] = []
    first_line: dict[str, int] = {}
    for line_no, obj in json_lines(path):
        if not isinstance(obj, dict) or obj.get("response_id") in (None, ""):
            raise DataError(f"{path}, line {line_no}: missing field 'response_id'")
        rid, prompt = obj["response_id"], obj.get("prompt_id")
        for name, value in (("response_id", rid), ("prompt_id", prompt)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                raise DataError(f"{path}, line {line_no}: {name} must be a string or an integer, "
                                f"got {json.dumps(value)}")
        rid = str(rid)
        if rid in first_line:
            raise DataError(
                f"{path}, line {line_no}: duplicate response_id {rid!r} "
                f"(first on line {first_line[rid]})"
            )
        first_line[rid] = line_no
        ids.append(rid)
        prompts.append(None if prompt is None else str(prompt))
    if not ids:
        raise DataError(f"{path}: no responses")
    return ids, prompts


# -- embeddings --------------------------------------------------------------
def _read_embeddings(path: Path, response_ids: list[str], responses_path: Path) -> np.ndarray:
    """The [R, d] matrix as fp32, checked against the responses (never unpickles)."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy matrix ({e})") from None
    if not isinstance(matrix, np.ndarray):
        raise DataError(f"{path}: expected a single .npy array, got an archive")
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise DataError(
            f"{path}: expected a 2-D float matrix, got shape {matrix.shape} dtype {matrix.dtype}"
        )
    if matrix.shape[1] == 0:
        raise DataError(f"{path}: the embedding matrix has 0 columns")
    if matrix.shape[0] != len(response_ids):
        raise DataError(
            f"{path}: {matrix.shape[0]} embedding rows but {responses_path.name} has "
            f"{len(response_ids)} responses (row i must embed response i)"
        )
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        named = ", ".join(f"row {i} ({response_ids[i]!r})" for i in bad[:5].tolist())
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise DataError(f"{path}: NaN/Inf in {bad.size} embedding rows: {named}{more}")
    return matrix


# -- comparisons -------------------------------------------------------------
def _read_comparisons(
    path: Path,
    index: dict[str, int],
    response_prompts: list[str | None],
) -> dict[str, np.ndarray]:
    """Validate every judgment; return users, prompts, response rows and label codes.

    Values are taken exactly as written (no stripping or case folding), so
    ``" w1"`` and ``"w1"`` would be different users; checks run column-wise
    and report the first offending line of each kind.
    """
    records: list[list[str]] = []
    lines: list[int] = []
    header, rows_in = csv_rows(path)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; header is {header}")
    for line_no, record in rows_in:
        if len(record) != len(header):
            raise DataError(
                f"{path}, line {line_no}: {len(record)} fields but the header has {len(header)}"
            )
        records.append(record)
        lines.append(line_no)
    if not records:
        raise DataError(f"{path}: no comparisons")
    col = {c: np.asarray([r[header.index(c)] for r in records]) for c in COLUMNS}
    users = col["user_id"]

    def fail(rows: np.ndarray, problem: str) -> None:
        i = int(np.flatnonzero(rows)[0])
        raise DataError(f"{path}, line {lines[i]} (user {str(users[i])!r}): {problem}")

    for c in COLUMNS:
        empty = col[c] == ""
        if empty.any():
            fail(empty, f"empty {c!r}")
    label = col["label"]
    known = np.isin(label, LABELS)
    if not known.all():
        bad = str(label[~known][0])
        fail(~known, f"unknown label {bad!r} (expected one of {', '.join(LABELS)})")
    codes = np.zeros(label.shape, dtype=np.int8)
    for code, name in enumerate(LABELS):
        codes[label == name] = code

    has_prompt = np.asarray([p is not None for p in response_prompts])
    own_prompt = np.asarray([p or "" for p in response_prompts])
    prompts = col["prompt_id"]
    rows = {}
    for c in ("response_a", "response_b"):
        names, inverse = np.unique(col[c], return_inverse=True)
        found = np.asarray([index.get(str(n), -1) for n in names], dtype=np.int64)[inverse]
        if (found < 0).any():
            bad = str(col[c][np.flatnonzero(found < 0)[0]])
            fail(found < 0, f"{c} {bad!r} is not in responses.jsonl")
        mismatch = has_prompt[found] & (own_prompt[found] != prompts)
        if mismatch.any():
            i = int(np.flatnonzero(mismatch)[0])
            fail(
                mismatch,
                f"{c} {str(col[c][i])!r} answers prompt {str(own_prompt[found[i]])!r} "
                f"in responses.jsonl, but this line says prompt {str(prompts[i])!r}",
            )
        rows[c] = found
    same = rows["response_a"] == rows["response_b"]
    if same.any():
        fail(same, "compares a response with itself")
    return {
        "users": users,
        "prompts": prompts,
        "a": rows["response_a"],
        "b": rows["response_b"],
        "label": codes,
    }
