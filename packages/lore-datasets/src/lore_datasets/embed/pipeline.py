"""Text pairs -> embeddings on disk, resumable, in a layout the loaders read.

``embed_pairs`` writes the generic layout, so ``lore-train --dataset DIR``
reads the result directly:

    comparisons.csv   user_id,prompt_id,response_a,response_b,label[,split]
                      (response_a is the chosen response; label is always a)
    responses.jsonl   one distinct (prompt conversation, response) per line
    embeddings.npy    fp32 [R, d], row i embeds line i of responses.jsonl
    embeddings.json   the embedder, its dimension and the head check
    v_ref.safetensors the reward head (key v_ref), for reward models only

``embed_personalllm`` writes PersonalLLM's reference layout instead
(``{split}.safetensors`` with key ``embeddings`` + ``{split}.csv`` scores).

Resuming: rows are embedded in shards under ``shards/``; a manifest records
the finished ones with a fingerprint of the inputs and the embedder, so a
rerun after an interruption skips them, and a rerun with other inputs stops
instead of mixing the two.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..errors import DataError
from ..outputs import atomic_write, atomic_write_text

Message = dict[str, str]
MANIFEST = "manifest.json"


@dataclass
class TextPair:
    """One judgment: after ``prompt`` (a chat ending with the user's turn), ``chosen`` beat ``rejected``."""

    user_id: str
    prompt: list[Message]
    chosen: str
    rejected: str
    prompt_id: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def conversation(self, response: str) -> list[Message]:
        return [*self.prompt, {"role": "assistant", "content": response}]


def embed_pairs(pairs: Iterable[TextPair], embedder: Any, out_dir: str | Path, *,
                shard_size: int = 512, check_pairs: int = 8, progress: bool = True) -> Path:
    """Embed each distinct response once and write the generic layout into ``out_dir``."""
    pairs = list(pairs)
    if not pairs:
        raise DataError("no text pairs to embed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    responses: dict[tuple[str, str], int] = {}
    records: list[dict[str, Any]] = []
    rows: list[tuple[int, int]] = []
    for n, pair in enumerate(pairs):
        if not pair.prompt or pair.prompt[-1].get("role") != "user":
            raise DataError(f"pair {n} (user {pair.user_id!r}): the prompt must end with a user turn")
        if pair.chosen == pair.rejected:
            raise DataError(f"pair {n} (user {pair.user_id!r}): chosen and rejected are the same text")
        prompt_key = json.dumps(pair.prompt, sort_keys=True, ensure_ascii=False)
        prompt_id = pair.prompt_id or "p" + hashlib.sha1(prompt_key.encode()).hexdigest()[:12]
        ids = []
        for text in (pair.chosen, pair.rejected):
            key = (prompt_key, text)
            if key not in responses:
                responses[key] = len(records)
                records.append({"response_id": f"r{len(records)}", "prompt_id": prompt_id,
                                "prompt": pair.prompt, "text": text})
            ids.append(responses[key])
        rows.append((ids[0], ids[1]))
    if any(records[a]["prompt_id"] != records[b]["prompt_id"] for a, b in rows):
        raise DataError("two different prompts were given the same prompt_id")
    conversations = [[*r["prompt"], {"role": "assistant", "content": r["text"]}] for r in records]
    fingerprint = _fingerprint(embedder, conversations)
    matrix = embed_resumable(conversations, embedder, out / "shards", fingerprint,
                             out / "embeddings.npy", shard_size=shard_size, progress=progress)

    _write_jsonl(out / "responses.jsonl", records)
    with_split = any(p.split is not None for p in pairs)
    atomic_write_text(out / "comparisons.csv", _comparisons_csv(pairs, rows, records, with_split))
    sidecar: dict[str, Any] = {"model": embedder.name, "kind": embedder.kind,
                               "dim": int(matrix.shape[1]), "responses": len(records),
                               "pairs": len(pairs), "fingerprint": fingerprint}
    if embedder.v_ref is not None:
        _save_tensors({"v_ref": embedder.v_ref.contiguous()}, out / "v_ref.safetensors")
        k = min(check_pairs, len(rows))
        chosen = [conversations[a] for a, _ in rows[:k]]
        rejected = [conversations[b] for _, b in rows[:k]]
        from .reward_model import check_head

        sidecar["head_check"] = check_head(
            embedder, chosen, rejected,
            torch.from_numpy(np.stack([matrix[a] for a, _ in rows[:k]])),
            torch.from_numpy(np.stack([matrix[b] for _, b in rows[:k]])),
        )
    atomic_write_text(out / "embeddings.json", json.dumps(sidecar, indent=1))
    return out


def embed_resumable(conversations: Sequence[Sequence[Message]], embedder: Any, shard_dir: Path,
                    fingerprint: str, target: Path, *, shard_size: int = 512,
                    progress: bool = True) -> np.ndarray:
    """Embed in shards recorded in a manifest, then assemble ``target`` (.npy, fp32)."""
    if shard_size < 1:
        raise DataError(f"shard_size must be >= 1, got {shard_size}")
    n = len(conversations)
    manifest_path = shard_dir / MANIFEST
    if target.is_file() and not manifest_path.is_file():
        done_matrix = np.load(target, mmap_mode="r")
        marker = target.with_suffix(".fingerprint")
        if marker.is_file() and marker.read_text() == fingerprint and done_matrix.shape[0] == n:
            return done_matrix
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"fingerprint": fingerprint, "rows": n, "shard_size": shard_size, "done": []}
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if (old.get("fingerprint"), old.get("rows"), old.get("shard_size")) != (fingerprint, n, shard_size):
            raise DataError(f"{manifest_path}: holds a run over other inputs, another embedder or "
                            "another shard size; use a new output directory or delete this one")
        manifest = old
    done = set(manifest["done"])
    shards = range((n + shard_size - 1) // shard_size)
    bar = tqdm(total=n, desc=f"embedding ({embedder.name})", unit="seq", disable=not progress,
               initial=sum(min(shard_size, n - i * shard_size) for i in done))
    for i in shards:
        if i in done:
            continue
        lo, hi = i * shard_size, min((i + 1) * shard_size, n)
        emb = embedder.embed(conversations[lo:hi], progress=False)
        if not bool(torch.isfinite(emb).all()):
            raise DataError(f"{embedder.name}: non-finite embedding in rows {lo}..{hi - 1}")
        tmp = shard_dir / f"{i:06d}.tmp.npy"
        np.save(tmp, emb.numpy().astype(np.float32))
        os.replace(tmp, shard_dir / f"{i:06d}.npy")
        manifest["done"] = sorted([*manifest["done"], i])
        atomic_write_text(manifest_path, json.dumps(manifest))
        bar.update(hi - lo)
    bar.close()
    dims = {np.load(shard_dir / f"{i:06d}.npy", mmap_mode="r").shape[1] for i in shards}
    if len(dims) != 1:
        raise DataError(f"{shard_dir}: shards of different widths {sorted(dims)}")
    tmp = target.with_suffix(".tmp.npy")
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dims.pop()))
    for i in shards:
        matrix[i * shard_size:(i + 1) * shard_size] = np.load(shard_dir / f"{i:06d}.npy")
    matrix.flush()
    del matrix
    os.replace(tmp, target)
    atomic_write_text(target.with_suffix(".fingerprint"), fingerprint)
    for i in shards:
        (shard_dir / f"{i:06d}.npy").unlink()
    manifest_path.unlink()
    shard_dir.rmdir()
    return np.load(target, mmap_mode="r")


def embed_personalllm(rows: Sequence[dict[str, Any]], embedder: Any, out_dir: str | Path,
                      split: str, *, shard_size: int = 512, progress: bool = True) -> Path:
    """PersonalLLM's reference layout: ``{split}.safetensors`` + ``{split}.csv`` scores.

    ``rows`` are hub rows (``prompt``, ``response_1..8`` and the 80 score
    columns); row 8p+i of the embeddings is [user: prompt p, assistant:
    response i+1], as the reference's prepare.py orders them.
    """
    from ..personalllm import RESPONSES, SCORE_COLUMNS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conversations = []
    for p, row in enumerate(rows):
        missing = [k for k in ("prompt", *(f"response_{i}" for i in range(1, RESPONSES + 1)))
                   if not isinstance(row.get(k), str)]
        if missing:
            raise DataError(f"PersonalLLM {split} row {p}: missing text field(s) {missing}")
        for i in range(1, RESPONSES + 1):
            conversations.append([{"role": "user", "content": row["prompt"]},
                                  {"role": "assistant", "content": row[f"response_{i}"]}])
    fingerprint = _fingerprint(embedder, conversations)
    matrix = embed_resumable(conversations, embedder, out / f"shards-{split}", fingerprint,
                             out / f"{split}.embeddings.npy", shard_size=shard_size,
                             progress=progress)
    _save_tensors({"embeddings": torch.from_numpy(np.array(matrix))}, out / f"{split}.safetensors")
    lines = [["prompt_index", *SCORE_COLUMNS]]
    for p, row in enumerate(rows):
        lines.append([str(p), *("" if row.get(c) is None else repr(float(row[c]))
                                for c in SCORE_COLUMNS)])
    atomic_write_text(out / f"{split}.csv", _csv_text(lines))
    if embedder.v_ref is not None:
        _save_tensors({"v_ref": embedder.v_ref.contiguous()}, out / "v_ref.safetensors")
    return out


# -- helpers -------------------------------------------------------------------
def _fingerprint(embedder: Any, conversations: Sequence[Sequence[Message]]) -> str:
    digest = hashlib.sha256(f"{embedder.kind}\0{embedder.name}\0".encode())
    for conv in conversations:
        digest.update(json.dumps(conv, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _comparisons_csv(pairs, rows, records, with_split: bool) -> str:
    header = ["user_id", "prompt_id", "response_a", "response_b", "label"]
    lines = [header + (["split"] if with_split else [])]
    for pair, (a, b) in zip(pairs, rows):
        line = [str(pair.user_id), records[a]["prompt_id"], records[a]["response_id"],
                records[b]["response_id"], "a"]
        lines.append(line + ([pair.split or ""] if with_split else []))
    return _csv_text(lines)


def _csv_text(lines: list[list[str]]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


